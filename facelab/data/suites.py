"""The SynthFaces benchmark suites: which identities, which images, which conditions.

A suite is a table of images. Each row names a world identity and the conditions the
image is drawn under (video, fixed yaw, prototype expression). Everything else about
the image (exact pose, light, expression, occluder, noise) is sampled per image from
its own seed by :class:`facelab.data.synth.PhotoCollection`.

Identities of different suites never overlap: each suite draws world identity ids
from its own range (:data:`ID_RANGES`), and the morphable model's PCA population uses
ids above all of them.

| suite | stands in for | content |
| --- | --- | --- |
| ``webface`` | CASIA-WebFace | many identities, many in-the-wild images each |
| ``lp`` | 300W-LP | large poses, exact 3DMM parameters and landmarks |
| ``collections`` | CelebA collections | identity labels only (shape labels hidden from trainers) |
| ``micc`` | MICC Florence | neutral scan + cooperative/indoor/outdoor "videos" |
| ``bu3dfe`` | BU-3DFE | prototype expressions x yaw sweep 0..±90° in 10° steps |
| ``lfw`` | LFW | verification pairs in 10 folds of matched + mismatched |
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from facelab.checks import check_choice, check_image_size

SUITES = ("webface", "lp", "collections", "micc", "bu3dfe", "lfw")
PROFILES = ("quick", "standard", "full")

# Disjoint world-identity ranges (the morphable model's population starts at 5_000_000).
ID_RANGES = {
    "webface": 0,
    "collections": 1_000_000,
    "lp": 2_000_000,
    "micc": 3_000_000,
    "bu3dfe": 3_500_000,
    "lfw": 4_000_000,
}
ID_RANGE_SIZE = 500_000

MICC_CONDITIONS = ("cooperative", "indoor", "outdoor")
BU3DFE_EXPRESSIONS = ("neutral", "happy", "surprise", "anger", "sadness", "disgust", "fear")
BU3DFE_YAWS_DEG = tuple(range(-90, 91, 10))


@dataclass
class Conditions:
    """How images of a suite (or of one of its conditions) are drawn.

    Angles in degrees. ``yaw_dist`` is ``"normal"`` (std ``yaw_std``, clipped to
    ``yaw_max``) or ``"uniform"`` (in ``[-yaw_max, yaw_max]``).
    """

    yaw_dist: str = "normal"
    yaw_std: float = 30.0
    yaw_max: float = 90.0
    pitch_max: float = 30.0
    roll_max: float = 20.0
    neutral_prob: float = 0.4
    expression_scale: float = 1.0
    light_harshness: float = 0.5  # 0: soft ambient, 1: strong single direction
    occlusion_prob: float = 0.15
    noise_max: float = 0.03  # sensor noise std, upper bound
    blur_max: float = 0.8  # Gaussian blur sigma in px, upper bound
    scale_jitter: float = 0.08
    shift_jitter: float = 0.05  # fraction of the image size


@dataclass
class SuiteConfig:
    """Size and appearance of a SynthFaces suite. ``profile`` picks the defaults.

    ``n_identities`` x ``images_per_identity`` images for the collection suites;
    ``frames_per_video`` for ``micc``; ``pairs_per_fold`` matched (and as many
    mismatched) pairs per fold for ``lfw``.
    """

    suite: str = "webface"
    profile: str = "quick"
    n_identities: int = 0  # 0: the profile's default
    images_per_identity: int = 0
    frames_per_video: int = 0
    pairs_per_fold: int = 0
    n_folds: int = 10
    image_size: tuple[int, int] = (64, 64)
    seed: int = 0
    resolution: str = "default"
    backend: str = "auto"
    render_lod: int = -1  # mesh level photos are rasterized at; -1 picks by image size
    conditions: dict = field(default_factory=dict)  # overrides of Conditions fields

    def __post_init__(self) -> None:
        check_choice(self.suite, "suite", SUITES)
        check_choice(self.profile, "profile", PROFILES)
        defaults = PROFILE_SIZES[self.profile][self.suite]
        for key, value in defaults.items():
            if getattr(self, key) == 0:
                setattr(self, key, value)
        self.image_size = check_image_size(self.image_size)
        if self.n_identities < 1:
            raise ValueError(f"n_identities: must be >= 1, got {self.n_identities}")
        if self.n_identities > ID_RANGE_SIZE:
            raise ValueError(f"n_identities: at most {ID_RANGE_SIZE} per suite, got {self.n_identities}")
        unknown = set(self.conditions) - {f.name for f in dataclasses.fields(Conditions)}
        if unknown:
            raise ValueError(f"conditions: unknown keys {sorted(unknown)}")


PROFILE_SIZES = {
    "quick": {
        "webface": dict(n_identities=200, images_per_identity=16),
        "collections": dict(n_identities=200, images_per_identity=16),
        "lp": dict(n_identities=100, images_per_identity=16),
        "micc": dict(n_identities=10, frames_per_video=6),
        "bu3dfe": dict(n_identities=6),
        "lfw": dict(n_identities=150, pairs_per_fold=30),
    },
    # CPU runs whose evaluation has power: >= 30 MICC subjects x 3 videos, 3,000 LFW pairs
    # in 10 folds, 50 BU-3DFE subjects (a subject-to-subject spread of ~0.2 mm needs ~30
    # subjects to resolve differences of 0.1 mm).
    "standard": {
        "webface": dict(n_identities=2000, images_per_identity=8),
        "collections": dict(n_identities=400, images_per_identity=16),
        "lp": dict(n_identities=200, images_per_identity=16),
        "micc": dict(n_identities=30, frames_per_video=6),
        "bu3dfe": dict(n_identities=50),
        "lfw": dict(n_identities=1_500, pairs_per_fold=150),
    },
    "full": {
        "webface": dict(n_identities=10_000, images_per_identity=40),
        "collections": dict(n_identities=10_000, images_per_identity=30),
        "lp": dict(n_identities=3_000, images_per_identity=40),
        "micc": dict(n_identities=53, frames_per_video=30),
        "bu3dfe": dict(n_identities=100),
        "lfw": dict(n_identities=1_680, pairs_per_fold=300),
    },
}

SUITE_CONDITIONS = {
    "webface": Conditions(),
    "collections": Conditions(),
    "lp": Conditions(yaw_dist="uniform", yaw_max=90.0, occlusion_prob=0.0, neutral_prob=0.3, noise_max=0.02),
    "lfw": Conditions(yaw_std=20.0, yaw_max=60.0),
    "bu3dfe": Conditions(pitch_max=0.0, roll_max=0.0, light_harshness=0.2, occlusion_prob=0.0, noise_max=0.01, blur_max=0.3, scale_jitter=0.0, shift_jitter=0.0),
}
MICC_VIDEO_CONDITIONS = {
    "cooperative": Conditions(yaw_dist="uniform", yaw_max=40.0, pitch_max=8.0, roll_max=5.0, neutral_prob=1.0,
                              light_harshness=0.15, occlusion_prob=0.0, noise_max=0.01, blur_max=0.3),
    "indoor": Conditions(yaw_dist="uniform", yaw_max=50.0, pitch_max=15.0, roll_max=10.0, neutral_prob=0.6,
                         expression_scale=0.6, light_harshness=0.5, occlusion_prob=0.1, noise_max=0.025),
    "outdoor": Conditions(yaw_dist="uniform", yaw_max=60.0, pitch_max=20.0, roll_max=15.0, neutral_prob=0.5,
                          expression_scale=0.8, light_harshness=0.9, occlusion_prob=0.3, noise_max=0.04, blur_max=1.2),
}


@dataclass
class ImageTable:
    """The rows of a suite. All tensors have length N (images).

    identity: world identity ids; label: 0..n_identities-1 within the suite;
    condition: an index into ``condition_names``; fixed_yaw_deg: NaN where the yaw
    is sampled; expression_prototype: -1 where the expression is sampled, else an
    index into :data:`BU3DFE_EXPRESSIONS`; frame: frame number within a video.
    """

    identity: torch.Tensor
    label: torch.Tensor
    condition: torch.Tensor
    fixed_yaw_deg: torch.Tensor
    expression_prototype: torch.Tensor
    frame: torch.Tensor
    condition_names: tuple[str, ...]
    conditions: tuple[Conditions, ...]
    pairs: torch.Tensor | None = None  # (P, 2) image indices, lfw only
    issame: torch.Tensor | None = None  # (P,) bool
    fold: torch.Tensor | None = None  # (P,) long

    def __len__(self) -> int:
        return self.identity.shape[0]


def _conditions_with(base: Conditions, overrides: dict) -> Conditions:
    return dataclasses.replace(base, **overrides) if overrides else base


def build_table(cfg: SuiteConfig) -> ImageTable:
    """The image table of a suite config (pure function of the config)."""
    first = ID_RANGES[cfg.suite]
    ids = torch.arange(first, first + cfg.n_identities)
    labels = torch.arange(cfg.n_identities)
    if cfg.suite in ("webface", "collections", "lp"):
        m = cfg.images_per_identity
        cond = _conditions_with(SUITE_CONDITIONS[cfg.suite], cfg.conditions)
        n = cfg.n_identities * m
        return ImageTable(
            identity=ids.repeat_interleave(m), label=labels.repeat_interleave(m),
            condition=torch.zeros(n, dtype=torch.long), fixed_yaw_deg=torch.full((n,), float("nan")),
            expression_prototype=torch.full((n,), -1), frame=torch.arange(m).repeat(cfg.n_identities),
            condition_names=(cfg.suite,), conditions=(cond,),
        )
    if cfg.suite == "micc":
        f = cfg.frames_per_video
        per_id = len(MICC_CONDITIONS) * f
        # Cooperative videos sweep the head from right to left, like MICC's.
        sweep = torch.linspace(-1, 1, f) * MICC_VIDEO_CONDITIONS["cooperative"].yaw_max if f > 1 else torch.zeros(1)
        yaw = torch.cat([sweep, torch.full((2 * f,), float("nan"))]).repeat(cfg.n_identities)
        conds = tuple(_conditions_with(MICC_VIDEO_CONDITIONS[c], cfg.conditions) for c in MICC_CONDITIONS)
        return ImageTable(
            identity=ids.repeat_interleave(per_id), label=labels.repeat_interleave(per_id),
            condition=torch.arange(len(MICC_CONDITIONS)).repeat_interleave(f).repeat(cfg.n_identities),
            fixed_yaw_deg=yaw, expression_prototype=torch.full((per_id * cfg.n_identities,), -1),
            frame=torch.arange(f).repeat(len(MICC_CONDITIONS) * cfg.n_identities),
            condition_names=MICC_CONDITIONS, conditions=conds,
        )
    if cfg.suite == "bu3dfe":
        n_exp, n_yaw = len(BU3DFE_EXPRESSIONS), len(BU3DFE_YAWS_DEG)
        per_id = n_exp * n_yaw
        cond = _conditions_with(SUITE_CONDITIONS["bu3dfe"], cfg.conditions)
        return ImageTable(
            identity=ids.repeat_interleave(per_id), label=labels.repeat_interleave(per_id),
            condition=torch.zeros(per_id * cfg.n_identities, dtype=torch.long),
            fixed_yaw_deg=torch.tensor(BU3DFE_YAWS_DEG, dtype=torch.float32).repeat(n_exp * cfg.n_identities),
            expression_prototype=torch.arange(n_exp).repeat_interleave(n_yaw).repeat(cfg.n_identities),
            frame=torch.arange(per_id).repeat(cfg.n_identities),
            condition_names=("bu3dfe",), conditions=(cond,),
        )
    return _lfw_table(cfg, ids, labels)


def _lfw_table(cfg: SuiteConfig, ids: torch.Tensor, labels: torch.Tensor) -> ImageTable:
    """LFW-style pairs: per fold, ``pairs_per_fold`` matched then as many mismatched pairs.

    Each fold draws its identities from its own slice of the suite's identities, so
    folds share no identity (as in LFW's ``pairs.txt``). Pair k uses images 2k, 2k+1.
    """
    g = torch.Generator().manual_seed(cfg.seed * 7919 + 17)
    per_fold_ids = cfg.n_identities // cfg.n_folds
    if per_fold_ids < 2:
        raise ValueError(f"n_identities: lfw needs at least 2 identities per fold, got {cfg.n_identities} for {cfg.n_folds} folds")
    left, right, same, fold = [], [], [], []
    for k in range(cfg.n_folds):
        pool = torch.arange(k * per_fold_ids, (k + 1) * per_fold_ids)
        a = pool[torch.randint(per_fold_ids, (cfg.pairs_per_fold,), generator=g)]
        left.append(a)
        right.append(a)
        same.append(torch.ones(cfg.pairs_per_fold, dtype=torch.bool))
        b1 = torch.randint(per_fold_ids, (cfg.pairs_per_fold,), generator=g)
        shift = 1 + torch.randint(per_fold_ids - 1, (cfg.pairs_per_fold,), generator=g)
        left.append(pool[b1])
        right.append(pool[(b1 + shift) % per_fold_ids])
        same.append(torch.zeros(cfg.pairs_per_fold, dtype=torch.bool))
        fold.append(torch.full((2 * cfg.pairs_per_fold,), k))
    left, right = torch.cat(left), torch.cat(right)
    P = left.shape[0]
    label = torch.stack([left, right], 1).reshape(-1)
    cond = _conditions_with(SUITE_CONDITIONS["lfw"], cfg.conditions)
    return ImageTable(
        identity=ids[label], label=labels[label], condition=torch.zeros(2 * P, dtype=torch.long),
        fixed_yaw_deg=torch.full((2 * P,), float("nan")), expression_prototype=torch.full((2 * P,), -1),
        frame=torch.arange(2 * P) % 2, condition_names=("lfw",), conditions=(cond,),
        pairs=torch.arange(2 * P).reshape(P, 2), issame=torch.cat(same), fold=torch.cat(fold),
    )
