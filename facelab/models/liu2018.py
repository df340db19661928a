"""Liu et al. 2018: joint face reconstruction and recognition by disentangled shape codes.

A 3D face is split into a mean, an identity part and a residual part (expression and
other non-identity detail)::

    s = s_mean + f_Id(c_Id) + f_Res(c_Res)

A SphereFace encoder (:class:`~facelab.models.sphereface.SphereNet`) maps the image
to an embedding; two linear heads turn it into the latent codes ``c_Id`` and
``c_Res``. The decoders ``f_Id`` and ``f_Res`` are single fully connected layers
initialised from the morphable model, so that before any training

    f_Id(alpha_id / std_id) = B_id alpha_id,    f_Res(alpha_exp / std_exp) = B_exp alpha_exp,

i.e. the codes start as *standardised* 3DMM coefficients and the network starts as the
3DMM (Phase I regresses exactly these codes). ``c_Id`` doubles as the face
recognition feature: the classification head (A-Softmax or softmax) acts on it.

The 3DMM conventions (bases, standardised coefficients, mm) are explained in the book
chapter ``book/02_morphable_models.ipynb``.

Book chapter: ``book/05_encoder_decoder.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import nn

from facelab.checks import check_choice, check_positive, check_tensor
from facelab.losses.angular import A_SOFTMAX_DEFAULT_M, build_classifier_loss
# morphable_record is re-exported: the Liu et al. recipe documents it here
from facelab.models.morphable_record import morphable_record, recorded_morphable as _recorded_morphable  # noqa: F401
from facelab.models.registry import register_model
from facelab.models.sphereface import SphereConfig, SphereNet
from facelab.morphable.model import MorphableModel

MODEL_NAME = "liu2018"  # the registry name
LIU2018_LOSSES = ("asoftmax", "softmax")


@dataclass
class Liu2018Config:
    """Settings of a :class:`Liu2018Model`.

    Attributes:
        encoder: the SphereFace encoder (its ``embedding_dim`` feeds the code heads).
        n_id: length of ``c_Id``; None takes the morphable model's ``n_shape``.
        n_res: length of ``c_Res``; None takes the morphable model's ``n_exp``.
        loss: recognition loss on ``c_Id``, ``"asoftmax"`` or ``"softmax"``.
        n_classes: training identities; 0 builds no classification head.
        margin_m: the A-Softmax margin ``m``.

    >>> Liu2018Config(n_id=10, n_classes=5).loss
    'asoftmax'
    """

    encoder: SphereConfig = field(default_factory=SphereConfig)
    n_id: int | None = None
    n_res: int | None = None
    loss: str = "asoftmax"
    n_classes: int = 0
    margin_m: int = A_SOFTMAX_DEFAULT_M

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):  # e.g. rebuilt from JSON
            self.encoder = SphereConfig(**self.encoder)
        if not isinstance(self.encoder, SphereConfig):
            raise TypeError(f"encoder: expected a SphereConfig, got {type(self.encoder).__name__}")
        for name in ("n_id", "n_res"):
            if getattr(self, name) is not None:
                check_positive(getattr(self, name), name, integer=True)
        check_choice(self.loss, "loss", LIU2018_LOSSES)
        if isinstance(self.n_classes, bool) or not isinstance(self.n_classes, int) or self.n_classes < 0:
            raise ValueError(f"n_classes: expected an int >= 0, got {self.n_classes!r}")
        check_positive(self.margin_m, "margin_m", integer=True)


class BasisDecoder(nn.Module):
    """A fully connected decoder ``code (B, n_code) -> offset (B, V, 3)`` mm.

    Initialised as ``weight = basis * std`` (``(3V, K)`` columns scaled by ``(K,)``),
    bias 0, so that the code of standardised coefficients ``alpha / std`` decodes to
    ``basis @ alpha``. With ``n_code < K`` the leading components are kept; with
    ``n_code > K`` the extra columns start at zero (free capacity beyond the 3DMM).

    >>> dec = BasisDecoder(torch.eye(6, 2), torch.tensor([2.0, 1.0]))
    >>> dec(torch.tensor([[1.0, 3.0]]))
    tensor([[[2., 3., 0.],
             [0., 0., 0.]]], grad_fn=<ViewBackward0>)
    """

    def __init__(self, basis: torch.Tensor, std: torch.Tensor, n_code: int | None = None) -> None:
        super().__init__()
        check_tensor(basis, "basis", (None, "K"))
        check_tensor(std, "std", (basis.shape[1],))
        if basis.shape[0] % 3:
            raise ValueError(f"basis: expected 3V rows (x, y, z interleaved per vertex), got {basis.shape[0]}")
        k = basis.shape[1]
        n_code = k if n_code is None else n_code
        check_positive(n_code, "n_code", integer=True)
        self.n_verts = basis.shape[0] // 3
        self.linear = nn.Linear(n_code, basis.shape[0])
        with torch.no_grad():
            self.linear.weight.zero_()
            keep = min(n_code, k)
            self.linear.weight[:, :keep] = (basis[:, :keep] * std[:keep]).to(self.linear.weight.dtype)
            self.linear.bias.zero_()

    @property
    def n_code(self) -> int:
        return self.linear.in_features

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        check_tensor(code, "code", ("B", self.n_code))
        return self.linear(code).view(code.shape[0], self.n_verts, 3)


class IdentityDecoder(BasisDecoder):
    """``f_Id``: ``c_Id (B, n_code) -> delta_s_Id (B, V, 3)`` mm, initialised to ``B_id diag(std_id)``.

    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> mm = build_synthfaces(SynthFacesConfig(resolution="quick"))
    >>> IdentityDecoder(mm)(torch.zeros(1, mm.n_shape)).shape
    torch.Size([1, 1353, 3])
    """

    def __init__(self, morphable: MorphableModel, n_code: int | None = None) -> None:
        super().__init__(morphable.shape_basis, morphable.shape_std, n_code)


class ResidualDecoder(BasisDecoder):
    """``f_Res``: ``c_Res (B, n_code) -> delta_s_Res (B, V, 3)`` mm, initialised to ``B_exp diag(std_exp)``.

    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> mm = build_synthfaces(SynthFacesConfig(resolution="quick"))
    >>> ResidualDecoder(mm, n_code=8)(torch.zeros(2, 8)).shape
    torch.Size([2, 1353, 3])
    """

    def __init__(self, morphable: MorphableModel, n_code: int | None = None) -> None:
        if n_code is None and morphable.n_exp == 0:
            raise ValueError("n_code: the morphable model has no expression basis; give the residual code length")
        super().__init__(morphable.exp_basis, morphable.exp_std, n_code)


def _standardise(alpha: torch.Tensor, std: torch.Tensor, n_code: int) -> torch.Tensor:
    """``alpha / std`` truncated or zero-padded to ``n_code`` columns (0 where std == 0)."""
    safe = torch.where(std > 0, std, torch.ones_like(std))
    a = torch.where(std > 0, alpha / safe, torch.zeros_like(alpha))[:, :n_code]
    return torch.nn.functional.pad(a, (0, n_code - a.shape[1]))


class Liu2018Model(nn.Module):
    """The encoder-decoder of Liu et al. 2018.

    ``images (B, 3, H, W)`` -> :meth:`forward` returns a dict:

    * ``c_id``: ``(B, n_id)`` identity code (also the recognition feature);
    * ``c_res``: ``(B, n_res)`` residual code;
    * ``delta_id``, ``delta_res``: ``(B, V, 3)`` mm, ``f_Id(c_id)`` and ``f_Res(c_res)``;
    * ``shape_id``: ``(B, V, 3)`` mm, ``s_mean + delta_id`` (the disentangled identity shape);
    * ``shape``: ``(B, V, 3)`` mm, ``s_mean + delta_id + delta_res``.

    ``classifier`` (when ``config.n_classes > 0``) is the A-Softmax or softmax loss
    module on ``c_id``; see :meth:`classification_loss`.

    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> mm = build_synthfaces(SynthFacesConfig(resolution="quick"))
    >>> cfg = Liu2018Config(SphereConfig("sphere_tiny", embedding_dim=32, input_size=(64, 64)), n_classes=10)
    >>> out = Liu2018Model(mm, cfg)(torch.zeros(2, 3, 64, 64))
    >>> out["c_id"].shape, out["c_res"].shape, out["shape"].shape
    (torch.Size([2, 80]), torch.Size([2, 30]), torch.Size([2, 1353, 3]))
    """

    def __init__(self, morphable: MorphableModel, config: Liu2018Config | None = None) -> None:
        super().__init__()
        if not isinstance(morphable, MorphableModel):
            raise TypeError(f"morphable: expected a MorphableModel, got {type(morphable).__name__}")
        config = config if config is not None else Liu2018Config()
        if not isinstance(config, Liu2018Config):
            raise TypeError(f"config: expected a Liu2018Config, got {type(config).__name__}")
        n_id = config.n_id if config.n_id is not None else morphable.n_shape
        n_res = config.n_res if config.n_res is not None else morphable.n_exp
        if n_res < 1:
            raise ValueError("n_res: the morphable model has no expression basis; set config.n_res")
        self.config = config
        self.n_id, self.n_res = n_id, n_res
        self.encoder = SphereNet(config.encoder)
        emb = config.encoder.embedding_dim
        self.id_head = nn.Linear(emb, n_id)
        self.res_head = nn.Linear(emb, n_res)
        self.id_decoder = IdentityDecoder(morphable, n_id)
        self.res_decoder = ResidualDecoder(morphable, n_res)
        self.register_buffer("mean_shape", morphable.mean_shape.detach().clone())
        # kept to map 3DMM coefficients to codes (Phase I targets)
        self.register_buffer("shape_std", morphable.shape_std.detach().clone())
        self.register_buffer("exp_std", morphable.exp_std.detach().clone())
        self.classifier = None
        if config.n_classes > 0:
            extra = {"m": config.margin_m} if config.loss == "asoftmax" else {}
            self.classifier = build_classifier_loss(config.loss, n_id, config.n_classes, **extra)

    # -------------------------------------------------------------- encoding
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images (B, 3, H, W)`` -> ``(c_id (B, n_id), c_res (B, n_res))``."""
        embedding = self.encoder(images)
        return self.id_head(embedding), self.res_head(embedding)

    def identity_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, n_id)``: ``c_Id``, the face recognition feature of ``images (B, 3, H, W)``."""
        return self.id_head(self.encoder(images))

    # -------------------------------------------------------------- decoding
    def decode(self, c_id: torch.Tensor, c_res: torch.Tensor) -> dict[str, torch.Tensor]:
        """Shapes from codes ``c_id (B, n_id)``, ``c_res (B, n_res)``: dict of ``(B, V, 3)`` mm.

        Keys ``delta_id``, ``delta_res``, ``shape_id`` and ``shape`` as in :meth:`forward`.
        """
        check_tensor(c_id, "c_id", ("B", self.n_id))
        check_tensor(c_res, "c_res", (c_id.shape[0], self.n_res))
        delta_id, delta_res = self.id_decoder(c_id), self.res_decoder(c_res)
        shape_id = self.mean_shape + delta_id
        return {"delta_id": delta_id, "delta_res": delta_res, "shape_id": shape_id, "shape": shape_id + delta_res}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        c_id, c_res = self.encode(images)
        return {"c_id": c_id, "c_res": c_res, **self.decode(c_id, c_res)}

    def code_targets(self, alpha_id: torch.Tensor, alpha_exp: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The codes that the *initial* decoders turn into the 3DMM shape (Phase I targets).

        Args:
            alpha_id: ``(B, K_id)`` unstandardised identity coefficients.
            alpha_exp: ``(B, K_exp)`` unstandardised expression coefficients, or None (neutral).

        Returns:
            ``c_id (B, n_id)`` and ``c_res (B, n_res)``: ``alpha / std``, truncated or
            zero-padded to the code lengths.
        """
        check_tensor(alpha_id, "alpha_id", ("B", self.shape_std.shape[0]))
        if alpha_exp is None:
            alpha_exp = alpha_id.new_zeros(alpha_id.shape[0], self.exp_std.shape[0])
        check_tensor(alpha_exp, "alpha_exp", (alpha_id.shape[0], self.exp_std.shape[0]))
        return _standardise(alpha_id, self.shape_std, self.n_id), _standardise(alpha_exp, self.exp_std, self.n_res)

    # -------------------------------------------------------------- recognition
    def classification_loss(self, c_id: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``L_C``: the recognition loss of ``c_id (B, n_id)`` against ``labels (B,)``, a scalar."""
        if self.classifier is None:
            raise ValueError("config.n_classes: this model has no classification head (n_classes=0)")
        return self.classifier(c_id, labels)


def build_liu2018_model(config: dict, morphable: MorphableModel | None = None) -> Liu2018Model:
    """An untrained :class:`Liu2018Model` from its checkpoint config dict.

    This is the ``"liu2018"`` builder of :func:`facelab.models.build_model`; the config is the
    one the training recipe stores (``facelab.train.liu2018.model_config``). Its decoders start
    from the morphable model: SynthFaces at ``config["resolution"]``, or, when the config has a
    ``"morphable"`` record (:func:`morphable_record`), the file it names, re-read and checked
    against the recorded content hash. ``morphable``: the recorded model already in memory, used
    instead of re-reading the file (and checked the same way); ignored without a record.

    Raises:
        FileNotFoundError: the recorded morphable-model file is gone.
        ValueError: a malformed config, or a morphable model whose content hash differs from the record.

    >>> cfg = {"resolution": "quick", "model": {"encoder": {"depth": "sphere_tiny", "embedding_dim": 8,
    ...        "input_size": [32, 32]}, "n_classes": 3}}
    >>> build_liu2018_model(cfg).n_id
    80
    """
    from facelab.morphable import SynthFacesConfig, build_synthfaces

    if not isinstance(config, dict) or "resolution" not in config or "model" not in config:
        raise ValueError(f"config: expected a dict with 'resolution' and 'model' keys, got {config!r}")
    if config.get("morphable") is not None:
        morphable = _recorded_morphable(config["morphable"], morphable)
    else:
        morphable = build_synthfaces(SynthFacesConfig(resolution=config["resolution"]))
    return Liu2018Model(morphable, Liu2018Config(**config["model"]))


class Liu2018Evaluable(nn.Module):
    """Wraps a :class:`Liu2018Model` into the interface of
    :class:`~facelab.models.registry.Evaluable`: ``config.image_size`` (of the photos),
    ``config.resolution``, ``prepare_images(batch)``, ``reconstruct(images, morphable)`` and
    ``decode_identity(code, morphable)``.

    ``prepare_images`` cuts five-point aligned crops from the batch's photos when the model
    was trained on them (``align``; photos rendered at ``render_size``). ``reconstruct`` maps
    encoder inputs ``(B, 3, H, W)`` float [0, 1] to ``shape``, ``identity_shape`` ``(B, V, 3)``
    mm and ``embedding`` = ``c_Id (B, n_id)``. A model trained without identity
    disentangling (``disentangled=False``) has no identity part: its embedding is the whole
    code ``[c_Id, c_Res]`` and its identity shape is the full shape.

    >>> net = build_liu2018_model({"resolution": "quick", "model": {"encoder": {"depth": "sphere_tiny",
    ...       "embedding_dim": 8, "input_size": [32, 32]}}})
    >>> wrapped = Liu2018Evaluable(net, "quick")
    >>> out = wrapped.reconstruct(torch.zeros(2, 3, 32, 32), None)
    >>> out["shape"].shape, out["embedding"].shape, wrapped.config.image_size
    (torch.Size([2, 1353, 3]), torch.Size([2, 80]), (32, 32))
    """

    def __init__(self, model: nn.Module, resolution: str, align: bool = False, render_size=None,
                 disentangled: bool = True) -> None:
        super().__init__()
        if not hasattr(model, "encode") or not hasattr(model, "id_decoder"):
            raise TypeError(f"model: expected a Liu2018Model, got {type(model).__name__}")
        self.model = model
        self.input_size = tuple(model.config.encoder.input_size)
        self.align, self.disentangled = bool(align), bool(disentangled)
        photo = tuple(render_size) if (align and render_size) else self.input_size
        self.config = SimpleNamespace(image_size=photo, resolution=resolution)

    def prepare_images(self, batch: dict) -> torch.Tensor:
        """The encoder inputs of a suite batch: aligned crops (``align``) or the photos."""
        if not self.align:
            return batch["image"]
        from facelab.data.align import align_faces

        return align_faces(batch["image"], batch["landmarks2d"], self.input_size)[0]

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, morphable=None) -> dict[str, torch.Tensor]:
        out = self.model(images)
        if not self.disentangled:
            return {"shape": out["shape"], "identity_shape": out["shape"],
                    "embedding": torch.cat([out["c_id"], out["c_res"]], 1)}
        return {"shape": out["shape"], "identity_shape": out["shape_id"], "embedding": out["c_id"]}

    @torch.no_grad()
    def decode_identity(self, code: torch.Tensor, morphable=None) -> torch.Tensor:
        """``code (B, D)`` (an embedding of :meth:`reconstruct`) -> neutral identity shape ``(B, V, 3)`` mm."""
        if not self.disentangled:
            n = self.model.n_id
            return self.model.decode(code[:, :n], code[:, n:])["shape"]
        return self.model.mean_shape + self.model.id_decoder(code)


def liu2018_evaluable(model: Liu2018Model, checkpoint: dict) -> Liu2018Evaluable:
    """The ``"liu2018"`` registry's evaluable: ``model`` with the input pipeline recorded in its ``checkpoint``."""
    inp = checkpoint["model_config"].get("input", {})
    return Liu2018Evaluable(model.eval(), checkpoint["model_config"]["resolution"], align=inp.get("align", False),
                            render_size=inp.get("render_size"), disentangled=inp.get("disentangled", True)).eval()


register_model(MODEL_NAME, build_liu2018_model, liu2018_evaluable)
