"""Training recipe of Gao et al. 2020 (:mod:`facelab.models.gao2020`): semi-supervised, adversarial,
two steps, on hybrid batches of ``lp`` (labelled) and ``collections`` (unlabelled) images.

Every training step sees a *hybrid batch*: ``batch_lp`` images of ``lp`` (the 300W-LP stand-in,
with exact 3DMM coefficients) and ``batch_col`` images of ``collections`` (the CelebA stand-in,
identity labels only). The model encodes each photo, decodes shape and albedo, renders the
face back (:meth:`~facelab.models.gao2020.Gao2020Model.render`) and is trained with the losses
of the paper's figure 2 (all means; see :mod:`facelab.losses`):

========================  ===========  ==================================================================
term (metric)             images       definition
========================  ===========  ==================================================================
``photo``, ``gdl``        all          eq. 5: masked ``||I_hat - I||^2`` and the gradient difference loss;
                                       mask = data face mask x (1 - occlusion mask) x rendered coverage
``lmk``, ``lmk_gdl``      all          eq. 6: landmark distance^2 and landmark-pair GDL, in 64-px units
                                       (:data:`LANDMARK_REF_WIDTH`), so the weights do not change with
                                       ``image_size``
``smooth``                all          eq. 9 (``smoothness="template"``) or the conventional Laplacian
``symm``                  all          eq. 10, albedo symmetry
``adv``                   all          eq. 11, ``-E[D(s_hat)]`` (WGAN-div generator side)
``shape``                 ``lp``       eq. 7, L1 to ``morphable.shape(alpha_id, alpha_exp)`` (the 3DMM
                                       shape, as the paper), face region
``pair``                  ``lp``       eq. 8 with facelab's neutral partner (``c_exp = 0`` is neutral)
``recog``                 collections  eq. 4, softmax + ``w_center`` x center loss on ``c_id``
========================  ===========  ==================================================================

The total is ``sum_k w_k * term_k`` (:class:`Gao2020TrainConfig`'s ``w_*``; ``recog`` is
``w_recog * (L_soft + w_center * L_center)``). The discriminator
(:class:`~facelab.models.gao2020.ShapeDiscriminator`) is the trainer's critic
(:class:`~facelab.train.trainer.CriticStep`): after every model update it takes ``n_critic``
RMSprop steps on the WGAN-div loss, real shapes sampled from the linear model vs the shapes the
model just reconstructed (detached).

Ablation switches: ``use_recog=False`` drops ``recog`` (and the identity head),
``use_adv=False`` drops ``adv`` and the discriminator, ``smoothness="laplacian"`` swaps eq. 9
for the conventional Laplacian.

**Warm-up** (facelab's addition, ``warmup_steps``; 0 switches it off): before ``step1`` the
encoder and the shape decoder train on ``lp`` images alone with the shape, pairwise and
landmark terms (landmarks projected with the predicted pose; nothing is rasterised, so a step
costs about a third of a full one). On a CPU budget of a few hundred full steps the shape
loss otherwise stays at the mean face's level: identity shows in a 64 px photo as sub-pixel
detail, and the encoder needs thousands of steps to find it. The shared warm-up
(``share_warmup=True``) holds none of the ablated terms (recognition, adversarial,
smoothness), so :func:`facelab.reproduce.gao2020` trains it once and every ablation continues
from it (``warmup_from``). Its cost: the ablated terms are then missing from most of a
variant's steps. The *geometric* warm-up (``share_warmup=False``, the standard profile) trains
every term that needs no rasterising, ablated ones included, on hybrid batches
(``batch_warmup`` ``lp`` + ``batch_col`` collection images), and each variant trains its own.

Two steps, as the paper: ``step1`` trains with the GCN albedo decoder (albedo from ``c_id``
only); ``step2`` continues from ``step1``'s weights (model, identity head, discriminator) with
``albedo="cnn"``, the U-Net-style decoder bridged to the encoder.

The run folder holds ``warmup/`` (if any), ``step1/`` and ``step2/`` (the :class:`~facelab.train.trainer.Trainer`'s
``last.pt``, ``metrics.csv``, ``metrics.jsonl``, ``config.json``), once a step is done its
checkpoint ``warmup.pt`` / ``step1.pt`` / ``step2.pt`` (a ``"gao2020"`` model: load it with
:func:`facelab.models.load_model`; ``extra["recognition"]`` holds the identity head and
``extra["critic"]`` the discriminator), and ``summary.json`` (the last logged row of each
step). Calling again resumes: finished steps are skipped, an interrupted one resumes exactly.

``quick`` renders small ``lp`` / ``collections`` pools once (cached) and trains a
``resnet_tiny`` at 64x64 on the 1353-vertex mesh on the CPU; ``standard`` trains the same
network on 64,000 labelled people, with a 3,600-step shared warm-up (the shape needs it: see
:data:`PROFILE_DEFAULTS`), every variant's own terms on from the first step after it, and
weights at which those terms pull; ``full``
streams the full-size suites into a ResNet-50 on the GPU.

**Real images** (``data.kind="real"``): the two kinds of rows come from folders instead of the
suites: ``data.labelled``, a folder in the 300W-LP layout (:class:`~facelab.data.LP300W`: image,
68 landmarks and the 3DMM coefficients ``Shape_Para`` / ``Exp_Para`` of the ``shape`` and
``pair`` terms), and ``data.collections``, one folder per person (CASIA-WebFace layout,
:class:`~facelab.data.ImageFolderIdentities`: image and identity label for ``recog``, and its
``landmarks.json`` for the landmark terms, which apply to every image). Images are resized whole
to ``image_size``. The coefficients refer to a morphable model: ``morphable=PATH`` (any
:func:`facelab.io.load_morphable` file; 3DDFA's ``BFM.mat`` for 300W-LP), by default
``data.labelled/model.npz`` (what ``facelab synth lp --format lp300w`` writes); when both exist they
must hold the same model. A model whose mesh is not the SynthFaces grid of ``resolution`` is
resampled onto it (:func:`facelab.models.gao2020.grid_morphable`), which keeps its coefficients'
meaning. The checkpoints record the file's path and content hash, and loading refuses a changed
file. Folders hold no segmentation masks: the photometric terms on their images look wherever
the face is rendered (a photo mask of ones), and the ``lp`` rows carry no identity label
(:data:`NO_LABEL`; the recognition term reads the collection rows only)::

    facelab synth lp --format lp300w --out LP
    facelab synth collections --format imagefolder --out COL
    facelab train gao2020 --set data.kind=real --set data.labelled=LP --set data.collections=COL \\
        --set morphable=LP/model.npz --out RUN

Held-out curve: with ``train.heldout_every`` (the standard profile's 100 steps; quick's 0) every
stage, warm-up included, logs as ``heldout/*`` columns of its ``metrics.csv`` the identity-shape
error on 48 ``lp`` identities the run never trains on against the mean face's
(:func:`heldout_shape_error`); ``data.kind="real"`` logs none.

Book chapter: ``book/09_gao2020.ipynb``.
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from facelab.checks import check_choice, check_image_size, check_positive
from facelab.config import replace_fields, resolve_profile, torch_threads
from facelab.train import distributed as D
from facelab.train import pools
from facelab.train.speed import ENCODER_PRECISIONS, optimizer_options, speed_up_encoder
from facelab.train.stages import Stage, copy_atomic, run_stages
from facelab.io.checkpoint import load_checkpoint, save_checkpoint
from facelab.losses.adversarial import WGAN_DIV_P
from facelab.train.trainer import (
    LOOP_DEFAULTS, CriticStep, LoopConfig, StepLoader, TrainConfig, Trainer, cosine_lr_factor, step_indices,
)

MODEL_NAME = "gao2020"
#: the trainer's module (model + identity head); its ``last.pt`` files are internal to a run
TRAIN_MODEL_NAME = "gao2020_train"
STEPS = ("step1", "step2")
WARMUP = "warmup"
STEP_ALBEDO = {WARMUP: "gcn", "step1": "gcn", "step2": "cnn"}
SMOOTHNESS = ("template", "laplacian")
SOURCE_LP, SOURCE_COL = 0, 1
LP_KEYS = ("image", "label", "alpha_id", "alpha_exp", "landmarks2d", "face_mask", "occlusion_mask")
COL_KEYS = ("image", "label", "landmarks2d", "face_mask", "occlusion_mask")
#: landmark losses are measured in units of ``image width / LANDMARK_REF_WIDTH`` px (= px at 64 px)
LANDMARK_REF_WIDTH = 64
#: the collections' step indices use ``seed + COL_SEED_OFFSET`` (another order than lp's)
COL_SEED_OFFSET = 1
#: the warm-up's cosine schedule ends at this share of ``warmup_lr``
WARMUP_FINAL_LR_FRACTION = 0.05
MASK_LEVELS = 255  # the pools keep the photo masks as uint8
WARMUP_TERMS = ("shape", "pair", "lmk")
#: where the images come from: generated ``lp`` / ``collections`` suites, or two folders on disk
DATA_KINDS = ("synth", "real")
#: the identity label of a labelled-folder row (300W-LP has none; only collection rows are recognised)
NO_LABEL = -1
#: the landmark terms compare all 68 iBUG points
N_LANDMARKS = 68
#: the morphable model an exported 300W-LP-layout folder holds (facelab.data.lp300w)
LP_MODEL_FILE = "model.npz"
WEIGHTS = ("w_photo", "w_gdl", "w_lmk", "w_lmk_gdl", "w_shape", "w_pair", "w_smooth", "w_symm", "w_recog", "w_adv")

PROFILE_DEFAULTS = {
    # quick: the pools render in ~20 s on one core the first time (then cached). One thread:
    # a step is hundreds of small ops, and with 2 threads on a 2-core machine where another
    # process holds a core, each op waits on OpenMP's barrier (measured 0.9 -> 11.8 s/step)
    # lp: many identities with a few photos each, so that the shape warm-up generalises
    "quick": dict(backbone="resnet_tiny", image_size=(64, 64), resolution="quick", lp_identities=500,
                  lp_images_per_identity=8, col_identities=150, col_images_per_identity=16, steps=(300, 100),
                  pool=True, num_workers=0, num_threads=1, warmup_steps=1500, share_warmup=True,
                  n_critic=1, critic_p=WGAN_DIV_P, w_recog=0.1, w_adv=0.001, w_smooth=0.1, w_photo_step2=1.0,
                  train=dict(LOOP_DEFAULTS, lr=5e-4, weight_decay=0.0, ckpt_every=50, diagnose_every=20)),
    # standard: trains until the shape is learnt and the ablated terms pull (chapter 9 shows the
    # measurements). On the earlier standard settings (500 labelled people x 8 photos, an unshared
    # 1,200-step warm-up, n_critic 5) the model never learnt the identity shape: its held-out error
    # was 0.99x the mean face's, so no ablation could differ. Geometric warm-up pilots found the
    # shape needs many labelled people and longer: 64,000 x 1 for 3,600 steps reached 0.84x held out
    # (500 x 8 memorised its people; recognition on from the first step slowed it to 0.92x). So the
    # warm-up is one shared pre-training on the labelled terms (the part a pre-trained backbone plays
    # in the paper), and each variant trains steps 1 and 2 from it with its own terms on from their
    # first step. n_critic 1: the adversary stayed active (>= 10 % of the shape decoder's gradient
    # in 89 % of the measurements) at a quarter of n_critic 5's cost. w_photo_step2 10: with the
    # photometric weight 1 the CNN albedo decoder gave every person the same albedo (tone
    # correlation with the truth -0.49); at 10 it follows the person (0.85). Own steps 3,200 + 800
    # (four times the first standard run's 800 + 200): at 800 + 200 the removed terms pulled in only
    # 61 % (recognition), 45 % (adversary) and 70 % (smoothness) of the measurements, under the 80 %
    # a claim needs; at four times they pull in 81-92 %. w_smooth 4 (was 2): at 2 the smoothness
    # prior's share of the shape decoder's gradient sat on the 10 % line in the four-times pilot
    "standard": dict(backbone="resnet_tiny", image_size=(64, 64), resolution="quick", lp_identities=64_000,
                     lp_images_per_identity=1, col_identities=50, col_images_per_identity=64, steps=(3200, 800),
                     pool=True, num_workers=0, num_threads=1, warmup_steps=3600, share_warmup=True,
                     n_critic=1, critic_p=2.0, w_recog=0.3, w_adv=0.003, w_smooth=4.0, w_photo_step2=10.0,
                     train=dict(LOOP_DEFAULTS, lr=5e-4, weight_decay=0.0, ckpt_every=100, diagnose_every=50,
                                heldout_every=100)),
    # full: the paper's ResNet-50, suites at their full size, streamed
    "full": dict(backbone="resnet50", image_size=(128, 128), resolution="default", lp_identities=0,
                 lp_images_per_identity=0, col_identities=0, col_images_per_identity=0, steps=(40_000, 20_000),
                 pool=False, num_workers=4, num_threads=-1, warmup_steps=0, share_warmup=True,
                 n_critic=1, critic_p=WGAN_DIV_P, w_recog=0.1, w_adv=0.001, w_smooth=0.1, w_photo_step2=1.0,
                 train=dict(LOOP_DEFAULTS, lr=1e-4, weight_decay=0.0, ckpt_every=50, diagnose_every=500)),
}
#: the loop options Gao et al.'s recipe takes from elsewhere: {field: what it uses instead}
UNUSED_LOOP_OPTIONS = {"batch_size": "batch_lp + batch_col images per step, batch_warmup in the warm-up"}


@dataclass
class Gao2020DataConfig:
    """Where :func:`train_gao2020` reads its images: the ``data`` group (``--set data.kind=real``).

    Attributes:
        kind: ``"synth"`` (the generated ``lp`` and ``collections`` suites of the recipe's
            ``lp_*`` / ``col_*`` sizes) or ``"real"`` (the two folders below; those sizes are not used).
        labelled: ``kind="real"``: the labelled folder in the 300W-LP layout (``NAME.jpg`` or
            ``.png`` next to ``NAME.mat`` with ``Shape_Para``, ``Exp_Para`` and ``pt3d_68`` or a
            68-point ``pt2d``, any sub-folders; :class:`~facelab.data.LP300W`). Every image needs
            all 68 landmarks.
        collections: ``kind="real"``: the folder of identity folders (``ROOT/<identity>/<image>.jpg``,
            :class:`~facelab.data.ImageFolderIdentities`) with its ``landmarks.json``; labels are
            the sorted folder names' ranks.

    >>> Gao2020DataConfig().kind
    'synth'
    >>> Gao2020DataConfig(kind="real", labelled="LP")
    Traceback (most recent call last):
    ...
    ValueError: data.collections: data.kind='real' needs the folder of identity folders (ROOT/<identity>/<image>.jpg, with landmarks.json)
    """

    kind: str = "synth"
    labelled: str = ""
    collections: str = ""

    def __post_init__(self) -> None:
        pools.check_data_folders(self.kind, DATA_KINDS, {
            "labelled": (self.labelled, "the labelled folder (300W-LP layout: NAME.jpg next to NAME.mat)"),
            "collections": (self.collections, "the folder of identity folders (ROOT/<identity>/<image>.jpg, with "
                                              "landmarks.json)")})


@dataclass
class Gao2020TrainConfig:
    """Options of :func:`train_gao2020`. None takes the profile's value (:data:`PROFILE_DEFAULTS`).

    Attributes:
        profile: ``"quick"`` (CPU, minutes), ``"standard"`` (CPU, up to ~45 min of one core per
            variant) or ``"full"`` (GPU).
        out_dir: the run folder ("" = ``runs/gao2020-<profile>``).
        train: the training-loop options of every step (:class:`~facelab.train.trainer.LoopConfig`;
            ``--set train.lr=1e-4``). ``seed`` seeds the suites, the initial weights, the batch
            order and the critic's real samples. ``lr`` is the Adam learning rate of the
            encoder-decoder (the paper: 1e-4; ``quick`` uses 5e-4: its few hundred CPU steps are a
            tiny fraction of the paper's 200 epochs, and even at 5e-4 the shape terms move slowly
            in that budget). ``grad_clip`` is the max global gradient norm of the encoder-decoder
            (0: off); ``weight_decay``: Adam's (0 in both profiles). ``diagnose_every``: training-step
            (not warm-up) steps between measurements of each weighted loss term's share of the
            gradient on the encoder and the two decoders (:mod:`facelab.train.diagnostics`; 0:
            never). ``heldout_every``: steps between measurements of the identity-shape error on
            ``lp`` identities the run never trains on, in every stage (:func:`heldout_shape_error`,
            logged as ``heldout/*`` columns; 0: never; standard 100, quick 0). ``batch_size`` is
            not used (``batch_lp + batch_col``, ``batch_warmup``).
        backbone: encoder trunk (``"resnet_tiny"``, ``"resnet18"``, ``"resnet50"``).
        image_size: ``(H, W)`` px of the photos and of the rendered reconstruction.
        resolution: SynthFaces mesh preset.
        cheb_k: Chebyshev order of the graph convolutions (0: the model's default, the paper's 6).
            The graph coders dominate a CPU step and cost about linearly in it.
        gcn_channels: graph-decoder widths, coarsest first (empty: the model's default).
        data: where the images come from (:class:`Gao2020DataConfig`: ``data.kind``,
            ``data.labelled``, ``data.collections``; module docstring). With ``data.kind="real"``
            the recognition loss has one class per identity folder.
        morphable: a morphable-model file (any :func:`facelab.io.load_morphable` reads: ``.npz``,
            BFM, SFM, FLAME, 3DDFA's ``BFM.mat``) with 68 landmark vertices: the model of the
            labelled coefficients, the decoders' template and the critic's real shapes, resampled
            onto the grid of ``resolution`` when its mesh differs. None: SynthFaces at
            ``resolution`` (``data.kind="synth"``; a file must then hold that very model) or, with
            ``data.kind="real"``, ``data.labelled/model.npz``. Checkpoints record its path and
            content hash (:func:`facelab.models.gao2020.gao2020_morphable_record`).
        lp_identities, lp_images_per_identity: size of the labelled ``lp`` suite (0: the
            suite's default).
        col_identities, col_images_per_identity: size of the unlabelled ``collections`` suite
            (same convention); ``col_identities`` is the number of classes of the recognition loss.
        batch_lp, batch_col: images of each suite in a hybrid batch.
        steps: optimisation steps of ``step1`` (GCN albedo) and ``step2`` (CNN albedo).
        warmup_steps: steps of the shape warm-up before ``step1`` (module docstring; 0: none;
            the profiles': quick 1500, standard 3600, full 0).
        batch_warmup: ``lp`` images per warm-up batch.
        warmup_lr: peak learning rate of the warm-up (cosine decay to
            :data:`WARMUP_FINAL_LR_FRACTION` of it).
        warmup_from: a ``warmup.pt`` of another run with the same model config to start
            ``step1`` from, instead of training the warm-up here (the ablations share one).
        share_warmup: True (the profiles): the warm-up holds only the labelled shape terms, so
            every ablation can start from one warm-up. False: the *geometric*
            warm-up, every term that needs no rasterising (the labelled terms, projected
            landmarks on every image, smoothness, recognition on the collections' images, the
            adversary and its critic), so a removed term is missing from all of its variant's
            steps; ``step1`` then starts from the warm-up's identity head and critic too.
        critic_lr: RMSprop learning rate of the discriminator (the paper: 5e-5).
        n_critic: discriminator updates per model update (the profiles: 1).
        critic_p: the WGAN-div penalty's exponent ``p`` (Wu et al.'s 6 in quick and full; 2 in
            standard: with the critic's gradient norms below 1, ``||grad||^6`` measured ~1e-4 on
            the quick run and held nothing, while its Wasserstein estimate kept rising).
        w_photo, w_gdl, w_lmk, w_lmk_gdl, w_shape, w_pair, w_smooth, w_symm, w_recog, w_adv:
            loss weights (see the module docstring; the paper gives none). ``w_center`` is the
            center loss's weight inside the recognition loss (eq. 4's ``lambda_center``).
            Defaults balance the terms' gradients on the encoder after a few quick steps
            (recognition, landmarks, shape and pair of the same order); ``w_adv = 1e-3``
            because at ``1e-2`` the generator outran the discriminator within ~100 quick steps
            (the critic's Wasserstein estimate turned negative and the shapes grew noisy).
            ``w_recog``, ``w_adv``, ``w_smooth`` are the profile's (quick and full 0.1, 1e-3,
            0.1; standard 0.3, 3e-3, 2): on the standard settings the recognition and
            adversarial shares of the gradient on the module each shapes stay above 10 %
            (:mod:`facelab.train.diagnostics`), the smoothness share only in the warm-up (at
            quick's weights it was ~1 % and the recognition head stayed at chance); at
            ``w_adv = 1e-2`` the adversary took ~40 % of the shape decoder's gradient and the
            warm-up's shape loss rose instead of falling.
        w_photo_step2: the photometric weight while the CNN albedo decoder trains (``step2``;
            ``w_photo`` is step 1's). The profiles': quick and full 1, standard 10 (at 1 the
            standard run's CNN albedo decoder gave every person the same albedo).
        use_recog: train with the recognition loss (ablation: False).
        use_adv: train with the adversarial loss and the discriminator (ablation: False).
        smoothness: ``"template"`` (eq. 9) or ``"laplacian"`` (the conventional loss; ablation).
        pool: pre-render the suites once and sample batches from memory, else stream them.
        cache_pool: keep the rendered pools on disk under :func:`facelab.config.cache_dir`.
        num_workers: ``DataLoader`` workers per suite when streaming.
        num_threads: torch CPU threads while training (-1: leave them as they are).
        channels_last, encoder_precision, compile_encoder, fused_optimizer: training speed
            options (:mod:`facelab.train.speed`; off by default, ``facelab bench train`` measures them).
            The encoder's options apply to its ``feature_maps``, which the model calls.

    >>> Gao2020TrainConfig().backbone, Gao2020TrainConfig(profile="full").train.lr
    ('resnet_tiny', 0.0001)
    >>> Gao2020TrainConfig(smoothness="cotangent")
    Traceback (most recent call last):
    ...
    ValueError: smoothness: unknown value 'cotangent'; expected one of 'template', 'laplacian'
    """

    profile: str = "quick"
    out_dir: str = ""
    train: LoopConfig = field(default_factory=LoopConfig)
    backbone: str | None = None
    image_size: tuple[int, ...] | None = None
    resolution: str | None = None
    cheb_k: int = 0
    gcn_channels: tuple[int, ...] = ()
    lp_identities: int | None = None
    lp_images_per_identity: int | None = None
    col_identities: int | None = None
    col_images_per_identity: int | None = None
    data: Gao2020DataConfig = field(default_factory=Gao2020DataConfig)
    morphable: str | None = None
    batch_lp: int = 16
    batch_col: int = 16
    steps: tuple[int, ...] | None = None
    warmup_steps: int | None = None
    batch_warmup: int = 32
    warmup_lr: float = 1e-3
    warmup_from: str = ""
    share_warmup: bool | None = None
    critic_lr: float = 5e-5
    n_critic: int | None = None
    critic_p: float | None = None
    w_photo: float = 1.0
    w_photo_step2: float | None = None
    w_gdl: float = 1.0
    w_lmk: float = 0.01
    w_lmk_gdl: float = 0.01
    w_shape: float = 1.0
    w_pair: float = 1.0
    w_smooth: float | None = None
    w_symm: float = 1.0
    w_recog: float | None = None
    w_center: float = 0.003
    w_adv: float | None = None
    use_recog: bool = True
    use_adv: bool = True
    smoothness: str = "template"
    pool: bool | None = None
    cache_pool: bool = True
    num_workers: int | None = None
    num_threads: int | None = None
    channels_last: bool = False
    encoder_precision: str = "float32"
    compile_encoder: bool = False
    fused_optimizer: bool = False

    def __post_init__(self) -> None:
        check_choice(self.profile, "profile", tuple(PROFILE_DEFAULTS))
        check_choice(self.encoder_precision, "encoder_precision", ENCODER_PRECISIONS)
        check_choice(self.smoothness, "smoothness", SMOOTHNESS)
        resolve_profile(self, PROFILE_DEFAULTS[self.profile])
        self.train.check(unused=UNUSED_LOOP_OPTIONS)
        self.image_size = check_image_size(self.image_size)
        if isinstance(self.data, dict):  # e.g. rebuilt from a checkpoint's JSON
            self.data = Gao2020DataConfig(**self.data)
        if not isinstance(self.data, Gao2020DataConfig):
            raise TypeError(f"data: expected a Gao2020DataConfig, got {type(self.data).__name__}")
        self.steps = tuple(self.steps)
        if len(self.steps) != len(STEPS):
            raise ValueError(f"steps: expected one value per training step ({len(STEPS)}: {', '.join(STEPS)}), got {self.steps}")
        for steps in self.steps:
            check_positive(steps, "steps", integer=True)
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: expected an int >= 0 (None: the profile's), got {self.warmup_steps!r}")
        check_positive(self.batch_warmup, "batch_warmup", integer=True)
        check_positive(self.warmup_lr, "warmup_lr")
        for name in ("batch_col", "n_critic"):
            check_positive(getattr(self, name), name, integer=True)
        if not isinstance(self.batch_lp, int) or self.batch_lp < 2:
            raise ValueError(f"batch_lp: the pairwise loss needs >= 2 labelled images per batch, got {self.batch_lp}")
        if not isinstance(self.cheb_k, int) or self.cheb_k < 0:
            raise ValueError(f"cheb_k: expected an int >= 1 (0: the model's default), got {self.cheb_k!r}")
        self.gcn_channels = tuple(self.gcn_channels)
        check_positive(self.critic_lr, "critic_lr")
        if isinstance(self.critic_p, bool) or not isinstance(self.critic_p, (int, float)) or not self.critic_p > 1:
            raise ValueError(f"critic_p: the WGAN-div exponent must be a number > 1, got {self.critic_p!r}")
        if not isinstance(self.share_warmup, bool):
            raise ValueError(f"share_warmup: expected True or False (None: the profile's), got {self.share_warmup!r}")
        for name in WEIGHTS + ("w_center", "w_photo_step2"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
        if not self.out_dir:
            self.out_dir = f"runs/gao2020-{self.profile}"

    def train_config(self, stage: str) -> TrainConfig:
        """The :class:`TrainConfig` of training step ``stage`` (``"warmup"`` / ``"step1"`` / ``"step2"``), in ``out_dir/<stage>``."""
        check_choice(stage, "stage", (WARMUP,) + STEPS)
        if stage == WARMUP:
            batch = self.batch_warmup + (0 if self.share_warmup else self.batch_col)
            steps, lr = self.warmup_steps, self.warmup_lr
        else:
            steps, batch, lr = self.steps[STEPS.index(stage)], self.batch_lp + self.batch_col, self.train.lr
        shared = stage == WARMUP and self.share_warmup  # the shared warm-up holds none of the watched terms
        return self.train.stage(steps, Path(self.out_dir) / stage, self.profile, batch_size=batch, lr=lr,
                                diagnose_every=0 if shared else self.train.diagnose_every)


# ------------------------------------------------------------------ model
def model_config(cfg: Gao2020TrainConfig, albedo: str = "gcn", morphable_record: dict | None = None) -> dict:
    """The ``"gao2020"`` checkpoint's model config (:func:`facelab.models.gao2020.gao2020_model_config`).

    ``morphable_record`` (:func:`facelab.models.gao2020.gao2020_morphable_record` of ``cfg.morphable``)
    is stored as ``"morphable"``; without it the model is SynthFaces at ``resolution``.

    >>> model_config(Gao2020TrainConfig(), "cnn")["model"]["albedo"]
    'cnn'
    """
    from facelab.models.gao2020 import Gao2020Config, gao2020_model_config
    from facelab.morphable import SynthFacesConfig

    check_choice(albedo, "albedo", tuple(STEP_ALBEDO.values()))
    sizes = {k: v for k, v in (("cheb_k", cfg.cheb_k), ("gcn_channels", tuple(cfg.gcn_channels))) if v}
    # the profile's architecture (quick: narrower graph layers, Chebyshev order 3), then the config's choices
    model_cfg = Gao2020Config.for_profile(cfg.profile, backbone=cfg.backbone, image_size=tuple(cfg.image_size),
                                          resolution=cfg.resolution, albedo=albedo, **sizes)
    # the suites' world (facelab.data.synth.PhotoCollection) is SynthFacesConfig(resolution=...)
    out = gao2020_model_config(model_cfg, SynthFacesConfig(resolution=cfg.resolution))
    if morphable_record is not None:
        out["morphable"] = dict(morphable_record)
    return out


class Gao2020Trainee(nn.Module):
    """What the trainer trains: the model plus the identity head of the recognition loss.

    Args:
        model: a :class:`~facelab.models.gao2020.Gao2020Model`.
        recognition: a :class:`~facelab.losses.recognition.RecognitionLoss` on ``c_id``, or
            None (``use_recog=False``).

    Its ``state_dict`` has ``model.*`` and ``recognition.*`` keys; the exported
    ``step1.pt`` / ``step2.pt`` hold the model's own (see :func:`export_checkpoint`).
    """

    def __init__(self, model: nn.Module, recognition: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.recognition = recognition

    def forward(self, images: torch.Tensor) -> dict:
        return self.model(images)


@contextmanager
def _frozen(module: nn.Module | None):
    """``module``'s parameters take no gradient inside the block (the generator's view of the critic)."""
    params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class ShapeCritic(CriticStep):
    """The discriminator's WGAN-div updates (Gao et al. 2020, eq. 11; Wu et al. 2018).

    Real shapes: :func:`~facelab.losses.adversarial.sample_real_shapes` from the linear model
    (global RNG: checkpointed by the trainer, per rank under torchrun). Fake shapes: the
    reconstructions of the step's model forward, detached (:class:`Gao2020Loss` hands them
    over in :attr:`fake`); without them (a loss that did not run) the model reconstructs the
    batch under ``no_grad``. Metrics: ``critic_loss``, ``d_wdist`` (the Wasserstein
    estimate ``E[D(real)] - E[D(fake)]``) and ``d_penalty``.
    """

    def __init__(self, discriminator: nn.Module, morphable, lr: float, n_critic: int = 1, p: float = WGAN_DIV_P) -> None:
        super().__init__(discriminator, torch.optim.RMSprop(discriminator.parameters(), lr=lr), n_critic)
        self.morphable, self.p = morphable, p
        self.fake: torch.Tensor | None = None

    def loss(self, model, batch, step, k):
        from facelab.losses.adversarial import sample_real_shapes, wgan_div_critic_loss

        fake = self.fake
        if fake is None:
            net = model.model if isinstance(model, Gao2020Trainee) else model
            with torch.no_grad():
                codes = net.encode(batch["image"])
                fake = net.decode_shape(codes["c_id"], codes["c_exp"])
        real = sample_real_shapes(self.morphable, fake.shape[0]).to(fake.device, fake.dtype)
        loss, parts = wgan_div_critic_loss(self.critic, real, fake, p=self.p, return_parts=True)
        return loss, {"d_wdist": parts["wdist"], "d_penalty": parts["penalty"]}

    def step(self, model, batch, step):
        try:
            return super().step(model, batch, step)
        finally:
            self.fake = None


def labelled_shape_terms(model, morphable, shape, c_id, c_exp, alpha_id, alpha_exp) -> dict[str, torch.Tensor]:
    """``shape`` (eq. 7, L1 to the 3DMM shape) and ``pair`` (eq. 8) on the labelled rows.

    ``shape (N, V, 3)`` mm, ``c_id``, ``c_exp``: the model's outputs for the ``N`` labelled
    images; ``alpha_id (N, K_id)``, ``alpha_exp (N, K_exp)``: their 3DMM coefficients.
    """
    from facelab.losses.shape import pairwise_shape_loss, shape_l1

    with torch.no_grad():
        target = morphable.shape(alpha_id, alpha_exp).to(shape.dtype)
    return {"shape": shape_l1(shape, target, model.face_mask),
            "pair": pairwise_shape_loss(model.decode_shape, c_id, c_exp, alpha_id, alpha_exp, morphable,
                                        neutral=True, vertex_mask=model.face_mask)}


class Gao2020Loss:
    """The encoder-decoder's loss on a hybrid batch: ``(trainee, batch) -> (loss, metrics)``.

    Args:
        cfg: the recipe config (weights and switches).
        morphable: the linear model (targets of ``shape`` and ``pair``), on the training device.
        critic: the :class:`ShapeCritic` (``use_adv``), else None.

    Batch (see :func:`hybrid_batches`): ``image (B, 3, H, W)`` [0, 1], ``photo_mask (B, 1, H, W)``
    in [0, 1] (face and not occluded), ``landmarks2d (B, 68, 2)`` px, ``source (B,)``
    (:data:`SOURCE_LP` / :data:`SOURCE_COL`), ``label (B,)`` (identity within its suite),
    ``alpha_id (B, K_id)``, ``alpha_exp (B, K_exp)`` (zeros for collection rows).

    Metrics: every unweighted term (module docstring), ``softmax``, ``center``, ``acc`` with
    ``use_recog``. Plain class, not a module: under torchrun only the trainee is synchronised.
    With ``return_terms`` it also returns ``{name: w_name * term}`` for the trainer's term
    diagnostics.
    """

    def __init__(self, cfg: Gao2020TrainConfig, morphable, critic: ShapeCritic | None = None,
                 return_terms: bool = False, render: bool = True) -> None:
        if cfg.use_adv and critic is None:
            raise ValueError("critic: use_adv=True needs the ShapeCritic")
        self.cfg, self.morphable, self.critic = cfg, morphable, critic if cfg.use_adv else None
        self.return_terms, self.render = return_terms, render

    def __call__(self, trainee: Gao2020Trainee, batch: dict) -> tuple[torch.Tensor, dict]:
        from facelab.losses.adversarial import wgan_div_generator_loss
        from facelab.losses.landmark import landmark_gdl, landmark_loss
        from facelab.losses.photometric import gradient_difference_loss, photometric_loss
        from facelab.losses.shape import albedo_symmetry, laplacian_smoothness, template_smoothness

        cfg, model = self.cfg, trainee.model
        images = batch["image"]
        codes = model.encode(images)
        features = codes.pop("features")
        out = {**codes, "shape": model.decode_shape(codes["c_id"], codes["c_exp"]), "pose": model.pose(codes["c_pose"])}
        shape = out["shape"]
        terms: dict[str, torch.Tensor] = {}
        unit = images.shape[-1] / LANDMARK_REF_WIDTH  # px per landmark unit
        if self.render:
            out.update(albedo=model.decode_albedo(codes["c_id"], features), sh=model.light(codes["c_lgt"]))
            rendered = model.render(out)
            mask = batch["photo_mask"] * rendered.mask
            terms["photo"] = photometric_loss(rendered.image, images, mask, gdl_weight=0.0)
            terms["gdl"] = gradient_difference_loss(rendered.image, images, mask)
            lm_pred, lm_true = rendered.landmarks2d / unit, batch["landmarks2d"] / unit
            terms["lmk"] = landmark_loss(lm_pred, lm_true)
            terms["lmk_gdl"] = landmark_gdl(lm_pred, lm_true)
        else:  # the geometric warm-up: landmark vertices projected with the predicted pose, nothing rasterised
            terms["lmk"] = landmark_loss(_projected_landmarks(model, out) / unit, batch["landmarks2d"] / unit)
        if cfg.smoothness == "template":
            terms["smooth"] = template_smoothness(shape, model.template, model.edge_index)
        else:
            terms["smooth"] = laplacian_smoothness(shape, model.edge_index)
        if self.render:
            terms["symm"] = albedo_symmetry(out["albedo"], model.symmetry)

        lp = batch["source"] == SOURCE_LP
        terms.update(labelled_shape_terms(model, self.morphable, shape[lp], out["c_id"][lp], out["c_exp"][lp],
                                          batch["alpha_id"][lp], batch["alpha_exp"][lp]))
        metrics: dict[str, torch.Tensor] = {}
        if cfg.use_recog:
            col = ~lp
            recog, parts = trainee.recognition(out["c_id"][col], batch["label"][col])
            terms["recog"] = recog
            metrics.update(parts)
        if self.critic is not None:
            with _frozen(self.critic.critic):
                terms["adv"] = wgan_div_generator_loss(self.critic.critic, shape)
            self.critic.fake = shape.detach()

        weighted = {name: getattr(cfg, f"w_{name}") * value for name, value in terms.items()}
        loss = sum(weighted.values())
        metrics = {**{k: v.detach() for k, v in terms.items()}, **metrics}
        if self.return_terms:
            return loss, metrics, weighted
        return loss, metrics


def _projected_landmarks(model, out: dict) -> torch.Tensor:
    """``(B, 68, 2)`` px: the predicted shape's landmark vertices under the predicted pose (no rasterising)."""
    from facelab.camera.projection import WeakPerspectiveCamera

    return WeakPerspectiveCamera.from_pose(out["pose"]).project(out["shape"])[:, model.landmarks.long(), :2]


class WarmupLoss:
    """The warm-up's loss on a batch of ``lp`` images: ``w_shape * shape + w_pair * pair + w_lmk * lmk``.

    The same terms as :class:`Gao2020Loss` (landmarks in the same units), but the landmarks
    are the predicted shape's landmark vertices projected with the predicted pose, so nothing
    is rasterised. Batch: ``image``, ``landmarks2d``, ``alpha_id``, ``alpha_exp`` (see
    :func:`warmup_batches`). Metrics: the three unweighted terms.
    """

    def __init__(self, cfg: Gao2020TrainConfig, morphable) -> None:
        self.cfg, self.morphable = cfg, morphable

    def __call__(self, trainee: Gao2020Trainee, batch: dict) -> tuple[torch.Tensor, dict]:
        from facelab.losses.landmark import landmark_loss
        model, images = trainee.model, batch["image"]
        codes = model.encode(images)
        shape = model.decode_shape(codes["c_id"], codes["c_exp"])
        unit = images.shape[-1] / LANDMARK_REF_WIDTH
        landmarks = _projected_landmarks(model, {"shape": shape, "pose": model.pose(codes["c_pose"])})
        terms = {**labelled_shape_terms(model, self.morphable, shape, codes["c_id"], codes["c_exp"],
                                        batch["alpha_id"], batch["alpha_exp"]),
                 "lmk": landmark_loss(landmarks / unit, batch["landmarks2d"] / unit)}
        loss = sum(getattr(self.cfg, f"w_{name}") * value for name, value in terms.items())
        return loss, {k: v.detach() for k, v in terms.items()}


# -------------------------------------------------------------------- data
def _suites(cfg: Gao2020TrainConfig):
    from facelab.data import make_suite

    def suite(name: str, n_ids: int, per_id: int):
        sizes = {k: v for k, v in (("n_identities", n_ids), ("images_per_identity", per_id)) if v}
        return make_suite(name, profile=cfg.profile, image_size=tuple(cfg.image_size), resolution=cfg.resolution,
                          seed=cfg.train.seed, **sizes)

    return (suite("lp", cfg.lp_identities, cfg.lp_images_per_identity),
            suite("collections", cfg.col_identities, cfg.col_images_per_identity))


def _photo_mask(face_mask: torch.Tensor, occlusion_mask: torch.Tensor) -> torch.Tensor:
    """Where the photometric loss looks: the face, minus occluders (the paper's segmentation mask)."""
    return face_mask * (1 - occlusion_mask)


def render_pools(cfg: Gao2020TrainConfig, lp_suite, col_suite) -> tuple[dict, dict]:
    """The ``lp`` and ``collections`` pools, in memory (images and photo masks as uint8).

    Rendered once and cached under ``cache_dir()/pools`` (:func:`facelab.train.pools.render_pool`).
    """
    out = []
    for suite, keys in ((lp_suite, LP_KEYS), (col_suite, COL_KEYS)):
        pool = pools.render_pool(suite, keys, MODEL_NAME, cache=cfg.cache_pool, progress=cfg.train.progress)
        mask = _photo_mask(pool.pop("face_mask").float(), pool.pop("occlusion_mask").float())
        pool["photo_mask"] = (mask.clamp(0, 1) * MASK_LEVELS).round().to(torch.uint8)
        out.append(pool)
    return out[0], out[1]


def heldout_set(cfg: Gao2020TrainConfig) -> dict[str, torch.Tensor]:
    """The photos of the held-out curve: one ``lp`` photo of each of the
    :data:`~facelab.train.heldout.HELDOUT_IDENTITIES` identities right after the run's
    ``lp_identities`` (:func:`facelab.train.heldout.heldout_photos`), as the encoder sees the
    labelled rows in training: whole photos of ``image_size``, rounded to 8 bits with ``pool``
    (the pools store them so; streamed photos are not).

    Returns ``image (48, 3, H, W)`` float [0, 1], ``shape_identity (48, V, 3)`` mm and ``identity (48,)``
    world ids.
    """
    from facelab.data.suites import SuiteConfig
    from facelab.train.heldout import heldout_photos

    n_train = SuiteConfig(suite="lp", profile=cfg.profile, n_identities=cfg.lp_identities or 0).n_identities
    return heldout_photos("lp", cfg, n_train, tuple(cfg.image_size), quantise=bool(cfg.pool))


def heldout_shape_error(cfg: Gao2020TrainConfig, morphable, photos: dict | None = None):
    """``model -> {"rmse_mm", "mean_face_rmse_mm", "shape"}`` (mm) on ``lp`` identities the run never
    trains on (:func:`heldout_set`), the trainer's held-out curve (``train.heldout_every``); None with
    ``data.kind="real"`` (the folders' identities and shapes are not a suite's) or ``heldout_every=0``.

    The shape measured is the identity shape the scores take: the identity code through the
    shape decoder at the neutral expression, ``neutral_shape(c_id) = decode_shape(c_id, 0)``.
    Every stage has that decoder (the warm-up trains it first), so every stage logs the curve.
    ``model`` is the trainer's :class:`Gao2020Trainee` or a bare :class:`~facelab.models.gao2020.Gao2020Model`.

    * ``rmse_mm``: per-vertex RMS (mm) over ``morphable.face_mask`` after a rigid alignment
      (:func:`facelab.train.heldout.aligned_rmse`), averaged over identities: a reconstruction
      error that pose and position cannot game;
    * ``mean_face_rmse_mm``: the same for the mean face, the floor a network without identity
      sits at;
    * ``shape``: the ``shape`` term's measure (eq. 7, mean absolute coordinate error over the
      face region, unaligned) of the neutral shape against the true identity shape, so that
      the training and held-out curves can be read side by side.

    ``photos``: :func:`heldout_set`'s dict when already rendered (the stages share one).

    >>> heldout_shape_error(Gao2020TrainConfig(), None) is None  # quick: heldout_every 0
    True
    """
    from facelab.losses.shape import shape_l1
    from facelab.train.heldout import shape_error

    if cfg.data.kind != "synth" or not cfg.train.heldout_every:
        return None
    photos = photos if photos is not None else heldout_set(cfg)
    face = morphable.face_mask.bool().cpu()

    def identity_shape(model, images: torch.Tensor) -> torch.Tensor:
        net = model.model if isinstance(model, Gao2020Trainee) else model
        return net.neutral_shape(net.encode(images)["c_id"])

    def shape_term(shapes: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
        return {"shape": float(shape_l1(shapes, truth, face))}

    return shape_error(photos, morphable.mean_shape, face, identity_shape, extra=shape_term)


class FolderRows:
    """A folder's images as rows of the hybrid batches: a collection of ``len`` and ``batch(index)``.

    ``batch(index (B,))`` gives ``image (B, 3, H, W)`` float [0, 1], ``label (B,)`` long (the
    dataset's, else :data:`NO_LABEL`), ``landmarks2d (B, 68, 2)`` px, ``photo_mask (B, 1, H, W)``
    (ones: a folder has no segmentation) and, for a labelled folder, ``alpha_id (B, K_id)`` and
    ``alpha_exp (B, K_exp)`` mm (:data:`LP_KEYS` / :data:`COL_KEYS` with the mask combined).

    Args:
        dataset: an :class:`~facelab.data.LP300W` with its model (``labelled=True``) or an
            :class:`~facelab.data.ImageFolderIdentities` with landmarks.
        labelled: whether the rows need the 3DMM coefficients (``lp`` rows).

    Raises (from :meth:`batch`): ``ValueError`` naming an image without all 68 landmarks or,
    labelled, without coefficients.
    """

    def __init__(self, dataset, labelled: bool) -> None:
        self.dataset, self.labelled = dataset, labelled

    def __len__(self) -> int:
        return len(self.dataset)

    def _name(self, i: int) -> str:
        paths = getattr(self.dataset, "paths", None)
        return str(paths[i]) if paths is not None else str(self.dataset.pairs[i][0])

    def batch(self, index) -> dict[str, torch.Tensor]:
        index = [int(i) for i in torch.as_tensor(index).reshape(-1)]
        items = [self.dataset[i] for i in index]
        for i, item in zip(index, items):
            lm = item.get("landmarks2d")
            if lm is None or lm.shape[0] != N_LANDMARKS or not torch.isfinite(lm).all():
                raise ValueError(f"{self._name(i)}: Gao et al.'s landmark terms need all {N_LANDMARKS} landmarks of "
                                 "every image; this one has them missing or incomplete")
            if self.labelled and "alpha_id" not in item:
                raise ValueError(f"{self._name(i)}: the labelled shape terms need its 3DMM coefficients "
                                 "(Shape_Para, Exp_Para and the model they refer to)")
        image = torch.stack([item["image"] for item in items])
        n, _, h, w = image.shape
        out = {"image": image,
               "label": torch.stack([item["label"] for item in items]) if "label" in items[0]
               else torch.full((n,), NO_LABEL, dtype=torch.long),
               "landmarks2d": torch.stack([item["landmarks2d"] for item in items]).float(),
               "photo_mask": image.new_ones(n, 1, h, w)}
        if self.labelled:
            out.update(alpha_id=torch.stack([item["alpha_id"] for item in items]).float(),
                       alpha_exp=torch.stack([item["alpha_exp"] for item in items]).float())
        return out


def folder_rows_pool(rows: FolderRows, progress: bool = False) -> dict[str, torch.Tensor]:
    """Every row of ``rows`` in memory, as :func:`render_pools` keeps a suite's (image and photo mask as uint8).

    Not cached on disk: reading the folder again is what a cache would save, and its files may change.
    """
    chunks = torch.arange(len(rows)).split(pools.POOL_RENDER_BATCH)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="read images", unit="batch")
    parts: dict[str, list] = {}
    for index in chunks:
        for k, v in rows.batch(index).items():
            if k == "image":
                v = (v.clamp(0, 1) * 255).round().to(torch.uint8)
            elif k == "photo_mask":
                v = (v.clamp(0, 1) * MASK_LEVELS).round().to(torch.uint8)
            parts.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in parts.items()}


def _as_training(part: dict, source: int, morphable) -> dict:
    """A suite batch in the hybrid layout (floats, ``source``, zero coefficients for collections)."""
    n = part["image"].shape[0]
    image = part["image"]
    image = image.float() / 255 if image.dtype == torch.uint8 else image
    if "photo_mask" in part:
        mask = part["photo_mask"]
        mask = mask.float() / MASK_LEVELS if mask.dtype == torch.uint8 else mask
    else:
        mask = _photo_mask(part["face_mask"], part["occlusion_mask"])
    zeros = image.new_zeros
    return {"image": image, "photo_mask": mask, "landmarks2d": part["landmarks2d"],
            "source": torch.full((n,), source, dtype=torch.long), "label": part["label"],
            "alpha_id": part["alpha_id"] if source == SOURCE_LP else zeros(n, morphable.n_shape),
            "alpha_exp": part["alpha_exp"] if source == SOURCE_LP else zeros(n, morphable.n_exp)}


def merge_hybrid(lp: dict, col: dict, world_size: int = 1) -> dict:
    """One hybrid batch from an ``lp`` part and a ``collections`` part (same keys).

    Rows are laid out so that each rank's contiguous share (:func:`facelab.train.distributed.shard_batch`)
    holds ``B_lp / W`` labelled then ``B_col / W`` unlabelled rows; on one process: all ``lp``
    rows, then all collection rows.

    >>> lp = {"x": torch.tensor([0, 1, 2, 3])}; col = {"x": torch.tensor([10, 11])}
    >>> merge_hybrid(lp, col, 2)["x"].tolist()
    [0, 1, 10, 2, 3, 11]
    """
    n_lp, n_col = (next(iter(part.values())).shape[0] for part in (lp, col))
    if n_lp % world_size or n_col % world_size:
        raise ValueError(f"batch_lp, batch_col: {n_lp} and {n_col} must both be multiples of the {world_size} "
                         f"processes, so that every rank gets labelled and unlabelled images")
    a, b = n_lp // world_size, n_col // world_size
    return {k: torch.cat([t for r in range(world_size) for t in (lp[k][r * a:(r + 1) * a], col[k][r * b:(r + 1) * b])])
            for k in lp}


def hybrid_batches(lp_source, col_source, cfg: Gao2020TrainConfig, morphable, total_steps: int | None = None):
    """A callable ``step -> hybrid batch`` (a pure function of ``(seed, step)``).

    ``lp_source`` / ``col_source``: pools (:func:`render_pools`: sampled by
    :func:`~facelab.train.trainer.step_indices`) or suites (streamed through
    :class:`~facelab.train.trainer.StepLoader`). The world size of a torchrun job is read at
    each call, so the layout matches :func:`merge_hybrid`'s sharding.
    """
    total_steps = total_steps or sum(cfg.steps)
    seeds = (cfg.train.seed, cfg.train.seed + COL_SEED_OFFSET)

    def getter(source, batch_size: int, seed: int):
        if isinstance(source, dict):
            n = source["image"].shape[0]
            return lambda step: {k: v[step_indices(n, batch_size, step, seed)] for k, v in source.items()}
        return StepLoader(source, batch_size, total_steps, seed=seed, num_workers=cfg.num_workers)

    get_lp = getter(lp_source, cfg.batch_lp, seeds[0])
    get_col = getter(col_source, cfg.batch_col, seeds[1])

    def get(step: int) -> dict:
        lp = _as_training(get_lp(step), SOURCE_LP, morphable)
        col = _as_training(get_col(step), SOURCE_COL, morphable)
        return merge_hybrid(lp, col, D.dist_env().world_size)

    return get


def warmup_batches(lp_source, cfg: Gao2020TrainConfig, morphable):
    """A callable ``step -> batch`` of ``batch_warmup`` ``lp`` images (pure function of ``(seed, step)``).

    Under torchrun each rank takes its contiguous share (the trainer shards the batch).
    """
    if isinstance(lp_source, dict):
        n = lp_source["image"].shape[0]
        seed = cfg.train.seed
        get = lambda step: {k: v[step_indices(n, cfg.batch_warmup, step, seed)] for k, v in lp_source.items()}  # noqa: E731
    else:
        get = StepLoader(lp_source, cfg.batch_warmup, cfg.warmup_steps, seed=cfg.train.seed,
                         num_workers=cfg.num_workers)
    return lambda step: _as_training(get(step), SOURCE_LP, morphable)


# ------------------------------------------------------------------ recipe
def train_gao2020(config: Gao2020TrainConfig | None = None, **overrides) -> Path:
    """Train :class:`~facelab.models.gao2020.Gao2020Model` in two steps on hybrid ``lp`` + ``collections`` batches.

    See the module docstring for the losses and the folder layout. ``overrides`` replace
    fields of ``config`` (keys as :func:`facelab.config.replace_fields` takes them: ``seed=1``
    sets ``train.seed``). An interrupted run resumes when called again.

    Returns:
        The run folder: ``step1.pt``, ``step2.pt`` and ``summary.json`` (the last logged row
        of each stage, :func:`facelab.train.stages.read_summary`).
    """
    cfg = replace_fields(config or Gao2020TrainConfig(), overrides)
    with torch_threads(cfg.num_threads):
        _train(cfg)
    return Path(cfg.out_dir)


def build_trainee(cfg: Gao2020TrainConfig, stage: str, morphable, n_classes: int, morphable_record: dict | None = None):
    """``(trainee, critic or None)`` of a training step, initialised from ``cfg.train.seed`` alone.

    ``morphable_record``: the record of a morphable-model file (``morphable`` is then its grid
    model, :func:`facelab.models.gao2020.grid_morphable`); None: SynthFaces at ``cfg.resolution``.
    """
    from facelab.losses.recognition import RecognitionLoss
    from facelab.models.gao2020 import Gao2020Config, ShapeDiscriminator, build_gao2020_model
    from facelab.train.trainer import seed_everything

    check_choice(stage, "stage", STEPS)
    mcfg = model_config(cfg, STEP_ALBEDO[stage], morphable_record)
    seed_everything(cfg.train.seed)  # the initial weights depend on the seed only
    model = build_gao2020_model(mcfg, morphable.to("cpu") if morphable_record is not None else None)
    recognition = RecognitionLoss(model.config.id_dim, n_classes, lambda_center=cfg.w_center) if cfg.use_recog else None
    critic = None
    if cfg.use_adv:
        disc = ShapeDiscriminator(Gao2020Config.from_dict(mcfg["model"]), morphable)
        critic = ShapeCritic(disc, morphable, cfg.critic_lr, cfg.n_critic, cfg.critic_p)
    return Gao2020Trainee(model, recognition), critic


def export_checkpoint(src: str | Path, dst: str | Path, model_config: dict) -> Path:
    """Write the trainer's ``last.pt`` (``src``) as a ``"gao2020"`` model checkpoint ``dst``.

    ``state_dict``: the model's own weights; ``extra["recognition"]``: the identity head's
    (or None); ``extra["critic"]``: the discriminator and its optimiser (if trained); the
    optimiser of the encoder-decoder is dropped. Atomic, like every facelab checkpoint.
    """
    ckpt = load_checkpoint(src, expect_model=TRAIN_MODEL_NAME)
    state = ckpt["state_dict"]
    model_state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    recog_state = {k[len("recognition."):]: v for k, v in state.items() if k.startswith("recognition.")}
    extra = {**ckpt.get("extra", {}), "recognition": recog_state or None, "trainer_checkpoint": str(src)}
    return save_checkpoint(dst, model_name=MODEL_NAME, model_config=model_config, state_dict=model_state,
                           step=ckpt["step"], train_config=ckpt.get("train_config"),
                           rng_per_rank=ckpt.get("rng_per_rank") or ([ckpt["rng"]] if ckpt.get("rng") else None),
                           extra=extra)


def _load_parent(trainee: Gao2020Trainee, critic: ShapeCritic | None, path: Path, model_only: bool = False) -> None:
    """Start ``step2`` from ``step1.pt``: model weights, identity head and discriminator
    (``model_only``: ``step1`` from ``warmup.pt``, the model weights alone)."""
    ckpt = load_checkpoint(path, expect_model=MODEL_NAME)
    trainee.model.load_state_dict(ckpt["state_dict"])
    if model_only:
        return
    extra = ckpt.get("extra", {})
    if trainee.recognition is not None:
        if not extra.get("recognition"):
            raise ValueError(f"{path}: holds no identity head (trained with use_recog=False); "
                             f"this run has use_recog=True")
        trainee.recognition.load_state_dict(extra["recognition"])
    if critic is not None:
        if not extra.get("critic"):
            raise ValueError(f"{path}: holds no discriminator (trained with use_adv=False); this run has use_adv=True")
        critic.load_state_dict(extra["critic"])


def recipe_stages(cfg: Gao2020TrainConfig, root: Path | None = None) -> list[Stage]:
    """``[warmup,] step1, step2``: the warm-up only when ``cfg.warmup_steps`` and ``step1`` is not done.

    >>> [(s.name, s.parent) for s in recipe_stages(Gao2020TrainConfig(warmup_steps=0))]
    [('step1', None), ('step2', 'step1')]
    """
    root = Path(cfg.out_dir if root is None else root)
    warmup = bool(cfg.warmup_steps) and not Stage(STEPS[0]).checkpoint(root).exists()
    first = [Stage(WARMUP), Stage(STEPS[0], parent=WARMUP)] if warmup else [Stage(STEPS[0], parent=WARMUP if cfg.warmup_steps else None)]
    return first + [Stage(later, parent=earlier) for earlier, later in zip(STEPS, STEPS[1:])]


def morphable_source(cfg: Gao2020TrainConfig):
    """``(source, record, network)`` of the morphable-model file the run uses, or None (SynthFaces).

    ``source``: ``cfg.morphable`` (``data.kind="real"``: by default ``data.labelled/model.npz``)
    as read; ``network``: its grid model (:func:`facelab.models.gao2020.grid_morphable`);
    ``record``: what the checkpoints store (:func:`facelab.models.gao2020.gao2020_morphable_record`).

    Raises:
        FileNotFoundError: a missing folder of ``data``, or no model file (naming ``morphable``).
        ValueError: a model that is not the one the data's coefficients refer to.
    """
    from facelab.io.models import load_morphable
    from facelab.models.gao2020 import gao2020_morphable_record, grid_morphable

    path = Path(cfg.morphable) if cfg.morphable else None
    folder_model = None
    if cfg.data.kind == "real":
        for name in ("labelled", "collections"):
            if not Path(getattr(cfg.data, name)).is_dir():
                raise FileNotFoundError(f"data.{name}: {getattr(cfg.data, name)} is not a folder")
        folder_model = Path(cfg.data.labelled) / LP_MODEL_FILE
        if path is None:
            if not folder_model.is_file():
                raise FileNotFoundError(f"morphable: data.kind='real' needs the morphable model the coefficients of "
                                        f"data.labelled refer to, and {folder_model} does not exist; give its file "
                                        "with --set morphable=PATH (3DDFA's BFM.mat for 300W-LP)")
            path = folder_model
    if path is None:
        return None
    source = load_morphable(path)
    have = source.content_sha256()
    if folder_model is not None and folder_model.is_file() and folder_model.resolve() != path.resolve():
        want = load_morphable(folder_model).content_sha256()
        if want != have:
            raise ValueError(f"morphable: {path} (sha256 {have}) is not {folder_model} (sha256 {want}), the model "
                             "the coefficients of data.labelled refer to; give that model (or leave morphable unset)")
    if cfg.data.kind == "synth":
        from facelab.morphable import SynthFacesConfig, build_synthfaces

        want = build_synthfaces(SynthFacesConfig(resolution=cfg.resolution)).content_sha256()
        if want != have:
            raise ValueError(f"morphable: {path} (sha256 {have}) is not the model of the synthetic suites "
                             f"(SynthFaces at resolution={cfg.resolution!r}, sha256 {want}); data.kind='synth' "
                             "trains on SynthFaces coefficients: give another model with data.kind='real'")
    network = grid_morphable(source, cfg.resolution)
    return source, gao2020_morphable_record(source, path, network), network


def _real_sources(cfg: Gao2020TrainConfig, source) -> tuple[FolderRows, FolderRows, int]:
    """The ``lp`` and collection rows of the two folders, and the number of identities."""
    from facelab.data import LP300W, ImageFolderIdentities

    lp = LP300W(cfg.data.labelled, model=source, image_size=tuple(cfg.image_size))
    col = ImageFolderIdentities(cfg.data.collections, image_size=tuple(cfg.image_size), progress=cfg.train.progress)
    col.require_landmarks("Gao et al.'s landmark terms (on every image)")
    return FolderRows(lp, labelled=True), FolderRows(col, labelled=False), col.n_identities


def _prepare(cfg: Gao2020TrainConfig, source=None) -> dict:
    """The data of a run: the morphable model on the device, the batches (and the rows they come from).

    ``source``: :func:`morphable_source`'s triple, or None (SynthFaces, ``data.kind="synth"``).
    """
    device = D.rank_device(cfg.train.device)
    if cfg.data.kind == "real":
        lp_rows, col_rows, n_classes = _real_sources(cfg, source[0])
        morphable = source[2].to(device)
        if cfg.pool:
            lp_source = folder_rows_pool(lp_rows, cfg.train.progress)
            col_source = folder_rows_pool(col_rows, cfg.train.progress)
        else:
            lp_source, col_source = lp_rows, col_rows
    else:
        lp_suite, col_suite = _suites(cfg)
        morphable = (source[2] if source is not None else lp_suite.model).to(device)
        n_classes = col_suite.config.n_identities
        if cfg.pool:
            lp_source, col_source = render_pools(cfg, lp_suite, col_suite)
        else:
            lp_source, col_source = lp_suite, col_suite
    data = {"morphable": morphable, "n_classes": n_classes, "lp_source": lp_source,
            "morphable_record": source[1] if source is not None else None,
            "batches": hybrid_batches(lp_source, col_source, cfg, morphable),
            # only the main process measures (the trainer's hook runs there)
            "heldout": heldout_shape_error(cfg, morphable) if D.is_main_process() else None}
    if not cfg.share_warmup and cfg.warmup_steps:  # the geometric warm-up: batch_warmup lp images per hybrid batch
        data["warmup_batches"] = hybrid_batches(lp_source, col_source, dataclasses.replace(cfg, batch_lp=cfg.batch_warmup),
                                                morphable, total_steps=cfg.warmup_steps)
    return data


def _speed_up(encoder: nn.Module, cfg: Gao2020TrainConfig) -> None:
    """The speed options on the encoder's ``feature_maps`` (what :meth:`Gao2020Model.encode` calls)."""
    speed_up_encoder(encoder, cfg.channels_last, cfg.encoder_precision, cfg.compile_encoder, method="feature_maps")


def _build_stage(cfg: Gao2020TrainConfig, stage: Stage, data: dict, parent: Path | None) -> Trainer:
    """The :class:`Trainer` of the warm-up or of a training step, started from ``parent``."""
    morphable, record = data["morphable"], data.get("morphable_record")
    mcfg = model_config(cfg, STEP_ALBEDO[stage.name], record)
    if stage.name == WARMUP and cfg.share_warmup:  # shared by the ablations: no identity head, no discriminator
        trainee, _ = build_trainee(dataclasses.replace(cfg, use_recog=False, use_adv=False), STEPS[0], morphable, 0,
                                   record)
        _speed_up(trainee.model.encoder, cfg)
        tcfg = cfg.train_config(WARMUP)
        optimizer = torch.optim.Adam(trainee.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay,
                                     **optimizer_options(cfg.fused_optimizer))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lr_factor(tcfg.steps, WARMUP_FINAL_LR_FRACTION))
        return Trainer(trainee, optimizer, warmup_batches(data["lp_source"], cfg, morphable), WarmupLoss(cfg, morphable),
                       tcfg, scheduler=scheduler, model_name=TRAIN_MODEL_NAME,
                       model_config={"gao2020": mcfg, "n_classes": 0}, extra_config=cfg, heldout=data.get("heldout"))
    n_classes = data["n_classes"]
    geometric = stage.name == WARMUP  # an unshared warm-up: every term but the rendered ones
    trainee, critic = build_trainee(cfg, STEPS[0] if geometric else stage.name, morphable, n_classes, record)
    if parent is not None:
        _load_parent(trainee, critic, parent, model_only=stage.parent == WARMUP and cfg.share_warmup)
    train_mcfg = {"gao2020": mcfg, "n_classes": n_classes if cfg.use_recog else 0}
    tcfg = cfg.train_config(stage.name)
    optimizer = torch.optim.Adam(trainee.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay,
                                 **optimizer_options(cfg.fused_optimizer))
    scheduler = None
    if geometric:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lr_factor(tcfg.steps, WARMUP_FINAL_LR_FRACTION))
    model = trainee.model
    _speed_up(model.encoder, cfg)
    watch = {"encoder": [model.encoder, model.id_head, model.exp_head], "shape_decoder": model.shape_decoder}
    if not geometric:  # the warm-up renders nothing, so no term reaches the albedo decoder
        watch["albedo_decoder"] = model.cnn_albedo if STEP_ALBEDO[stage.name] == "cnn" else model.albedo_decoder
    loss = Gao2020Loss(stage_weights(cfg, stage.name), morphable, critic, return_terms=tcfg.diagnose_every > 0,
                       render=not geometric)
    return Trainer(trainee, optimizer, data["warmup_batches" if geometric else "batches"], loss, tcfg,
                   scheduler=scheduler, model_name=TRAIN_MODEL_NAME, model_config=train_mcfg, extra_config=cfg,
                   critic=critic, diagnostic_modules=watch,
                   chance=1.0 / n_classes if cfg.use_recog and n_classes else None, heldout=data.get("heldout"))


def stage_weights(cfg: Gao2020TrainConfig, stage: str) -> Gao2020TrainConfig:
    """``cfg`` with the loss weights of training step ``stage`` (``w_photo`` is ``w_photo_step2`` in ``step2``).

    >>> cfg = Gao2020TrainConfig(profile="standard")
    >>> stage_weights(cfg, "step1").w_photo, stage_weights(cfg, "step2").w_photo
    (1.0, 10.0)
    """
    check_choice(stage, "stage", (WARMUP,) + STEPS)
    return dataclasses.replace(cfg, w_photo=cfg.w_photo_step2) if stage == STEPS[1] else cfg


def _copy_warmup(cfg: Gao2020TrainConfig, root: Path, record: dict | None = None) -> None:
    """Copy ``cfg.warmup_from`` to ``root/warmup.pt`` after checking it holds this run's model config."""
    final = Stage(WARMUP).checkpoint(root)
    source = Path(cfg.warmup_from)
    if final.exists():
        return
    if not source.is_file():
        raise FileNotFoundError(f"warmup_from: {source} does not exist")
    ckpt = load_checkpoint(source, expect_model=MODEL_NAME)
    if ckpt["model_config"] != model_config(cfg, STEP_ALBEDO[WARMUP], record):
        raise ValueError(f"warmup_from: {source} holds another model config than this run's")
    if D.is_main_process():
        root.mkdir(parents=True, exist_ok=True)
        copy_atomic(source, final)
    D.barrier()


def _train(cfg: Gao2020TrainConfig) -> None:
    root = Path(cfg.out_dir)
    stages = recipe_stages(cfg, root)
    if stages[-1].checkpoint(root).exists():
        # finished earlier: nothing to read, not even the model file. The last step's checkpoint
        # is enough: an artifact may keep a variant's final model alone (restore_run)
        return
    # a model file is read, checked and resampled once; the default (SynthFaces) reads nothing
    source = morphable_source(cfg) if cfg.morphable or cfg.data.kind == "real" else None
    record = source[1] if source is not None else None
    if cfg.warmup_from and stages[0].name == WARMUP:
        _copy_warmup(cfg, root, record)
    publish = lambda stage, src, dst: export_checkpoint(src, dst, model_config(cfg, STEP_ALBEDO[stage.name], record))  # noqa: E731
    run_stages(root, stages, build=lambda stage, data, parent: _build_stage(cfg, stage, data, parent),
               prepare=lambda: _prepare(cfg, source), publish=publish)
