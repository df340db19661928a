"""Training recipe of Liu et al. 2018 (:mod:`facelab.models.liu2018`) in three phases on ``webface``.

* **Phase I** (encoder): the encoder and its code heads regress the 3DMM coefficients with a
  Euclidean loss. The codes are standardised (``c = alpha / std``,
  :meth:`~facelab.models.liu2018.Liu2018Model.code_targets`) but the distance is measured
  between the *unstandardised* coefficients ``alpha`` (facelab's and BFM's convention), i.e.
  through the frozen basis-initialised decoders:
  ``L_I = mean_v |f_Id(c_Id) - f_Id(c_Id*)|^2 + mean_v |f_Res(c_Res) - f_Res(c_Res*)|^2``
  (mm^2; for orthonormal bases ``= sum_k std_k^2 (c_k - c_k*)^2 / V``). A loss on the
  standardised codes weighs a 0.1 mm component like a 3 mm one, and on SynthFaces it
  learns nothing in the quick budget (``phase1_metric="code"`` keeps it for comparison).
* **Phase II** (decoders, encoder frozen): ``f_Id`` and ``f_Res`` are trained separately,
  ``L_II = mean_v |s_mean + f_Id(c_Id) - s_Id*|^2 + mean_v |f_Res(c_Res) - (s* - s_Id*)|^2``
  (mm^2; the two terms touch disjoint parameters, so their sum trains them independently).
* **Phase III** (joint, end to end): ``L = lambda_R L_R + L_C`` with
  ``L_R = mean_v |s - s*|^2`` (mm^2) the reconstruction loss of the full shape and ``L_C``
  the identification loss on ``c_Id`` (A-Softmax with SphereFace's annealing, or softmax).

Ablation stages (trained when listed in ``stages``; the paper's last table):

* ``phase2_joint``: Phase II *without identity disentangling*: from Phase I, both decoders
  are trained together on the full shape only, ``L = mean_v |s - s*|^2``, so nothing ties
  ``c_Id`` to the identity;
* ``phase3_softmax``: Phase III with plain softmax as ``L_C`` instead of A-Softmax.

Input: like SphereFace, the encoder sees **aligned crops**: photos are rendered at
``render_size`` and warped by the five-point similarity onto SphereFace's template at
``image_size`` (:mod:`facelab.data.align`; the five points come from the sample's
landmarks, a perfect detector). ``align=False`` feeds the raw photos.

Targets: the paper builds them by fitting a 3DMM to all photos of each subject.
``targets="truth"`` uses the suite's exact ``alpha_id`` / ``alpha_exp`` and true shapes
(an oracle fit); ``targets="fitted"`` reads a ``facelab fit`` result (``targets_path``)
made on the same suite.

Real photos: ``data.kind="imagefolder"`` trains on a folder of identity folders
(CASIA-WebFace / VGGFace2 layout, :class:`~facelab.data.ImageFolderIdentities`, ``data.train``)
with its ``landmarks.json`` for the crops and ``targets="fitted"`` from ``facelab fit`` of that
folder; ``morphable`` picks the 3DMM file the decoders start from (SynthFaces by default),
which must be the model the targets were fitted with (``facelab fit DIR --set morphable=PATH``
records the file and its content hash; the recipe checks it)::

    facelab synth webface --format imagefolder --out DIR
    facelab fit DIR --out FIT [--set morphable=PATH]
    facelab train liu2018 --set data.kind=imagefolder --set data.train=DIR --set targets=fitted \\
        --set targets_path=FIT/targets.npz [--set morphable=PATH] --out RUN

Held-out curve: with ``train.heldout_every`` (the standard profile's 100 steps; quick's 0) every
stage logs, as ``heldout/*`` columns of its ``metrics.csv``, the identity-shape error on 48
``webface`` identities the run never trains on against the mean face's
(:func:`heldout_shape_error`); ``data.kind="imagefolder"`` logs none (no true shapes).

The run folder holds one sub-folder per phase (``phase1/`` ... with the
:class:`~facelab.train.trainer.Trainer`'s ``last.pt`` and logs) and, once a phase is done,
its checkpoint ``phase1.pt`` / ``phase2.pt`` / ``phase3.pt`` (load any with
:func:`facelab.models.load_model`) and ``summary.json`` (the last logged row of each
phase). Calling again resumes: finished phases are skipped, an interrupted one resumes.

``quick`` trains a ``sphere_tiny`` on 64x64 aligned crops of 128 px photos of the
~1.4k-vertex mesh from an in-memory pool; ``full`` streams 112x96 crops into sphere20.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from facelab.checks import check_choice, check_image_size, check_positive
from facelab.config import replace_fields, resolve_profile, torch_threads
from facelab.io.checkpoint import load_checkpoint
from facelab.models.liu2018 import MODEL_NAME, build_liu2018_model
from facelab.train import pools
from facelab.train.speed import ENCODER_PRECISIONS, optimizer_options, speed_up_encoder
from facelab.train.stages import Stage, run_stages
from facelab.train.trainer import LOOP_DEFAULTS, LoopConfig, StepLoader, TrainConfig, Trainer, cosine_lr_factor

PHASES = (1, 2, 3)
#: stage name -> (phase whose steps / lr it uses, the stage it starts from, L_C override,
#: Phase III term weights that differ from the config's: the controls of the ablation)
STAGES = {
    "phase1": (1, None, None, {}),
    "phase2": (2, "phase1", None, {}),
    "phase3": (3, "phase2", None, {}),
    "phase2_joint": (2, "phase1", None, {}),
    "phase3_softmax": (3, "phase2", "softmax", {}),
    # same steps without L_C: does the identification loss itself lower the error?
    "phase3_no_lc": (3, "phase2", None, {"lambda_c": 0.0}),
    # same steps without L_R: the recognition ceiling of this encoder
    "phase3_no_lr": (3, "phase2", None, {"lambda_r": 0.0}),
}
#: other reconstruction weights lambda_R tried in Phase III (the standard profile's dose-response:
#: how reconstruction and recognition trade against each other as L_R's weight grows)
LAMBDA_R_DOSES = (0.3, 1.0)


def dose_stage(lambda_r: float) -> str:
    """The name of the Phase III stage trained with reconstruction weight ``lambda_r``.

    >>> dose_stage(0.3), dose_stage(1.0)
    ('phase3_lambda_r0.3', 'phase3_lambda_r1')
    """
    return f"phase3_lambda_r{lambda_r:g}"


STAGES.update({dose_stage(w): (3, "phase2", None, {"lambda_r": w}) for w in LAMBDA_R_DOSES})
DOSE_STAGES = tuple(dose_stage(w) for w in LAMBDA_R_DOSES)
DEFAULT_STAGES = ("phase1", "phase2", "phase3")
ABLATION_STAGES = DEFAULT_STAGES + ("phase2_joint", "phase3_softmax")
#: the ablation plus the controls its claims need and the lambda_R doses (the standard profile trains these)
CONTROL_STAGES = ABLATION_STAGES + ("phase3_no_lc", "phase3_no_lr") + DOSE_STAGES
TARGET_SOURCES = ("truth", "fitted")
#: where the training photos come from: a generated ``webface`` suite, or photos in identity folders
DATA_KINDS = ("synth", "imagefolder")
#: the pool fields that come from the fitted targets
TARGET_KEYS = ("alpha_id", "alpha_exp", "shape", "shape_identity")
PHASE1_METRICS = ("basis", "code")
POOL_KEYS = ("image", "label", "alpha_id", "alpha_exp", "shape", "shape_identity")
FINAL_LR_FRACTION = 0.05  # each phase's cosine schedule ends at this fraction of its lr
STANDARD_LAMBDA_R = 0.1

PROFILE_DEFAULTS = {
    "quick": dict(depth="sphere_tiny", embedding_dim=128, image_size=(64, 64), render_size=(128, 128),
                  resolution="quick", phase_steps=(1200, 300, 1500), n_identities=2000, images_per_identity=8,
                  pool=True, num_workers=0, num_threads=2, lambda_r=1.0,
                  train=dict(LOOP_DEFAULTS, batch_size=64, diagnose_every=25)),
    # quick's network and data, trained long enough for the identity head to learn (Phase III
    # training accuracy still rises at quick's 1,500 steps), with L_R weighted so that L_C
    # has a share of the encoder's gradient (at lambda_R = 1 its share is about 2 %)
    "standard": dict(depth="sphere_tiny", embedding_dim=128, image_size=(64, 64), render_size=(128, 128),
                     resolution="quick", phase_steps=(1500, 300, 3000), n_identities=2000, images_per_identity=8,
                     pool=True, num_workers=0, num_threads=2, lambda_r=STANDARD_LAMBDA_R,
                     train=dict(LOOP_DEFAULTS, batch_size=64, diagnose_every=100, heldout_every=100)),
    "full": dict(depth="sphere20", embedding_dim=512, image_size=(112, 96), render_size=(224, 192), resolution="default",
                 phase_steps=(20_000, 5_000, 20_000), n_identities=0, images_per_identity=0, pool=False,
                 num_workers=4, num_threads=-1, lambda_r=1.0,
                 train=dict(LOOP_DEFAULTS, batch_size=64, diagnose_every=200)),
}
#: the loop options Liu et al.'s recipe takes from elsewhere: {field: what it uses instead}
UNUSED_LOOP_OPTIONS = {"lr": "each phase's rate is phase_lr"}


@dataclass
class DataConfig:
    """Where :func:`train_liu2018` reads its training photos: the ``data`` group (``--set data.kind=imagefolder``).

    Attributes:
        kind: ``"synth"`` (a generated ``webface`` suite of ``n_identities`` x
            ``images_per_identity``) or ``"imagefolder"`` (photos in one folder per identity,
            :class:`~facelab.data.ImageFolderIdentities`, with their ``landmarks.json``).
        train: the identity folder of ``kind="imagefolder"`` (``ROOT/<identity>/<image>.jpg``).

    >>> DataConfig().kind
    'synth'
    >>> DataConfig(kind="imagefolder")
    Traceback (most recent call last):
    ...
    ValueError: data.train: data.kind='imagefolder' needs the identity folder (ROOT/<identity>/<image>.jpg)
    """

    kind: str = "synth"
    train: str = ""

    def __post_init__(self) -> None:
        pools.check_data_folders(self.kind, DATA_KINDS,
                                 {"train": (self.train, "the identity folder (ROOT/<identity>/<image>.jpg)")},
                                 generated="photos")


@dataclass
class Liu2018TrainConfig:
    """Options of :func:`train_liu2018`. None takes the profile's value (:data:`PROFILE_DEFAULTS`).

    Attributes:
        profile: ``"quick"`` (CPU, minutes) or ``"full"`` (GPU).
        out_dir: the run folder ("" = ``runs/liu2018-<profile>``).
        depth: SphereFace preset of the encoder, ``"sphere_tiny"`` or ``"sphere20"``.
        embedding_dim: encoder output length (feeds the code heads).
        image_size: ``(H, W)`` px of the encoder input (the aligned crop).
        render_size: ``(H, W)`` px of the rendered photos the crops are cut from.
        align: feed five-point aligned crops (SphereFace's preprocessing), else the photos
            themselves (then ``render_size`` is ignored).
        resolution: SynthFaces mesh preset.
        n_id, n_res: code lengths (0: the morphable model's ``n_shape`` / ``n_exp``).
        targets: source of the Phase I/II/III shape targets; ``"truth"`` = the suite's exact
            coefficients and shapes; ``"fitted"`` = a multi-image 3DMM fit of the same suite
            (``facelab fit webface --out DIR`` writes ``DIR/targets.npz``; give it as
            ``targets_path``), as the paper built them.
        targets_path: the ``targets.npz`` of ``targets="fitted"``.
        data: where the photos come from (:class:`DataConfig`: ``data.kind``, ``data.train``).
            With ``data.kind="imagefolder"`` the photos and identity labels are those of the folder
            ``data.train`` (resized to ``photo_size``; aligned by their ``landmarks.json``) and the
            targets must be ``"fitted"``, by ``facelab fit <data.train>`` with the model
            ``morphable`` (a folder holds no true shapes).
        morphable: a morphable-model file (any :func:`facelab.io.load_morphable` reads: ``.npz``,
            BFM, SFM, FLAME, 3DDFA's ``BFM.mat``) whose bases start the decoders; None: SynthFaces at
            ``resolution``. The checkpoints record its path and content hash
            (:func:`facelab.models.liu2018.morphable_record`); :func:`facelab.models.load_model`
            re-reads it and refuses a changed file. With ``data.kind="synth"`` it must be the
            suite's own SynthFaces model (e.g. saved with ``MorphableModel.save``).
        phase1_metric: ``"basis"`` (Euclidean in the unstandardised coefficients, mm^2) or
            ``"code"`` (Euclidean in the standardised codes).
        stages: the stages to train, in order (see :data:`STAGES`).
        loss: ``"asoftmax"`` (annealed, SphereFace) or ``"softmax"``, the Phase III ``L_C``.
        margin_m: the A-Softmax margin.
        lambda_r: weight of the reconstruction loss ``L_R`` (mm^2) in Phase III (the stages
            ``phase3_no_lc`` and ``phase3_no_lr`` drop ``L_C`` or ``L_R``, see :data:`STAGES`).
        phase_steps: optimisation steps of phases I, II, III.
        phase_lr: Adam learning rates of phases I, II, III.
        train: the training-loop options of every phase (:class:`~facelab.train.trainer.LoopConfig`:
            ``batch_size``, ``weight_decay``, ``grad_clip``, ``log_every``, ``ckpt_every``, ``seed``,
            ``device``, ``progress``, ``diagnose_every``, ``heldout_every``; ``--set train.batch_size=32``).
            Its ``diagnose_every`` applies to Phase III: the steps between measurements of how much L_R
            and L_C each pull on the encoder and the decoders (:mod:`facelab.train.diagnostics`; 0:
            never). Its ``heldout_every`` applies to every stage: the steps between measurements of
            the identity-shape error on identities the run never trains on
            (:func:`heldout_shape_error`, logged as ``heldout/*`` columns; 0: never; the standard
            profile's 100, quick's 0). Its ``lr`` is not used (``phase_lr``).
        n_identities, images_per_identity: size of the ``webface`` suite (0: suite default).
        pool: pre-render the suite once and sample batches from memory, else stream.
        cache_pool: keep the rendered pool on disk under :func:`facelab.config.cache_dir`.
        num_workers: ``DataLoader`` workers when streaming.
        num_threads: torch CPU threads while training (-1: leave them as they are).
        channels_last, encoder_precision, compile_encoder, fused_optimizer: training speed
            options (:mod:`facelab.train.speed`; off by default, ``facelab bench train`` measures them).

    >>> Liu2018TrainConfig().depth, Liu2018TrainConfig(profile="full").image_size
    ('sphere_tiny', (112, 96))
    >>> Liu2018TrainConfig(stages=("phase4",))
    Traceback (most recent call last):
    ...
    ValueError: stages: unknown value 'phase4'; expected one of 'phase1', 'phase2', 'phase3', 'phase2_joint', ...

    ``photo_size`` is what the suite renders: ``render_size`` with alignment, else ``image_size``.
    """

    profile: str = "quick"
    out_dir: str = ""
    depth: str | None = None
    embedding_dim: int | None = None
    image_size: tuple[int, ...] | None = None
    render_size: tuple[int, ...] | None = None
    align: bool = True
    resolution: str | None = None
    n_id: int = 0
    n_res: int = 0
    targets: str = "truth"
    targets_path: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    morphable: str | None = None
    phase1_metric: str = "basis"
    stages: tuple[str, ...] = DEFAULT_STAGES
    loss: str = "asoftmax"
    margin_m: int = 4
    lambda_r: float | None = None
    phase_steps: tuple[int, ...] | None = None
    phase_lr: tuple[float, ...] = (1e-3, 1e-2, 1e-3)
    train: LoopConfig = field(default_factory=LoopConfig)
    n_identities: int | None = None
    images_per_identity: int | None = None
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
        check_choice(self.targets, "targets", TARGET_SOURCES)
        check_choice(self.loss, "loss", ("asoftmax", "softmax"))
        check_choice(self.phase1_metric, "phase1_metric", PHASE1_METRICS)
        if isinstance(self.data, dict):  # e.g. rebuilt from JSON
            self.data = DataConfig(**self.data)
        if not isinstance(self.data, DataConfig):
            raise TypeError(f"data: expected a DataConfig, got {type(self.data).__name__}")
        if self.data.kind == "imagefolder" and self.targets != "fitted":
            raise ValueError(f"targets: data.kind='imagefolder' needs targets='fitted' and targets_path (a folder of "
                             f"photos holds no true shapes; `facelab fit {self.data.train} --out FIT` writes "
                             f"FIT/targets.npz), got targets={self.targets!r}")
        self.stages = tuple(self.stages)
        for stage in self.stages:
            check_choice(stage, "stages", list(STAGES))
        if self.targets == "fitted" and not self.targets_path:
            raise ValueError("targets_path: targets='fitted' needs the targets.npz written by `facelab fit`")
        resolve_profile(self, PROFILE_DEFAULTS[self.profile])
        self.train.check(unused=UNUSED_LOOP_OPTIONS)
        self.image_size = check_image_size(self.image_size)
        self.render_size = check_image_size(self.render_size, "render_size")
        self.phase_steps = tuple(self.phase_steps)
        self.phase_lr = tuple(self.phase_lr)
        for name in ("phase_steps", "phase_lr"):
            if len(getattr(self, name)) != len(PHASES):
                raise ValueError(f"{name}: expected one value per phase (3), got {getattr(self, name)}")
        for steps in self.phase_steps:
            check_positive(steps, "phase_steps", integer=True)
        for lr in self.phase_lr:
            check_positive(lr, "phase_lr")
        if not (self.lambda_r >= 0 and math.isfinite(self.lambda_r)):
            raise ValueError(f"lambda_r: the reconstruction weight must be finite and >= 0, got {self.lambda_r}")
        if not self.out_dir:
            self.out_dir = f"runs/liu2018-{self.profile}"

    @property
    def photo_size(self) -> tuple[int, int]:
        return tuple(self.render_size) if self.align else tuple(self.image_size)

    def train_config(self, phase: int, stage: str | None = None) -> TrainConfig:
        """The :class:`TrainConfig` of phase ``phase`` (1, 2 or 3), in ``out_dir/<stage>`` (default ``phase<k>``)."""
        check_choice(phase, "phase", PHASES)
        out_dir = Path(self.out_dir) / (stage or f"phase{phase}")
        return self.train.stage(self.phase_steps[phase - 1], out_dir, self.profile, lr=self.phase_lr[phase - 1],
                                diagnose_every=self.train.diagnose_every if phase == 3 else 0)


# ------------------------------------------------------------------ losses
def _vertex_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared per-vertex distance of ``(B, V, 3)`` mm shapes, mm^2."""
    return ((pred - target) ** 2).sum(-1).mean()


def phase1_loss(model, batch: dict, metric: str = "basis") -> tuple[torch.Tensor, dict]:
    """Phase I: Euclidean loss between the regressed codes and the 3DMM coefficients.

    With ``metric="basis"`` the distance is taken between unstandardised coefficients,
    through the (frozen, basis-initialised) decoders:
    ``mean_v |f_Id(c_Id) - f_Id(c_Id*)|^2 + mean_v |f_Res(c_Res) - f_Res(c_Res*)|^2`` (mm^2);
    with ``metric="code"``, ``mean |[c_Id, c_Res] - [c_Id*, c_Res*]|^2`` over the standardised
    code components (dimensionless). ``c* =`` :meth:`~facelab.models.liu2018.Liu2018Model.code_targets`.

    Args:
        model: a :class:`~facelab.models.liu2018.Liu2018Model`.
        batch: ``image (B, 3, H, W)`` float [0, 1], ``alpha_id (B, K_id)``, ``alpha_exp (B, K_exp)``.
        metric: ``"basis"`` or ``"code"``.

    Returns:
        ``(loss, {"id", "res"})``: the loss and its identity / residual parts.

    >>> from facelab.models.liu2018 import Liu2018Config, Liu2018Model
    >>> from facelab.models.sphereface import SphereConfig
    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> mm = build_synthfaces(SynthFacesConfig(resolution="quick"))
    >>> net = Liu2018Model(mm, Liu2018Config(SphereConfig("sphere_tiny", embedding_dim=8, input_size=(32, 32))))
    >>> b = {"image": torch.zeros(2, 3, 32, 32), "alpha_id": torch.zeros(2, mm.n_shape), "alpha_exp": torch.zeros(2, mm.n_exp)}
    >>> loss, m = phase1_loss(net, b); loss.shape, sorted(m)
    (torch.Size([]), ['id', 'res'])
    """
    check_choice(metric, "metric", PHASE1_METRICS)
    c_id, c_res = model.encode(batch["image"])
    t_id, t_res = model.code_targets(batch["alpha_id"], batch["alpha_exp"])
    if metric == "code":
        err_id, err_res = (c_id - t_id) ** 2, (c_res - t_res) ** 2
        loss = torch.cat([err_id, err_res], 1).mean()
        return loss, {"id": err_id.mean().detach(), "res": err_res.mean().detach()}
    # decoders are linear: f(c) - f(c*) = W (c - c*), the bias cancels
    loss_id = _vertex_mse(model.id_decoder(c_id - t_id) - model.id_decoder.linear.bias.view(1, -1, 3), 0.0)
    loss_res = _vertex_mse(model.res_decoder(c_res - t_res) - model.res_decoder.linear.bias.view(1, -1, 3), 0.0)
    return loss_id + loss_res, {"id": loss_id.detach(), "res": loss_res.detach()}


def phase2_loss(model, batch: dict) -> tuple[torch.Tensor, dict]:
    """Phase II: the decoders fit the true identity shape and residual (encoder frozen).

    Args:
        model: a :class:`~facelab.models.liu2018.Liu2018Model`.
        batch: ``image (B, 3, H, W)``, ``shape (B, V, 3)`` mm, ``shape_identity (B, V, 3)`` mm.

    Returns:
        ``(L_id + L_res, {"id", "res", "rmse_id_mm", "rmse_res_mm"})`` with
        ``L_id = mean_v |s_mean + f_Id(c_Id) - s_Id*|^2`` and
        ``L_res = mean_v |f_Res(c_Res) - (s* - s_Id*)|^2`` in mm^2.
    """
    with torch.no_grad():  # the encoder is frozen: no graph through it
        c_id, c_res = model.encode(batch["image"])
    out = model.decode(c_id, c_res)
    loss_id = _vertex_mse(out["shape_id"], batch["shape_identity"])
    loss_res = _vertex_mse(out["delta_res"], batch["shape"] - batch["shape_identity"])
    metrics = {"id": loss_id.detach(), "res": loss_res.detach(),
               "rmse_id_mm": loss_id.detach().sqrt(), "rmse_res_mm": loss_res.detach().sqrt()}
    return loss_id + loss_res, metrics


def phase2_joint_loss(model, batch: dict) -> tuple[torch.Tensor, dict]:
    """Phase II *without identity disentangling*: both decoders fit the full shape together.

    ``L = mean_v |s_mean + f_Id(c_Id) + f_Res(c_Res) - s*|^2`` (mm^2, encoder frozen); nothing
    asks ``f_Id(c_Id)`` to be the identity part. Batch keys: ``image``, ``shape (B, V, 3)`` mm.

    Returns:
        ``(loss, {"rmse_mm"})``.
    """
    with torch.no_grad():
        c_id, c_res = model.encode(batch["image"])
    loss = _vertex_mse(model.decode(c_id, c_res)["shape"], batch["shape"])
    return loss, {"rmse_mm": loss.detach().sqrt()}


class Phase3Loss(nn.Module):
    """Phase III: ``L = lambda_R L_R + lambda_C L_C`` (joint training; the paper's lambda_C is 1).

    ``forward(model, batch) -> (loss, metrics)``; the batch needs ``image``, ``shape``
    ``(B, V, 3)`` mm and ``label (B,)`` long. Metrics: ``rec`` (``L_R``, mm^2),
    ``rmse_mm``, ``cls`` (``L_C``), ``acc`` (training identification accuracy of the
    margin-free scores) and, for A-Softmax, ``lambda`` (the annealing weight used). With
    ``return_terms`` it returns ``(loss, metrics, {"L_R": lambda_R L_R, "L_C": L_C})`` for the
    trainer's term diagnostics.
    """

    def __init__(self, lambda_r: float = 1.0, return_terms: bool = False, lambda_c: float = 1.0) -> None:
        super().__init__()
        for name, value in (("lambda_r", lambda_r), ("lambda_c", lambda_c)):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name}: must be finite and >= 0, got {value}")
        self.lambda_r = lambda_r
        self.lambda_c = lambda_c
        self.return_terms = return_terms

    def forward(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        out = model(batch["image"])
        head = model.classifier
        lam = getattr(head, "current_lambda", None)
        rec = _vertex_mse(out["shape"], batch["shape"])
        cls = model.classification_loss(out["c_id"], batch["label"])
        with torch.no_grad():
            acc = (head.predict(out["c_id"]) == batch["label"]).float().mean()
        metrics = {"rec": rec.detach(), "rmse_mm": rec.detach().sqrt(), "cls": cls.detach(), "acc": acc}
        if lam is not None:
            metrics["lambda"] = torch.tensor(float(lam))
        loss = self.lambda_r * rec + self.lambda_c * cls
        if self.return_terms:
            return loss, metrics, {"L_R": self.lambda_r * rec, "L_C": self.lambda_c * cls}
        return loss, metrics


# -------------------------------------------------------------------- data
def training_suite(cfg: Liu2018TrainConfig):
    """The WebFace-like training collection of ``cfg`` (``cfg.n_identities`` x ``cfg.images_per_identity``
    photos of ``cfg.photo_size`` px), before it is rendered into a pool."""
    return pools.recipe_suite("webface", cfg, image_size=cfg.photo_size)


def render_pool(collection, cache: bool = True, progress: bool = False,
                align_to: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Every image of ``collection`` with the fields the three phases need (:data:`POOL_KEYS`), in memory.

    ``align_to``: store five-point aligned crops of that ``(H, W)`` instead of the photos.
    See :func:`facelab.train.pools.render_pool`; cached under ``cache_dir()/pools``.
    """
    keys = POOL_KEYS + (("landmarks2d",) if align_to else ())
    pool = pools.render_pool(collection, keys, "liu2018", cache=cache, progress=progress, align_to=align_to)
    return {k: v for k, v in pool.items() if k in POOL_KEYS}


def _fitted(pool: dict, cfg: Liu2018TrainConfig, collection) -> dict:
    """``pool`` with its shape targets replaced by those of a ``facelab fit`` result."""
    from facelab.fitting.targets import load_fitted_targets

    fitted = load_fitted_targets(cfg.targets_path, collection)
    return {**pool, **{k: fitted[k].to(pool[k].dtype) for k in ("alpha_id", "alpha_exp", "shape", "shape_identity")}}


pool_batches = pools.pool_batches


class FolderTargets:
    """Photos of an identity folder with their fitted targets: a collection of ``len`` and ``batch(index)``.

    ``batch(index (B,))`` gives ``image (B, 3, H, W)`` float [0, 1] (five-point aligned crops of
    ``align_to`` ``(H, W)`` px when given, else the photos), ``label (B,)`` long and the
    :data:`TARGET_KEYS` rows of ``targets`` (``alpha_id (B, K_id)``, ``alpha_exp (B, K_exp)``,
    ``shape``, ``shape_identity (B, V, 3)`` mm), i.e. the fields of :data:`POOL_KEYS`.

    Args:
        folder: an :class:`~facelab.data.ImageFolderIdentities` (with landmarks when aligning).
        targets: :func:`facelab.fitting.targets.load_fitted_targets` of that folder (``N`` rows).
        align_to: ``(H, W)`` of the aligned crops, or None.
    """

    def __init__(self, folder, targets: dict[str, torch.Tensor], align_to: tuple[int, int] | None = None) -> None:
        self.folder, self.align_to = folder, align_to
        self.targets = {k: targets[k].detach().cpu().float() for k in TARGET_KEYS}

    def __len__(self) -> int:
        return len(self.folder)

    def batch(self, index) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        photos = self.folder.batch(index)
        if self.align_to:
            photos = pools.align_batch(photos, self.align_to)
        return {"image": photos["image"], "label": photos["label"], **{k: v[index] for k, v in self.targets.items()}}


def folder_pool(data: FolderTargets, progress: bool = False) -> dict[str, torch.Tensor]:
    """Every image of ``data`` in memory, as :func:`render_pool` keeps a suite's: ``image (N, 3, H, W)``
    uint8 and the other :data:`POOL_KEYS` as :meth:`FolderTargets.batch` gives them.

    Not cached on disk: reading the folder again is what a cache would save, and its files may change.
    """
    chunks = torch.arange(len(data)).split(pools.POOL_RENDER_BATCH)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="read photos", unit="batch")
    parts = {k: [] for k in POOL_KEYS}
    for index in chunks:
        batch = data.batch(index)
        for k in POOL_KEYS:
            v = batch[k]
            parts[k].append((v.clamp(0, 1) * 255).round().to(torch.uint8) if k == "image" else v)
    return {k: torch.cat(v) for k, v in parts.items()}


def heldout_set(cfg: Liu2018TrainConfig) -> dict[str, torch.Tensor]:
    """The photos of the held-out curve: one ``webface`` photo of each of the
    :data:`~facelab.train.heldout.HELDOUT_IDENTITIES` identities right after the run's
    ``n_identities`` (:func:`facelab.train.heldout.heldout_photos`), as the encoder sees them in
    training: rendered at ``photo_size``, five-point aligned crops of ``image_size`` with
    ``align``, rounded to 8 bits with ``pool`` (the pool stores them so; streamed photos are not).

    Returns ``image (48, 3, H, W)`` float [0, 1], ``shape_identity (48, V, 3)`` mm and ``identity (48,)``
    world ids.
    """
    from facelab.data.suites import SuiteConfig
    from facelab.train.heldout import heldout_photos

    n_train = SuiteConfig(suite="webface", profile=cfg.profile, n_identities=cfg.n_identities or 0).n_identities
    crops = tuple(cfg.image_size) if cfg.align else None
    return heldout_photos("webface", cfg, n_train, cfg.photo_size, align_to=crops, quantise=bool(cfg.pool))


def heldout_shape_error(cfg: Liu2018TrainConfig, morphable, disentangled: bool = True, photos: dict | None = None):
    """``model -> {"rmse_mm", "mean_face_rmse_mm", "rmse_id_mm"}`` (mm) on identities the run never
    trains on (:func:`heldout_set`), the trainer's held-out curve (``train.heldout_every``); None with
    ``data.kind="imagefolder"`` (a folder of photos holds no true shapes) or ``heldout_every=0``.

    The shape measured is the one the stage's scores take as the identity shape: the
    disentangled identity decoder's ``s_mean + f_Id(c_Id)``, or, for a model trained without
    disentangling (``disentangled=False``, the ``phase2_joint`` ablation), the full shape. Every
    stage decodes one (Phase I through the basis-initialised decoders it leaves frozen), so
    every stage logs the curve.

    * ``rmse_mm``: per-vertex RMS (mm) over ``morphable.face_mask`` after a rigid alignment
      (:func:`facelab.train.heldout.aligned_rmse`), averaged over identities: a reconstruction
      error that pose and position cannot game;
    * ``mean_face_rmse_mm``: the same for the mean face, the floor a network without identity
      sits at;
    * ``rmse_id_mm``: ``sqrt(mean_v |s_Id - s_Id*|^2)`` over every vertex, unaligned: Phase II's
      training metric of the same name, so the two curves show the gap between training and
      held-out identities.

    ``photos``: :func:`heldout_set`'s dict when already rendered (the stages share one).

    >>> heldout_shape_error(Liu2018TrainConfig(), None) is None  # quick: heldout_every 0
    True
    """
    from facelab.train.heldout import shape_error

    if cfg.data.kind != "synth" or not cfg.train.heldout_every:
        return None
    photos = photos if photos is not None else heldout_set(cfg)

    def identity_shape(model, images: torch.Tensor) -> torch.Tensor:
        out = model(images)
        return out["shape_id"] if disentangled else out["shape"]

    def rmse_id(shapes: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
        return {"rmse_id_mm": float(_vertex_mse(shapes, truth).sqrt())}

    return shape_error(photos, morphable.mean_shape, morphable.face_mask, identity_shape, extra=rmse_id)


# ------------------------------------------------------------------ model
def model_config(cfg: Liu2018TrainConfig, morphable, n_classes: int, loss: str | None = None,
                 disentangled: bool = True, morphable_record: dict | None = None) -> dict:
    """The checkpoint's model config: ``{"resolution", "model": Liu2018Config as a dict, "input": {...}}``.

    ``input`` says how photos become encoder inputs (``align``, ``render_size``) and whether
    the codes are ``disentangled`` (False for the ``phase2_joint`` ablation); ``loss``
    overrides ``cfg.loss``. ``morphable_record`` (:func:`facelab.models.liu2018.morphable_record`
    of ``cfg.morphable``) is stored as ``"morphable"``; without it the model is SynthFaces at
    ``resolution``.
    """
    from facelab.models.liu2018 import Liu2018Config
    from facelab.models.sphereface import SphereConfig

    encoder = SphereConfig(cfg.depth, embedding_dim=cfg.embedding_dim, input_size=tuple(cfg.image_size))
    model_cfg = Liu2018Config(encoder=encoder, n_id=cfg.n_id or morphable.n_shape, n_res=cfg.n_res or morphable.n_exp,
                              loss=loss or cfg.loss, n_classes=n_classes, margin_m=cfg.margin_m)
    out = {"resolution": cfg.resolution, "model": dataclasses.asdict(model_cfg),
           "input": {"align": cfg.align, "render_size": list(cfg.photo_size), "disentangled": disentangled}}
    if morphable_record is not None:
        out["morphable"] = dict(morphable_record)
    return out


# ------------------------------------------------------------------ recipe
def train_liu2018(config: Liu2018TrainConfig | None = None, **overrides) -> Path:
    """Train :class:`~facelab.models.liu2018.Liu2018Model` in three phases on ``webface``; returns the run folder.

    See the module docstring for the phases and the folder layout. ``overrides`` replace
    fields of ``config`` (keys as :func:`facelab.config.replace_fields` takes them: ``seed=1``
    sets ``train.seed``). An interrupted run resumes when called again.
    """
    cfg = replace_fields(config or Liu2018TrainConfig(), overrides)
    with torch_threads(cfg.num_threads):
        _train(cfg)
    return Path(cfg.out_dir)


def phase_parameters(model, phase: int) -> list[nn.Parameter]:
    """The parameters phase ``phase`` trains: I encoder + code heads, II decoders, III all."""
    check_choice(phase, "phase", PHASES)
    if phase == 1:
        modules = (model.encoder, model.id_head, model.res_head)
    elif phase == 2:
        modules = (model.id_decoder, model.res_decoder)
    else:
        return list(model.parameters())
    return [p for m in modules for p in m.parameters()]


def stage_loss(stage: str, cfg: Liu2018TrainConfig):
    """The ``(model, batch) -> (loss, metrics)`` callable of a training stage (:data:`STAGES`)."""
    check_choice(stage, "stage", list(STAGES))
    if stage == "phase1":
        return lambda model, batch: phase1_loss(model, batch, cfg.phase1_metric)
    if stage == "phase2":
        return phase2_loss
    if stage == "phase2_joint":
        return phase2_joint_loss
    weights = {"lambda_r": cfg.lambda_r, "lambda_c": 1.0, **STAGES[stage][3]}
    return Phase3Loss(weights["lambda_r"], return_terms=cfg.train.diagnose_every > 0, lambda_c=weights["lambda_c"])


def _batches(cfg: Liu2018TrainConfig, collection):
    if cfg.pool:
        pool = render_pool(collection, cache=cfg.cache_pool, progress=cfg.train.progress,
                           align_to=tuple(cfg.image_size) if cfg.align else None)
        if cfg.targets == "fitted":
            pool = _fitted(pool, cfg, collection)
        return pool_batches(pool, cfg.train.batch_size, cfg.train.seed)
    if cfg.targets == "fitted":
        raise ValueError("targets: 'fitted' needs pool=True (the fitted targets are per image of a fixed suite)")
    stream = StepLoader(collection, cfg.train.batch_size, sum(cfg.phase_steps), seed=cfg.train.seed,
                        num_workers=cfg.num_workers)
    if not cfg.align:
        return stream
    return lambda step: pools.align_batch(stream(step), tuple(cfg.image_size))


def recipe_stages(cfg: Liu2018TrainConfig) -> list[Stage]:
    """The :class:`~facelab.train.stages.Stage` list of ``cfg.stages`` (parents from :data:`STAGES`).

    >>> [(s.name, s.parent) for s in recipe_stages(Liu2018TrainConfig(stages=("phase1", "phase2")))]
    [('phase1', None), ('phase2', 'phase1')]
    """
    return [Stage(name, parent=STAGES[name][1]) for name in cfg.stages]


def _describe_model(morphable, sha256: str, source: str) -> str:
    return f"{source} ({morphable.name!r}, {morphable.n_verts} vertices, sha256 {sha256[:12]})"


def _morphable(cfg: Liu2018TrainConfig):
    """``(model, record)``: ``cfg.morphable`` read with its :func:`~facelab.models.liu2018.morphable_record`,
    or SynthFaces at ``cfg.resolution`` and None."""
    from facelab.io.models import load_morphable
    from facelab.models.liu2018 import morphable_record
    from facelab.morphable import SynthFacesConfig, build_synthfaces

    if not cfg.morphable:
        return build_synthfaces(SynthFacesConfig(resolution=cfg.resolution)), None
    morphable = load_morphable(cfg.morphable)
    return morphable, morphable_record(morphable, cfg.morphable)


def _require_same_model(cfg: Liu2018TrainConfig, morphable, record: dict | None, other, other_source: str,
                        use: str) -> None:
    """Raise a ``ValueError`` naming both models unless ``other`` has the content of ``morphable``."""
    have = record["sha256"] if record else morphable.content_sha256()
    want = other.content_sha256()
    if have != want:
        mine = _describe_model(morphable, have, f"morphable={cfg.morphable!r}" if record
                               else f"SynthFaces at resolution={cfg.resolution!r}")
        raise ValueError(f"morphable: {mine} is not {_describe_model(other, want, other_source)}; {use}")


def _prepare_synth(cfg: Liu2018TrainConfig) -> dict:
    collection = training_suite(cfg)
    morphable, record = collection.model, None
    if cfg.morphable:  # the suite's photos and true shapes are SynthFaces': the network must share its model
        morphable, record = _morphable(cfg)
        _require_same_model(cfg, morphable, record, collection.model,
                            f"the model of the synthetic suite (SynthFaces at resolution={cfg.resolution!r})",
                            "data.kind='synth' trains on SynthFaces shapes; give another model with "
                            "data.kind='imagefolder' and targets fitted with it")
    return {"morphable": morphable, "morphable_record": record, "n_classes": collection.config.n_identities,
            "batches": _batches(cfg, collection),
            "heldout_photos": heldout_set(cfg) if cfg.train.heldout_every else None}


def _prepare_folder(cfg: Liu2018TrainConfig) -> dict:
    """Photos and labels of the identity folder ``cfg.data.train``, targets from ``cfg.targets_path``."""
    from facelab.data import ImageFolderIdentities
    from facelab.fitting.targets import fitted_model, load_fitted_targets

    folder = ImageFolderIdentities(cfg.data.train, image_size=cfg.photo_size, progress=cfg.train.progress)
    if cfg.align:
        folder.require_landmarks("training on five-point aligned crops (align=True)")
    morphable, record = _morphable(cfg)
    # the coefficients of targets.npz are in the model `facelab fit` fitted, which the file records
    fitted = fitted_model(cfg.targets_path, folder)
    _require_same_model(cfg, morphable, record, fitted, f"the model {cfg.targets_path} was fitted with",
                        "fit and train with the same model (`facelab fit ROOT --set morphable=PATH` and "
                        "--set morphable=PATH here, or `facelab fit ROOT --set resolution=R` and --set resolution=R)")
    targets = load_fitted_targets(cfg.targets_path, folder, model=morphable)
    data = FolderTargets(folder, targets, align_to=tuple(cfg.image_size) if cfg.align else None)
    if cfg.pool:
        batches = pool_batches(folder_pool(data, progress=cfg.train.progress), cfg.train.batch_size, cfg.train.seed)
    else:
        batches = StepLoader(data, cfg.train.batch_size, sum(cfg.phase_steps), seed=cfg.train.seed,
                             num_workers=cfg.num_workers)
    return {"morphable": morphable, "morphable_record": record, "n_classes": folder.n_identities,
            "batches": batches}


def _prepare(cfg: Liu2018TrainConfig) -> dict:
    if cfg.data.kind == "imagefolder":
        return _prepare_folder(cfg)
    return _prepare_synth(cfg)


def _build_stage(cfg: Liu2018TrainConfig, stage: Stage, data: dict, parent: Path | None) -> Trainer:
    """The :class:`Trainer` of ``stage``: a fresh model from the seed, the parent's weights, the phase's optimiser."""
    from facelab.train.trainer import seed_everything

    phase, _, loss_override, _ = STAGES[stage.name]
    mcfg = model_config(cfg, data["morphable"], data["n_classes"], loss=loss_override,
                        disentangled=stage.name != "phase2_joint", morphable_record=data.get("morphable_record"))
    seed_everything(cfg.train.seed)  # the initial weights depend on the seed only
    model = build_liu2018_model(mcfg, morphable=data["morphable"])
    if parent is not None:
        ckpt = load_checkpoint(parent, expect_model=MODEL_NAME)
        state = ckpt["state_dict"]
        other_head = ckpt["model_config"]["model"].get("loss") != mcfg["model"]["loss"]
        if other_head:  # another identification head: keep the fresh one
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        model.load_state_dict(state, strict=not other_head)
    speed_up_encoder(model.encoder, cfg.channels_last, cfg.encoder_precision, cfg.compile_encoder)
    tcfg = cfg.train_config(phase, stage.name)
    optimizer = torch.optim.AdamW(phase_parameters(model, phase), lr=tcfg.lr, weight_decay=tcfg.weight_decay,
                                  **optimizer_options(cfg.fused_optimizer))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lr_factor(tcfg.steps, FINAL_LR_FRACTION))
    watch = {"encoder": model.encoder, "decoders": [model.id_decoder, model.res_decoder]} if phase == 3 else None
    heldout = None
    if data.get("heldout_photos") is not None:
        heldout = heldout_shape_error(cfg, data["morphable"], disentangled=mcfg["input"]["disentangled"],
                                      photos=data["heldout_photos"])
    return Trainer(model, optimizer, data["batches"], stage_loss(stage.name, cfg), tcfg, scheduler=scheduler,
                   model_name=MODEL_NAME, model_config=mcfg, extra_config=cfg, diagnostic_modules=watch,
                   chance=1.0 / data["n_classes"], heldout=heldout)


def _train(cfg: Liu2018TrainConfig) -> None:
    run_stages(cfg.out_dir, recipe_stages(cfg), build=lambda stage, data, parent: _build_stage(cfg, stage, data, parent),
               prepare=lambda: _prepare(cfg))
