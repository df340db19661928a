"""Training recipe of the coefficient regressor (:mod:`facelab.models.regressor`) on ``lp``.

The ``lp`` suite (300W-LP stand-in) has exact 3DMM parameters, so the loss is supervised:

``L = w_coeff * (|a_id - a_id*|^2 + |a_exp - a_exp*|^2 + |p - p*|^2) + w_sh * |l - l*|^2 + w_landmark * L_lmk``

with every coefficient standardised (``a = alpha / std``, pose and SH by their training
statistics) and averaged over components; by default the identity components are
weighted by ``std_k^2`` ("geometric": the term is then the vertex error, which the
large, visible components dominate; uniform weights spend the small CPU budget on
components a 64 px image barely shows, and do not beat the mean face). ``L_lmk`` is
the mean distance between the 68 landmarks of the predicted shape projected with the
predicted pose (:class:`facelab.camera.WeakPerspectiveCamera`) and the true 2D
landmarks, divided by ``sqrt(H * W)``. The landmark term ties pose and shape together,
which coefficient errors alone do not.

``quick`` trains a ``resnet_tiny`` on 64x64 images of the ~1.4k-vertex mesh from an
in-memory pool of pre-rendered images (cached on disk under
:func:`facelab.config.cache_dir`); ``full`` streams freshly rendered 112x96 images
through ``DataLoader`` workers into a ResNet-50.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from facelab.checks import check_choice, check_image_size
from facelab.config import replace_fields, resolve_profile, torch_threads
from facelab.train import pools
from facelab.train.trainer import (
    LOOP_DEFAULTS, LoopConfig, StepLoader, TrainConfig, Trainer, cosine_lr_factor, step_indices,
)

MODEL_NAME = "regressor"
POOL_KEYS = ("image", "alpha_id", "alpha_exp", "pose", "sh", "landmarks2d")
STAT_BATCHES = 4  # streamed batches used for the pose/SH statistics when there is no pool
FINAL_LR_FRACTION = 0.05  # cosine schedule ends at this fraction of lr
ID_WEIGHTINGS = ("uniform", "geometric")

PROFILE_DEFAULTS = {
    "quick": dict(backbone="resnet_tiny", image_size=(64, 64), resolution="quick", steps=300, n_identities=192,
                  images_per_identity=4, pool=True, num_workers=0, num_threads=1,
                  train=dict(LOOP_DEFAULTS, batch_size=32, lr=1e-3, diagnose_every=0)),
    "full": dict(backbone="resnet50", image_size=(112, 96), resolution="default", steps=20_000, n_identities=0,
                 images_per_identity=0, pool=False, num_workers=4, num_threads=-1,
                 train=dict(LOOP_DEFAULTS, batch_size=64, lr=1e-3, diagnose_every=0)),
}


@dataclass
class RegressorTrainConfig:
    """Options of :func:`train_regressor`. None takes the profile's value (:data:`PROFILE_DEFAULTS`).

    Attributes:
        profile: ``"quick"`` (CPU, minutes) or ``"full"`` (GPU).
        out_dir: the run folder (resumes if it holds ``last.pt``; "" = ``runs/regressor-<profile>``).
        backbone: ``"resnet_tiny"``, ``"resnet18"``, ``"resnet50"``.
        image_size: ``(H, W)`` px. resolution: SynthFaces mesh preset.
        n_shape, n_exp: coefficients regressed (0: all of the model's).
        steps: optimisation steps.
        train: the training-loop options (:class:`~facelab.train.trainer.LoopConfig`;
            ``--set train.batch_size=64``); ``seed`` also seeds the suite. ``diagnose_every`` must
            stay 0: the regressor's loss does not report its terms.
        n_identities, images_per_identity: size of the ``lp`` training suite (0: the suite's default).
        pool: pre-render the whole training suite once and sample batches from memory
            (fast for small suites), else render every batch (``DataLoader`` workers).
        cache_pool: keep the rendered pool on disk for the next run.
        num_workers: ``DataLoader`` workers when streaming.
        w_coeff, w_sh, w_landmark: loss weights.
        id_weighting: ``"uniform"`` (every standardised identity coefficient alike) or
            ``"geometric"`` (component k weighted by ``std_k^2 / mean(std^2)``: the squared
            error is then proportional to the vertex error, so large components dominate).
        num_threads: torch CPU threads while training (-1: leave torch's setting; the quick
            profile's 1: small convolutions on a busy 2-core machine run faster on one thread).
    """

    profile: str = "quick"
    out_dir: str = ""
    backbone: str | None = None
    image_size: tuple[int, ...] | None = None
    resolution: str | None = None
    n_shape: int = 0
    n_exp: int = 0
    steps: int | None = None
    train: LoopConfig = field(default_factory=LoopConfig)
    n_identities: int | None = None
    images_per_identity: int | None = None
    pool: bool | None = None
    cache_pool: bool = True
    num_workers: int | None = None
    w_coeff: float = 1.0
    w_sh: float = 0.1
    w_landmark: float = 10.0
    id_weighting: str = "geometric"
    num_threads: int | None = None

    def __post_init__(self) -> None:
        check_choice(self.profile, "profile", tuple(PROFILE_DEFAULTS))
        check_choice(self.id_weighting, "id_weighting", ID_WEIGHTINGS)
        resolve_profile(self, PROFILE_DEFAULTS[self.profile])
        self.train.check()
        self.image_size = check_image_size(self.image_size)
        if not self.out_dir:
            self.out_dir = f"runs/regressor-{self.profile}"
        for name in ("w_coeff", "w_sh", "w_landmark"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: loss weights must be >= 0, got {getattr(self, name)}")

    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` of the loop."""
        return self.train.stage(self.steps, self.out_dir, self.profile)


class RegressorLoss(nn.Module):
    """The supervised loss of the module docstring, for batches of ``lp``.

    Args:
        morphable: the :class:`~facelab.morphable.model.MorphableModel` the data use.
        n_shape, n_exp: coefficients the regressor predicts.
        image_size: ``(H, W)`` px (normalises the landmark term).
        w_coeff, w_sh, w_landmark: weights.
        id_weighting: ``"uniform"`` or ``"geometric"`` (see :class:`RegressorTrainConfig`).

    ``forward(model, batch) -> (loss, metrics)``; the batch needs ``image``, ``alpha_id``,
    ``alpha_exp``, ``pose``, ``landmarks2d`` and (if ``w_sh > 0``) ``sh``. Metrics:
    ``id, exp, pose, sh`` (mean squared standardised errors), ``lmk`` (the normalised
    landmark distance) and ``lmk_px`` (the same in pixels).
    """

    def __init__(self, morphable, n_shape: int, n_exp: int, image_size, w_coeff: float = 1.0, w_sh: float = 0.1,
                 w_landmark: float = 10.0, id_weighting: str = "geometric") -> None:
        super().__init__()
        check_choice(id_weighting, "id_weighting", ID_WEIGHTINGS)
        if not morphable.landmarks.numel():
            raise ValueError("morphable: has no landmark annotation; the landmark loss needs the 68 iBUG landmarks")
        # a partial annotation (-1 = unmapped, e.g. eos's mapping) is trained on its mapped points only
        keep = morphable.landmark_mask.nonzero()[:, 0]
        self.register_buffer("landmark_keep", keep.clone(), persistent=False)
        lm = morphable.landmarks[keep]
        rows = (3 * lm[:, None] + torch.arange(3)).reshape(-1)  # interleaved basis rows of the landmarks
        self.register_buffer("mean_lm", morphable.mean_shape[lm].float())
        self.register_buffer("basis_id_lm", morphable.shape_basis[rows, :n_shape].float())
        self.register_buffer("basis_exp_lm", morphable.exp_basis[rows, :n_exp].float())
        H, W = image_size
        self.norm_px = math.sqrt(H * W)
        var = morphable.shape_std[:n_shape].float() ** 2
        self.register_buffer("id_weight", var / var.mean() if id_weighting == "geometric" else torch.ones(n_shape))
        self.w_coeff, self.w_sh, self.w_landmark = w_coeff, w_sh, w_landmark

    def landmarks3d(self, alpha_id: torch.Tensor, alpha_exp: torch.Tensor) -> torch.Tensor:
        """``(B, N, 3)`` mm landmarks of the decoded shapes (only these rows are decoded).

        N = 68, or the number of mapped iBUG points (``landmark_keep``) of a partial annotation.
        """
        offset = alpha_id @ self.basis_id_lm.T + alpha_exp @ self.basis_exp_lm.T
        return self.mean_lm + offset.reshape(alpha_id.shape[0], -1, 3)

    def forward(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        from facelab.camera import WeakPerspectiveCamera

        out = model(batch["image"])
        target = model.standardise_targets(batch)
        terms = {
            "id": (self.id_weight * (out["a_id"] - target["a_id"]) ** 2).mean(),
            "exp": ((out["a_exp"] - target["a_exp"]) ** 2).mean() if out["a_exp"].numel() else out["a_id"].new_zeros(()),
            "pose": ((out["pose_std"] - target["pose_std"]) ** 2).mean(),
        }
        terms["sh"] = ((out["sh_std"] - target["sh_std"]) ** 2).mean() if "sh_std" in target else out["sh_std"].new_zeros(())
        lm3d = self.landmarks3d(out["alpha_id"], out["alpha_exp"])
        lm2d = WeakPerspectiveCamera.from_pose(out["pose"]).project(lm3d)[..., :2]
        px = (lm2d - batch["landmarks2d"][:, self.landmark_keep]).norm(dim=-1).mean()
        terms["lmk"] = px / self.norm_px
        loss = self.w_coeff * (terms["id"] + terms["exp"] + terms["pose"]) + self.w_sh * terms["sh"] + self.w_landmark * terms["lmk"]
        metrics = {k: v.detach() for k, v in terms.items()}
        metrics["lmk_px"] = px.detach()
        return loss, metrics


# -------------------------------------------------------------------- data
def _suite(cfg: RegressorTrainConfig):
    return pools.recipe_suite("lp", cfg)


def render_pool(collection, cache: bool = True, progress: bool = False) -> dict[str, torch.Tensor]:
    """Every image of ``collection`` with the fields the regressor needs (:data:`POOL_KEYS`), in memory.

    See :func:`facelab.train.pools.render_pool`; cached under ``cache_dir()/pools``.
    """
    return pools.render_pool(collection, POOL_KEYS, "regressor", cache=cache, progress=progress)


pool_batches = pools.pool_batches


# ------------------------------------------------------------------ recipe
def build_regressor(cfg: RegressorTrainConfig, morphable):
    """The untrained :class:`~facelab.models.regressor.CoefficientRegressor` of a recipe config."""
    from facelab.models.regressor import CoefficientRegressor, RegressorConfig

    n_shape = cfg.n_shape or morphable.n_shape
    n_exp = cfg.n_exp if cfg.n_exp else morphable.n_exp
    model_cfg = RegressorConfig(backbone=cfg.backbone, n_shape=n_shape, n_exp=n_exp,
                                image_size=cfg.image_size, resolution=cfg.resolution)
    return CoefficientRegressor(model_cfg, morphable=morphable)


def train_regressor(config: RegressorTrainConfig | None = None, **overrides) -> Path:
    """Train a :class:`~facelab.models.regressor.CoefficientRegressor` on ``lp``; returns the run folder.

    The folder holds ``last.pt`` (load it with :func:`facelab.models.load_model`), ``config.json``
    and ``metrics.csv`` / ``metrics.jsonl``; an interrupted run resumes when called again.
    ``overrides`` replace fields of ``config`` (keys as :func:`facelab.config.replace_fields`
    takes them: ``seed=1`` sets ``train.seed``).
    """
    cfg = replace_fields(config or RegressorTrainConfig(), overrides)
    with torch_threads(cfg.num_threads):
        _train(cfg)
    return Path(cfg.out_dir)


def _train(cfg: RegressorTrainConfig) -> None:
    from facelab.train.trainer import seed_everything

    collection = _suite(cfg)
    morphable = collection.model
    loop = cfg.train
    seed_everything(loop.seed)  # the initial weights depend on the seed only
    model = build_regressor(cfg, morphable)
    if cfg.pool:
        pool = render_pool(collection, cache=cfg.cache_pool, progress=loop.progress)
        batches = pool_batches(pool, loop.batch_size, loop.seed)
        stats = pool
    else:
        batches = StepLoader(collection, loop.batch_size, cfg.steps, seed=loop.seed, num_workers=cfg.num_workers)
        parts = [collection.batch(step_indices(len(collection), loop.batch_size, s, loop.seed + 1))
                 for s in range(STAT_BATCHES)]
        stats = {k: torch.cat([p[k] for p in parts]).cpu() for k in ("pose", "sh")}
    model.set_target_statistics(stats["pose"].float(), stats["sh"].float())

    loss_fn = RegressorLoss(morphable, model.n_shape, model.n_exp, cfg.image_size, cfg.w_coeff, cfg.w_sh,
                            cfg.w_landmark, cfg.id_weighting).to(loop.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=loop.lr, weight_decay=loop.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lr_factor(cfg.steps, FINAL_LR_FRACTION))
    trainer = Trainer(model, optimizer, batches, loss_fn, cfg.train_config(), scheduler=scheduler,
                      model_name=MODEL_NAME, model_config=model.config, extra_config=cfg)
    trainer.fit()

