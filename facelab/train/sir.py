"""Mixed-label training of an identity-aware shape regressor (the SIR recipe), on SynthFaces or on folders of images.

Book chapter: ``book/10_sir.ipynb``. The SIR and Sphere Face Model papers are available to
facelab only as abstracts (their public code is incomplete), so everything below except
the paper's high-level ingredients (a recognition loss on shape parameters, the SIR
regulariser, batches mixing identity-only and landmark-only samples, a two-stage Sphere
Face Model) is **facelab's own definition**: the loss forms and weights, the batch layout,
the shared ``base`` stage and the schedule.

One :class:`~facelab.models.regressor.CoefficientRegressor` regresses, per image, the
standardised identity coefficients ``a = alpha / sigma``, the expression coefficients, the
weak-perspective pose and 27 SH lighting coefficients. Every training batch mixes

* ``batch_lp`` **landmark-only** samples of ``lp`` (the 300W-LP stand-in; only the 68 2D
  landmarks are used, none of its 3DMM parameters), and
* ``batch_id`` **identity-only** samples of ``webface`` (the CASIA stand-in; only the
  identity label is used): ``ids_per_batch`` identities x ``batch_id / ids_per_batch``
  images each, so that the SIR loss sees same-identity pairs in every batch.

Each loss applies only to the rows that carry its label (:class:`~facelab.losses.mixed_label.MixedLabelLoss`):

================  ========  ==============================================================
term (metric)     rows      definition
================  ========  ==============================================================
``lmk``           lp        mean px distance between the 68 landmarks of the decoded shape
                            projected with the predicted pose (weak perspective) and the
                            labelled ones, divided by ``sqrt(H W)``
``prior``         lp        ``mean(a_id^2) + mean(a_exp^2)``: the Gaussian 3DMM prior
``recog``         webface   CosFace (or ArcFace) on ``a_id``: the "shape parameters +
                            recognition loss" of the SIR paper
``sir``           webface   :func:`facelab.losses.sir.sir_loss` on ``a_id`` (centre/margin
                            form in the geometry-weighted space ``sigma * a / sqrt(V)``,
                            i.e. per-vertex RMS mm); for the SFM the same loss on the
                            decoded identity offsets
``shape``         lp        ``standard`` and ``full`` only: mean per-vertex distance (mm)
                            between the decoded identity shape and the row's labelled one
                            (``lp``'s fitted 3DMM shape, as 300W-LP's ``Shape_Para`` give it)
================  ========  ==============================================================

``L = w_landmark lmk + w_prior prior + w_recog recog + w_sir sir + w_shape shape``.

Why the 3D term: with 2D landmarks alone the regressor learns pose and a face outline, not a
shape. At the ``quick`` settings its MICC error (1.24 mm) is worse than the mean face's (1.20)
and its reconstructions identify the true shapes at chance, so any SIR row compares shapes that
carry no identity. 300W-LP, the SIR paper's landmark data, ships fitted 3DMM shapes with every
image, so the labelled rows can supervise the shape too; ``quick`` keeps it off (``w_shape=0``)
to stay the paper's 2D-only recipe. The lighting output
gets no supervision here (a photometric term would need an albedo model and a renderer in
the loop, too slow for the CPU budget); it stays at the mean light.

Stages (each a :class:`~facelab.train.trainer.Trainer` run in ``out_dir/<stage>/``, whose
final checkpoint is copied to ``out_dir/<stage>.pt``; finished stages are skipped):

* ``base``: mixed batches with landmarks, prior and recognition (no SIR), ``base_steps``
  steps: the shared start of every variant (recognition from scratch is the slow part, and
  training it once keeps the CPU budget).
* ``params_recog``: ``steps`` more steps of the same loss (the "no SIR" row).
* ``params_recog_sir``: ``steps`` steps with the SIR loss added.
* ``sfm_sir``: the shape model is a :class:`~facelab.morphable.sphere.SphereFaceModel`
  learned from 3D shapes with identity labels (stage 1, :func:`sfm_stage1`, saved as
  ``sfm_stage1.npz``); this stage is SFM stage 2: its basis is fine-tuned jointly with the
  encoder on the 2D images (learning rate ``lr * sfm_basis_lr_scale``), with the recognition
  loss on the code's direction ``u`` and the SIR loss on the decoded geometry. The base
  regressor's identity outputs are re-expressed in the SFM's coefficients
  (:func:`reparametrise_head`) and the class weights restarted at each identity's mean
  direction (:func:`init_class_weights`), so the variant starts from the same geometry.

The variants start from ``base.pt`` with the same seed, steps and batches: the only
difference between ``params_recog`` and ``params_recog_sir`` is the SIR term.

Real images: ``data.kind="real"`` reads the two kinds of rows from folders instead of the
suites, ``data.labelled`` (the 300W-LP layout, :class:`~facelab.data.LP300W`: the rows of the
landmark and prior terms) and ``data.identities`` (one folder per person, CASIA-WebFace /
VGGFace2 layout, :class:`~facelab.data.ImageFolderIdentities`: the rows of the recognition and
SIR terms), each image resized whole to ``image_size`` (no alignment: the folders hold face
crops, as 300W-LP and CASIA-WebFace do). The labelled rows use only the files' 68 landmarks, as
with the suites: their 3DMM coefficients are never read, so the folder's model need not be the
network's. ``morphable`` picks the 3DMM file the network decodes with (SynthFaces by
default)::

    facelab synth lp --format lp300w --out LP
    facelab synth webface --format imagefolder --out IDS
    facelab train sir --set data.kind=real --set data.labelled=LP --set data.identities=IDS \\
        --set morphable=LP/model.npz --out RUN

``quick`` trains a ``resnet_tiny`` on 64x64 images of the 1353-vertex mesh from in-memory
pools (200 ``webface`` identities x 16, 100 ``lp`` identities x 16; cached on disk), 900 base
steps and 300 per variant: about 6 minutes on a 2-core CPU. ``standard`` trains the same
network on five-point aligned crops with the 3D term, on 300 ``webface`` identities x 16 and
:data:`STANDARD_LP_IDENTITIES` ``lp`` identities x 1, :data:`STANDARD_BASE_STEPS` base steps and
:data:`STANDARD_VARIANT_STEPS` per variant (about 45 minutes for three seeds trained side by side
as one-thread processes on 2 cores). ``full`` trains a ResNet-50 at 112x96 on larger pools (GPU).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from facelab.checks import check_choice, check_image_size, check_positive
from facelab.config import replace_fields, resolve_profile, torch_threads
from facelab.losses.mixed_label import MixedLabelLoss
from facelab.models.sir import MODEL_NAME, MORPHABLE_KEY, RECOG_LOSSES, SIRNet, SIRNetConfig
from facelab.train import pools
from facelab.train.speed import ENCODER_PRECISIONS, optimizer_options, speed_up_encoder
from facelab.train.stages import Stage, run_stages
from facelab.train.heldout import HELDOUT_IDENTITIES
from facelab.train.trainer import LOOP_DEFAULTS, LoopConfig, TrainConfig, Trainer, cosine_lr_factor

VARIANTS = ("params_recog", "params_recog_sir", "sfm_sir")
BASE = "base"
STAGES = (BASE,) + VARIANTS
SFM_STAGE1 = "sfm_stage1.npz"
LP_POOL_KEYS = ("image", "landmarks2d")
LP_SHAPE_KEY = "shape_identity"  # the labelled rows' 3D identity shape, kept only when w_shape > 0
ID_POOL_KEYS = ("image", "label")
FINAL_LR_FRACTION = 0.05  # cosine schedule ends at this fraction of lr
SFM_TEST_ID_START = 5_400_000  # world ids of held-out 3D identities (beyond the PCA population, in no suite)
#: where the training images come from: generated ``lp`` / ``webface`` suites, or two folders on disk
DATA_KINDS = ("synth", "real")
#: the landmark term compares the 68 iBUG points: the labelled rows and the morphable model need all of them
N_LANDMARKS = 68

#: the ``standard`` schedule and 3D weight, chosen from pilot runs (their logs travel with the
#: standard artifact, under ``tuning/``): at ``w_shape=1`` the recognition term took ~70 % of the
#: regressor's gradient and the shape error hardly moved; at 10 it takes ~65 %. With 300 labelled
#: identities x 8 photos the regressor memorised them (training 2.1 mm, held-out no better than the
#: mean face); with 4,000 x 2 it still did after ~1,000 steps (training error falling, held-out flat
#: at ~0.95 of the mean face's), so every labelled photo is of its own identity.
#: Longer base stages (first seed, ``tuning/pilot9k`` and ``pilot18k``, bfloat16 encoder): 9,000 steps
#: reached 0.70 x the mean face's held-out error and MICC 0.81 x; 18,000 steps 0.67 x and MICC 0.78 x
#: with rank-1 against the true shapes 17 x chance, which meets the precondition. The committed
#: standard run (three seeds, every variant) was trained with this value.
STANDARD_BASE_STEPS = 3000
STANDARD_VARIANT_STEPS = 1000
STANDARD_W_SHAPE = 10.0
#: labelled identities (one photo each) of the standard profile: with 16,000 the held-out error
#: flattened from step ~900 at 0.87 x the mean face's while the training error kept falling; with
#: 64,000 it kept falling with it (0.77 x at step 3,000, the ``lp64k`` pilot)
STANDARD_LP_IDENTITIES = 64_000

PROFILE_DEFAULTS = {
    "quick": dict(backbone="resnet_tiny", image_size=(64, 64), resolution="quick", base_steps=900, steps=300,
                  batch_lp=32, batch_id=32, ids_per_batch=8, n_identities=200, images_per_identity=16,
                  lp_identities=100, lp_images_per_identity=16, sfm_identities=200, sfm_samples=5, pool=True,
                  num_threads=1, w_shape=0.0, align=False, render_size=None,
                  train=dict(LOOP_DEFAULTS, lr=1e-3, diagnose_every=25)),
    # CPU, about 45 minutes for three seeds run side by side: the quick network on aligned crops, many
    # more labelled identities, longer, with the 3D term
    "standard": dict(backbone="resnet_tiny", image_size=(64, 64), resolution="quick", base_steps=STANDARD_BASE_STEPS,
                     steps=STANDARD_VARIANT_STEPS, batch_lp=64, batch_id=32, ids_per_batch=8, n_identities=300,
                     images_per_identity=16, lp_identities=STANDARD_LP_IDENTITIES, lp_images_per_identity=1, sfm_identities=200,
                     sfm_samples=5, pool=True, num_threads=2, w_shape=STANDARD_W_SHAPE, align=True,
                     render_size=(128, 128), train=dict(LOOP_DEFAULTS, lr=1e-3, diagnose_every=100, heldout_every=100)),
    "full": dict(backbone="resnet50", image_size=(112, 96), resolution="default", base_steps=20_000, steps=5_000,
                 batch_lp=32, batch_id=64, ids_per_batch=16, n_identities=2000, images_per_identity=20,
                 lp_identities=1000, lp_images_per_identity=20, sfm_identities=2000, sfm_samples=10, pool=True,
                 num_threads=-1, w_shape=STANDARD_W_SHAPE, align=False, render_size=None,
                 train=dict(LOOP_DEFAULTS, lr=1e-3, diagnose_every=500)),
}
#: the loop options the SIR recipe takes from elsewhere: {field: what it uses instead}
UNUSED_LOOP_OPTIONS = {"batch_size": "batch_lp + batch_id images per step"}


@dataclass
class SIRDataConfig:
    """Where :func:`train_sir` reads its rows: the ``data`` group (``--set data.kind=real``).

    Attributes:
        kind: ``"synth"`` (generated ``lp`` and ``webface`` suites of the recipe's
            ``lp_identities`` x ``lp_images_per_identity`` and ``n_identities`` x
            ``images_per_identity``) or ``"real"`` (the two folders below; those sizes are not used).
        labelled: ``kind="real"``: the landmark-labelled folder in the 300W-LP layout
            (``NAME.jpg`` or ``.png`` next to ``NAME.mat`` with ``pt3d_68`` or a 68-point ``pt2d``,
            in any sub-folders; :class:`~facelab.data.LP300W`). Every image needs all 68
            landmarks; its ``Shape_Para`` / ``Exp_Para`` are not read.
        identities: ``kind="real"``: the folder of identity folders (``ROOT/<identity>/<image>.jpg``,
            :class:`~facelab.data.ImageFolderIdentities`; two images per identity at least).
            Labels are the sorted folder names' ranks; a ``landmarks.json`` there is not needed.

    >>> SIRDataConfig().kind
    'synth'
    >>> SIRDataConfig(kind="real", labelled="LP")
    Traceback (most recent call last):
    ...
    ValueError: data.identities: data.kind='real' needs the folder of identity folders (ROOT/<identity>/<image>.jpg)
    """

    kind: str = "synth"
    labelled: str = ""
    identities: str = ""

    def __post_init__(self) -> None:
        pools.check_data_folders(self.kind, DATA_KINDS, {
            "labelled": (self.labelled, "the landmark-labelled folder (300W-LP layout: NAME.jpg next to NAME.mat)"),
            "identities": (self.identities, "the folder of identity folders (ROOT/<identity>/<image>.jpg)")})


@dataclass
class SIRTrainConfig:
    """Options of :func:`train_sir`. None takes the profile's value (:data:`PROFILE_DEFAULTS`).

    Attributes:
        profile: ``"quick"`` (CPU, minutes), ``"standard"`` (CPU, about 45 minutes for three seeds) or ``"full"`` (GPU).
        out_dir: the run folder ("" = ``runs/sir-<profile>``).
        variants: the variant stages to train after ``base`` (see :data:`VARIANTS`).
        backbone, image_size, resolution: the regressor and the mesh (as the regressor recipe);
            ``image_size`` is the regressor's input (the crop when aligning).
        align: feed the regressor five-point aligned crops of ``image_size`` cut from photos
            rendered at ``render_size`` (:func:`facelab.data.align.align_faces`, as Liu et al.'s
            recipe and face-recognition pipelines do; quick and full False, standard True; only
            ``data.kind="synth"``, whose identity photos carry landmarks). The network aligns
            evaluation photos itself (:meth:`facelab.models.sir.SIRNet.prepare_images`).
        render_size: ``(H, W)`` px of the photos crops are cut from (``align`` only).
        n_shape, n_exp: coefficients regressed (0: all of the model's).
        base_steps: steps of the shared ``base`` stage; steps: steps of each variant after it.
        batch_lp, batch_id: landmark-only / identity-only images per step.
        ids_per_batch: identities among the ``batch_id`` images (each gets
            ``batch_id // ids_per_batch`` images).
        n_identities, images_per_identity: ``webface`` training suite size (``data.kind="synth"``).
        lp_identities, lp_images_per_identity: ``lp`` training suite size (``data.kind="synth"``).
        data: where the rows come from (:class:`SIRDataConfig`: ``data.kind``, ``data.labelled``,
            ``data.identities``). With ``data.kind="real"`` the recognition head has one class per
            identity folder.
        morphable: a morphable-model file (any :func:`facelab.io.load_morphable` reads: ``.npz``,
            BFM, SFM, FLAME, 3DDFA's ``BFM.mat``) with 68 landmark vertices, whose mean, bases and
            landmarks the network decodes with; None: SynthFaces at ``resolution``. The
            checkpoints record its path and content hash
            (:func:`facelab.models.morphable_record.morphable_record`);
            :func:`facelab.models.load_model` re-reads it and refuses a changed file. Any data
            kind works with any such model (only 2D landmarks and labels are used); the
            ``sfm_sir`` variant needs the SynthFaces model of ``resolution`` (its stage 1 learns
            from SynthFaces' 3D population).
        train: the training-loop options of every stage (:class:`~facelab.train.trainer.LoopConfig`;
            ``--set train.lr=5e-4``); ``seed`` also seeds the suites and the SFM's 3D data.
            ``diagnose_every``: steps between measurements of each weighted term's (landmarks, prior,
            recognition, SIR) share of the gradient on the regressor and the Sphere Face Model basis
            (:mod:`facelab.train.diagnostics`; 0: never). ``batch_size`` is not used (``batch_lp + batch_id``).
        recog_loss: ``"cosface"`` or ``"arcface"``; recog_s, recog_m: its scale and margin
            (CosFace: cosine margin; ArcFace: radians).
        w_landmark, w_prior, w_recog, w_sir: loss weights (``w_sir`` applies to the
            ``*_sir`` variants only). sir_margin_mm: the SIR push margin (per-vertex RMS, mm).
        w_shape: weight of the 3D term on the labelled rows (quick 0, standard and full
            :data:`STANDARD_W_SHAPE`). With ``data.kind="real"`` the shapes come from the
            labelled folder's ``Shape_Para`` through ``morphable`` (which must be the model the
            ``.mat`` files refer to, e.g. 3DDFA's ``BFM.mat`` for 300W-LP).
        sfm_k: SFM dimension (0: ``n_shape``). sfm_identities, sfm_samples: the 3D training
            data of SFM stage 1 (identities x shapes each, identity + random expression).
        sfm_steps, sfm_margin: stage-1 optimisation steps and angular margin (0: the
            :class:`~facelab.morphable.sphere.SFMConfig` defaults).
        sfm_basis_lr_scale: stage-2 learning rate of the SFM basis, relative to ``lr``.
        pool: pre-render the training suites once (in memory, cached on disk).
        cache_pool: keep rendered pools under :func:`facelab.config.cache_dir`.
        num_threads: torch CPU threads (-1: leave them as they are; quick: 1).
        channels_last, encoder_precision, compile_encoder, fused_optimizer: training speed options
            of the regressor's backbone and the optimiser (:mod:`facelab.train.speed`; off by default,
            timed by ``facelab bench train sir``).
    """

    profile: str = "quick"
    out_dir: str = ""
    variants: tuple[str, ...] = VARIANTS
    backbone: str | None = None
    image_size: tuple[int, ...] | None = None
    resolution: str | None = None
    n_shape: int = 0
    n_exp: int = 0
    base_steps: int | None = None
    steps: int | None = None
    batch_lp: int | None = None
    batch_id: int | None = None
    ids_per_batch: int | None = None
    n_identities: int | None = None
    images_per_identity: int | None = None
    lp_identities: int | None = None
    lp_images_per_identity: int | None = None
    data: SIRDataConfig = field(default_factory=SIRDataConfig)
    morphable: str | None = None
    train: LoopConfig = field(default_factory=LoopConfig)
    recog_loss: str = "cosface"
    recog_s: float = 30.0
    recog_m: float = 0.35
    w_landmark: float = 10.0
    w_prior: float = 0.01
    w_recog: float = 1.0
    w_sir: float = 1.0
    sir_margin_mm: float = 3.0
    w_shape: float | None = None
    align: bool | None = None
    render_size: tuple[int, ...] | None = None
    sfm_k: int = 0
    sfm_identities: int | None = None
    sfm_samples: int | None = None
    sfm_steps: int = 0
    sfm_margin: float = 0.0
    sfm_basis_lr_scale: float = 0.1
    pool: bool | None = None
    cache_pool: bool = True
    num_threads: int | None = None
    channels_last: bool = False
    encoder_precision: str = "float32"
    compile_encoder: bool = False
    fused_optimizer: bool = False

    def __post_init__(self) -> None:
        check_choice(self.profile, "profile", tuple(PROFILE_DEFAULTS))
        check_choice(self.recog_loss, "recog_loss", RECOG_LOSSES)
        check_choice(self.encoder_precision, "encoder_precision", ENCODER_PRECISIONS)
        self.variants = tuple(self.variants)
        for v in self.variants:
            check_choice(v, "variants", list(VARIANTS))
        resolve_profile(self, PROFILE_DEFAULTS[self.profile])
        self.train.check(unused=UNUSED_LOOP_OPTIONS)
        self.image_size = check_image_size(self.image_size)
        if self.align:
            if self.render_size is None:
                raise ValueError("render_size: align=True cuts crops from photos of render_size; give it (e.g. 128,128)")
            self.render_size = check_image_size(self.render_size)
        for key in ("base_steps", "steps", "batch_lp", "batch_id", "ids_per_batch", "n_identities",
                    "images_per_identity", "lp_identities", "lp_images_per_identity", "sfm_identities",
                    "sfm_samples"):
            check_positive(getattr(self, key), key, integer=True)
        if self.batch_id % self.ids_per_batch:
            raise ValueError(f"batch_id: must be a multiple of ids_per_batch ({self.ids_per_batch}), got {self.batch_id}")
        if isinstance(self.data, dict):  # e.g. rebuilt from JSON
            self.data = SIRDataConfig(**self.data)
        if not isinstance(self.data, SIRDataConfig):
            raise TypeError(f"data: expected a SIRDataConfig, got {type(self.data).__name__}")
        if self.align and self.data.kind != "synth":
            raise ValueError(f"align: aligned crops need every photo's landmarks, and data.kind={self.data.kind!r} "
                             "reads the identity folder's photos whole (they are face crops already); set align=false")
        if self.data.kind == "synth" and self.ids_per_batch > self.n_identities:
            raise ValueError(f"ids_per_batch: {self.ids_per_batch} exceeds the {self.n_identities} training identities")
        for name in ("w_landmark", "w_prior", "w_recog", "w_sir", "sir_margin_mm", "sfm_margin", "sfm_basis_lr_scale",
                     "w_shape"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name}: must be finite and >= 0, got {value}")
        check_positive(self.recog_s, "recog_s")
        if not self.out_dir:
            self.out_dir = f"runs/sir-{self.profile}"

    def train_config(self, stage: str) -> TrainConfig:
        """The :class:`TrainConfig` of ``stage`` (one of :data:`STAGES`), in ``out_dir/<stage>``."""
        check_choice(stage, "stage", list(STAGES))
        steps = self.base_steps if stage == BASE else self.steps
        batch = self.batch_lp + self.batch_id
        return self.train.stage(steps, Path(self.out_dir) / stage, self.profile, batch_size=batch)


# -------------------------------------------------------------------- data
def _suite(cfg: SIRTrainConfig, name: str):
    from facelab.data import make_suite

    if name == "lp":
        sizes = dict(n_identities=cfg.lp_identities, images_per_identity=cfg.lp_images_per_identity)
    else:
        sizes = dict(n_identities=cfg.n_identities, images_per_identity=cfg.images_per_identity)
    photo = cfg.render_size if cfg.align else cfg.image_size
    return make_suite(name, profile=cfg.profile, image_size=photo, resolution=cfg.resolution,
                      seed=cfg.train.seed, **sizes)


def render_pools(cfg: SIRTrainConfig) -> dict[str, dict[str, torch.Tensor]]:
    """``{"lp": {image, landmarks2d[, shape_identity]}, "webface": {image, label}}``: the rendered training suites.

    With ``cfg.align`` the images are five-point aligned crops of ``image_size`` cut from photos of
    ``render_size``, and the landmarks are in crop pixels.

    Only these fields are kept, so no 3DMM parameter of ``lp`` and no shape of ``webface``
    can reach the loss (``lp``'s identity shape only with ``w_shape > 0``). Cached under ``cache_dir()/pools`` (:func:`facelab.train.pools.render_pool`).
    """
    lp_keys = LP_POOL_KEYS + ((LP_SHAPE_KEY,) if cfg.w_shape > 0 else ())
    id_keys = ID_POOL_KEYS + (("landmarks2d",) if cfg.align else ())  # the crops are cut by the landmarks
    align_to = tuple(cfg.image_size) if cfg.align else None
    return {"lp": pools.render_pool(_suite(cfg, "lp"), lp_keys, "sir", cache=cfg.cache_pool,
                                    progress=cfg.train.progress, align_to=align_to),
            "webface": pools.render_pool(_suite(cfg, "webface"), id_keys, "sir", cache=cfg.cache_pool,
                                         progress=cfg.train.progress, align_to=align_to)}


def _uint8(image: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` float images as the pools keep them (uint8, as :func:`facelab.train.pools.render_pool`)."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def labelled_pool(root, image_size, progress: bool = False, model=None) -> dict[str, torch.Tensor]:
    """``{image (N, 3, H, W) uint8, landmarks2d (N, 68, 2) px}``: the landmark-labelled rows of a
    300W-LP-layout folder (:class:`~facelab.data.LP300W`), resized to ``image_size`` ``(H, W)`` px.

    The 68 landmarks are read (``pt3d_68``'s x, y, else a 68-point ``pt2d``; facelab's pixel
    convention, scaled with the resize); the 3DMM coefficients only with ``model`` (the
    :class:`~facelab.morphable.MorphableModel` they refer to), which adds ``shape_identity
    (N, V, 3)`` mm, the neutral shape of each file's ``Shape_Para``.

    Raises:
        FileNotFoundError: no such folder, or no image with a ``.mat`` in it.
        ValueError: an image whose annotation lacks some of the 68 landmarks (the file is named).

    >>> import tempfile
    >>> from facelab.data import export_lp300w, make_suite
    >>> s = make_suite("lp", n_identities=1, images_per_identity=2, image_size=16, resolution="quick")
    >>> pool = labelled_pool(export_lp300w(s, tempfile.mkdtemp())["out"], (16, 16))
    >>> pool["image"].shape, pool["image"].dtype, pool["landmarks2d"].shape
    (torch.Size([2, 3, 16, 16]), torch.uint8, torch.Size([2, 68, 2]))
    """
    from facelab.data import LP300W

    data = LP300W(root, model=model, image_size=image_size)
    rows = range(len(data))
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc=f"read {data.root.name}", unit="image")
    images, marks, shapes = [], [], []
    for i in rows:
        sample = data[i]
        if model is not None:
            shapes.append(sample["shape_identity"].float())
        lm = sample.get("landmarks2d")
        if lm is None or lm.shape != (N_LANDMARKS, 2) or not bool(torch.isfinite(lm).all()):
            found = 0 if lm is None else int(torch.isfinite(lm).all(dim=-1).sum())
            raise ValueError(f"{data.pairs[i][1]}: {found} of the {N_LANDMARKS} landmarks of {sample['path']} "
                             "are there (pt3d_68, or a 68-point pt2d without -1 markers); the landmark term needs "
                             "all of them: remove the image or complete its annotation")
        images.append(_uint8(sample["image"]))
        marks.append(lm.float())
    pool = {"image": torch.stack(images), "landmarks2d": torch.stack(marks)}
    if model is not None:
        pool[LP_SHAPE_KEY] = torch.stack(shapes)
    return pool


def identity_pool(root, image_size, progress: bool = False) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``({image (N, 3, H, W) uint8, label (N,) long}, identity names)``: the identity-labelled rows
    of a folder of identity folders (:class:`~facelab.data.ImageFolderIdentities`), each photo
    resized to ``image_size`` ``(H, W)`` px; label ``k`` is ``names[k]``.

    >>> import tempfile
    >>> from facelab.data import export_image_folder, make_suite
    >>> s = make_suite("webface", n_identities=2, images_per_identity=2, image_size=16, resolution="quick")
    >>> pool, names = identity_pool(export_image_folder(s, tempfile.mkdtemp())["out"], (16, 16))
    >>> pool["image"].shape, pool["label"].tolist(), names
    (torch.Size([4, 3, 16, 16]), [0, 0, 1, 1], ['Synth_Person_0000', 'Synth_Person_0001'])
    """
    from facelab.data import ImageFolderIdentities

    data = ImageFolderIdentities(root, image_size=image_size, progress=progress)
    images, labels = [], []
    for index in torch.arange(len(data)).split(pools.POOL_RENDER_BATCH):
        batch = data.batch(index)
        images.append(_uint8(batch["image"]))
        labels.append(batch["label"].long())
    return {"image": torch.cat(images), "label": torch.cat(labels)}, list(data.identities)


def heldout_shape_error(cfg: SIRTrainConfig, morphable):
    """``model -> {"rmse_mm", "mean_face_rmse_mm", "shape_mm"}`` on :data:`HELDOUT_IDENTITIES` ``lp``
    photos of identities the run never sees (the ids right after its ``lp_identities``), for the
    trainer's held-out curve (``train.heldout_every``); None with ``data.kind="real"``.

    ``rmse_mm``: per-vertex RMS (mm) over the face region after a rigid alignment
    (:func:`facelab.train.heldout.aligned_rmse`), a reconstruction error that pose and position
    cannot game; ``mean_face_rmse_mm``: the same for the mean face, the floor; ``shape_mm``: the
    mean per-vertex distance of the decoded identity shape from the true one, the 3D term's measure.
    """
    from facelab.train.heldout import heldout_photos, shape_error

    if cfg.data.kind != "synth":
        return None
    photos = heldout_photos("lp", cfg, cfg.lp_identities, cfg.render_size if cfg.align else cfg.image_size,
                            align_to=tuple(cfg.image_size) if cfg.align else None)

    def identity_shape(model, images: torch.Tensor) -> torch.Tensor:
        return model.decode_identity(model(images)["a_id"])

    def mean_distance(shapes: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
        return {"shape_mm": float((shapes - truth).norm(dim=-1).mean())}

    return shape_error(photos, morphable.mean_shape, morphable.face_mask, identity_shape, extra=mean_distance)


def folder_pools(cfg: SIRTrainConfig, morphable=None) -> dict:
    """``{"lp": {image, landmarks2d}, "webface": {image, label}, "identities": names}`` read from
    ``cfg.data.labelled`` and ``cfg.data.identities`` (:func:`labelled_pool`, :func:`identity_pool`)
    at ``cfg.image_size``; the counterpart of :func:`render_pools` for ``data.kind="real"``.
    With ``cfg.w_shape > 0`` the labelled rows' ``Shape_Para`` are read through ``morphable``.

    Not cached on disk: reading the folders again is what a cache would save, and their files may change.
    """
    lp = labelled_pool(cfg.data.labelled, cfg.image_size, progress=cfg.train.progress,
                       model=morphable if cfg.w_shape > 0 else None)
    ids, names = identity_pool(cfg.data.identities, cfg.image_size, progress=cfg.train.progress)
    if cfg.ids_per_batch > len(names):
        raise ValueError(f"ids_per_batch: {cfg.ids_per_batch} exceeds the {len(names)} identity folders of "
                         f"data.identities={cfg.data.identities!r}")
    return {"lp": lp, "webface": ids, "identities": names}


def identity_indices(labels: torch.Tensor, ids_per_batch: int, per_id: int, step: int, seed: int = 0) -> torch.Tensor:
    """Sample indices of one identity-only batch: ``ids_per_batch`` identities x ``per_id`` images.

    A pure function of ``(seed, step)`` (exact resumption): identities are walked through seeded
    permutations epoch by epoch; each identity's images are drawn without replacement (with
    replacement if it has fewer than ``per_id``).

    Args:
        labels: ``(N,)`` long, the identity label of every pool sample.

    Returns:
        ``(ids_per_batch * per_id,)`` long, grouped by identity.

    >>> idx = identity_indices(torch.arange(6).repeat_interleave(4), 2, 3, step=0)
    >>> idx.shape, torch.arange(6).repeat_interleave(4)[idx].unique().numel()
    (torch.Size([6]), 2)
    """
    check_positive(ids_per_batch, "ids_per_batch", integer=True)
    check_positive(per_id, "per_id", integer=True)
    uniq = torch.unique(labels)
    if ids_per_batch > uniq.numel():
        raise ValueError(f"ids_per_batch: {ids_per_batch} exceeds the {uniq.numel()} identities of the pool")
    per_epoch = uniq.numel() // ids_per_batch
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(uniq.numel(), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    chosen = uniq[order[k * ids_per_batch:(k + 1) * ids_per_batch]]
    gen = torch.Generator().manual_seed(seed * 1_000_003 + 7_919 * step + 1)
    out = []
    for ident in chosen.tolist():
        members = torch.nonzero(labels == ident).flatten()
        if members.numel() >= per_id:
            out.append(members[torch.randperm(members.numel(), generator=gen)[:per_id]])
        else:
            out.append(members[torch.randint(members.numel(), (per_id,), generator=gen)])
    return torch.cat(out)


def mixed_batches(lp_pool: dict, id_pool: dict | None, batch_lp: int, batch_id: int = 0, ids_per_batch: int = 1,
                  seed: int = 0):
    """A callable ``step -> mixed batch`` (see :class:`~facelab.losses.mixed_label.MixedLabelLoss` for the fields).

    ``batch_lp`` landmark-only rows of ``lp_pool`` (``image`` uint8, ``landmarks2d``) followed by
    ``batch_id`` identity-only rows of ``id_pool`` (``image`` uint8, ``label``); ``id_pool=None``
    gives landmark-only batches. A ``shape_identity`` in ``lp_pool`` travels with its rows
    (``has_shape`` marks them). Depends only on ``(seed, step)``.

    >>> lp = {"image": torch.zeros(8, 3, 4, 4, dtype=torch.uint8), "landmarks2d": torch.ones(8, 68, 2)}
    >>> wf = {"image": torch.zeros(8, 3, 4, 4, dtype=torch.uint8), "label": torch.arange(4).repeat_interleave(2)}
    >>> b = mixed_batches(lp, wf, 2, 4, ids_per_batch=2)(0)
    >>> b["image"].shape, b["label"].tolist()[:2], b["has_landmarks"].tolist()[:3]
    (torch.Size([6, 3, 4, 4]), [-1, -1], [True, True, False])
    """
    from facelab.train.trainer import step_indices

    n_lp = lp_pool["image"].shape[0]
    if id_pool is not None and batch_id % ids_per_batch:
        raise ValueError(f"batch_id: must be a multiple of ids_per_batch ({ids_per_batch}), got {batch_id}")

    def get(step: int) -> dict:
        li = step_indices(n_lp, batch_lp, step, seed)
        images = [lp_pool["image"][li]]
        lm = [lp_pool["landmarks2d"][li].float()]
        labels = [torch.full((batch_lp,), -1, dtype=torch.long)]
        shapes = [lp_pool[LP_SHAPE_KEY][li].float()] if LP_SHAPE_KEY in lp_pool else None
        if id_pool is not None and batch_id:
            ii = identity_indices(id_pool["label"], ids_per_batch, batch_id // ids_per_batch, step, seed + 1)
            images.append(id_pool["image"][ii])
            lm.append(torch.zeros(ii.numel(), *lm[0].shape[1:]))
            labels.append(id_pool["label"][ii].long())
            if shapes is not None:
                shapes.append(torch.zeros(ii.numel(), *shapes[0].shape[1:]))
        label = torch.cat(labels)
        batch = {"image": torch.cat(images).float() / 255, "landmarks2d": torch.cat(lm), "label": label,
                 "has_landmarks": label < 0}
        if shapes is not None:
            batch[LP_SHAPE_KEY], batch["has_shape"] = torch.cat(shapes), label < 0
        return batch

    return get


# ------------------------------------------------------------------ recipe
def model_config(cfg: SIRTrainConfig, morphable, shape_model: str = "pca", n_classes: int | None = None) -> SIRNetConfig:
    """The :class:`SIRNetConfig` of a stage of ``cfg`` (``shape_model`` ``"pca"`` or ``"sfm"``);
    ``n_classes``: identities of the recognition head (default ``cfg.n_identities``, the suite's)."""
    n_shape = cfg.n_shape or morphable.n_shape
    if shape_model == "sfm":
        n_shape = cfg.sfm_k or n_shape
    return SIRNetConfig(backbone=cfg.backbone, n_shape=n_shape, n_exp=cfg.n_exp if cfg.n_exp else morphable.n_exp,
                        image_size=tuple(cfg.render_size if cfg.align else cfg.image_size), resolution=cfg.resolution,
                        crop_size=tuple(cfg.image_size) if cfg.align else None,
                        n_classes=cfg.n_identities if n_classes is None else n_classes,
                        recog_loss=cfg.recog_loss, recog_s=cfg.recog_s, recog_m=cfg.recog_m, shape_model=shape_model)


def stage_loss(stage: str, cfg: SIRTrainConfig) -> MixedLabelLoss:
    """The :class:`~facelab.losses.mixed_label.MixedLabelLoss` of ``stage``: landmarks, prior, recognition and
    (``w_shape > 0``) the 3D term; the ``*_sir`` variants add the SIR term."""
    check_choice(stage, "stage", list(STAGES))
    w_sir = cfg.w_sir if stage.endswith("_sir") else 0.0
    return MixedLabelLoss(cfg.image_size, cfg.w_landmark, cfg.w_prior, cfg.w_recog, w_sir, cfg.sir_margin_mm,
                          return_terms=cfg.train.diagnose_every > 0, w_shape=cfg.w_shape)


def train_sir(config: SIRTrainConfig | None = None, **overrides) -> Path:
    """Train the SIR recipe's stages (module docstring); returns the run folder.

    The folder holds ``base.pt`` and one ``<variant>.pt`` per variant (``"sir"`` models:
    load with :func:`facelab.models.load_model`), ``sfm_stage1.npz`` (the stage-1 Sphere Face Model, a
    :class:`~facelab.morphable.model.MorphableModel` file), per-stage sub-folders with the
    trainer's logs, and ``summary.json``. Finished stages are skipped; an interrupted one resumes.
    ``overrides`` replace fields of ``config`` (keys as :func:`facelab.config.replace_fields` takes
    them: ``seed=1`` sets ``train.seed``).
    """
    cfg = replace_fields(config or SIRTrainConfig(), overrides)
    with torch_threads(cfg.num_threads):
        _train(cfg)
    return Path(cfg.out_dir)


def _parameter_groups(model: SIRNet, cfg: SIRTrainConfig) -> list[dict]:
    basis = [p for n, p in model.named_parameters() if n.startswith("sfm.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("sfm.")]
    groups = [{"params": rest, "lr": cfg.train.lr}]
    if basis:
        groups.append({"params": basis, "lr": cfg.train.lr * cfg.sfm_basis_lr_scale, "weight_decay": 0.0})
    return groups


def recipe_stages(cfg: SIRTrainConfig) -> list[Stage]:
    """``base``, then each of ``cfg.variants`` starting from it.

    >>> [(s.name, s.parent) for s in recipe_stages(SIRTrainConfig(variants=("params_recog",)))]
    [('base', None), ('params_recog', 'base')]
    """
    return [Stage(BASE)] + [Stage(variant, parent=BASE) for variant in cfg.variants]


def _build_stage_model(stage: str, cfg: SIRTrainConfig, morphable, root: Path,
                       parent: Path | None, n_classes: int | None = None) -> tuple[SIRNet, SIRNetConfig]:
    from facelab.io.checkpoint import load_checkpoint
    from facelab.train.trainer import seed_everything

    seed_everything(cfg.train.seed)  # the initial weights depend on the seed only
    if stage != "sfm_sir":
        mcfg = model_config(cfg, morphable, "pca", n_classes)
        model = SIRNet(mcfg, morphable)
    else:
        mcfg = model_config(cfg, morphable, "sfm", n_classes)
        model = SIRNet(mcfg, morphable, sfm=sfm_stage1(cfg, root, morphable))
    if parent is None:
        return model, mcfg
    state = load_checkpoint(parent, expect_model=MODEL_NAME)["state_dict"]
    if stage == "sfm_sir":
        pca = SIRNet(model_config(cfg, morphable, "pca", n_classes), morphable)
        pca.load_state_dict(state)
        reparametrise_head(pca, model)
    else:
        model.load_state_dict(state)
    return model, mcfg


def recipe_morphable(cfg: SIRTrainConfig):
    """``(model, record)``: ``cfg.morphable`` read with its
    :func:`~facelab.models.morphable_record.morphable_record`, or SynthFaces at ``cfg.resolution`` and None.

    Raises:
        ValueError: the model lacks the 68 landmark vertices, or ``cfg.variants`` holds ``sfm_sir``
            and the model is not SynthFaces at ``cfg.resolution`` (SFM stage 1 learns from
            SynthFaces' 3D population, in that model's mesh).

    >>> recipe_morphable(SIRTrainConfig())[0].n_verts, recipe_morphable(SIRTrainConfig())[1]
    (1353, None)
    """
    from facelab.io.models import load_morphable
    from facelab.models.morphable_record import morphable_record
    from facelab.morphable import SynthFacesConfig, build_synthfaces

    synthfaces = build_synthfaces(SynthFacesConfig(resolution=cfg.resolution))
    if not cfg.morphable:
        return synthfaces, None
    morphable = load_morphable(cfg.morphable)
    record = morphable_record(morphable, cfg.morphable)
    n_marks = int(morphable.landmarks.numel())
    if n_marks != N_LANDMARKS:
        raise ValueError(f"morphable: {cfg.morphable} has {n_marks} landmark vertices; the landmark term "
                         f"projects the {N_LANDMARKS} iBUG points, so the model needs all {N_LANDMARKS}")
    morphable.require_landmarks(f"morphable: {cfg.morphable} (the landmark term projects every iBUG point)")
    if "sfm_sir" in cfg.variants and record["sha256"] != synthfaces.content_sha256():
        kept = ",".join(v for v in cfg.variants if v != "sfm_sir") or "params_recog"
        raise ValueError(f"variants: 'sfm_sir' learns its Sphere Face Model from SynthFaces' 3D population "
                         f"(resolution={cfg.resolution!r}), and morphable={cfg.morphable!r} ({morphable.name!r}, "
                         f"{morphable.n_verts} vertices, sha256 {record['sha256'][:12]}) is another model; "
                         f"leave the variant out (--set variants={kept}) or use that SynthFaces model")
    return morphable, record


def _prepare(cfg: SIRTrainConfig) -> dict:
    """The recipe's data: ``morphable``, its ``morphable_record`` (None: SynthFaces), the ``pools``
    (``lp``, ``webface``) and ``n_classes`` (identities of the recognition head)."""
    morphable, record = recipe_morphable(cfg)
    if cfg.data.kind == "real":
        found = folder_pools(cfg, morphable)
        n_classes = len(found.pop("identities"))
    else:
        found, n_classes = render_pools(cfg), cfg.n_identities
    heldout = heldout_shape_error(cfg, morphable) if cfg.train.heldout_every else None
    return {"morphable": morphable, "morphable_record": record, "pools": found, "n_classes": n_classes,
            "heldout": heldout}


def _build_stage(cfg: SIRTrainConfig, stage: Stage, data: dict, parent: Path | None) -> Trainer:
    """The :class:`Trainer` of ``stage`` on mixed batches of the rendered pools."""
    from facelab.train.trainer import CHECKPOINT_NAME

    root, pools_, n_classes = Path(cfg.out_dir), data["pools"], data["n_classes"]
    model, mcfg = _build_stage_model(stage.name, cfg, data["morphable"], root, parent, n_classes)
    if stage.name == "sfm_sir" and not (root / stage.name / CHECKPOINT_NAME).exists():
        init_class_weights(model, pools_["webface"])  # a fresh start; a resumed run has its own
    speed_up_encoder(model.regressor.backbone, cfg.channels_last, cfg.encoder_precision, cfg.compile_encoder)
    batches = mixed_batches(pools_["lp"], pools_["webface"], cfg.batch_lp, cfg.batch_id, cfg.ids_per_batch,
                            cfg.train.seed)
    tcfg = cfg.train_config(stage.name)
    optimizer = torch.optim.AdamW(_parameter_groups(model, cfg), lr=tcfg.lr, weight_decay=tcfg.weight_decay,
                                  **optimizer_options(cfg.fused_optimizer))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lr_factor(tcfg.steps, FINAL_LR_FRACTION))
    watch = {"regressor": model.regressor}
    if model.sfm is not None and any(p.requires_grad for p in model.sfm.parameters()):
        watch["sfm"] = model.sfm
    stored = mcfg  # SynthFaces: the config alone rebuilds the network; a file: its record too
    if data.get("morphable_record") is not None:
        stored = {**dataclasses.asdict(mcfg), MORPHABLE_KEY: dict(data["morphable_record"])}
    return Trainer(model, optimizer, batches, stage_loss(stage.name, cfg), tcfg, scheduler=scheduler,
                   model_name=MODEL_NAME, model_config=stored, extra_config=cfg, diagnostic_modules=watch,
                   chance=1.0 / n_classes, heldout=data.get("heldout"))


def _train(cfg: SIRTrainConfig) -> None:
    if not cfg.pool:
        raise ValueError("pool: the SIR recipe samples identity-balanced batches from rendered pools; set pool=True")
    run_stages(cfg.out_dir, recipe_stages(cfg), build=lambda stage, data, parent: _build_stage(cfg, stage, data, parent),
               prepare=lambda: _prepare(cfg))


# ------------------------------------------------------------------ SFM (stage 1 and helpers)
def sfm_shapes(cfg: SIRTrainConfig, ids: torch.Tensor, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """3D training data of SFM stage 1: ``cfg.sfm_samples`` shapes per world identity in ``ids``.

    Each shape is the identity's true neutral shape plus a random expression and 0.3 mm
    Gaussian noise (:func:`facelab.morphable.sphere.noisy_identity_shapes`): a stand-in for
    a 3D scan database with identity labels. Returns ``(shapes (N, V, 3) float32 mm, labels (N,))``.
    """
    from facelab.morphable import SynthFacesConfig, load_world
    from facelab.morphable.sphere import noisy_identity_shapes

    world = load_world(SynthFacesConfig(resolution=cfg.resolution))
    shapes, labels = noisy_identity_shapes(world, ids, cfg.sfm_samples, seed=cfg.train.seed if seed is None else seed)
    return shapes.float(), labels


def sfm_train_ids(cfg: SIRTrainConfig) -> torch.Tensor:
    """World ids of the stage-1 3D scans: the SynthFaces population (the PCA model's own scans)."""
    from facelab.morphable import POPULATION_ID_START

    return torch.arange(POPULATION_ID_START, POPULATION_ID_START + cfg.sfm_identities)


def sfm_config(cfg: SIRTrainConfig):
    """The :class:`~facelab.morphable.sphere.SFMConfig` of stage 1 (zero fields of ``cfg``: its defaults)."""
    from facelab.morphable.sphere import SFMConfig

    over = {k: v for k, v in (("n_steps", cfg.sfm_steps), ("margin", cfg.sfm_margin)) if v}
    return SFMConfig(seed=cfg.train.seed, **over)


def sfm_stage1(cfg: SIRTrainConfig, root, morphable):
    """SFM stage 1, cached as ``root/sfm_stage1.npz`` (a MorphableModel file, see
    :meth:`~facelab.morphable.sphere.SphereFaceModel.to_morphable`); returns the
    :class:`~facelab.morphable.sphere.SphereFaceModel`."""
    from facelab.morphable import MorphableModel
    from facelab.morphable.sphere import SphereFaceModel, fit_sfm_stage1

    path = Path(root) / SFM_STAGE1
    if path.exists():
        return SphereFaceModel.from_morphable(MorphableModel.load(path))
    k = cfg.sfm_k or cfg.n_shape or morphable.n_shape
    shapes, labels = sfm_shapes(cfg, sfm_train_ids(cfg))
    sfm = fit_sfm_stage1(shapes.double(), labels, k, sfm_config(cfg)).float()
    path.parent.mkdir(parents=True, exist_ok=True)
    sfm.to_morphable(morphable).save(path)
    return SphereFaceModel.from_morphable(MorphableModel.load(path))


@torch.no_grad()
def reparametrise_head(pca_net: SIRNet, sfm_net: SIRNet) -> None:
    """Copy ``pca_net``'s regressor into ``sfm_net``, re-expressing its identity outputs in the SFM's
    coefficients, so that both decode the same identity shapes (up to the part outside the SFM's span).

    The head is linear: ``a_pca = W f + b``. With ``M = B^+ U diag(sigma)`` and
    ``d = B^+ (mean_pca - mean_sfm)`` (least squares, ``B`` the SFM basis), the SFM code
    ``a_sfm = M a_pca + d`` is obtained with ``W' = M W`` and ``b' = M b + d``. Expression, pose
    and light rows are copied unchanged; the recognition head is not touched.
    """
    if pca_net.sfm is not None or sfm_net.sfm is None:
        raise ValueError("pca_net, sfm_net: expected a 'pca' SIRNet and an 'sfm' SIRNet")
    sfm_net.regressor.load_state_dict({k: v for k, v in pca_net.regressor.state_dict().items()
                                       if k != "shape_std" and not k.startswith("head.")}, strict=False)
    B = sfm_net.sfm.basis.detach().double()
    target = pca_net.id_basis.double() * pca_net.regressor.shape_std.double()
    shift = (pca_net.mean_shape - sfm_net.sfm.mean).reshape(-1, 1).double()
    sol = torch.linalg.lstsq(B, torch.cat([target, shift], 1)).solution
    M, d = sol[:, :-1], sol[:, -1]
    n_pca, n_sfm = pca_net.config.n_shape, sfm_net.config.n_shape
    W, b = pca_net.regressor.head.weight.double(), pca_net.regressor.head.bias.double()
    head_w, head_b = sfm_net.regressor.head.weight, sfm_net.regressor.head.bias
    head_w[:n_sfm] = (M @ W[:n_pca]).to(head_w)
    head_b[:n_sfm] = (M @ b[:n_pca] + d).to(head_b)
    head_w[n_sfm:] = W[n_pca:].to(head_w)
    head_b[n_sfm:] = b[n_pca:].to(head_b)


@torch.no_grad()
def init_class_weights(model: SIRNet, id_pool: dict, batch_size: int = 256) -> None:
    """Set each identity's recognition weight to the mean direction of its images' codes
    (the head's classes live in ``a``-space, which the SFM re-parametrisation changes)."""
    was_training = model.training
    model.eval()
    labels = id_pool["label"].long()
    sums = torch.zeros_like(model.head.weight)
    for lo in range(0, labels.numel(), batch_size):
        a = model(id_pool["image"][lo:lo + batch_size].float() / 255)["a_id"]
        sums.index_add_(0, labels[lo:lo + batch_size], a / a.norm(dim=1, keepdim=True).clamp_min(1e-12))
    model.head.weight.copy_(sums / sums.norm(dim=1, keepdim=True).clamp_min(1e-12))
    model.train(was_training)
