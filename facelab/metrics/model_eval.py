"""Evaluate a trained facelab model on the SynthFaces benchmark suites.

Book chapter: ``book/07_evaluation.ipynb``. :func:`evaluate_model` loads a checkpoint
(or takes a model), renders the suite at the image size and mesh resolution recorded in
the model's config, runs the model and scores it with the same protocols and result
layout as :func:`facelab.metrics.baselines.run_baselines`, so both tables line up:

* ``micc``: MICC-style point-to-plane error (mm) per condition for "average over identity"
  (identity codes averaged over each video, decoded neutral), "three-view" (mean of the
  neutral meshes of the leftmost, most frontal and rightmost frames of each video, by the
  frames' yaw) and "single frame" (the middle frame's neutral mesh).
* ``bu3dfe``: vertex RMSE (mm, rigid alignment over the face mask) of the predicted
  *identity* (neutral) shape against the true neutral shape, and of the predicted shape
  with expression against the true shape, per |yaw| (0..90 step 10), overall and per
  expression; plus the 2D landmark NME of the reprojected landmarks per yaw bucket.
* ``lfw``: :func:`facelab.metrics.verify` of the model's identity embeddings.

A model is scored through the interface :class:`facelab.models.Evaluable` states; a
checkpoint is wrapped into it by the model registry (:func:`facelab.models.load_evaluable`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facelab.checks import check_choice, check_positive
from facelab.config import resolve_device, resolve_profile, torch_threads
from facelab.metrics._common import check_optional_sizes
from facelab.metrics.landmarks import landmark_nme, nme_by_yaw
from facelab.metrics.baselines import by_abs_yaw, micc_rows
from facelab.metrics.protocols import PROTOCOL_ICP_ITERS, PROTOCOL_ICP_TOL, micc_error
from facelab.metrics.reconstruction import rmse
from facelab.metrics.verification import verify
from facelab.models.morphable_record import require_synthfaces_mesh
from facelab.models.registry import evaluable_model, load_model

EVAL_SUITES = ("micc", "bu3dfe", "lfw")
PROFILES = ("quick", "standard", "full")
# Same quick-profile protocol limits as facelab.metrics.baselines, so the tables compare.
QUICK_MICC_IDENTITIES = 5
QUICK_ICP_ITERS = 30
QUICK_ICP_TOL = 1e-3  # mm
CPU_PROFILES = ("quick", "standard")
MICC_ROWS = ("average_over_identity", "three_view", "single_frame")
REPORT_JSON = "report.json"
REPORT_MD = "report.md"


@dataclass
class ModelEvalConfig:
    """Options of :func:`evaluate_model`. None means "the profile's value".

    Attributes:
        micc_identities, bu3dfe_identities, lfw_identities, lfw_pairs_per_fold: suite sizes
            (None: the suite's size for the profile; quick MICC: 5 subjects, as the baselines).
        icp_iters, icp_tol: ICP limits of the MICC protocol (iterations, mm).
        batch_size: images per forward pass / render call.
        seed: seed of the suites.
        device: where the suite is rendered and the model runs (``"auto"``: CUDA when available).
        num_threads: torch CPU threads while evaluating (-1: leave torch's setting; None: 1
            in the CPU profiles, else leave).

    >>> ModelEvalConfig().resolved("quick").micc_identities, ModelEvalConfig().resolved("standard").micc_identities
    (5, None)
    >>> ModelEvalConfig(lfw_identities=0).resolved("quick")
    Traceback (most recent call last):
    ...
    ValueError: lfw_identities: must be >= 1 (None: the profile's size), got 0
    """

    micc_identities: int | None = None
    bu3dfe_identities: int | None = None
    lfw_identities: int | None = None
    lfw_pairs_per_fold: int | None = None
    icp_iters: int | None = None
    icp_tol: float | None = None
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None

    def resolved(self, profile: str) -> "ModelEvalConfig":
        """A copy with the profile's values in place of None."""
        check_choice(profile, "profile", PROFILES)
        quick = profile == "quick"
        cpu = profile in CPU_PROFILES  # the CPU profiles share quick's ICP limits
        check_positive(self.batch_size, "batch_size", integer=True)
        check_optional_sizes(self, ("micc_identities", "bu3dfe_identities", "lfw_identities", "lfw_pairs_per_fold",
                                    "icp_iters"))
        out = dataclasses.replace(self, device=resolve_device(self.device))
        resolve_profile(out, {"micc_identities": QUICK_MICC_IDENTITIES if quick else None,
                              "icp_iters": QUICK_ICP_ITERS if cpu else PROTOCOL_ICP_ITERS,
                              "icp_tol": QUICK_ICP_TOL if cpu else PROTOCOL_ICP_TOL,
                              "num_threads": 1 if cpu else -1})
        return out


# ------------------------------------------------------------------ helpers
def _load(checkpoint_or_model, device: str):
    if isinstance(checkpoint_or_model, torch.nn.Module):
        return checkpoint_or_model.to(device).eval(), None, {"checkpoint": None, "model_name": type(checkpoint_or_model).__name__, "step": None}
    path = Path(checkpoint_or_model)
    model, ckpt = load_model(path, map_location=device)
    model = evaluable_model(model, ckpt).to(device)  # e.g. Liu et al.'s aligned-crop input pipeline
    return model, ckpt, {"checkpoint": str(path), "model_name": ckpt["model_name"], "step": ckpt["step"]}


def _model_setting(model, name: str):
    cfg = getattr(model, "config", None)
    value = getattr(cfg, name, None) if not isinstance(cfg, dict) else cfg.get(name)
    if value is None:
        raise ValueError(f"checkpoint_or_model: the model's config has no {name!r}; cannot tell which suite to render")
    return value


def suite_for(model, name: str, profile: str, cfg: ModelEvalConfig, **sizes):
    """The suite ``name`` rendered the way ``model`` sees photos (its ``config.image_size`` and
    ``config.resolution``), with ``cfg``'s device and seed; zero ``sizes`` keep the profile's."""
    from facelab.data import make_suite

    sizes = {k: v for k, v in sizes.items() if v}
    return make_suite(name, profile=profile, device=cfg.device, image_size=tuple(_model_setting(model, "image_size")),
                      resolution=_model_setting(model, "resolution"), seed=cfg.seed, **sizes)


#: the batch fields scoring reads (predict_suite's truth, aligned-crop inputs)
SCORED_FIELDS = ("image", "shape", "shape_identity", "landmarks2d", "label", "condition", "yaw_deg")


class RenderedSuite:
    """A suite whose batches are rendered once and replayed, so several models are scored on
    the very same photos without re-rendering. Other attributes come from the wrapped suite.

    ``fields``: the batch keys kept (default :data:`SCORED_FIELDS`, about 200 kB per 128 x 128
    photo; None keeps every key). Batches are rendered on first use, once per batch size;
    ``indices`` render anew.

    >>> from facelab.data import make_suite
    >>> s = RenderedSuite(make_suite("micc", n_identities=1, frames_per_video=1, image_size=16, resolution="quick"))
    >>> [b["image"].shape[0] for b in s.batches(2)], s.n_identities, len(s)
    ([2, 1], 1, 3)
    """

    def __init__(self, suite, fields: tuple[str, ...] | None = SCORED_FIELDS) -> None:
        self.suite = suite
        self.fields = fields
        self._cache: dict[int, list[dict]] = {}

    def batches(self, batch_size: int = 64, indices=None, progress: bool = False):
        check_positive(batch_size, "batch_size", integer=True)
        if indices is not None:
            return self.suite.batches(batch_size, indices, progress)
        if batch_size not in self._cache:
            keep = lambda b: b if self.fields is None else {k: v for k, v in b.items() if k in self.fields}  # noqa: E731
            self._cache[batch_size] = [keep(b) for b in self.suite.batches(batch_size, progress=progress)]
        return iter(self._cache[batch_size])

    def __getattr__(self, name: str):
        return getattr(self.__dict__["suite"], name)

    def __len__(self) -> int:
        return len(self.suite)


@torch.no_grad()
def predict_suite(model, suite, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Run ``model.reconstruct`` over every image of ``suite`` (in order), with the ground truth.

    A model with a ``prepare_images(batch) -> images`` method (e.g. one that wants
    five-point aligned crops) gets its images through it.

    Returns CPU tensors: the model's ``shape, identity_shape (N, V, 3)`` mm, ``embedding (N, D)``,
    ``landmarks2d`` (if the model gives them) and the truth ``gt_shape, gt_identity (N, V, 3)``,
    ``gt_landmarks2d (N, 68, 2)``, ``label, condition, yaw_deg (N,)``, each where the suite's
    batches carry it (a folder on disk, :class:`facelab.data.MICCVideos`, holds no true shapes).
    """
    morphable = suite.model
    keep_pred = ("shape", "identity_shape", "embedding", "landmarks2d")
    keep_gt = {"shape": "gt_shape", "shape_identity": "gt_identity", "landmarks2d": "gt_landmarks2d",
               "label": "label", "condition": "condition", "yaw_deg": "yaw_deg"}
    parts: dict[str, list] = {}
    prepare = getattr(model, "prepare_images", None)
    for batch in suite.batches(batch_size):
        out = model.reconstruct(prepare(batch) if prepare else batch["image"], morphable)
        for k in keep_pred:
            if k in out:
                parts.setdefault(k, []).append(out[k].detach().cpu())
        for k, name in keep_gt.items():
            if k in batch:
                parts.setdefault(name, []).append(batch[k].detach().cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


# ---------------------------------------------------------------------- MICC
def micc_suite(model, profile: str, cfg: ModelEvalConfig):
    """The MICC-style suite ``model`` is scored on (its image size and mesh resolution)."""
    return suite_for(model, "micc", profile, cfg.resolved(profile), n_identities=cfg.resolved(profile).micc_identities)


def score_micc(model, profile: str, cfg: ModelEvalConfig, suite=None, pred: dict | None = None,
               return_units: bool = False):
    """MICC rows of ``model``; ``suite``/``pred`` (from :func:`predict_suite`) are reused when given.

    With ``return_units`` also ``{row: (n_subjects,) float array}``: each subject's error (mm)
    averaged over its videos, in label order, the units a paired bootstrap resamples.

    ``suite`` needs ``model`` (the morphable model handed to ``model``), ``n_identities``,
    ``condition_names``, ``scan(label) (V, 3)`` mm, and ``batches`` with ``image``, ``label``,
    ``condition`` (and what the model's ``prepare_images`` reads). A suite with
    ``scan_landmarks(label) (L, 3)`` and ``nose_tip(label) (3,)`` mm (a folder of real scans,
    :class:`facelab.data.MICCVideos`) is cropped around that nose tip and aligned from the
    landmarks when there are 68 (L = 1: the nose tip alone); else
    the scan shares the morphable model's vertices (SynthFaces). Without ``yaw_deg`` in the
    batches the ``three_view`` row is left out (it picks frames by yaw).
    """
    suite = suite if suite is not None else micc_suite(model, profile, cfg)
    morphable = suite.model
    pred = pred if pred is not None else predict_suite(model, suite, cfg.batch_size)
    score = _micc_scorer(suite, cfg, torch.unique(pred["label"]).tolist())
    key = pred["label"] * 100 + pred["condition"]
    errors = {row: [] for row in MICC_ROWS if row != "three_view" or "yaw_deg" in pred}
    conditions, labels = [], []
    for v in torch.unique(key).tolist():
        frames = torch.nonzero(key == v).flatten()
        label, cond = int(pred["label"][frames[0]]), int(pred["condition"][frames[0]])
        conditions.append(suite.condition_names[cond])
        labels.append(label)
        with torch.no_grad():
            avg = model.decode_identity(pred["embedding"][frames].mean(0, keepdim=True).to(cfg.device), morphable)[0]
        errors["average_over_identity"].append(score(avg, label))
        if "three_view" in errors:
            yaw = pred["yaw_deg"][frames]
            three = frames[torch.stack([yaw.argmin(), yaw.abs().argmin(), yaw.argmax()])]
            errors["three_view"].append(score(pred["identity_shape"][three].mean(0), label))
        errors["single_frame"].append(score(pred["identity_shape"][frames[frames.numel() // 2]], label))
    rows = micc_rows(errors, conditions)
    if not return_units:
        return rows
    labels = np.asarray(labels)
    subjects = np.unique(labels)
    units = {row: np.array([np.mean(np.asarray(errs)[labels == k]) for k in subjects]) for row, errs in errors.items()}
    return rows, units


def _micc_scorer(suite, cfg: ModelEvalConfig, labels):
    """``score(mesh (V, 3) mm, label) -> mm``: the MICC point-to-plane error of one predicted mesh
    against subject ``label``'s scan (landmark-initialised ICP with ``cfg``'s iterations)."""
    morphable = suite.model
    faces = morphable.faces.numpy()
    lm = morphable.require_landmarks("MICC scoring (landmark-initialised ICP)").numpy()
    truth = {lab: _scan_truth(suite, lab, morphable) for lab in labels}

    def score(mesh: torch.Tensor, label: int) -> float:
        (scan, nose, scan_lm), p = truth[label], _np(mesh)
        out = micc_error(p, faces, scan, nose_tip_gt=nose, pred_landmarks=None if scan_lm is None else p[lm],
                         gt_landmarks=scan_lm, max_iter=cfg.icp_iters, tol=cfg.icp_tol)
        return out["mean"]

    return score


def score_mean_face_micc(suite, cfg: ModelEvalConfig) -> np.ndarray:
    """``(n_subjects,)`` mm: each subject's MICC error when every video is answered with the suite
    model's mean face, in label order (the floor a reconstruction must beat; as
    :func:`facelab.metrics.baselines.micc_baselines`' ``mean_face`` row, per subject).

    A constant prediction scores the same for every video of a subject, so each subject is
    scored once. ``suite`` as for :func:`score_micc` (its ``n_identities`` and ``scan``).

    >>> from facelab.data import make_suite
    >>> suite = make_suite("micc", n_identities=2, frames_per_video=1, image_size=16, resolution="quick")
    >>> errors = score_mean_face_micc(suite, ModelEvalConfig(icp_iters=2).resolved("quick"))
    >>> errors.shape, bool((errors > 0).all())
    ((2,), True)
    """
    labels = list(range(suite.n_identities))
    score = _micc_scorer(suite, cfg, labels)
    mean = suite.model.mean_shape
    return np.array([score(mean, lab) for lab in labels])


def _scan_truth(suite, label: int, morphable) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Scan ``(V, 3)``, nose tip ``(3,)`` and landmarks ``(68, 3)`` or None (mm) of subject ``label``."""
    scan = _np(suite.scan(label))
    own = getattr(suite, "scan_landmarks", None)
    if own is None:  # a SynthFaces scan: the morphable model's vertices
        return scan, scan[morphable.nose_tip], scan[morphable.require_landmarks("MICC scan landmarks").cpu().numpy()]
    points = _np(own(label))
    # the nose tip alone: crop there, align from the centroids
    return scan, _np(suite.nose_tip(label)), points if points.shape[0] > 1 else None


# -------------------------------------------------------------------- BU3DFE
def _bu3dfe(model, profile: str, cfg: ModelEvalConfig) -> dict:
    from facelab.data import BU3DFE_EXPRESSIONS

    suite = suite_for(model, "bu3dfe", profile, cfg, n_identities=cfg.bu3dfe_identities)
    morphable = suite.model
    pred = predict_suite(model, suite, cfg.batch_size)
    mask = morphable.face_mask.numpy()
    yaw = _np(pred["yaw_deg"])
    expression = suite.table.expression_prototype.numpy()
    per_image = {
        "identity": rmse(_np(pred["identity_shape"]), _np(pred["gt_identity"]), mask=mask, align="rigid"),
        "shape": rmse(_np(pred["shape"]), _np(pred["gt_shape"]), mask=mask, align="rigid"),
    }
    out = {
        "rmse": {name: by_abs_yaw(e, yaw) for name, e in per_image.items()},
        "rmse_by_expression": {
            name: {expr: float(e[expression == k].mean()) for k, expr in enumerate(BU3DFE_EXPRESSIONS) if (expression == k).any()}
            for name, e in per_image.items()
        },
    }
    if "landmarks2d" in pred:
        out["landmark_nme"] = {"model": nme_by_yaw(landmark_nme(_np(pred["landmarks2d"]), _np(pred["gt_landmarks2d"])), yaw)}
    return out


# ----------------------------------------------------------------------- LFW
def lfw_suite(model, profile: str, cfg: ModelEvalConfig):
    """The LFW-style suite ``model`` is scored on (its image size and mesh resolution)."""
    return suite_for(model, "lfw", profile, cfg, n_identities=cfg.lfw_identities, pairs_per_fold=cfg.lfw_pairs_per_fold)


def score_lfw(model, profile: str, cfg: ModelEvalConfig, suite=None):
    """:func:`~facelab.metrics.verify` of ``model``'s identity embeddings on the LFW-style suite.

    Returns the :class:`~facelab.metrics.verification.VerificationResult`; its ``pair_correct``
    are the per-pair units of a paired bootstrap. ``suite`` is reused when given.
    """
    suite = suite if suite is not None else lfw_suite(model, profile, cfg)
    pred = predict_suite(model, suite, cfg.batch_size)
    emb = _np(pred["embedding"])
    pairs = suite.table.pairs.numpy()
    return verify(emb[pairs[:, 0]], emb[pairs[:, 1]], suite.table.issame.numpy(), n_folds=suite.config.n_folds)


def _lfw(model, profile: str, cfg: ModelEvalConfig, row: str) -> dict:
    return {row: score_lfw(model, profile, cfg).to_dict()}


# ----------------------------------------------------------------------- API
def evaluate_model(checkpoint_or_model, suite: str, profile: str = "quick", out_dir=None,
                   config: ModelEvalConfig | None = None, **overrides) -> dict:
    """Score a trained model on a SynthFaces suite (see the module docstring).

    Args:
        checkpoint_or_model: a checkpoint path (:func:`facelab.models.load_model`) or a model.
        suite: ``"micc"``, ``"bu3dfe"`` or ``"lfw"``.
        profile: ``"quick"`` or ``"full"`` suite sizes.
        out_dir: if given, write ``report.json`` and ``report.md`` there.
        config: a :class:`ModelEvalConfig`; ``overrides`` replace its fields.

    Raises:
        ValueError: for ``micc`` and ``bu3dfe``, a checkpoint trained with a morphable-model file whose
            mesh is not SynthFaces' (:func:`facelab.models.morphable_record.require_synthfaces_mesh`).

    Returns:
        ``{"suite", "profile", "model_name", "checkpoint", "step", "image_size", "resolution",
        "config", <suite>: results, "time_s"}`` where the results are, for ``micc``,
        ``{row: {condition: {"mean", "std", "n"}}}`` (mm) with rows ``average_over_identity``,
        ``three_view``, ``single_frame`` and conditions ``cooperative``, ``indoor``,
        ``outdoor``, ``all``; for ``bu3dfe``, ``{"rmse": {"identity"|"shape": {"0".."90",
        "overall"}}, "rmse_by_expression": {...: {expression: mm}}, "landmark_nme": {"model":
        buckets}}``; for ``lfw``, ``{model_name: verify(...).to_dict()}``.
    """
    check_choice(suite, "suite", EVAL_SUITES)
    check_choice(profile, "profile", PROFILES)
    cfg = dataclasses.replace(config or ModelEvalConfig(), **overrides).resolved(profile)
    start = time.perf_counter()
    with torch_threads(cfg.num_threads):
        model, ckpt, info = _load(checkpoint_or_model, cfg.device)
        if ckpt is not None and suite != "lfw":  # LFW scores identity embeddings only, whatever the mesh
            require_synthfaces_mesh(ckpt["model_config"], _model_setting(model, "resolution"), checkpoint_or_model,
                                    f"--suite {suite}")
        result = {"suite": suite, "profile": profile, **info,
                  "image_size": list(_model_setting(model, "image_size")), "resolution": _model_setting(model, "resolution"),
                  "config": dataclasses.asdict(cfg)}
        if suite == "micc":
            result["micc"] = score_micc(model, profile, cfg)
        elif suite == "bu3dfe":
            result["bu3dfe"] = _bu3dfe(model, profile, cfg)
        else:
            result["lfw"] = _lfw(model, profile, cfg, info["model_name"])
    result["time_s"] = round(time.perf_counter() - start, 2)
    if out_dir is not None:
        write_report(result, out_dir)
    return result


def report_markdown(result: dict) -> str:
    """Markdown tables of an :func:`evaluate_model` result."""
    from facelab.metrics.report import baselines_markdown, markdown_table

    head = (f"**{result['model_name']}** ({result.get('checkpoint') or 'in-memory model'}, step {result.get('step')}) "
            f"on `{result['suite']}` ({result['profile']} profile, {result['image_size'][0]}x{result['image_size'][1]} px, "
            f"{result['resolution']} mesh)")
    parts = [head]
    if "micc" in result or "lfw" in result:
        parts.append(baselines_markdown({k: v for k, v in result.items() if k in ("micc", "lfw")}))
    if "bu3dfe" in result:
        bu = result["bu3dfe"]
        parts.append("**BU-3DFE-style vertex RMSE (mm) per |yaw| (degrees)**\n\n" + markdown_table(bu["rmse"], row_header="shape"))
        parts.append("**BU-3DFE-style vertex RMSE (mm) per expression**\n\n"
                     + markdown_table(bu["rmse_by_expression"], row_header="shape"))
        if "landmark_nme" in bu:
            nme = {name: {k: 100 * v for k, v in row.items()} for name, row in bu["landmark_nme"].items()}
            parts.append("**2D landmark NME (%) per yaw bucket**\n\n" + markdown_table(nme, fmt="{:.2f}", row_header="landmarks"))
    parts.append(f"Time: {result['time_s']} s")
    return "\n\n".join(parts) + "\n"


def write_report(result: dict, out_dir, markdown: str | None = None) -> Path:
    """Write ``report.json`` and ``report.md`` (``markdown``, else :func:`report_markdown` of ``result``)
    into ``out_dir``; returns the folder."""
    from facelab.metrics.report import write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(result, out / REPORT_JSON)
    (out / REPORT_MD).write_text(report_markdown(result) if markdown is None else markdown)
    return out


def evaluate_model_cli(checkpoint, suite: str, as_json: bool = False, out=None, profile: str = "quick",
                       overrides: list[str] | None = None) -> int:
    """``facelab eval model CHECKPOINT --suite S [--json] [--out DIR] [--profile P] [--set K=V]``.

    Prints the JSON result (``as_json``) or the Markdown report; returns the exit code 0.
    Wire it into the CLI with one line::

        m = sub.add_parser("model"); ...; m.set_defaults(func=lambda a: evaluate_model_cli(a.checkpoint, a.suite, a.json, a.out))
    """
    from facelab.config import apply_overrides
    from facelab.metrics.report import write_json

    if not Path(checkpoint).exists():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint file")
    cfg = apply_overrides(ModelEvalConfig(), overrides)
    result = evaluate_model(checkpoint, suite, profile=profile, out_dir=out, config=cfg)
    print(write_json(result, indent=None) if as_json else report_markdown(result))
    return 0
