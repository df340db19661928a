"""Gao et al. 2020: semi-supervised, disentangled 3D face reconstruction by inverse rendering.

An encoder (a ResNet with four linear heads) splits a photo into an identity code
``c_id``, an expression code ``c_exp``, a pose code ``c_pose`` and a lighting code
``c_lgt``. Graph-convolution decoders over the mesh hierarchy
(:mod:`facelab.models.gcn`) turn ``[c_id, c_exp]`` into the 3D shape and ``c_id`` alone
into the albedo; a differentiable renderer (:mod:`facelab.render`) paints the face back
into the image, so the photo itself supervises the model::

    shape  = template + f_shape([c_id, c_exp])                  (B, V, 3) mm
    albedo = clamp(mean_albedo + f_albedo(c_id), 0, 1)          (B, V, 3)
    pose   = frame(c_pose)   (B, 6) [pitch, yaw, roll, tx, ty, scale] (rad, px, px, px/mm)
    sh     = DEFAULT_SH + c_lgt                                 (B, 27)
    image  = render(shape, albedo, sh, pose)                    (B, 3, H, W)

facelab's choices, beyond the paper's text:

* the decoders output *offsets* from the morphable model's mean (their last layer
  starts at zero), so a fresh model reconstructs the mean face, framed in the image as
  the data frames faces, under :data:`~facelab.render.sh.DEFAULT_SH`;
* the pose head is squashed to plausible ranges (:data:`YAW_MAX`, :data:`PITCH_MAX`,
  :data:`ROLL_MAX`, :data:`SHIFT_RANGE`) around that framing;
* ``c_exp = 0`` is the neutral expression (:meth:`Gao2020Model.neutral_shape`); the
  trainer enforces it (the pairwise loss's neutral partner);
* the CNN albedo decoder (the paper's second step, "CNN + bridge") writes the albedo as
  a ``(3, rows, cols)`` map: the mesh is a regular grid, so the grid *is* its UV map.

Book chapter: ``book/09_gao2020.ipynb``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from facelab.checks import check_choice, check_image_size, check_positive, check_tensor
from facelab.models.gcn import GraphDecoder, GraphEncoder
from facelab.models.resnet import BACKBONES, build_backbone
from facelab.morphable.grid import GRID_PRESETS, grid_shape
from facelab.morphable.resample import grid_morphable  # re-exported: the decoders' grid model
from facelab.models.registry import register_model
from facelab.morphable.model import MorphableModel

__all__ = [
    "GAO2020_PROFILES", "Gao2020Config", "Gao2020Model", "ShapeDiscriminator", "CNNAlbedoDecoder",
    "gao2020_model_config", "build_gao2020_model", "Gao2020Evaluable", "MODEL_NAME", "grid_morphable",
    "gao2020_morphable_record",
]

MODEL_NAME = "gao2020"  # the registry name of the trained model

ALBEDO_DECODERS = ("gcn", "cnn")
#: Pose ranges (rad): angle = MAX * tanh(raw). Yaw spans profiles; pitch and roll less.
YAW_MAX = math.pi / 2
PITCH_MAX = math.pi / 4
ROLL_MAX = math.pi / 4
#: Translation range: t = t0 + raw * SHIFT_RANGE * image size (px).
SHIFT_RANGE = 0.25
#: mm; the shape decoder outputs (shape - template) / SHAPE_SCALE_MM and the discriminator
#: sees it, both of order 1.
SHAPE_SCALE_MM = 10.0
#: iBUG-68 indices (0-based) that frame the face, as the data does: brows and chin.
BROW_LANDMARKS = (19, 24)
CHIN_LANDMARK = 8
#: Shift of the framed centre above the brow-chin midpoint, as a share of that height.
CENTRE_LIFT = 0.12
POSE_DIM, LIGHT_DIM = 6, 27


#: Model sizes per profile (:meth:`Gao2020Config.for_profile`); unlisted fields keep the
#: dataclass defaults. "quick" keeps forward + backward of a batch of 32 at 64 x 64 near
#: 0.25 s on one CPU thread; "full" is the paper's network (ResNet-50, 5 graph widths).
GAO2020_PROFILES = {
    "quick": dict(backbone="resnet_tiny", image_size=(64, 64), resolution="quick", n_levels=3,
                  gcn_channels=(32, 16, 16, 8), cheb_k=3, discriminator_channels=(8, 16, 32, 32),
                  cnn_channels=(32, 16, 8, 8)),
    # standard: the quick architecture, trained longer on larger suites (CPU)
    "standard": dict(backbone="resnet_tiny", image_size=(64, 64), resolution="quick", n_levels=3,
                     gcn_channels=(32, 16, 16, 8), cheb_k=3, discriminator_channels=(8, 16, 32, 32),
                     cnn_channels=(32, 16, 8, 8)),
    "full": dict(backbone="resnet50", image_size=(224, 224), resolution="default", n_levels=4,
                 gcn_channels=(256, 128, 64, 32, 16), cheb_k=6, discriminator_channels=(16, 32, 64, 128, 256),
                 cnn_channels=(256, 128, 64, 32)),
}


@dataclass
class Gao2020Config:
    """Settings of a :class:`Gao2020Model`.

    The defaults are the shared interface's (a CPU-sized encoder with the paper's graph
    decoder widths halved); :meth:`for_profile` gives the smaller, faster ``"quick"``
    model and the paper-sized ``"full"`` one.

    Attributes:
        backbone: encoder trunk, ``"resnet_tiny"`` (quick), ``"resnet18"`` or ``"resnet50"`` (full).
        image_size: ``(H, W)`` px of the input photos and of the rendered reconstruction.
        resolution: SynthFaces grid preset of the mesh (``"quick"``: 33 x 41 = 1353 vertices).
        n_levels: coarser mesh levels the graph coders use.
        id_dim, exp_dim: code lengths (the paper's 128 and 64).
        pose_dim, light_dim: 6 and 27, fixed by the renderer (kept for the paper's table).
        gcn_channels: graph-decoder widths, coarsest level first, ``n_levels + 1`` of them.
        cheb_k: Chebyshev order of every graph convolution (the paper's 6).
        albedo: ``"gcn"`` (step 1: albedo from ``c_id`` only) or ``"cnn"`` (step 2:
            U-Net-style decoder with skip connections to the encoder).
        discriminator_channels: widths of the shape discriminator, finest level first.
        cnn_channels: widths of the CNN albedo decoder, coarsest first, one per encoder stage
            (facelab's addition to the shared interface).

    >>> cfg = Gao2020Config(albedo="cnn")
    >>> Gao2020Config.from_dict(cfg.to_dict()) == cfg
    True
    """

    backbone: str = "resnet_tiny"
    image_size: tuple[int, int] = (64, 64)
    resolution: str = "quick"
    n_levels: int = 3
    id_dim: int = 128
    exp_dim: int = 64
    pose_dim: int = POSE_DIM
    light_dim: int = LIGHT_DIM
    gcn_channels: tuple[int, ...] = (128, 64, 32, 16)
    cheb_k: int = 6
    albedo: str = "gcn"
    discriminator_channels: tuple[int, ...] = (16, 32, 64, 128)
    cnn_channels: tuple[int, ...] = (64, 32, 32, 16)

    def __post_init__(self) -> None:
        check_choice(self.backbone, "backbone", list(BACKBONES))
        self.image_size = check_image_size(self.image_size)
        check_choice(self.resolution, "resolution", list(GRID_PRESETS))
        for name in ("n_levels", "id_dim", "exp_dim", "cheb_k"):
            check_positive(getattr(self, name), name, integer=True)
        if self.pose_dim != POSE_DIM:
            raise ValueError(f"pose_dim: the renderer's pose has {POSE_DIM} numbers, got {self.pose_dim}")
        if self.light_dim != LIGHT_DIM:
            raise ValueError(f"light_dim: the renderer's SH lighting has {LIGHT_DIM} numbers, got {self.light_dim}")
        check_choice(self.albedo, "albedo", ALBEDO_DECODERS)
        for name in ("gcn_channels", "discriminator_channels", "cnn_channels"):
            value = tuple(getattr(self, name))
            for c in value:
                check_positive(c, name, integer=True)
            setattr(self, name, value)
        for name in ("gcn_channels", "discriminator_channels"):
            if len(getattr(self, name)) != self.n_levels + 1:
                raise ValueError(f"{name}: expected n_levels + 1 = {self.n_levels + 1} widths, got {getattr(self, name)}")

    @classmethod
    def for_profile(cls, profile: str, **overrides) -> "Gao2020Config":
        """The config of a profile (:data:`GAO2020_PROFILES`) with ``overrides`` applied.

        >>> Gao2020Config.for_profile("quick", albedo="cnn").gcn_channels
        (32, 16, 16, 8)
        """
        check_choice(profile, "profile", list(GAO2020_PROFILES))
        return cls(**{**GAO2020_PROFILES[profile], **overrides})

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Gao2020Config":
        """Rebuild from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        if not isinstance(d, dict):
            raise TypeError(f"d: expected a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(d) - names - {"_type"})
        if extra:
            raise ValueError(f"Gao2020Config: unknown keys {extra}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: (tuple(v) if typing.get_origin(hints[k]) is tuple and isinstance(v, list) else v)
                      for k, v in d.items() if k in names})


def _grid_sizes(rows: int, cols: int, n: int) -> list[tuple[int, int]]:
    """``n`` grid sizes, finest first, each about half the previous (odd sizes halve exactly)."""
    sizes = [(rows, cols)]
    for _ in range(n - 1):
        r, c = sizes[-1]
        sizes.append(((r - 1) // 2 + 1, (c - 1) // 2 + 1))
    return sizes


def _stage_channels(encoder) -> list[int]:
    """Output channels of each stage of a :class:`~facelab.models.resnet.ResNet` (finest first)."""
    out = []
    for name in encoder.stage_names:
        block = getattr(encoder, name)[-1]
        out.append((block.bn3 if hasattr(block, "bn3") else block.bn2).num_features)
    return out


class CNNAlbedoDecoder(nn.Module):
    """U-Net-style albedo decoder: ``c_id`` plus the encoder's feature maps -> an albedo map.

    The identity code is lifted by a linear layer to the coarsest map; each stage
    bilinearly up-samples, concatenates the encoder stage of matching depth resized to
    the same size (the skip connection, the paper's "bridge") and applies a 3x3
    convolution + ELU. A last 3x3 convolution, initialised to zero, gives the 3 channels.

    Args:
        id_dim: length of ``c_id``.
        skip_channels: channels of the encoder's feature maps, finest first.
        grid: ``(rows, cols)`` of the output map (the mesh grid).
        channels: decoder widths, coarsest first, one per feature map.

    ``forward(c_id: (B, id_dim), features: list of (B, C_k, H_k, W_k)) -> (B, 3, rows, cols)``
    (an albedo *offset*: a fresh decoder outputs 0).

    >>> dec = CNNAlbedoDecoder(8, (4, 8), (9, 11), (8, 4))
    >>> dec(torch.randn(2, 8), [torch.randn(2, 4, 16, 16), torch.randn(2, 8, 8, 8)]).shape
    torch.Size([2, 3, 9, 11])
    """

    def __init__(self, id_dim: int, skip_channels: Sequence[int], grid: tuple[int, int], channels: Sequence[int]) -> None:
        super().__init__()
        check_positive(id_dim, "id_dim", integer=True)
        skip_channels, channels = tuple(skip_channels), tuple(channels)
        if len(channels) != len(skip_channels):
            raise ValueError(f"channels: expected one width per encoder stage ({len(skip_channels)}), got {channels}")
        self.id_dim, self.skip_channels, self.grid = id_dim, skip_channels, tuple(grid)
        n = len(channels)
        self.sizes = _grid_sizes(grid[0], grid[1], n)[::-1]  # coarsest first
        h0, w0 = self.sizes[0]
        self.fc = nn.Linear(id_dim, channels[0] * h0 * w0)
        self.channels = channels
        self.convs = nn.ModuleList()
        cin = channels[0]
        for k in range(n):
            # stage k (coarsest first) meets the encoder stage n-1-k (deepest first)
            self.convs.append(nn.Conv2d(cin + skip_channels[n - 1 - k], channels[k], 3, padding=1))
            cin = channels[k]
        self.head = nn.Conv2d(cin, 3, 3, padding=1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()
        self.act = nn.ELU()

    def forward(self, c_id: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        check_tensor(c_id, "c_id", ("B", self.id_dim))
        if not isinstance(features, (list, tuple)) or len(features) != len(self.skip_channels):
            raise ValueError(f"features: expected the encoder's {len(self.skip_channels)} feature maps (a list), "
                             f"got {type(features).__name__} of length {len(features) if hasattr(features, '__len__') else '?'}")
        B, n = c_id.shape[0], len(self.channels)
        for k, (f, c) in enumerate(zip(features, self.skip_channels)):
            check_tensor(f, f"features[{k}]", (B, c, None, None))
        h0, w0 = self.sizes[0]
        x = self.fc(c_id).view(B, self.channels[0], h0, w0)
        for k in range(n):
            size = self.sizes[k]
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
            skip = F.interpolate(features[n - 1 - k], size=size, mode="bilinear", align_corners=False)
            x = self.act(self.convs[k](torch.cat([x, skip], dim=1)))
        return self.head(x)


class Gao2020Model(nn.Module):
    """The encoder-decoder of Gao et al. 2020 with its rendering layer.

    Args:
        config: a :class:`Gao2020Config`.
        morphable: the morphable model that gives the mesh (grid), the template
            (``mean_shape``, mm), the mean albedo, the landmarks and the symmetry map.

    Buffers: ``template (V, 3)`` mm, ``mean_albedo (V, 3)``, ``faces (F, 3)``,
    ``landmarks (68,)``, ``symmetry (V,)``, ``face_mask (V,)`` bool, ``edge_index (2, E)``
    (level 0). Submodules: ``encoder`` (ResNet trunk), ``id_head``, ``exp_head``,
    ``pose_head``, ``light_head`` (linear), ``shape_decoder``, ``albedo_decoder``
    (:class:`~facelab.models.gcn.GraphDecoder`), ``cnn_albedo`` (:class:`CNNAlbedoDecoder`,
    used when ``config.albedo == "cnn"``) and ``renderer``.

    :meth:`forward` ``(images: (B, 3, H, W) float [0, 1])`` returns a dict:

    * ``c_id (B, id_dim)``, ``c_exp (B, exp_dim)``, ``c_pose (B, 6)``, ``c_lgt (B, 27)``: the codes;
    * ``shape (B, V, 3)`` mm, model frame; ``albedo (B, V, 3)`` in [0, 1];
    * ``pose (B, 6)`` ``[pitch, yaw, roll, tx, ty, scale]`` (rad, px, px, px/mm); ``sh (B, 27)``.

    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> mm = build_synthfaces(SynthFacesConfig(resolution="quick"))
    >>> model = Gao2020Model(Gao2020Config(), mm)
    >>> out = model(torch.rand(2, 3, 64, 64))
    >>> out["shape"].shape, out["pose"].shape, model.render(out).image.shape
    (torch.Size([2, 1353, 3]), torch.Size([2, 6]), torch.Size([2, 3, 64, 64]))
    >>> bool((out["shape"] == mm.mean_shape).all())  # a fresh model starts at the mean face
    True
    """

    def __init__(self, config: Gao2020Config | None, morphable: MorphableModel) -> None:
        super().__init__()
        from facelab.data.synth import FACE_FILL
        from facelab.morphable import mesh_hierarchy
        from facelab.render import DEFAULT_SH, Renderer, RenderSettings

        config = config if config is not None else Gao2020Config()
        if not isinstance(config, Gao2020Config):
            raise TypeError(f"config: expected a Gao2020Config, got {type(config).__name__}")
        if not isinstance(morphable, MorphableModel):
            raise TypeError(f"morphable: expected a MorphableModel, got {type(morphable).__name__}")
        if morphable.grid_shape is None or tuple(morphable.grid_shape) != grid_shape(config.resolution):
            raise ValueError(f"morphable: its grid {morphable.grid_shape} is not the {config.resolution!r} grid "
                             f"{grid_shape(config.resolution)} of config.resolution")
        if morphable.landmarks.numel() != 68:
            raise ValueError(f"morphable: needs the 68 iBUG landmarks, has {morphable.landmarks.numel()}")
        morphable.require_landmarks("morphable (its landmark losses and renders use every iBUG point)")
        self.config = config
        hierarchy = mesh_hierarchy(morphable, config.n_levels)
        self.hierarchy = hierarchy
        mean_shape = morphable.mean_shape.detach().float().cpu()
        self.register_buffer("template", mean_shape.clone())
        self.register_buffer("mean_albedo", morphable.mean_albedo.detach().float().cpu().clone())
        self.register_buffer("faces", morphable.faces.detach().long().cpu().clone())
        self.register_buffer("landmarks", morphable.landmarks.detach().long().cpu().clone())
        self.register_buffer("symmetry", morphable.symmetry.detach().long().cpu().clone())
        self.register_buffer("face_mask", morphable.face_mask.detach().bool().cpu().clone())
        self.register_buffer("edge_index", hierarchy.levels[0].edge_index.clone())
        self.register_buffer("default_sh", DEFAULT_SH.detach().float().clone(), persistent=False)

        # Framing of the mean face, as facelab.data frames photos (frontal pose).
        H, W = config.image_size
        lm = mean_shape[self.landmarks]
        brow_y = float(lm[list(BROW_LANDMARKS), 1].mean())
        height = brow_y - float(lm[CHIN_LANDMARK, 1])
        centre_x = float(lm[:, 0].mean())
        centre_y = 0.5 * (brow_y + float(lm[CHIN_LANDMARK, 1])) + CENTRE_LIFT * height
        #: px/mm of a fresh model; tx0, ty0 (px) put the mean face's centre at the image centre
        self.scale0 = FACE_FILL * min(H, W) / height
        self.tx0 = W / 2 - self.scale0 * centre_x
        self.ty0 = H / 2 + self.scale0 * centre_y

        self.encoder = build_backbone(config.backbone)
        feat = self.encoder.out_features
        self.id_head = nn.Linear(feat, config.id_dim)
        self.exp_head = nn.Linear(feat, config.exp_dim)
        self.pose_head = nn.Linear(feat, POSE_DIM)
        self.light_head = nn.Linear(feat, LIGHT_DIM)
        with torch.no_grad():  # start at the framed frontal pose and the default light
            for head in (self.pose_head, self.light_head):
                head.weight.zero_()
                head.bias.zero_()
        self.shape_decoder = GraphDecoder(config.id_dim + config.exp_dim, hierarchy, config.gcn_channels, config.cheb_k, 3)
        self.albedo_decoder = GraphDecoder(config.id_dim, hierarchy, config.gcn_channels, config.cheb_k, 3)
        skip_channels = _stage_channels(self.encoder)
        if len(config.cnn_channels) != len(skip_channels):
            raise ValueError(f"cnn_channels: expected one width per encoder stage ({len(skip_channels)}), "
                             f"got {config.cnn_channels}")
        self.cnn_albedo = CNNAlbedoDecoder(config.id_dim, skip_channels, morphable.grid_shape, config.cnn_channels)
        self.renderer = Renderer(self.faces, RenderSettings(image_size=config.image_size), self.landmarks)

    @property
    def n_verts(self) -> int:
        return self.template.shape[0]

    # ---------------------------------------------------------------- encoder
    def _check_images(self, images: torch.Tensor) -> None:
        H, W = self.config.image_size
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3 \
                or tuple(images.shape[2:]) != (H, W):
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images: expected (B, 3, {H}, {W}) RGB photos (config.image_size = {(H, W)}), got {got}")
        check_tensor(images, "images", ("B", 3, H, W))

    def encode(self, images: torch.Tensor) -> dict:
        """Codes of ``images (B, 3, H, W)`` float [0, 1].

        Returns:
            ``c_id (B, id_dim)``, ``c_exp (B, exp_dim)``, ``c_pose (B, 6)``, ``c_lgt (B, 27)``
            and ``features``: the encoder's stage outputs, a list of ``(B, C_k, H_k, W_k)``
            (the CNN albedo decoder's skip connections).
        """
        self._check_images(images)
        features = self.encoder.feature_maps(images)
        emb = self.encoder.pool(features[-1]).flatten(1)
        return {"c_id": self.id_head(emb), "c_exp": self.exp_head(emb), "c_pose": self.pose_head(emb),
                "c_lgt": self.light_head(emb), "features": features}

    # ---------------------------------------------------------------- decoders
    def decode_shape(self, c_id: torch.Tensor, c_exp: torch.Tensor) -> torch.Tensor:
        """``template + SHAPE_SCALE_MM * f_shape([c_id, c_exp])``: ``(B, V, 3)`` mm, model frame.

        The decoder's output is in units of :data:`SHAPE_SCALE_MM` so that its last layer
        works at order 1: unscaled, it had to grow weights to several mm per unit and the
        shape loss did not move in hundreds of steps.

        Args:
            c_id: ``(B, id_dim)``; c_exp: ``(B, exp_dim)``.
        """
        check_tensor(c_id, "c_id", ("B", self.config.id_dim))
        check_tensor(c_exp, "c_exp", (c_id.shape[0], self.config.exp_dim))
        return self.template + SHAPE_SCALE_MM * self.shape_decoder(torch.cat([c_id, c_exp], dim=1))

    def neutral_shape(self, c_id: torch.Tensor) -> torch.Tensor:
        """The neutral-expression shape ``decode_shape(c_id, 0)``: ``(B, V, 3)`` mm."""
        check_tensor(c_id, "c_id", ("B", self.config.id_dim))
        return self.decode_shape(c_id, c_id.new_zeros(c_id.shape[0], self.config.exp_dim))

    def decode_albedo(self, c_id: torch.Tensor, features: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """``clamp(mean_albedo + f_albedo(c_id[, features]), 0, 1)``: ``(B, V, 3)`` linear RGB.

        Uses the graph decoder or, with ``config.albedo == "cnn"``, the CNN decoder, which
        needs ``features`` (the ``features`` of :meth:`encode`).
        """
        check_tensor(c_id, "c_id", ("B", self.config.id_dim))
        if self.config.albedo == "cnn":
            if features is None:
                raise ValueError("features: the CNN albedo decoder (config.albedo='cnn') needs the encoder's feature maps")
            amap = self.cnn_albedo(c_id, features)  # (B, 3, rows, cols): vertex i*cols + j is pixel (i, j)
            offset = amap.flatten(2).transpose(1, 2)
        else:
            offset = self.albedo_decoder(c_id)
        return (self.mean_albedo + offset).clamp(0.0, 1.0)

    def pose(self, c_pose: torch.Tensor) -> torch.Tensor:
        """Pose ``(B, 6)`` ``[pitch, yaw, roll (rad), tx, ty (px), scale (px/mm)]`` from ``c_pose (B, 6)``.

        ``angle = MAX * tanh(raw)``; ``t = t0 + raw * SHIFT_RANGE * size``;
        ``scale = scale0 * exp(raw)``, where ``c_pose = 0`` frames the mean face as the data does.
        """
        check_tensor(c_pose, "c_pose", ("B", POSE_DIM))
        H, W = self.config.image_size
        limits = c_pose.new_tensor([PITCH_MAX, YAW_MAX, ROLL_MAX])
        angles = limits * torch.tanh(c_pose[:, :3])
        tx = self.tx0 + c_pose[:, 3:4] * (SHIFT_RANGE * W)
        ty = self.ty0 + c_pose[:, 4:5] * (SHIFT_RANGE * H)
        scale = self.scale0 * torch.exp(c_pose[:, 5:6])
        return torch.cat([angles, tx, ty, scale], dim=1)

    def light(self, c_lgt: torch.Tensor) -> torch.Tensor:
        """SH lighting ``(B, 27)`` = ``DEFAULT_SH + c_lgt`` from ``c_lgt (B, 27)``."""
        check_tensor(c_lgt, "c_lgt", ("B", LIGHT_DIM))
        return self.default_sh.to(c_lgt.dtype) + c_lgt

    # ---------------------------------------------------------------- whole model
    def forward(self, images: torch.Tensor) -> dict:
        codes = self.encode(images)
        features = codes.pop("features")
        return {
            **codes,
            "shape": self.decode_shape(codes["c_id"], codes["c_exp"]),
            "albedo": self.decode_albedo(codes["c_id"], features),
            "pose": self.pose(codes["c_pose"]),
            "sh": self.light(codes["c_lgt"]),
        }

    def render(self, out: dict):
        """Render a reconstruction (the dict of :meth:`forward`): a
        :class:`~facelab.render.RenderOutput` with ``image (B, 3, H, W)``, ``mask (B, 1, H, W)``,
        ``landmarks2d (B, 68, 2)`` px, ..."""
        missing = [k for k in ("shape", "albedo", "sh", "pose") if k not in out]
        if missing:
            raise ValueError(f"out: missing {missing}; pass the dict that forward() returns")
        return self.renderer(out["shape"], out["albedo"], out["sh"], out["pose"])


class ShapeDiscriminator(nn.Module):
    """The WGAN critic on shapes: a graph-convolution encoder over ``(shape - template) / SHAPE_SCALE_MM``.

    ``forward(shape: (B, V, 3) mm) -> (B,)`` scores (real = high).

    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> mm = build_synthfaces(SynthFacesConfig(resolution="quick"))
    >>> ShapeDiscriminator(Gao2020Config(), mm)(mm.mean_shape[None]).shape
    torch.Size([1])
    """

    def __init__(self, config: Gao2020Config, morphable: MorphableModel) -> None:
        super().__init__()
        from facelab.morphable import mesh_hierarchy

        if not isinstance(config, Gao2020Config):
            raise TypeError(f"config: expected a Gao2020Config, got {type(config).__name__}")
        if not isinstance(morphable, MorphableModel):
            raise TypeError(f"morphable: expected a MorphableModel, got {type(morphable).__name__}")
        self.register_buffer("template", morphable.mean_shape.detach().float().cpu().clone())
        self.encoder = GraphEncoder(3, mesh_hierarchy(morphable, config.n_levels), config.discriminator_channels,
                                    config.cheb_k, out_dim=1)

    def forward(self, shape: torch.Tensor) -> torch.Tensor:
        check_tensor(shape, "shape", ("B", self.template.shape[0], 3))
        return self.encoder((shape - self.template) / SHAPE_SCALE_MM)[:, 0]


# ---------------------------------------------------------------- checkpoints
def gao2020_model_config(config: Gao2020Config, synthfaces=None) -> dict:
    """The checkpoint's ``model_config``: ``{"model": config.to_dict(), "synthfaces": {...}}``.

    ``synthfaces`` is the :class:`~facelab.morphable.SynthFacesConfig` of the morphable
    model (default: ``SynthFacesConfig(resolution=config.resolution)``, seed 0).

    >>> sorted(gao2020_model_config(Gao2020Config()))
    ['model', 'synthfaces']
    """
    from facelab.morphable import SynthFacesConfig

    synthfaces = synthfaces if synthfaces is not None else SynthFacesConfig(resolution=config.resolution)
    if not isinstance(synthfaces, SynthFacesConfig):
        raise TypeError(f"synthfaces: expected a SynthFacesConfig, got {type(synthfaces).__name__}")
    if synthfaces.resolution != config.resolution:
        raise ValueError(f"synthfaces: resolution {synthfaces.resolution!r} differs from config.resolution {config.resolution!r}")
    return {"model": config.to_dict(), "synthfaces": dataclasses.asdict(synthfaces)}


def gao2020_morphable_record(source: MorphableModel, path, network: MorphableModel) -> dict:
    """What a checkpoint records of a morphable-model file (``model_config["morphable"]``).

    :func:`facelab.models.morphable_record.morphable_record` of ``source`` read from ``path`` (absolute
    path, content sha256, sizes) plus ``resampled`` (whether ``network``, the decoders' model
    of :func:`grid_morphable`, is a resampling of it) and ``network_sha256``.
    :func:`build_gao2020_model` re-reads ``path`` and refuses a file whose content changed.

    >>> import tempfile
    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> mm = build_synthfaces(SynthFacesConfig(resolution="quick"))
    >>> rec = gao2020_morphable_record(mm, mm.save(tempfile.mkdtemp() + "/m.npz"), mm)
    >>> rec["resampled"], rec["sha256"] == rec["network_sha256"], rec["n_verts"]
    (False, True, 1353)
    """
    from facelab.models.morphable_record import morphable_record

    return {**morphable_record(source, path), "resampled": network is not source,
            "network_sha256": network.content_sha256()}


def build_gao2020_model(model_config: dict, morphable: MorphableModel | None = None) -> Gao2020Model:
    """An untrained :class:`Gao2020Model` from a :func:`gao2020_model_config` dict.

    This is the ``"gao2020"`` builder of :func:`facelab.models.build_model`.
    ``model_config["synthfaces"]`` may be left out (then the config's resolution, seed 0).
    With a ``"morphable"`` record (:func:`gao2020_morphable_record`) the decoders start from that
    file's model instead, re-read and checked against the recorded content hash, and resampled
    onto the grid as in training (:func:`grid_morphable`). ``morphable``: the decoders' model
    already in memory (the training recipe's), used instead of re-reading the file and checked
    against the record's ``network_sha256``; ignored without a record.

    Raises:
        FileNotFoundError: the recorded morphable-model file is gone.
        ValueError: a malformed config, or a model whose content hash differs from the record.

    >>> build_gao2020_model(gao2020_model_config(Gao2020Config())).config.id_dim
    128
    """
    from facelab.morphable import SynthFacesConfig, build_synthfaces

    if not isinstance(model_config, dict) or "model" not in model_config:
        raise ValueError(f"model_config: expected a dict with a 'model' key (see gao2020_model_config), got {model_config!r}")
    config = Gao2020Config.from_dict(model_config["model"])
    record = model_config.get("morphable")
    if record is None:
        sf = dict(model_config.get("synthfaces") or {"resolution": config.resolution})
        return Gao2020Model(config, build_synthfaces(SynthFacesConfig(**sf)))
    if morphable is None:
        from facelab.models.morphable_record import recorded_morphable

        morphable = grid_morphable(recorded_morphable(record), config.resolution)
    elif morphable.content_sha256() != record.get("network_sha256"):
        raise ValueError(f"morphable: the model given is not the one recorded for {record.get('path')} "
                         f"(network sha256 {record.get('network_sha256')})")
    return Gao2020Model(config, morphable)


class Gao2020Evaluable(nn.Module):
    """A :class:`~facelab.models.gao2020.Gao2020Model` in the interface of
    :class:`~facelab.models.registry.Evaluable`: ``reconstruct(images)`` gives the full shape, the
    identity shape (``neutral_shape(c_id)``: ``c_exp = 0`` is the neutral expression, facelab's
    convention) and ``c_id`` as the embedding; ``decode_identity(code)`` decodes an
    (averaged) identity code to the neutral shape.

    >>> from facelab.morphable.synthfaces import SynthFacesConfig, build_synthfaces
    >>> net = Gao2020Model(Gao2020Config(image_size=(32, 32)), build_synthfaces(SynthFacesConfig(resolution="quick")))
    >>> out = Gao2020Evaluable(net).reconstruct(torch.zeros(2, 3, 32, 32))
    >>> out["shape"].shape, out["embedding"].shape
    (torch.Size([2, 1353, 3]), torch.Size([2, 128]))
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not hasattr(model, "neutral_shape") or not hasattr(model, "encode"):
            raise TypeError(f"model: expected a Gao2020Model, got {type(model).__name__}")
        self.model = model
        self.config = SimpleNamespace(image_size=tuple(model.config.image_size), resolution=model.config.resolution)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, morphable=None) -> dict[str, torch.Tensor]:
        codes = self.model.encode(images)
        shape = self.model.decode_shape(codes["c_id"], codes["c_exp"])
        return {"shape": shape, "identity_shape": self.model.neutral_shape(codes["c_id"]), "embedding": codes["c_id"]}

    @torch.no_grad()
    def decode_identity(self, code: torch.Tensor, morphable=None) -> torch.Tensor:
        """``code (B, id_dim)`` -> neutral identity shape ``(B, V, 3)`` mm."""
        return self.model.neutral_shape(code)


def gao2020_evaluable(model: Gao2020Model, checkpoint: dict) -> Gao2020Evaluable:
    """The ``"gao2020"`` registry's evaluable: the model as a :class:`Gao2020Evaluable`."""
    return Gao2020Evaluable(model)


register_model(MODEL_NAME, build_gao2020_model, gao2020_evaluable)
