"""The SIR network: a coefficient regressor with a recognition head and an identity shape model.

Book chapter: ``book/10_sir.ipynb``; trained by :mod:`facelab.train.sir` (the mixed-label
recipe, loss :class:`facelab.losses.mixed_label.MixedLabelLoss`). The identity code is the
regressor's standardised ``a_id``, decoded either by the linear 3DMM (``shape_model="pca"``)
or by a :class:`~facelab.morphable.sphere.SphereFaceModel` (``"sfm"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from facelab.checks import check_choice, check_image_size, check_positive
from facelab.models.registry import register_model

MODEL_NAME = "sir"  # the registry name
RECOG_LOSSES = ("cosface", "arcface")
SHAPE_MODELS = ("pca", "sfm")
#: the checkpoint config key of the morphable-model record of a run with ``morphable=PATH``
MORPHABLE_KEY = "morphable"


@dataclass
class SIRNetConfig:
    """Architecture of a :class:`SIRNet` (stored in its checkpoints).

    Attributes:
        backbone, n_shape, n_exp, image_size, resolution: the
            :class:`~facelab.models.regressor.RegressorConfig` of the regressor (``n_shape`` is
            the SFM dimension for ``shape_model="sfm"``).
        n_classes: identities of the recognition head.
        recog_loss, recog_s, recog_m: the head (:func:`facelab.losses.angular.build_classifier_loss`).
        shape_model: ``"pca"`` (the morphable model's linear identity basis) or ``"sfm"`` (a trainable
            :class:`~facelab.morphable.sphere.SphereFaceModel` basis).
        crop_size: ``(H, W)`` of five-point aligned crops the regressor sees, cut by
            :meth:`SIRNet.prepare_images` from photos of ``image_size`` with their 68 landmarks
            (:func:`facelab.data.align.align_faces`, as face-recognition pipelines feed their
            networks); None: the regressor sees the photos whole, at ``image_size``.
    """

    backbone: str = "resnet_tiny"
    n_shape: int = 80
    n_exp: int = 30
    image_size: tuple[int, int] = (64, 64)
    resolution: str = "quick"
    n_classes: int = 2
    recog_loss: str = "cosface"
    recog_s: float = 30.0
    recog_m: float = 0.35
    shape_model: str = "pca"
    crop_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        check_choice(self.recog_loss, "recog_loss", RECOG_LOSSES)
        check_choice(self.shape_model, "shape_model", SHAPE_MODELS)
        check_positive(self.n_classes, "n_classes", integer=True)
        self.image_size = check_image_size(self.image_size)
        if self.crop_size is not None:
            self.crop_size = check_image_size(self.crop_size)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` of the regressor's input: the crop when aligning, else the photo."""
        return self.crop_size if self.crop_size is not None else self.image_size

    def regressor_config(self):
        from facelab.models.regressor import RegressorConfig

        return RegressorConfig(backbone=self.backbone, n_shape=self.n_shape, n_exp=self.n_exp,
                               image_size=self.input_size, resolution=self.resolution)


