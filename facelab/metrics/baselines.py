"""Evaluation baselines on the SynthFaces suites: the floor and the ceiling of every table.

Book chapter: ``book/07_evaluation.ipynb``. Three methods need no training:

* **mean face** (``mean_face``): always predict the model's mean shape. The floor.
* **oracle** (``oracle_k{K}``): the best linear-3DMM approximation of the *true* shape with
  the K leading identity components (plus every expression component where the truth
  has an expression): :func:`oracle_projection`. No image-based method using that linear
  model can beat it; it shows how much the model's truncation alone costs.
* **landmark fit** (``landmark_fit``): :func:`facelab.fitting.fit_landmarks`, one image at a
  time, on the 68 ground-truth 2D landmarks perturbed like a real detector's output
  (:func:`detector_landmarks`: 3.5 % of the inter-ocular distance on a frontal face,
  heavier on the jaw contour and under large yaw), each point weighed by its inverse
  variance. ``landmark_fit_exact`` (and ``landmark_fit_exact_avg`` on MICC) fits the exact
  landmarks: what a perfect detector would allow.

and three suites are scored (see :func:`run_baselines` for the exact protocols):

* ``micc``: MICC-style point-to-plane error (:func:`facelab.metrics.micc_error`) per
  condition. For the landmark fit: a single frame (``landmark_fit``), "average over
  identity" (``landmark_fit_avg``: identity coefficients averaged over the video,
  decoded neutral) and "three-view" (``landmark_fit_3view``: mean of the neutral meshes
  of the leftmost, most frontal and rightmost frames).
* ``bu3dfe``: vertex RMSE after rigid alignment over the face mask, per |yaw| and overall,
  and the fit's 2D landmark NME per yaw bucket.
* ``lfw``: verification (:func:`facelab.metrics.verify`) with standardised identity
  coefficients ``alpha_id / std`` as the embedding: the fit's, and the true ones truncated
  to K as an upper bound. The mean face has no embedding (``None``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from facelab.checks import check_choice, check_positive, check_tensor
from facelab.config import resolve_device, resolve_profile, torch_threads
from facelab.metrics._common import check_optional_sizes
from facelab.metrics.landmarks import landmark_nme, nme_by_yaw
from facelab.metrics.protocols import PROTOCOL_ICP_ITERS, PROTOCOL_ICP_TOL, micc_error, micc_table
from facelab.metrics.reconstruction import rmse
from facelab.metrics.verification import verify

BASELINE_SUITES = ("micc", "bu3dfe", "lfw")
PROFILES = ("quick", "standard", "full")
CPU_PROFILES = ("quick", "standard")  # quick protocol limits (ICP, single frames, threads)
DEFAULT_ORACLE_KS = (10, 40, 80)
# Std of the Gaussian noise added to ground-truth 2D landmarks, as a fraction of the image
# size: 0.01 gives a landmark NME of about 2.5 %, a good modern detector.
DEFAULT_LANDMARK_NOISE = 0.01
# The detector model of detector_landmarks: frontal mean error as a fraction of the
# inter-ocular distance (a good 68-point detector on 300-W's common set: 3-4 %), and the
# relative error of each iBUG-68 point: jaw contour 0-16, brows 17-26, nose 27-35, eyes
# 36-47, mouth 48-67 (the contour is ill-defined on a smooth cheek; eye corners are sharp).
DETECTOR_NME = 0.035
DETECTOR_WEIGHTS = (2.0,) * 17 + (1.2,) * 10 + (0.8,) * 9 + (0.6,) * 12 + (0.9,) * 20
DETECTOR_YAW_DEG = 90.0  # the error doubles at a profile view
DETECTOR_MIN_COS = 0.3  # keeps the frontal-IOD estimate finite near 90 degrees
OUTER_EYE_CORNERS = (36, 45)
LANDMARK_MODELS = ("detector", "gaussian")
# Baselines only need landmarks, never pixels: render small.
DEFAULT_IMAGE_SIZE = 16
# Lower bound of the landmark noise std assumed by the fit, fraction of the image size.
MIN_LANDMARK_STD = 1e-3
FIT_CHUNK = 64  # images per fit_landmarks call
# The quick profile scores fewer MICC subjects and stops ICP earlier: each MICC error is
# one ICP against an exact point-to-triangle search (~0.3 s on a laptop core).
QUICK_MICC_IDENTITIES = 5
QUICK_ICP_ITERS = 30
QUICK_ICP_TOL = 1e-3  # mm: a thousandth of the errors being measured
PROFILE_RESOLUTION = {"quick": "quick", "standard": "quick", "full": "default"}
_KEEP_KEYS = ("label", "condition", "shape", "shape_identity", "alpha_id", "landmarks2d", "yaw_deg")


@dataclass
class BaselineConfig:
    """Options of :func:`run_baselines`. None means "the profile's value".

    Attributes:
        profile: ``"quick"`` (CPU, minutes), ``"standard"`` (CPU, the suites with power of
            the standard reproductions) or ``"full"`` (the suites' full sizes).
        suites: which of ``"micc"``, ``"bu3dfe"``, ``"lfw"`` to run.
        oracle_ks: numbers of identity components of the oracle rows (clipped to the model's).
        image_size: rendered image size, px (only landmarks are used).
        resolution: mesh preset (``""``: ``quick`` for the quick profile, else ``default``).
        landmark_model: what the landmark fit sees: ``"detector"`` (:func:`detector_landmarks`:
            errors like a real 68-point detector's, heavier on the jaw and at large yaw, and
            a fit that weighs each point by its inverse variance) or ``"gaussian"`` (i.i.d.
            noise of ``landmark_noise``). The ``*_exact`` rows fit the true landmarks.
        detector_nme: the detector's frontal mean error, fraction of the inter-ocular distance.
        landmark_noise: std of the ``"gaussian"`` landmark noise, fraction of the image size.
        fit_iters: (pose, shape) alternations of the landmark fit.
        micc_identities, bu3dfe_identities, lfw_identities, lfw_pairs_per_fold: suite sizes
            (None: the suite's size for the profile; quick MICC: 5 subjects).
        micc_single_frames: frames per video scored for the single-frame row (evenly spaced;
            ``-1``: all frames; None: the profile's, 1 in the CPU profiles, else all).
        icp_iters, icp_tol: ICP limits of the MICC protocol (iterations, mm).
        batch_size: images generated per render call.
        seed: seed of the suites and of the landmark noise.
        device: where suites are generated and fits run.
        num_threads: torch CPU threads while running (-1: leave torch's setting; None: the
            profile's, 1 in the CPU profiles, else leave). The fits are many small batched
            solves: on a busy 2-core machine one thread is several times faster than two.
    """

    profile: str = "quick"
    suites: tuple[str, ...] = BASELINE_SUITES
    oracle_ks: tuple[int, ...] = DEFAULT_ORACLE_KS
    image_size: int = DEFAULT_IMAGE_SIZE
    resolution: str = ""
    landmark_model: str = "detector"
    detector_nme: float = DETECTOR_NME
    landmark_noise: float = DEFAULT_LANDMARK_NOISE
    fit_iters: int = 10
    micc_identities: int | None = None
    bu3dfe_identities: int | None = None
    lfw_identities: int | None = None
    lfw_pairs_per_fold: int | None = None
    micc_single_frames: int | None = None
    icp_iters: int | None = None
    icp_tol: float | None = None
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        check_choice(self.profile, "profile", PROFILES)
        self.suites = tuple(self.suites)
        for s in self.suites:
            check_choice(s, "suites", BASELINE_SUITES)
        self.oracle_ks = tuple(int(k) for k in self.oracle_ks)
        for k in self.oracle_ks:
            check_positive(k, "oracle_ks", integer=True)
        check_positive(self.image_size, "image_size", integer=True)
        check_positive(self.fit_iters, "fit_iters", integer=True)
        check_positive(self.batch_size, "batch_size", integer=True)
        check_choice(self.landmark_model, "landmark_model", LANDMARK_MODELS)
        if not self.detector_nme >= 0:
            raise ValueError(f"detector_nme: must be >= 0, got {self.detector_nme}")
        if not self.landmark_noise >= 0:
            raise ValueError(f"landmark_noise: must be >= 0, got {self.landmark_noise}")
        quick = self.profile == "quick"
        cpu = self.profile in CPU_PROFILES
        if not self.resolution:
            self.resolution = PROFILE_RESOLUTION[self.profile]
        check_optional_sizes(self, ("micc_identities", "bu3dfe_identities", "lfw_identities", "lfw_pairs_per_fold"))
        resolve_profile(self, {"micc_identities": QUICK_MICC_IDENTITIES if quick else None,
                               "micc_single_frames": 1 if cpu else -1,
                               "icp_iters": QUICK_ICP_ITERS if cpu else PROTOCOL_ICP_ITERS,
                               "icp_tol": QUICK_ICP_TOL if cpu else PROTOCOL_ICP_TOL,
                               "num_threads": 1 if cpu else -1})


# ------------------------------------------------------------------ building blocks
def oracle_projection(model, verts: torch.Tensor, k: int, expression: bool = False) -> torch.Tensor:
    """The best linear-3DMM approximation of true shapes with ``k`` identity components.

    Least squares over ``mean + B_id[:, :k] a + B_exp e`` (the expression basis only if
    ``expression``). Identity and expression bases are each orthonormal but not mutually
    orthogonal, so the joint fit is a least-squares solve, not two projections.

    Args:
        model: a :class:`~facelab.morphable.model.MorphableModel`.
        verts: ``(B, V, 3)`` float, mm, true shapes in the model's frame.
        k: identity components, ``1 <= k <= model.n_shape``.
        expression: also use every expression component (for non-neutral truths).

    Returns:
        ``(B, V, 3)`` float, mm (``verts``' dtype).

    >>> from facelab.morphable.model import MorphableModel
    >>> Q = torch.linalg.qr(torch.randn(12, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))[0]
    >>> m = MorphableModel(torch.zeros(4, 3, dtype=torch.float64), Q, torch.ones(3, dtype=torch.float64),
    ...     torch.zeros(12, 0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64), torch.zeros(4, 3, dtype=torch.float64),
    ...     torch.zeros(12, 0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64), torch.tensor([[0, 1, 2]]),
    ...     torch.zeros(0, dtype=torch.long), torch.arange(4), torch.ones(4, dtype=torch.bool), 0)
    >>> truth = m.shape(torch.tensor([[3.0, 2.0, 1.0]], dtype=torch.float64))
    >>> bool(torch.allclose(oracle_projection(m, truth, 3), truth))
    True
    """
    check_tensor(verts, "verts", ("B", model.n_verts, 3))
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= model.n_shape:
        raise ValueError(f"k: expected an int in [1, {model.n_shape}], got {k!r}")
    basis = model.shape_basis[:, :k]
    if expression and model.n_exp:
        basis = torch.cat([basis, model.exp_basis], dim=1)
    basis = basis.to(verts.device, torch.float64)
    offset = (verts.to(torch.float64) - model.mean_shape.to(verts.device, torch.float64)).reshape(verts.shape[0], -1)
    coeffs = torch.linalg.lstsq(basis, offset.T).solution  # (K', B)
    fitted = model.mean_shape.to(verts.device, torch.float64) + (basis @ coeffs).T.reshape(verts.shape)
    return fitted.to(verts.dtype)


def noisy_landmarks(landmarks2d: torch.Tensor, noise_px: float, seed: int = 0) -> torch.Tensor:
    """Ground-truth landmarks plus i.i.d. Gaussian noise of std ``noise_px`` (a "detector").

    ``landmarks2d: (B, N, 2)`` float, px -> ``(B, N, 2)``, deterministic from ``seed``.

    >>> x = torch.zeros(2, 68, 2)
    >>> noisy_landmarks(x, 0.0).abs().max().item(), round(noisy_landmarks(x, 1.0).std().item(), 1)
    (0.0, 1.0)
    """
    check_tensor(landmarks2d, "landmarks2d", ("B", "N", 2))
    if not noise_px >= 0:
        raise ValueError(f"noise_px: must be >= 0, got {noise_px}")
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(landmarks2d.shape, generator=g, dtype=torch.float64)
    return landmarks2d + (noise_px * noise).to(landmarks2d.device, landmarks2d.dtype)


def detector_landmarks(landmarks2d: torch.Tensor, yaw_deg: torch.Tensor, nme: float = DETECTOR_NME, seed: int = 0) -> torch.Tensor:
    """Ground-truth landmarks perturbed like a real 68-point detector's output.

    Each point gets independent Gaussian noise whose std is proportional to the face's
    frontal inter-ocular distance (outer eye corners, divided by ``cos(yaw)`` so a turned
    head keeps its scale), to the point's weight in :data:`DETECTOR_WEIGHTS` (the jaw
    contour worst, the eye corners best, as on 300-W) and to ``1 + |yaw| / DETECTOR_YAW_DEG``
    (detectors degrade as the face turns). The scale is set so that a frontal face's mean
    point error is ``nme`` of its inter-ocular distance; on the ``bu3dfe`` suite's yaw
    range that gives about twice the error at 90 degrees.

    Args:
        landmarks2d: ``(B, 68, 2)`` float, px, the truth.
        yaw_deg: ``(B,)`` float, degrees.
        nme: frontal mean error as a fraction of the inter-ocular distance.
        seed: seed of the noise (deterministic).

    Returns:
        ``(B, 68, 2)`` float, px.

    >>> lm = torch.zeros(1, 68, 2); lm[0, 45, 0] = 100.0  # outer eye corners 100 px apart
    >>> err = (detector_landmarks(lm.expand(4000, -1, -1), torch.zeros(4000)) - lm).norm(dim=-1).mean()
    >>> round(float(err), 1)  # 3.5 % of 100 px
    3.5
    """
    std = detector_std(landmarks2d, yaw_deg, nme)
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(landmarks2d.shape, generator=g, dtype=torch.float64).to(landmarks2d.device)
    return (landmarks2d.double() + std[..., None] * noise).to(landmarks2d.dtype)


def detector_std(landmarks2d: torch.Tensor, yaw_deg: torch.Tensor, nme: float = DETECTOR_NME) -> torch.Tensor:
    """``(B, 68)`` float64 px: the per-axis noise std :func:`detector_landmarks` gives each point.

    >>> lm = torch.zeros(1, 68, 2); lm[0, 45, 0] = 100.0
    >>> s = detector_std(lm, torch.tensor([0.0]))
    >>> bool(s[0, 0] > s[0, 36])  # the jaw contour is noisier than the eye corners
    True
    """
    check_tensor(landmarks2d, "landmarks2d", ("B", 68, 2))
    check_tensor(yaw_deg, "yaw_deg", (landmarks2d.shape[0],))
    if not nme >= 0:
        raise ValueError(f"nme: must be >= 0, got {nme}")
    lm = landmarks2d.double()
    yaw = yaw_deg.double().abs().to(lm.device)
    cos = torch.cos(torch.deg2rad(yaw)).clamp_min(DETECTOR_MIN_COS)
    iod = (lm[:, OUTER_EYE_CORNERS[1]] - lm[:, OUTER_EYE_CORNERS[0]]).norm(dim=-1) / cos  # (B,)
    weights = torch.as_tensor(DETECTOR_WEIGHTS, dtype=torch.float64, device=lm.device)
    # E|e| = sigma sqrt(pi / 2) for isotropic 2D Gaussian noise of std sigma per axis
    unit = nme / (math.sqrt(math.pi / 2) * float(weights.mean()))
    return unit * iod[:, None] * weights[None] * (1 + yaw[:, None] / DETECTOR_YAW_DEG)


def _ks(cfg: BaselineConfig, model) -> list[int]:
    return sorted({min(k, model.n_shape) for k in cfg.oracle_ks})


def _suite(cfg: BaselineConfig, name: str, **sizes):
    from facelab.data import make_suite

    sizes = {k: v for k, v in sizes.items() if v}
    return make_suite(name, profile=cfg.profile, device=cfg.device, image_size=cfg.image_size,
                      resolution=cfg.resolution, seed=cfg.seed, **sizes)


def _collect(collection, batch_size: int) -> dict[str, torch.Tensor]:
    """Ground truth of every image of a suite (pixels dropped), float64."""
    parts = [{k: b[k] for k in _KEEP_KEYS} for b in collection.batches(batch_size)]
    out = {k: torch.cat([p[k] for p in parts]) for k in _KEEP_KEYS}
    for k, v in out.items():
        if v.is_floating_point():
            out[k] = v.double()
    return out


@dataclass
class _Fit:
    """The parts of a per-image :class:`~facelab.fitting.LandmarkFit` the baselines use."""

    alpha_id: torch.Tensor  # (B, K_id)
    identity_shapes: torch.Tensor  # (B, V, 3) mm, neutral
    shapes: torch.Tensor  # (B, V, 3) mm, with expression
    pose: torch.Tensor  # (B, 6)


def _observed(cfg: BaselineConfig, gt: dict, salt: int, exact: bool) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """The landmarks a fit sees, its per-point weights and the noise std (px) it assumes."""
    floor = MIN_LANDMARK_STD * cfg.image_size
    if exact:
        return gt["landmarks2d"], None, floor
    seed = cfg.seed * 1000 + salt
    if cfg.landmark_model == "detector":
        std = detector_std(gt["landmarks2d"], gt["yaw_deg"], cfg.detector_nme)
        observed = detector_landmarks(gt["landmarks2d"], gt["yaw_deg"], cfg.detector_nme, seed=seed)
        # MAP with each point's own variance: weights (ref / std)^2 at a reference std
        ref = float(std.median().clamp_min(floor))
        return observed, (ref / std.clamp_min(floor)) ** 2, ref
    noise_px = cfg.landmark_noise * cfg.image_size
    # The MAP fit weighs landmarks by the noise they actually have (floored: no noise at
    # all would make the prior vanish).
    return noisy_landmarks(gt["landmarks2d"], noise_px, seed=seed), None, max(noise_px, floor)


def _landmark_fit(cfg: BaselineConfig, model, gt: dict, salt: int, exact: bool = False) -> tuple[_Fit, torch.Tensor]:
    """Single-image landmark fits of every image, in chunks (small batched solves are faster)."""
    from facelab.fitting import fit_landmarks

    observed, weights, std_px = _observed(cfg, gt, salt, exact)
    chunks = torch.split(torch.arange(observed.shape[0]), FIT_CHUNK)
    parts = [fit_landmarks(model, observed[c], weights=None if weights is None else weights[c],
                           n_iter=cfg.fit_iters, landmark_std_px=std_px) for c in chunks]
    fit = _Fit(*(torch.cat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(_Fit)))
    return fit, observed


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


# ------------------------------------------------------------------------ MICC
def _micc_videos(gt: dict) -> list[dict]:
    """One entry per (subject, condition) video: its frame indices, label and condition."""
    videos = []
    key = gt["label"] * 100 + gt["condition"]
    for v in torch.unique(key).tolist():
        idx = torch.nonzero(key == v).flatten()
        videos.append({"frames": idx, "label": int(gt["label"][idx[0]]), "condition": int(gt["condition"][idx[0]])})
    return videos


def _spaced(frames: torch.Tensor, n: int) -> torch.Tensor:
    if n < 0 or n >= frames.numel():
        return frames
    # evenly spaced, the middle one for n = 1 (the frontal frame of a cooperative sweep)
    pos = ((torch.arange(n) + 0.5) * frames.numel() / n).long()
    return frames[pos]


def micc_baselines(cfg: BaselineConfig | None = None, details: bool = False) -> dict:
    """MICC-style point-to-plane errors (mm) of the baselines, per condition.

    Each row of the result maps ``cooperative / indoor / outdoor / all`` to
    ``{"mean", "std", "n"}`` over videos (mean of each video's per-vertex errors; the
    ``landmark_fit`` row averages the errors of ``micc_single_frames`` frames per video).
    With ``details=True`` a ``"details"`` entry holds, per row, the per-video
    ``distances`` (list of ``(M,)`` mm arrays) and ``crop_index``, plus ``scans``
    ``(S, V, 3)``, ``faces``, ``video_label``, ``video_condition`` and each row's
    ``video_errors`` (mm, one per video; not JSON).
    """
    cfg = cfg or BaselineConfig()
    suite = _suite(cfg, "micc", n_identities=cfg.micc_identities)
    model = suite.model.to(dtype=torch.float64)
    gt = _collect(suite, cfg.batch_size)
    fit, _ = _landmark_fit(cfg, model, gt, salt=1)
    exact, _ = _landmark_fit(cfg, model, gt, salt=1, exact=True)
    faces = _np(model.faces)
    scans = torch.stack([suite.scan(i).double() for i in range(suite.n_identities)])

    videos = _micc_videos(gt)
    per_subject = {"mean_face": model.mean_shape[None].expand(suite.n_identities, -1, -1)}
    for k in _ks(cfg, model):
        per_subject[f"oracle_k{k}"] = oracle_projection(model, scans, k)
    lm = _np(model.require_landmarks("MICC scoring (landmark-initialised ICP)"))

    def score(pred: torch.Tensor, label: int) -> dict:
        scan = _np(scans[label])
        p = _np(pred)
        return micc_error(p, faces, scan, nose_tip_gt=scan[model.nose_tip],
                          pred_landmarks=p[lm], gt_landmarks=scan[lm],
                          max_iter=cfg.icp_iters, tol=cfg.icp_tol)

    errors: dict[str, list[float]] = {}
    kept: dict[str, dict] = {}

    def record(name: str, out: dict | list[dict]) -> None:
        outs = out if isinstance(out, list) else [out]
        errors.setdefault(name, []).append(float(np.mean([o["mean"] for o in outs])))
        d = kept.setdefault(name, {"distances": [], "crop_index": []})
        d["distances"].append(outs[0]["distances"])
        d["crop_index"].append(outs[0]["crop_index"])

    # Predictions that ignore the video are scored once per subject and shared by its videos.
    for name, shapes in per_subject.items():
        cache = {lab: score(shapes[lab], lab) for lab in range(suite.n_identities)}
        for v in videos:
            record(name, cache[v["label"]])
    for v in videos:
        frames, lab = v["frames"], v["label"]
        record("landmark_fit", [score(fit.identity_shapes[f], lab) for f in _spaced(frames, cfg.micc_single_frames)])
        avg = fit.alpha_id[frames].mean(0, keepdim=True)
        record("landmark_fit_avg", score(model.shape(avg)[0], lab))
        record("landmark_fit_exact_avg", score(model.shape(exact.alpha_id[frames].mean(0, keepdim=True))[0], lab))
        yaw = gt["yaw_deg"][frames]
        three = frames[torch.stack([yaw.argmin(), yaw.abs().argmin(), yaw.argmax()])]
        record("landmark_fit_3view", score(fit.identity_shapes[three].mean(0), lab))

    names = suite.condition_names
    conditions = [names[v["condition"]] for v in videos]
    table = micc_rows(errors, conditions)
    if details:
        table["details"] = {**kept, "scans": scans, "faces": model.faces, "video_label": [v["label"] for v in videos],
                            "video_condition": conditions, "video_errors": {k: np.asarray(e) for k, e in errors.items()}}
    return table


def micc_subject_errors(micc: dict, row: str) -> np.ndarray:
    """``(n_subjects,)`` mm: each subject's error of ``row`` averaged over its videos, in label order.

    ``micc`` is a :func:`micc_baselines` result with ``details=True``; these are the units a
    paired bootstrap against a model's per-subject errors resamples.

    >>> micc = {"details": {"video_label": [0, 0, 1], "video_errors": {"mean_face": np.array([1.0, 2.0, 4.0])}}}
    >>> micc_subject_errors(micc, "mean_face")
    array([1.5, 4. ])
    """
    if "details" not in micc:
        raise ValueError("micc: needs the per-video details (micc_baselines(..., details=True))")
    labels = np.asarray(micc["details"]["video_label"])
    errors = np.asarray(micc["details"]["video_errors"][row])
    return np.array([errors[labels == k].mean() for k in np.unique(labels)])


def micc_rows(errors: dict[str, list[float]], conditions) -> dict:
    """``{row: {condition: {mean, std, n}, "all": {...}}}`` from per-video errors (mm) of each row."""
    table = {}
    for name, errs in errors.items():
        rows = micc_table(errs, conditions)
        rows["all"] = {"mean": float(np.mean(errs)), "std": float(np.std(errs)), "n": len(errs)}
        table[name] = rows
    return table


# ---------------------------------------------------------------------- BU3DFE
def by_abs_yaw(values: np.ndarray, yaw_deg: np.ndarray) -> dict[str, float]:
    """Mean of ``values (N,)`` per rounded ``|yaw_deg| (N,)``, keyed by str degrees, plus ``"overall"``.

    >>> by_abs_yaw(np.array([1.0, 3.0, 5.0]), np.array([-10.0, 10.0, 0.0]))
    {'0': 5.0, '10': 2.0, 'overall': 3.0}
    """
    yaw = np.round(np.abs(yaw_deg)).astype(int)
    out = {str(y): float(values[yaw == y].mean()) for y in sorted(set(yaw.tolist()))}
    out["overall"] = float(values.mean())
    return out


def bu3dfe_baselines(cfg: BaselineConfig | None = None, details: bool = False) -> dict:
    """Vertex RMSE (mm, rigid alignment over the face mask) of the baselines on ``bu3dfe``.

    The truth is each image's shape *with* its expression. Returns ``{"rmse": {row:
    {"0": ..., "10": ..., ..., "90": ..., "overall": ...}}, "landmark_nme": {"detector":
    buckets, "landmark_fit": buckets}}`` where the buckets are :func:`nme_by_yaw` of the
    noisy input landmarks and of the fit's reprojected landmarks against the truth.
    ``details=True`` adds per-image ``rmse`` arrays, per-vertex mean errors
    ``vertex_error (V,)`` mm per row, ``yaw_deg``, ``faces`` and ``mean_shape``.
    """
    cfg = cfg or BaselineConfig()
    suite = _suite(cfg, "bu3dfe", n_identities=cfg.bu3dfe_identities)
    model = suite.model.to(dtype=torch.float64)
    gt = _collect(suite, cfg.batch_size)
    fit, observed = _landmark_fit(cfg, model, gt, salt=2)
    exact, _ = _landmark_fit(cfg, model, gt, salt=2, exact=True)
    truth = gt["shape"]
    preds = {"mean_face": model.mean_shape[None].expand_as(truth)}
    for k in _ks(cfg, model):
        preds[f"oracle_k{k}"] = oracle_projection(model, truth, k, expression=True)
    preds["landmark_fit"] = fit.shapes
    preds["landmark_fit_exact"] = exact.shapes

    mask = _np(model.face_mask)
    yaw = _np(gt["yaw_deg"])
    per_image = {name: rmse(p, truth, mask=mask, align="rigid") for name, p in preds.items()}
    out = {"rmse": {name: by_abs_yaw(e, yaw) for name, e in per_image.items()}}

    from facelab.fitting import project_landmarks

    reproj = project_landmarks(fit.shapes[:, model.require_landmarks("landmark reprojection NME")], fit.pose)
    out["landmark_nme"] = {
        "detector": nme_by_yaw(landmark_nme(observed, gt["landmarks2d"]), yaw),
        "landmark_fit": nme_by_yaw(landmark_nme(reproj, gt["landmarks2d"]), yaw),
    }
    if details:
        vertex_error = {}
        from facelab.metrics.reconstruction import align_to

        idx = np.flatnonzero(mask)
        t = _np(truth)
        for name, p in preds.items():
            p = _np(p)
            err = [np.linalg.norm(align_to(p[i], t[i], idx, "rigid") - t[i], axis=1) for i in range(t.shape[0])]
            vertex_error[name] = np.mean(err, axis=0)
        out["details"] = {"rmse": per_image, "vertex_error": vertex_error, "yaw_deg": yaw,
                          "faces": model.faces, "mean_shape": model.mean_shape, "face_mask": model.face_mask}
    return out


# ------------------------------------------------------------------------- LFW
def lfw_baselines(cfg: BaselineConfig | None = None, details: bool = False) -> dict:
    """LFW-protocol verification of the baselines' identity embeddings.

    Embedding: standardised identity coefficients ``alpha_id / shape_std``. Rows:
    ``mean_face`` (``None``: a constant prediction has no embedding), ``oracle_k{K}`` (the
    true identity's coefficients, first K; an upper bound for any linear-3DMM method) and
    ``landmark_fit``. Each non-null row is :meth:`VerificationResult.to_dict`.
    ``details=True`` adds per-row ``(emb1, emb2)`` arrays, ``issame`` and each row's
    ``pair_correct`` (see :class:`~facelab.metrics.verification.VerificationResult`).
    """
    cfg = cfg or BaselineConfig()
    suite = _suite(cfg, "lfw", n_identities=cfg.lfw_identities, pairs_per_fold=cfg.lfw_pairs_per_fold)
    model = suite.model.to(dtype=torch.float64)
    gt = _collect(suite, cfg.batch_size)
    fit, _ = _landmark_fit(cfg, model, gt, salt=3)
    exact, _ = _landmark_fit(cfg, model, gt, salt=3, exact=True)
    std = model.shape_std
    pairs, issame = suite.table.pairs, _np(suite.table.issame)
    n_folds = suite.config.n_folds

    embeddings = {}
    for k in _ks(cfg, model):
        embeddings[f"oracle_k{k}"] = (gt["alpha_id"] / std)[:, :k]
    embeddings["landmark_fit"] = fit.alpha_id / std
    embeddings["landmark_fit_exact"] = exact.alpha_id / std
    out: dict = {"mean_face": None}
    kept, correct = {}, {}
    for name, emb in embeddings.items():
        e1, e2 = _np(emb[pairs[:, 0]]), _np(emb[pairs[:, 1]])
        result = verify(e1, e2, issame, n_folds=n_folds)
        out[name] = result.to_dict()
        kept[name] = (e1, e2)
        correct[name] = np.asarray(result.pair_correct)
    if details:
        out["details"] = {"embeddings": kept, "issame": issame, "pair_correct": correct}
    return out


# ------------------------------------------------------------------------- all
_SUITE_FUNCTIONS = {"micc": micc_baselines, "bu3dfe": bu3dfe_baselines, "lfw": lfw_baselines}


def run_baselines(profile: str = "quick", config: BaselineConfig | None = None, details: bool = False, **overrides) -> dict:
    """Run the mean-face, oracle and landmark-fit baselines on the SynthFaces suites.

    Args:
        profile: ``"quick"`` or ``"full"`` (ignored when ``config`` is given).
        config: a :class:`BaselineConfig`; ``**overrides`` replace its fields.
        details: keep per-vertex / per-pair arrays for plots (the result is then not JSON).

    Returns:
        ``{"config": {...}, "micc": {...}, "bu3dfe": {...}, "lfw": {...}, "timings_s": {suite: s,
        "total": s}}`` (suites not requested are absent); see :func:`micc_baselines`,
        :func:`bu3dfe_baselines`, :func:`lfw_baselines` for each suite's rows.

    >>> out = run_baselines(suites=("lfw",), lfw_identities=20, lfw_pairs_per_fold=4, oracle_ks=(5,))
    >>> sorted(out["lfw"]), out["lfw"]["mean_face"] is None
    (['landmark_fit', 'landmark_fit_exact', 'mean_face', 'oracle_k5'], True)
    """
    cfg = config if config is not None else BaselineConfig(profile=profile)
    names = {f.name for f in dataclasses.fields(BaselineConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"run_baselines: unknown option(s) {unknown}; known: {sorted(names)}")
    cfg = dataclasses.replace(cfg, **overrides)
    out: dict = {"config": dataclasses.asdict(cfg)}
    timings = {}
    start = time.perf_counter()
    with torch_threads(cfg.num_threads):
        for name in cfg.suites:
            t0 = time.perf_counter()
            out[name] = _SUITE_FUNCTIONS[name](cfg, details=details)
            timings[name] = round(time.perf_counter() - t0, 2)
    timings["total"] = round(time.perf_counter() - start, 2)
    out["timings_s"] = timings
    return out
