"""The baseline image -> 3DMM coefficient regressor.

A :class:`CoefficientRegressor` is a ResNet trunk (:mod:`facelab.models.resnet`) and one
linear layer that predicts, per image, the *standardised* identity and expression
coefficients ``a = alpha / std``, the pose ``[pitch, yaw, roll, tx, ty, scale]`` and 27
SH lighting coefficients. Standardising keeps every output of order one, whatever the
component's variance; :meth:`CoefficientRegressor.forward` multiplies back by the
morphable model's standard deviations, which the module keeps as buffers so that a
checkpoint is self-contained. Pose and lighting are standardised the same way with
statistics of the training data (:meth:`CoefficientRegressor.set_target_statistics`).

This is the classic "3DMM coefficient regression" baseline, and Phase I of Liu et al.
(2018): Euclidean regression of 3DMM coefficients from images.
The final layer starts at zero, so an untrained regressor predicts the mean face in the
mean pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from facelab.checks import check_choice, check_image_size, check_positive, check_tensor
from facelab.models.registry import register_model
from facelab.models.resnet import BACKBONES, build_backbone

MODEL_NAME = "regressor"  # the registry name
POSE_DIM = 6
SH_DIM = 27
#: pose standardisation before any data is seen: angles in rad, tx/ty a quarter of the
#: image, log-scale 0.1 (data statistics replace these, see set_target_statistics)
DEFAULT_ANGLE_STD = 0.5
DEFAULT_SHIFT_STD_FRACTION = 0.25
#: px/mm of a face filling a 64 px image (SynthFaces framing), scaled with the image size
DEFAULT_SCALE_PX_PER_MM_AT_64 = 0.25
DEFAULT_SCALE_STD = 0.03


@dataclass
class RegressorConfig:
    """Architecture of a :class:`CoefficientRegressor`.

    Attributes:
        backbone: ``"resnet_tiny"``, ``"resnet18"`` or ``"resnet50"``.
        n_shape: identity coefficients predicted (the leading ones of the model).
        n_exp: expression coefficients predicted.
        image_size: ``(H, W)`` px of the input images.
        resolution: the SynthFaces mesh preset the model was trained with
            (``"quick"``, ``"default"``, ``"large"``); evaluation decodes with it.
        in_channels: image channels.
    """

    backbone: str = "resnet_tiny"
    n_shape: int = 80
    n_exp: int = 30
    image_size: tuple[int, int] = (64, 64)
    resolution: str = "quick"
    in_channels: int = 3

    def __post_init__(self) -> None:
        check_choice(self.backbone, "backbone", list(BACKBONES))
        check_positive(self.n_shape, "n_shape", integer=True)
        if isinstance(self.n_exp, bool) or not isinstance(self.n_exp, int) or self.n_exp < 0:
            raise ValueError(f"n_exp: expected an int >= 0, got {self.n_exp!r}")
        self.image_size = check_image_size(self.image_size)
        check_positive(self.in_channels, "in_channels", integer=True)


class CoefficientRegressor(nn.Module):
    """Images -> identity/expression coefficients, pose and SH lighting.

    Args:
        config: a :class:`RegressorConfig`.
        morphable: optional :class:`~facelab.morphable.model.MorphableModel` whose
            ``shape_std[:n_shape]`` and ``exp_std[:n_exp]`` scale the outputs. Without it the
            standard deviations are ones until a state dict is loaded.

    ``forward(images: (B, C, H, W) float in [0, 1])`` returns a dict:

    ============  ==============  ===============================================
    key           shape           meaning
    ============  ==============  ===============================================
    a_id          (B, n_shape)    standardised identity coefficients
    a_exp         (B, n_exp)      standardised expression coefficients
    alpha_id      (B, n_shape)    ``a_id * shape_std`` (mm, BFM convention)
    alpha_exp     (B, n_exp)      ``a_exp * exp_std``
    pose_std      (B, 6)          standardised pose
    pose          (B, 6)          pitch, yaw, roll (rad), tx, ty (px), scale (px/mm)
    sh_std        (B, 27)         standardised SH coefficients
    sh            (B, 27)         SH lighting
    ============  ==============  ===============================================

    >>> net = CoefficientRegressor(RegressorConfig(n_shape=10, n_exp=5, image_size=(32, 32)))
    >>> out = net(torch.rand(2, 3, 32, 32))
    >>> out["alpha_id"].shape, out["pose"].shape, float(out["alpha_id"].detach().abs().max())
    (torch.Size([2, 10]), torch.Size([2, 6]), 0.0)
    """

    def __init__(self, config: RegressorConfig | None = None, morphable=None) -> None:
        super().__init__()
        self.config = config = config or RegressorConfig()
        self.backbone = build_backbone(config.backbone, in_channels=config.in_channels)
        self.n_shape, self.n_exp = config.n_shape, config.n_exp
        self.head = nn.Linear(self.backbone.out_features, self.n_shape + self.n_exp + POSE_DIM + SH_DIM)
        nn.init.zeros_(self.head.weight)  # untrained = mean face, mean pose
        nn.init.zeros_(self.head.bias)
        H, W = config.image_size
        scale0 = DEFAULT_SCALE_PX_PER_MM_AT_64 * min(H, W) / 64
        self.register_buffer("shape_std", torch.ones(self.n_shape))
        self.register_buffer("exp_std", torch.ones(self.n_exp))
        self.register_buffer("pose_mean", torch.tensor([0.0, 0.0, 0.0, W / 2, H / 2, scale0]))
        self.register_buffer("pose_scale", torch.tensor([DEFAULT_ANGLE_STD] * 3 + [DEFAULT_SHIFT_STD_FRACTION * W,
                                                         DEFAULT_SHIFT_STD_FRACTION * H, DEFAULT_SCALE_STD]))
        self.register_buffer("sh_mean", torch.zeros(SH_DIM))
        self.register_buffer("sh_scale", torch.ones(SH_DIM))
        if morphable is not None:
            self.set_morphable_std(morphable)

    # ------------------------------------------------------------ statistics
    def set_morphable_std(self, morphable) -> None:
        """Copy ``shape_std[:n_shape]`` and ``exp_std[:n_exp]`` of ``morphable`` into the buffers."""
        self._check_morphable(morphable)
        self.shape_std.copy_(morphable.shape_std[: self.n_shape])
        self.exp_std.copy_(morphable.exp_std[: self.n_exp])

    def set_target_statistics(self, pose: torch.Tensor, sh: torch.Tensor | None = None) -> None:
        """Standardise pose (and SH) outputs with the mean/std of training targets.

        Args:
            pose: ``(N, 6)`` float training poses. sh: optional ``(N, 27)`` float.
        """
        check_tensor(pose, "pose", ("N", POSE_DIM))
        self.pose_mean.copy_(pose.mean(0))
        self.pose_scale.copy_(pose.std(0).clamp_min(1e-6) if pose.shape[0] > 1 else torch.ones(POSE_DIM))
        if sh is not None:
            check_tensor(sh, "sh", (pose.shape[0], SH_DIM))
            self.sh_mean.copy_(sh.mean(0))
            self.sh_scale.copy_(sh.std(0).clamp_min(1e-6) if sh.shape[0] > 1 else torch.ones(SH_DIM))

    def standardise_targets(self, batch: dict) -> dict[str, torch.Tensor]:
        """Ground truth of a batch in the network's output space.

        ``batch`` holds ``alpha_id (B, >= n_shape)``, ``alpha_exp (B, >= n_exp)``, ``pose (B, 6)``
        and optionally ``sh (B, 27)``; returns ``a_id, a_exp, pose_std`` (and ``sh_std``).
        """
        out = {
            "a_id": batch["alpha_id"][:, : self.n_shape] / self.shape_std,
            "a_exp": batch["alpha_exp"][:, : self.n_exp] / self.exp_std,
            "pose_std": (batch["pose"] - self.pose_mean) / self.pose_scale,
        }
        if "sh" in batch:
            out["sh_std"] = (batch["sh"] - self.sh_mean) / self.sh_scale
        return out

    # --------------------------------------------------------------- forward
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        H, W = self.config.image_size
        check_tensor(images, "images", ("B", self.config.in_channels, H, W))
        raw = self.head(self.backbone(images))
        a_id, a_exp, pose_std, sh_std = torch.split(raw, [self.n_shape, self.n_exp, POSE_DIM, SH_DIM], dim=1)
        return {
            "a_id": a_id, "a_exp": a_exp,
            "alpha_id": a_id * self.shape_std, "alpha_exp": a_exp * self.exp_std,
            "pose_std": pose_std, "pose": self.pose_mean + pose_std * self.pose_scale,
            "sh_std": sh_std, "sh": self.sh_mean + sh_std * self.sh_scale,
        }

    # ---------------------------------------------------------------- decode
    def _check_morphable(self, morphable) -> None:
        if morphable.n_shape < self.n_shape or morphable.n_exp < self.n_exp:
            raise ValueError(f"morphable: has {morphable.n_shape} identity / {morphable.n_exp} expression components, "
                             f"the regressor predicts {self.n_shape} / {self.n_exp}")

    def decode_identity(self, embedding: torch.Tensor, morphable) -> torch.Tensor:
        """Neutral shapes of standardised identity codes.

        Args:
            embedding: ``(B, n_shape)`` float, standardised ``alpha_id / std`` (e.g. averaged
                over a video). morphable: the model to decode with.

        Returns:
            ``(B, V, 3)`` float, mm.
        """
        self._check_morphable(morphable)
        check_tensor(embedding, "embedding", ("B", self.n_shape))
        basis = morphable.shape_basis[:, : self.n_shape]
        return morphable.mean_shape + ((embedding * self.shape_std) @ basis.T).reshape(embedding.shape[0], -1, 3)

    def decode(self, out: dict[str, torch.Tensor], morphable) -> dict[str, torch.Tensor]:
        """Shapes of a :meth:`forward` output: ``shape``, ``identity_shape`` ``(B, V, 3)`` mm."""
        self._check_morphable(morphable)
        identity = self.decode_identity(out["a_id"], morphable)
        if self.n_exp:
            basis = morphable.exp_basis[:, : self.n_exp]
            shape = identity + (out["alpha_exp"] @ basis.T).reshape(identity.shape)
        else:
            shape = identity
        return {"shape": shape, "identity_shape": identity}

    def reconstruct(self, images: torch.Tensor, morphable) -> dict[str, torch.Tensor]:
        """Images -> 3D faces.

        Args:
            images: ``(B, C, H, W)`` float in [0, 1]. morphable: the
                :class:`~facelab.morphable.model.MorphableModel` to decode with (at least
                ``n_shape`` / ``n_exp`` components, the same one the regressor was trained with).

        Returns:
            dict with ``shape (B, V, 3)`` mm (with expression), ``identity_shape (B, V, 3)``
            mm (neutral), ``embedding (B, n_shape)`` (standardised ``alpha_id``: the identity
            feature), ``alpha_id``, ``alpha_exp``, ``pose (B, 6)``, ``sh (B, 27)`` and
            ``landmarks2d (B, 68, 2)`` px (the model's landmarks projected with the pose;
            absent if the model has no landmarks, NaN at points a partial annotation leaves unmapped).
        """
        from facelab.camera import WeakPerspectiveCamera

        out = self(images)
        shapes = self.decode(out, morphable)
        result = {**shapes, "embedding": out["a_id"], "alpha_id": out["alpha_id"], "alpha_exp": out["alpha_exp"],
                  "pose": out["pose"], "sh": out["sh"]}
        if morphable.landmarks.numel():  # NaN at the points a partial annotation does not map
            lm3d = morphable.landmark_points(shapes["shape"])
            result["landmarks2d"] = WeakPerspectiveCamera.from_pose(out["pose"]).project(lm3d)[..., :2]
        return result


def build_regressor(config: dict) -> CoefficientRegressor:
    """An untrained :class:`CoefficientRegressor` from its config dict (the ``"regressor"`` builder).

    >>> build_regressor({"backbone": "resnet_tiny", "image_size": [32, 32], "resolution": "quick"}).n_exp
    30
    """
    from facelab.config import from_dict

    return CoefficientRegressor(from_dict(RegressorConfig, config))


register_model(MODEL_NAME, build_regressor)