class SIRNet(nn.Module):
    """A coefficient regressor, its recognition head and its identity shape model.

    Args:
        config: a :class:`SIRNetConfig`.
        morphable: the :class:`~facelab.morphable.model.MorphableModel` (mean shape,
            expression basis, 68 landmark vertices; and the identity basis for
            ``shape_model="pca"``): SynthFaces of ``config.resolution``, or a file's model
            (``morphable=PATH`` of the recipe). Not stored in checkpoints (rebuilt from the
            resolution, or re-read from the file the checkpoint records), except the SFM,
            which is trained.
        sfm: for ``shape_model="sfm"``, the :class:`~facelab.morphable.sphere.SphereFaceModel`
            whose basis decodes the identity (a trainable sub-module); None builds an
            untrained one of the right size, to be filled by a state dict.

    The identity code is the regressor's standardised ``a_id (B, n_shape)``:

    * ``pca``: ``identity = mean + U (sigma * a)``, the linear 3DMM;
    * ``sfm``: ``identity = sfm.decode(a / |a|, r)``, the direction ``u = a / |a|`` on the
      unit sphere and the SFM's radius ``r`` (see :meth:`identity_offset`).

    ``reconstruct(images (B, 3, H, W) in [0, 1])`` gives the interface of
    :class:`~facelab.models.registry.Evaluable`: ``shape``, ``identity_shape (B, V, 3)`` mm,
    ``embedding = a_id (B, n_shape)`` (its cosine is the verification score) and
    ``landmarks2d (B, 68, 2)`` px of the regressor's input. With ``config.crop_size`` the
    images are aligned crops: :meth:`prepare_images` cuts them from a suite batch's photos.

    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> m = build_synthfaces(SynthFacesConfig(resolution="quick"))
    >>> net = SIRNet(SIRNetConfig(n_shape=10, n_exp=5, image_size=(32, 32), n_classes=3), m)
    >>> out = net.reconstruct(torch.rand(2, 3, 32, 32))
    >>> out["identity_shape"].shape, out["embedding"].shape
    (torch.Size([2, 1353, 3]), torch.Size([2, 10]))
    """

    def __init__(self, config: SIRNetConfig, morphable, sfm=None) -> None:
        super().__init__()
        from facelab.losses.angular import build_classifier_loss
        from facelab.models.regressor import CoefficientRegressor

        self.config = config
        if morphable.n_exp < config.n_exp or (config.shape_model == "pca" and morphable.n_shape < config.n_shape):
            raise ValueError(f"morphable: has {morphable.n_shape} identity / {morphable.n_exp} expression components, "
                             f"the config asks for {config.n_shape} / {config.n_exp}")
        self.regressor = CoefficientRegressor(config.regressor_config())
        self.regressor.exp_std.copy_(morphable.exp_std[: config.n_exp])
        self.head = build_classifier_loss(config.recog_loss, config.n_shape, config.n_classes,
                                          s=config.recog_s, m=config.recog_m)
        self.n_verts = morphable.n_verts
        if morphable.landmarks.numel():  # indexing a partial annotation's -1 would pick the last vertex
            morphable.require_landmarks("morphable (SIR's landmark term projects every iBUG point)")
        self.register_buffer("landmarks", morphable.landmarks.clone(), persistent=False)
        self.register_buffer("exp_basis", morphable.exp_basis[:, : config.n_exp].clone(), persistent=False)
        if config.shape_model == "pca":
            self.regressor.shape_std.copy_(morphable.shape_std[: config.n_shape])
            self.register_buffer("mean_shape", morphable.mean_shape.clone(), persistent=False)
            self.register_buffer("id_basis", morphable.shape_basis[:, : config.n_shape].clone(), persistent=False)
            self.sfm = None
        else:
            self.sfm = sfm if sfm is not None else _empty_sfm(morphable, config.n_shape)
            if self.sfm.n_shape != config.n_shape:
                raise ValueError(f"sfm: has {self.sfm.n_shape} components, the config asks for {config.n_shape}")

    def prepare_images(self, batch: dict) -> torch.Tensor:
        """The regressor's inputs of a batch (``image (B, 3, H, W)``; ``landmarks2d (B, 68, 2)`` px
        when aligning): five-point aligned crops of ``config.crop_size``, or the photos."""
        if self.config.crop_size is None:
            return batch["image"]
        from facelab.data.align import align_faces

        if batch.get("landmarks2d") is None:
            raise KeyError("batch: this network sees aligned crops, which need the photos' 'landmarks2d'")
        return align_faces(batch["image"], batch["landmarks2d"], self.config.crop_size)[0]

    # ------------------------------------------------------------- decoding
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The regressor's output dict (see :class:`~facelab.models.regressor.CoefficientRegressor`)."""
        return self.regressor(images)

    def identity_offset(self, a_id: torch.Tensor) -> torch.Tensor:
        """``a_id (B, n_shape)`` -> identity offset from the mean shape ``(B, V, 3)`` mm."""
        if self.sfm is None:
            return ((a_id * self.regressor.shape_std) @ self.id_basis.T).reshape(a_id.shape[0], -1, 3)
        return sfm_identity(self.sfm, a_id) - self.sfm.mean

    @property
    def mean(self) -> torch.Tensor:
        """``(V, 3)`` mm, the mean shape of the identity model."""
        return self.mean_shape if self.sfm is None else self.sfm.mean

    def geometry(self, a_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x (B, D), scale (D,))``: the input of :func:`facelab.losses.sir.sir_loss` whose
        geometry-weighted space ``x * scale / sqrt(V)`` measures per-vertex RMS distances (mm).

        ``pca``: ``x = a_id``, ``scale = sigma`` (orthonormal basis: exact and cheap);
        ``sfm``: ``x`` = the decoded identity offsets flattened to ``3V`` mm, ``scale = 1``
        (the SFM basis is not orthonormal).
        """
        if self.sfm is None:
            return a_id, self.regressor.shape_std
        x = self.identity_offset(a_id).reshape(a_id.shape[0], -1)
        return x, torch.ones(x.shape[1], dtype=x.dtype, device=x.device)

    def landmarks2d(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, 68, 2)`` px: the landmarks of the decoded shape projected with the predicted pose."""
        from facelab.camera import WeakPerspectiveCamera

        a = out["a_id"]
        rows = (3 * self.landmarks[:, None] + torch.arange(3, device=a.device)).reshape(-1)
        if self.sfm is None:
            lm = self.mean_shape[self.landmarks] + ((a * self.regressor.shape_std) @ self.id_basis[rows].T).reshape(
                a.shape[0], -1, 3)
        else:
            lm = sfm_identity(self.sfm, a, vertices=self.landmarks)
        if self.config.n_exp:
            lm = lm + (out["alpha_exp"] @ self.exp_basis[rows].T).reshape(lm.shape)
        return WeakPerspectiveCamera.from_pose(out["pose"]).project(lm)[..., :2]

    def decode_identity(self, code: torch.Tensor, morphable=None) -> torch.Tensor:
        """Neutral shapes ``(B, V, 3)`` mm of identity codes ``(B, n_shape)`` (e.g. averaged over a video)."""
        return self.mean + self.identity_offset(code)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, morphable=None) -> dict[str, torch.Tensor]:
        """Images -> ``shape``, ``identity_shape (B, V, 3)`` mm, ``embedding (B, n_shape)``, ``landmarks2d``."""
        out = self(images)
        identity = self.decode_identity(out["a_id"])
        shape = identity
        if self.config.n_exp:
            shape = identity + (out["alpha_exp"] @ self.exp_basis.T).reshape(identity.shape)
        return {"shape": shape, "identity_shape": identity, "embedding": out["a_id"],
                "landmarks2d": self.landmarks2d(out), "pose": out["pose"]}


def build_sir_model(config: dict, morphable=None) -> SIRNet:
    """An untrained :class:`SIRNet` from its config dict (the ``"sir"`` checkpoint builder).

    The config is a :class:`SIRNetConfig` as a dict; its morphable model is SynthFaces at
    ``resolution``, or, when the dict has a ``"morphable"`` record
    (:func:`facelab.models.morphable_record.morphable_record`, written by a run with
    ``morphable=PATH``), the file it names, re-read and checked against the recorded content
    hash. ``morphable``: the recorded model already in memory, used instead of re-reading the
    file (and checked the same way); ignored without a record.

    Raises:
        FileNotFoundError: the recorded morphable-model file is gone.
        ValueError: a malformed config, or a morphable model whose content hash differs from the record.

    >>> build_sir_model({"n_shape": 8, "n_exp": 4, "image_size": [32, 32], "n_classes": 5}).head.n_classes
    5
    """
    from facelab.config import from_dict
    from facelab.models.morphable_record import recorded_morphable
    from facelab.morphable import SynthFacesConfig, build_synthfaces

    record = None
    if isinstance(config, dict):
        config = dict(config)
        record = config.pop(MORPHABLE_KEY, None)
    cfg = from_dict(SIRNetConfig, config) if isinstance(config, dict) else config
    if record is not None:
        return SIRNet(cfg, recorded_morphable(record, morphable))
    return SIRNet(cfg, build_synthfaces(SynthFacesConfig(resolution=cfg.resolution)))


def _empty_sfm(morphable, k: int):
    """An all-zero SFM of ``k`` components on ``morphable``'s mean shape, to be filled by a state dict."""
    from facelab.morphable.sphere import SphereFaceModel

    return SphereFaceModel(morphable.mean_shape.clone(), torch.zeros(3 * morphable.n_verts, k))


def sfm_identity(sfm, a: torch.Tensor, vertices: torch.Tensor | None = None) -> torch.Tensor:
    """``mean + B a`` (``alpha = a = r u``, the regressor's code as SFM coefficients), optionally only
    at ``vertices``: ``a (B, K)`` -> ``(B, V or len(vertices), 3)`` mm."""
    if vertices is None:
        return sfm.decode_alpha(a)
    rows = (3 * vertices[:, None] + torch.arange(3, device=a.device)).reshape(-1)
    return sfm.mean[vertices] + (a @ sfm.basis[rows].T).reshape(a.shape[0], -1, 3)


register_model(MODEL_NAME, build_sir_model)
