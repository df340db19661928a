"""Reproduce Gao et al. 2020's MICC tables on SynthFaces: ``facelab reproduce gao2020``.

The run trains (or reuses) four variants of :mod:`facelab.train.gao2020` (the full model first:
the other three start from its shape warm-up, a shared start that holds none of the ablated
terms; ``shared_warmup`` in the result says how much of the training it is) and scores them on
the ``micc`` suite with the MICC protocol of :mod:`facelab.metrics.model_eval`:

* **Table 1 analogue**: point-to-plane error (mm), mean ± std over subjects, per condition
  (cooperative / indoor / outdoor), for "average over identity" and "three-view", with rows
  for the full model, the Liu et al. 2018 model (Phase III of ``facelab reproduce liu2018``)
  the landmark-only linear 3DMM fit and the mean face (:mod:`facelab.metrics.baselines`).
* **Table 2 analogue**: "average over identity" for the ablations *w/o L_recog*,
  *w/o L_adv*, *conventional Laplacian* and the full model.
* ``identity_consistency``: per model, how far a subject's identity shape moves across a
  video's frames (RMS, mm), how far apart the subjects' shapes are, and the ratio of the two
  (:func:`identity_spread`) — the paper's "identity ... not consistent over each video".
* ``claims`` (:data:`CLAIMS`): each claim of the paper as a paired difference over the MICC
  subjects (and training seeds) with a 95 % interval and a verdict, measured where the paper
  says the effect lives (:func:`frame_units`, :func:`transfer_units`), and ``inactive`` when
  the removed term did not pull on the full model's training (:func:`gao_activity`);
  ``dose_response`` (:func:`gao_dose_response`) repeats G1 and G2 at every trained weight.

Profiles: ``quick`` (CI: one seed, 5 subjects, the four variants), ``standard`` (30 subjects,
the four variants plus :data:`DOSE_VARIANTS`, seeds :data:`PROFILE_SEEDS`; ``seeds=(0,)``
trains one) and ``full`` (GPU).

Book chapter: ``book/09_gao2020.ipynb``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from facelab.checks import check_choice
from facelab.models.registry import load_evaluable
from facelab.reproduce.liu2018 import liu_reference

PROFILES = ("quick", "standard", "full")
#: training seeds per profile; seed 0 trains in the run folder, seed k in ``seed<k>/``
PROFILE_SEEDS = {"quick": (0,), "standard": (0, 1, 2), "full": (0,)}
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
OVERRIDE_GROUPS = ("train", "eval", "baselines")
# variant -> Gao2020TrainConfig overrides (paper's Table 2 rows)
VARIANTS = {
    "full": {},
    "no_recog": {"use_recog": False},
    "no_adv": {"use_adv": False},
    "laplacian": {"smoothness": "laplacian"},
}
#: other weights of the full model's terms (the standard profile's dose-response: with the ablation's
#: weight 0 and the profile's own, 0.3 and 0.003, four doses of each term)
DOSE_VARIANTS = {"recog_w0.1": {"w_recog": 0.1}, "recog_w1.0": {"w_recog": 1.0},
                 "adv_w0.001": {"w_adv": 0.001}, "adv_w0.01": {"w_adv": 0.01}}
#: how many of the training seeds (the first ones) the dose variants train on: a dose costs a full
#: model's training, and on the 2-core CPU the standard profile's budget buys the ablation's three
#: seeds plus one seed of each dose; a dose's claims pair it with the same seeds of its control
PROFILE_DOSE_SEEDS = {"quick": 1, "standard": 1, "full": 1}
ALL_VARIANTS = {**VARIANTS, **DOSE_VARIANTS}
#: the variants each profile trains and scores by default
PROFILE_VARIANTS = {"quick": tuple(VARIANTS), "standard": tuple(ALL_VARIANTS), "full": tuple(VARIANTS)}
VARIANT_LABELS = {"full": "Full model", "no_recog": "w/o L_recog", "no_adv": "w/o L_adv",
                  "laplacian": "conventional Laplacian", "recog_w0.1": "w_recog = 0.1",
                  "recog_w1.0": "w_recog = 1", "adv_w0.001": "w_adv = 0.001", "adv_w0.01": "w_adv = 0.01"}
#: the dose-response: (claim, term, its weight field, the variant without it, metric, better)
DOSE_CLAIMS = (("G1", "recog", "w_recog", "no_recog", "micc_mm", "lower"),
               ("G1a", "recog", "w_recog", "no_recog", "frame_spread_ratio", "lower"),
               ("G2", "adv", "w_adv", "no_adv", "micc_mm", "lower"),
               ("G2a", "adv", "w_adv", "no_adv", "hard_frame_mm", "lower"))
FINAL_STAGE = "step2"
TABLE1_ROWS = ("average_over_identity", "three_view")
# the landmark-fit baseline's rows of facelab.metrics.baselines.micc_baselines per protocol
BASELINE_ROWS = {"average_over_identity": "landmark_fit_avg", "three_view": "landmark_fit_3view"}
MEAN_FACE_ROW = "Mean face (no reconstruction)"


def identity_frame_errors(pred: dict, mask: np.ndarray) -> np.ndarray:
    """``(N,)`` mm: each frame's identity shape against the true one (rigidly aligned RMSE on ``mask``)."""
    from facelab.metrics.reconstruction import rmse

    return np.asarray(rmse(pred["identity_shape"].double().numpy(), pred["gt_identity"].double().numpy(),
                           mask=mask, align="rigid"))


def _video_keys(pred: dict) -> np.ndarray:
    """``(N,)``: each frame's video key, one per (subject, condition)."""
    return (pred["label"].long() * 1000 + pred["condition"].long()).numpy()


def identity_spread(pred: dict, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """How much a subject's identity shape moves across a video, and how far apart people are.

    The paper's consistency claim is about the *shape* each frame yields, so this measures the
    shapes themselves, not their errors: a model that returns one face for everybody has a
    constant error (zero spread of the error) yet tells nobody apart. Dividing the within-video
    spread by the between-subject spread makes that collapse score as badly as it should.

    Args:
        pred: :func:`~facelab.metrics.model_eval.predict_suite` output (``identity_shape (N, V, 3)``
            mm, ``label``, ``condition (N,)``).
        mask: ``(V,)`` bool, the vertices scored.

    Returns:
        ``(within, between)``: ``within (n_subjects,)`` mm, each subject's mean over its videos
        of the RMS distance of a frame's identity shape from the video's mean shape, in label
        order; ``between`` mm, the RMS distance of the subjects' mean shapes from their mean.

    >>> v = torch.zeros(4, 2, 3); v[0, 0, 0], v[1, 0, 0], v[2, 0, 0], v[3, 0, 0] = 0., 2., 10., 10.
    >>> pred = {"identity_shape": v, "label": torch.tensor([0, 0, 1, 1]), "condition": torch.zeros(4)}
    >>> within, between = identity_spread(pred, np.ones(2, bool))
    >>> within.round(3).tolist(), round(between, 3)
    ([0.707, 0.0], 3.182)
    """
    shapes = pred["identity_shape"].double().numpy()[:, mask]
    labels, video = pred["label"].long().numpy(), _video_keys(pred)

    def rms_from_mean(x: np.ndarray) -> float:
        return float(np.sqrt(((x - x.mean(0)) ** 2).sum(-1).mean()))

    subjects = np.unique(labels)
    within = np.array([np.mean([rms_from_mean(shapes[video == v]) for v in np.unique(video[labels == k])])
                       for k in subjects])
    subject_means = np.stack([shapes[labels == k].mean(0) for k in subjects])
    return within, rms_from_mean(subject_means)


def identity_consistency(pred: dict, mask: np.ndarray, errors: np.ndarray | None = None) -> dict[str, float]:
    """Summary of :func:`identity_spread` and of the identity error, for one model.

    Args:
        pred: :func:`~facelab.metrics.model_eval.predict_suite` output (``identity_shape``,
            ``gt_identity (N, V, 3)`` mm, ``label``, ``condition (N,)``).
        mask: ``(V,)`` bool, the vertices scored.
        errors: :func:`identity_frame_errors` of ``pred``, if already computed.

    Returns:
        ``{"within_mm": mean over subjects of the within-video spread of the identity shape,
        "between_mm": the spread between subjects' mean shapes, "ratio": within / between (lower is
        more consistent), "mean_mm": mean over frames of the rigidly aligned identity RMSE}``.

    >>> v = torch.zeros(4, 3, 3); v[:, 1, 0] = 1; v[:, 2, 1] = 1; v[2:, 1, 0] = 2
    >>> pred = {"identity_shape": v, "gt_identity": v, "label": torch.tensor([0, 0, 1, 1]),
    ...         "condition": torch.zeros(4)}
    >>> out = identity_consistency(pred, np.ones(3, bool))
    >>> out["within_mm"], out["mean_mm"], out["ratio"]
    (0.0, 0.0, 0.0)
    """
    err = identity_frame_errors(pred, mask) if errors is None else errors
    within, between = identity_spread(pred, mask)
    return {"within_mm": float(within.mean()), "between_mm": between,
            "ratio": float(within.mean() / max(between, 1e-12)), "mean_mm": float(err.mean())}


#: a frame is "hard" for G2 when the head turns at least this far (deg) ...
HARD_YAW_DEG = 30.0
#: ... or its true expression moves the face more than this quantile of the suite's frames
EXPRESSIVE_QUANTILE = 0.5


def _subject_means(values: np.ndarray, labels: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """``(n_subjects,)``: each subject's mean of ``values`` over its (kept) frames, in label order."""
    keep = np.ones(len(values), bool) if keep is None else keep
    return np.array([values[(labels == k) & keep].mean() for k in np.unique(labels)])


def frame_units(pred: dict, morphable, identity_errors: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-subject scores of single frames (the units the G1-G3 claims resample), mm.

    Args:
        pred: :func:`~facelab.metrics.model_eval.predict_suite` output of a MICC suite.
        morphable: the suite's linear model (mesh, face mask, identity basis).
        identity_errors: :func:`identity_frame_errors` of ``pred``, if already computed.

    Returns:
        ``{"frame_mm": mean over frames of the identity shape's rigidly aligned RMSE,
        "frame_spread_mm": the within-video spread of the identity shape (:func:`identity_spread`),
        "frame_spread_ratio": that spread over the model's between-subject spread (the
        inconsistency L_recog should shrink; a model that returns one face for all scores
        badly), "hard_frame_mm": the full shape's RMSE on frames with |yaw| >= HARD_YAW_DEG
        or an expression above the suite's EXPRESSIVE_QUANTILE, "span_mm": the identity
        shape's distance to the linear model's span (plausibility), "detail_curvature_mm": the
        identity shape's Laplacian error at the nostrils, eye corners and mouth corners}``,
        each ``(n_subjects,)`` in label order.
    """
    from facelab.metrics.geometry import LOCAL_DETAIL_LANDMARKS, linear_span_distance, local_curvature_error, ring_vertices
    from facelab.metrics.reconstruction import rmse
    from facelab.morphable.grid import edges_from_faces

    mask = morphable.face_mask.numpy()
    labels = pred["label"].long().numpy()
    ident, gt_ident = pred["identity_shape"].double().numpy(), pred["gt_identity"].double().numpy()
    frame_err = identity_frame_errors(pred, mask) if identity_errors is None else identity_errors
    within, between = identity_spread(pred, mask)

    gt_shape = pred["gt_shape"].double().numpy()
    expression = np.sqrt(((gt_shape - gt_ident)[:, mask] ** 2).sum(-1).mean(-1))
    hard = (pred["yaw_deg"].abs().numpy() >= HARD_YAW_DEG) | (expression > np.quantile(expression, EXPRESSIVE_QUANTILE))
    shape_err = np.asarray(rmse(pred["shape"].double().numpy(), gt_shape, mask=mask, align="rigid"))

    edges = edges_from_faces(morphable.faces, morphable.n_verts)
    points = [i for ids in LOCAL_DETAIL_LANDMARKS.values() for i in ids]
    seeds = morphable.require_landmarks("local detail regions", points)[points].numpy()
    curvature = local_curvature_error(ident, gt_ident, edges, ring_vertices(seeds, edges), align_mask=mask)
    # the identity shapes are in the model's frame already; aligning them to the mean would turn them off the span
    span = linear_span_distance(ident, morphable.mean_shape, morphable.shape_basis, mask=mask, align="none")
    return {"frame_mm": _subject_means(frame_err, labels), "frame_spread_mm": within,
            "frame_spread_ratio": within / max(between, 1e-12),
            "hard_frame_mm": _subject_means(shape_err, labels, hard), "span_mm": _subject_means(span, labels),
            "detail_curvature_mm": _subject_means(curvature, labels)}


def _partner_frames(labels: np.ndarray, conditions: np.ndarray) -> np.ndarray:
    """``(N,)``: for each frame, the frame at the same place in the same condition's video of the next subject.

    >>> _partner_frames(np.array([0, 0, 1, 1]), np.zeros(4)).tolist()
    [2, 3, 0, 1]
    """
    subjects = np.unique(labels)
    video = {}
    for i, key in enumerate(zip(labels.tolist(), conditions.tolist())):
        video.setdefault(key, []).append(i)
    out = np.empty(len(labels), dtype=np.int64)
    for (label, cond), frames in video.items():
        nxt = subjects[(np.searchsorted(subjects, label) + 1) % len(subjects)]
        partner = video[(int(nxt), cond)]
        for k, i in enumerate(frames):
            out[i] = partner[k % len(partner)]
    return out


def transfer_units(net, suite, pred: dict, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Per-subject expression-transfer errors (mm) of a model with separate identity and expression codes (G5).

    Each frame's identity code is decoded with the expression code of the frame at the same place
    in the next subject's video, and compared with the true composite: the first subject's true
    identity plus the second's true expression offset (SynthFaces adds expressions to the neutral
    shape, so this composite is exact). The reference is the identity code decoded alone (no
    expression): a transfer that carries the expression, and not the other person's identity,
    lands nearer the composite.

    Args:
        net: a :class:`~facelab.models.gao2020.Gao2020Model` (``encode``, ``decode_shape``,
            ``neutral_shape``).
        suite: the MICC suite ``pred`` was predicted on.
        pred: :func:`~facelab.metrics.model_eval.predict_suite` output.

    Returns:
        ``{"transfer_mm": with the partner's expression code, "identity_only_mm": the identity
        code alone}``, each ``(n_subjects,)`` in label order: rigidly aligned RMSE against the
        composite on the face mask, averaged over the subject's frames.
    """
    from facelab.metrics.reconstruction import rmse

    device = next(net.parameters()).device
    c_id, c_exp = [], []
    with torch.no_grad():
        for batch in suite.batches(batch_size):
            codes = net.encode(batch["image"].to(device))
            c_id.append(codes["c_id"].cpu())
            c_exp.append(codes["c_exp"].cpu())
        c_id, c_exp = torch.cat(c_id), torch.cat(c_exp)
        labels = pred["label"].long().numpy()
        partner = torch.from_numpy(_partner_frames(labels, pred["condition"].long().numpy()))
        moved = net.decode_shape(c_id.to(device), c_exp[partner].to(device)).cpu()
        alone = net.neutral_shape(c_id.to(device)).cpu()
    truth = pred["gt_identity"] + (pred["gt_shape"] - pred["gt_identity"])[partner]
    mask = suite.model.face_mask.numpy()
    score = lambda shapes: np.asarray(rmse(shapes.double().numpy(), truth.double().numpy(), mask=mask))  # noqa: E731
    return {"transfer_mm": _subject_means(score(moved), labels), "identity_only_mm": _subject_means(score(alone), labels)}


def per_vertex_error(pred_verts: torch.Tensor, gt_verts: torch.Tensor, mask: np.ndarray) -> np.ndarray:
    """``(V,)`` distance (mm) of each vertex after rigid alignment on ``mask`` (for heat maps)."""
    from facelab.metrics.reconstruction import align_to

    p = pred_verts.double().numpy()
    g = gt_verts.double().numpy()
    aligned = align_to(p, g, np.nonzero(mask)[0], "rigid")
    return np.linalg.norm(aligned - g, axis=1)


def score_model(model, profile: str, eval_cfg, suite=None) -> dict:
    """MICC rows, per-subject errors (``units``), identity consistency and heat-map material of one evaluable model."""
    from facelab.metrics.model_eval import micc_suite, predict_suite, score_micc

    suite = suite if suite is not None else micc_suite(model, profile, eval_cfg)
    cfg = eval_cfg.resolved(profile)
    pred = predict_suite(model, suite, cfg.batch_size)
    mask = suite.model.face_mask.numpy()
    micc, units = score_micc(model, profile, cfg, suite=suite, pred=pred, return_units=True)
    # heat map: subject 0's cooperative video, identity codes averaged, against the scan
    first = torch.nonzero((pred["label"] == 0) & (pred["condition"] == 0)).flatten()
    avg = model.decode_identity(pred["embedding"][first].mean(0, keepdim=True))[0]
    heat = per_vertex_error(avg, suite.scan(0), mask)
    errors = identity_frame_errors(pred, mask)  # shared by the consistency summary and the frame claims
    units = {"micc_mm": units["average_over_identity"], **frame_units(pred, suite.model, errors)}
    net = getattr(model, "model", None)
    if all(hasattr(net, f) for f in ("encode", "decode_shape", "neutral_shape")):  # separate expression codes
        units.update(transfer_units(net, suite, pred, cfg.batch_size))
    return {"micc": micc, "units": units,
            "identity_consistency": identity_consistency(pred, mask, errors),
            "heat_map": {"subject": 0, "condition": suite.condition_names[0], "errors_mm": heat.tolist()}}


#: G5's reference row: the full model's identity code decoded alone, scored against the transfer's target
TRANSFER_REFERENCE = "full, identity code alone"
#: the claims of Gao et al. (2020) tested here: (id, text, (row A, row B), metric, better, the
#: term that must have pulled in the full model's training for the comparison to mean anything)
CLAIMS = (
    ("G1", "The recognition loss lowers the reconstruction error", ("full", "no_recog"), "micc_mm", "lower", "recog"),
    ("G1a", "... and the spread of the identity shape across a video's frames (relative to the spread between people)",
     ("full", "no_recog"), "frame_spread_ratio", "lower", "recog"),
    ("G1b", "... and the single-frame identity error", ("full", "no_recog"), "frame_mm", "lower", "recog"),
    ("G2", "The adversarial loss lowers the reconstruction error", ("full", "no_adv"), "micc_mm", "lower", "adv"),
    ("G2a", "... on large-yaw and expressive frames", ("full", "no_adv"), "hard_frame_mm", "lower", "adv"),
    ("G2b", "... and keeps the shapes nearer the linear model's span", ("full", "no_adv"), "span_mm", "lower", "adv"),
    ("G3", "Template-relative smoothness beats the conventional Laplacian", ("full", "laplacian"), "micc_mm", "lower",
     "smooth"),
    ("G3a", "... on local geometry at the nostrils, eye corners and mouth corners", ("full", "laplacian"),
     "detail_curvature_mm", "lower", "smooth"),
    ("G4", "The semi-supervised model beats Liu et al.'s linear decoders", ("full", "liu2018"), "micc_mm", "lower", None),
    ("G5", "Expression transfer carries the other person's expression, not their identity (vs the identity code alone)",
     ("full", TRANSFER_REFERENCE), "transfer_mm", "lower", None),
    ("T0", "It reconstructs: a lower error than the mean face (no reconstruction at all)", ("full", "mean_face"),
     "micc_mm", "lower", None),
    ("T1", "It beats a landmark fit with detector-like landmark noise", ("full", "landmark_fit"), "micc_mm", "lower",
     None),
)
# the module each ablated term is meant to shape: recognition the encoder, the adversary and
# the smoothness prior the shape decoder
TERM_MODULES = {"recog": "encoder", "adv": "shape_decoder", "smooth": "shape_decoder"}


def activity_fractions(diagnostics: dict, variant: str = VARIANT_LABELS["full"]) -> dict[str, float]:
    """``{term: fraction}``: the share of ``variant``'s logged measurements in which each ablated term pulled.

    A measurement counts when the term's gradient share on the module it shapes
    (:data:`TERM_MODULES`) reached :data:`~facelab.metrics.stats.MIN_GRADIENT_SHARE`; for the
    recognition term the fraction is the smaller of that and the fraction in which its head
    reached :data:`~facelab.metrics.stats.MIN_ACCURACY_OVER_CHANCE` x chance. The stages
    (warm-up, step 1, step 2) are pooled by their number of steps (each stage's ``"steps"``;
    the measurements are evenly spaced in steps), so a stage is weighed by how much of the
    training it was. A shared warm-up logs no diagnostics and holds none of the ablated terms:
    it is the variants' common start, and the pooling covers the steps after it
    (:func:`shared_warmup_account` says how many steps that is).

    >>> d = {"Full model": {"warmup": {"steps": 300, "terms": {"adv": {"shape_decoder": {"active_fraction": 1.0}}}},
    ...                     "step1": {"steps": 100, "terms": {"adv": {"shape_decoder": {"active_fraction": 0.4}}}}}}
    >>> activity_fractions(d)["adv"]   # (300 * 1.0 + 100 * 0.4) / 400
    0.85
    """
    stages = diagnostics.get(variant, {})

    def pooled(fractions: list[tuple[float, int]]) -> float:
        total = sum(n for _, n in fractions)
        return sum(f * n for f, n in fractions) / total if total else 0.0

    out = {}
    for term, module in TERM_MODULES.items():
        shares = [(d.get("terms", {}).get(term, {}).get(module, {}).get("active_fraction", 0.0), d.get("steps", 1))
                  for d in stages.values()]
        fraction = pooled(shares)
        if term == "recog":  # the identity head must also have learned
            heads = [(d["accuracy"]["active_fraction"], d.get("steps", 1)) for d in stages.values() if "accuracy" in d]
            fraction = min(fraction, pooled(heads))
        out[term] = float(fraction)
    return out


def summary_diagnostics(summary: dict) -> dict:
    """``{stage: diagnostics with "steps"}`` of a run's stage summaries (``summary.json``), the
    form :func:`activity_fractions` pools; stages that logged none (a shared warm-up) are left out.

    >>> summary_diagnostics({"warmup": {"step": 300}, "step1": {"step": 100, "diagnostics": {"terms": {}}}})
    {'step1': {'terms': {}, 'steps': 100}}
    """
    return {stage: {**row["diagnostics"], "steps": row["step"]} for stage, row in summary.items() if "diagnostics" in row}


def gao_activity(diagnostics: dict, variant: str = VARIANT_LABELS["full"]) -> dict[str, bool]:
    """``{term: pulled}`` for the ablated terms over ``variant``'s training (after a shared warm-up).

    A term pulled when :func:`activity_fractions` reaches
    :data:`~facelab.metrics.stats.MIN_ACTIVE_FRACTION` (for recognition: its gradient share
    and its head's accuracy both).

    >>> d = {"Full model": {"warmup": {"steps": 300, "terms": {"adv": {"shape_decoder": {"active_fraction": 1.0}}}},
    ...                     "step1": {"steps": 100, "terms": {"adv": {"shape_decoder": {"active_fraction": 0.4}}}}}}
    >>> gao_activity(d)["adv"], gao_activity({})["recog"]   # (300 * 1.0 + 100 * 0.4) / 400 = 0.85
    (True, False)
    """
    from facelab.metrics.stats import MIN_ACTIVE_FRACTION

    return {term: fraction >= MIN_ACTIVE_FRACTION for term, fraction in activity_fractions(diagnostics, variant).items()}


def shared_warmup_account(cfg) -> dict:
    """How much of each variant's training the shared warm-up is (it holds none of the ablated terms).

    ``cfg``: the full model's :class:`~facelab.train.gao2020.Gao2020TrainConfig`. Returns
    ``{"shared", "warmup_steps", "own_steps", "fraction"}``: ``fraction`` of every variant's
    optimisation steps that are shared (0 when each variant trains its own warm-up). The
    activity check (:func:`gao_activity`) reads the steps after it, where the terms are on;
    the shared warm-up plays the part of a pre-trained start, so chapter 9 reports this
    fraction beside every verdict.

    >>> from facelab.train.gao2020 import Gao2020TrainConfig
    >>> shared_warmup_account(Gao2020TrainConfig(profile="quick"))
    {'shared': True, 'warmup_steps': 1500, 'own_steps': 400, 'fraction': 0.7894736842105263}
    """
    own = int(sum(cfg.steps))
    shared = bool(cfg.share_warmup and cfg.warmup_steps)
    return {"shared": shared, "warmup_steps": int(cfg.warmup_steps), "own_steps": own,
            "fraction": cfg.warmup_steps / (cfg.warmup_steps + own) if shared else 0.0}


def gao_claims(units: dict, baseline_units: dict, activity: dict, n_boot: int | None = None) -> list[dict]:
    """The :data:`CLAIMS` entries with 95 % intervals (:func:`facelab.metrics.stats.claims_table`).

    ``units``: ``{variant: {metric: (n_seeds, n_subjects)}}`` (:func:`frame_units` and
    ``micc_mm``); ``baseline_units``: ``{"landmark_fit" or "liu2018": {metric: (n_subjects,)}}``,
    rows of one deterministic model each, paired with every seed.
    """
    from facelab.metrics.stats import N_BOOTSTRAP, claims_table

    return claims_table(CLAIMS, units, baseline_units, activity, n_boot=n_boot or N_BOOTSTRAP)


def gao_dose_response(units: dict, weights: dict, activity: dict, n_boot: int | None = None) -> list[dict]:
    """G1, G1a, G2 and G2a at every weight of their term that was trained: each variant against the one without the term.

    Args:
        units: ``{variant: {metric: (n_seeds, n_subjects)}}``.
        weights: ``{variant: {"w_recog": ..., "w_adv": ...}}``, the trained configs' weights.
        activity: ``{variant: {term: pulled}}`` (:func:`gao_activity` of each variant).

    Returns:
        :func:`facelab.metrics.stats.claims_table` entries, each with ``term``, ``weight`` and
        ``variant``, ordered by claim and weight; variants not run are left out.

    >>> u = {v: {"micc_mm": [[1.0 + d, 2.0 + d, 3.0 + d]]} for v, d in (("full", -0.5), ("no_adv", 0.0), ("adv_w0.001", -0.1))}
    >>> w = {"full": {"w_recog": 0.3, "w_adv": 0.003}, "adv_w0.001": {"w_recog": 0.3, "w_adv": 0.001}}
    >>> [(e["weight"], e["verdict"]) for e in gao_dose_response(u, w, {"full": {"adv": True}}, n_boot=200) if e["id"].startswith("G2 ")]
    [(0.001, 'inactive'), (0.003, 'holds')]

    A dose trained on the first seed only is paired with that seed of its control:

    >>> u["no_adv"]["micc_mm"] = [[1.0, 2.0, 3.0], [9.0, 9.0, 9.0]]
    >>> u["full"]["micc_mm"] = [[0.5, 1.5, 2.5], [8.5, 8.5, 8.5]]
    >>> [(e["weight"], e["n_seeds"]) for e in gao_dose_response(u, w, {"full": {"adv": True}}, n_boot=200) if e["id"].startswith("G2 ")]
    [(0.001, 1), (0.003, 2)]
    """
    from facelab.metrics.stats import N_BOOTSTRAP, claims_table

    def n_seeds(variant):
        return len(np.asarray(next(iter(units[variant].values()))))

    specs, meta, active, paired = [], {}, {}, dict(units)
    for claim_id, term, field_name, control, metric, better in DOSE_CLAIMS:
        doses = sorted((w[field_name], v) for v, w in weights.items()
                       if v in ("full",) + tuple(DOSE_VARIANTS) and ALL_VARIANTS[v].keys() <= {field_name} and v in units)
        for weight, variant in doses:
            spec_id = f"{claim_id} at {field_name} = {weight:g}"
            meta[spec_id] = {"term": term, "weight": weight, "variant": variant}
            active[f"{variant}:{term}"] = activity.get(variant, {}).get(term, False)
            against, n = control, n_seeds(variant)
            if control in units and n < n_seeds(control):  # a dose trained on the first seeds only: the same seeds of its control
                against = f"{control} (first {n} seeds)"
                paired[against] = {m: np.asarray(u)[:n] for m, u in units[control].items()}
            specs.append((spec_id, f"{VARIANT_LABELS[variant]} vs {VARIANT_LABELS[control]}", (variant, against), metric,
                          better, f"{variant}:{term}"))
    entries = claims_table(specs, paired, {}, active, n_boot=n_boot or N_BOOTSTRAP)
    return [{**entry, **meta[entry["id"]]} for entry in entries]


def _table_row(micc: dict | list[dict], row: str) -> dict:
    """``{condition: {"mean", "std"}}`` of one MICC row; given one ``micc`` per seed, their means."""
    per_seed = micc if isinstance(micc, list) else [micc]
    conds = [c for c in per_seed[0][row] if c != "all"]
    return {c: {k: float(np.mean([m[row][c][k] for m in per_seed])) for k in ("mean", "std")} for c in conds}


def _mean_over_seeds(dicts: list[dict]) -> dict:
    """Key-wise means of flat ``{name: float}`` dicts (one per seed)."""
    return {k: float(np.mean([d[k] for d in dicts])) for k in dicts[0]}


def reproduce_gao2020(profile: str = "quick", out_dir="runs/reproduce-gao2020", overrides=None, liu=None,
                      variants=None, with_baseline: bool = True, seeds: tuple[int, ...] | None = None) -> dict:
    """Train (or reuse) the Gao et al. 2020 variants and write the MICC tables (module docstring).

    Args:
        profile: ``"quick"`` (CPU) or ``"full"``.
        out_dir: run folder; variant ``v`` trains into ``out_dir/v`` (reused when its final
            checkpoint exists); ``results.json`` and ``results.md`` are written here.
        overrides: ``["train.KEY=VALUE", "eval.KEY=VALUE", "baselines.KEY=VALUE"]`` for
            :class:`~facelab.train.gao2020.Gao2020TrainConfig`,
            :class:`~facelab.metrics.model_eval.ModelEvalConfig` and
            :class:`~facelab.metrics.baselines.BaselineConfig`.
        liu: the Liu et al. row: a ``phase3.pt``, a ``facelab reproduce liu2018`` folder, or
            None for the committed Liu et al. run (:func:`~facelab.reproduce.liu2018.liu_reference`).
        variants: which of :data:`ALL_VARIANTS` to train and score (``"full"`` is required;
            None: :data:`PROFILE_VARIANTS`, the standard profile's including the doses).
        with_baseline: add the landmark-only linear 3DMM fit and mean-face rows.
        seeds: training seeds (None: :data:`PROFILE_SEEDS`); the first trains in ``out_dir``,
            seed ``k`` in ``out_dir/seed<k>``. Tables are means over seeds; the claims
            resample subjects and seeds. The dose variants train on the first
            :data:`PROFILE_DOSE_SEEDS` seeds only.

    Returns:
        ``{"profile", "table1": {row_name: {condition: {"mean", "std"}}} per protocol under
        keys "average_over_identity" / "three_view", "table2": {variant: {condition: {...}}},
        "identity_consistency": {model: {"within_mm", "between_mm", "ratio", "mean_mm"}}, "diagnostics": {variant: {step:
        summarize_shares(...)}} (:mod:`facelab.train.diagnostics`), "claims" (:func:`gao_claims`:
        paired differences over MICC subjects with 95 % intervals and verdicts), "dose_response"
        (:func:`gao_dose_response`), "units" ({model: {metric: [[per subject] per seed]}}),
        "shared_warmup" (:func:`shared_warmup_account`), "heat_maps", "train_seconds",
        "seconds", "train_config", "liu_checkpoint"}``.
    """
    from facelab.config import apply_overrides, split_overrides
    from facelab.metrics.baselines import BaselineConfig, micc_subject_errors, run_baselines
    from facelab.metrics.model_eval import ModelEvalConfig, micc_suite
    from facelab.metrics.report import write_json
    from facelab.train.gao2020 import Gao2020TrainConfig, train_gao2020
    from facelab.train.stages import read_summary

    check_choice(profile, "profile", PROFILES)
    variants = PROFILE_VARIANTS[profile] if variants is None else tuple(variants)
    for v in variants:
        check_choice(v, "variants", list(ALL_VARIANTS))
    if "full" not in variants:
        raise ValueError(f"variants: must include 'full' (the reference row), got {list(variants)}")
    variants = ("full",) + tuple(v for v in variants if v != "full")  # its warm-up is the others' start
    from facelab.reproduce.liu2018 import seed_dir

    seeds = tuple(seeds) if seeds is not None else PROFILE_SEEDS[profile]
    if not seeds:
        raise ValueError("seeds: give at least one training seed")
    groups = split_overrides(overrides, OVERRIDE_GROUPS)
    start = time.perf_counter()
    out = Path(out_dir)
    eval_cfg = apply_overrides(ModelEvalConfig(), groups["eval"])
    train_cfgs = {}
    dose_seeds = seeds[:PROFILE_DOSE_SEEDS[profile]]
    jobs = [(seed, v) for seed in seeds for v in variants if v not in DOSE_VARIANTS or seed in dose_seeds]
    for seed, v in jobs:  # trains only the steps whose checkpoint is missing
        run = seed_dir(out, seed, seeds)
        cfg = apply_overrides(Gao2020TrainConfig(profile=profile, out_dir=str(run / v)), groups["train"])
        for key, value in ALL_VARIANTS[v].items():
            setattr(cfg, key, value)
        cfg.out_dir, cfg.train.seed = str(run / v), seed
        if v != "full" and cfg.warmup_steps and cfg.share_warmup:  # the ablations continue from the full model's warm-up
            cfg.warmup_from = str(run / "full" / "warmup.pt")
        train_cfgs.setdefault(v, cfg)
        train_gao2020(cfg)
    t_train = time.perf_counter() - start

    per_seed, suite = {v: [] for v in variants}, None
    for seed, v in jobs:
        model = load_evaluable(seed_dir(out, seed, seeds) / v / f"{FINAL_STAGE}.pt", expect_model="gao2020")
        suite = suite if suite is not None else micc_suite(model, profile, eval_cfg)
        per_seed[v].append(score_model(model, profile, eval_cfg, suite=suite))
    liu_model, liu_path = liu_reference(liu, profile)
    if liu_model is not None:
        per_seed["liu2018"] = [score_model(liu_model, profile, eval_cfg)]  # one trained model: paired with every seed
    scores = {k: {"micc": [s["micc"] for s in runs], "heat_map": runs[0]["heat_map"],
                  "identity_consistency": _mean_over_seeds([s["identity_consistency"] for s in runs]),
                  "units": {m: np.stack([s["units"][m] for s in runs]) for m in runs[0]["units"]}}
              for k, runs in per_seed.items()}

    table1 = {row: {} for row in TABLE1_ROWS}
    for name, label in (("full", "Ours (Gao et al. 2020, full)"), ("liu2018", "Liu et al. 2018 (Phase III)")):
        if name in scores:
            for row in TABLE1_ROWS:
                table1[row][label] = _table_row(scores[name]["micc"], row)
    baseline_units = {}
    if with_baseline:
        bcfg = apply_overrides(BaselineConfig(profile=profile, suites=("micc",)), groups["baselines"])
        base = run_baselines(config=bcfg, details=True)["micc"]
        baseline_units["landmark_fit"] = {"micc_mm": micc_subject_errors(base, BASELINE_ROWS["average_over_identity"])}
        baseline_units["mean_face"] = {"micc_mm": micc_subject_errors(base, "mean_face")}
        base.pop("details")
        for row, name in BASELINE_ROWS.items():
            table1[row]["Linear 3DMM, landmark fit"] = _table_row(base, name)
            table1[row][MEAN_FACE_ROW] = _table_row(base, "mean_face")  # the floor: no reconstruction at all
    table2 = {VARIANT_LABELS[v]: _table_row(scores[v]["micc"], "average_over_identity") for v in variants
              if v in VARIANTS}  # the paper's ablation; the doses are in dose_response
    # the first seed's term diagnostics (which terms pulled, and how hard)
    diagnostics = {VARIANT_LABELS[v]: summary_diagnostics(read_summary(out / v)) for v in variants}
    if "liu2018" in scores:  # one trained model, paired with every seed like a baseline
        baseline_units["liu2018"] = {m: u[0] for m, u in scores["liu2018"]["units"].items()}
    trained = {k: s["units"] for k, s in scores.items() if k != "liu2018"}
    if "identity_only_mm" in trained["full"]:
        trained[TRANSFER_REFERENCE] = {"transfer_mm": trained["full"]["identity_only_mm"]}
    claims = gao_claims(trained, baseline_units, gao_activity(diagnostics))
    dose = gao_dose_response(trained, {v: {f: getattr(train_cfgs[v], f) for f in ("w_recog", "w_adv")} for v in variants},
                             {v: gao_activity(diagnostics, VARIANT_LABELS[v]) for v in variants})
    result = {
        "profile": profile, "out_dir": str(out), "seeds": list(seeds), "table1": table1, "table2": table2,
        "identity_consistency": {VARIANT_LABELS.get(k, k): s["identity_consistency"] for k, s in scores.items()},
        # per variant and training step: each weighted term's share of the gradient on the encoder
        # and decoders, and the identity head's accuracy against chance (facelab.train.diagnostics)
        "diagnostics": diagnostics, "claims": claims, "dose_response": dose,
        # every seed's per-subject scores (seed-major), so a reader can split the pooled intervals
        "units": {VARIANT_LABELS.get(k, k): {m: np.asarray(u).tolist() for m, u in s["units"].items()}
                  for k, s in scores.items()},
        "shared_warmup": shared_warmup_account(train_cfgs["full"]),
        "heat_maps": {VARIANT_LABELS.get(k, k): s["heat_map"] for k, s in scores.items()},
        "liu_checkpoint": liu_path,
        "train_config": {v: dataclasses.asdict(c) for v, c in train_cfgs.items()},
        "train_seconds": round(t_train, 2), "seconds": round(time.perf_counter() - start, 2),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(result, out / RESULTS_JSON)
    (out / RESULTS_MD).write_text(results_markdown(result))
    return result


#: the held-out re-score's file (``heldout/results.json`` of the standard artifact): it replaces the
#: full results :func:`reproduce_gao2020` writes in the re-score's folder
HELDOUT_JSON = RESULTS_JSON
#: the MICC suite seed of the held-out re-score: never used to choose anything (the default is 0)
HELDOUT_EVAL_SEED = 1


def rescore_heldout(run_dir, out_dir, profile: str = "standard", eval_seed: int = HELDOUT_EVAL_SEED,
                    seeds: tuple[int, ...] | None = None, variants: tuple[str, ...] = tuple(VARIANTS),
                    overrides=None) -> dict:
    """Re-score a finished :func:`reproduce_gao2020` run's checkpoints on the MICC suite of ``eval_seed``.

    Weights chosen beside the default MICC suite are tested on one drawn with another seed. Each
    seed's ``variants`` (their final checkpoint and stage summary, so the claims read the same
    term activity) are copied from ``run_dir`` into ``out_dir``, nothing is trained, and
    :func:`reproduce_gao2020` scores them there with ``eval.seed=eval_seed``, without the
    baselines or the Liu et al. row. ``run_dir`` is left untouched.

    Args:
        run_dir: the run folder (``full/step2.pt``, ``seed1/full/step2.pt``, ...).
        out_dir: where the copies and :data:`HELDOUT_JSON` go.
        profile: the run's profile.
        eval_seed: the MICC suite's seed (``0`` is the suite the run was scored on).
        seeds: the run's training seeds (None: :data:`PROFILE_SEEDS`).
        variants: which of :data:`VARIANTS` to re-score (``"full"`` is required).
        overrides: more ``eval.KEY=VALUE`` (or ``train.``) overrides, as :func:`reproduce_gao2020`
            takes them; the run's training overrides are not needed (nothing trains).

    Returns:
        ``{"eval_seed", "seeds", "variants", "claims", "table2", "identity_consistency", "seconds"}``,
        also written to ``out_dir/`` :data:`HELDOUT_JSON`.

    Raises:
        FileNotFoundError: a seed's variant has no final checkpoint in ``run_dir`` (named).
    """
    import shutil

    from facelab.metrics.report import write_json
    from facelab.reproduce.liu2018 import seed_dir

    check_choice(profile, "profile", PROFILES)
    seeds = tuple(seeds) if seeds is not None else PROFILE_SEEDS[profile]
    run, out = Path(run_dir), Path(out_dir)
    for seed in seeds:
        for v in variants:
            src, dst = seed_dir(run, seed, seeds) / v, seed_dir(out, seed, seeds) / v
            if not (src / f"{FINAL_STAGE}.pt").is_file():
                raise FileNotFoundError(f"run_dir: {src / f'{FINAL_STAGE}.pt'} is missing (seed {seed}, variant {v})")
            dst.mkdir(parents=True, exist_ok=True)
            for name in (f"{FINAL_STAGE}.pt", "summary.json"):
                if (src / name).is_file():
                    shutil.copyfile(src / name, dst / name)
    start = time.perf_counter()
    result = reproduce_gao2020(profile, out, [f"eval.seed={eval_seed}", "train.progress=false", *(overrides or [])], liu=False,
                               variants=variants, with_baseline=False, seeds=seeds)
    held = {"eval_seed": eval_seed, "seeds": list(seeds), "variants": list(variants), "claims": result["claims"],
            "table2": result["table2"], "identity_consistency": result["identity_consistency"],
            "seconds": round(time.perf_counter() - start, 2)}
    write_json(held, out / HELDOUT_JSON)
    return held


#: the scored pilots kept with the standard artifact: ``{"models": {name: {"heldout_rmse_mm",
#: "heldout_mean_face_rmse_mm", "units": {"micc_mm": [per subject], ...}}}}``
PILOT_SCORES = "tuning/scores.json"


def describe_pilot(name: str, scores: dict, mean_face_micc_mm: float) -> str:
    """One line on a scored checkpoint of ``scores`` (:data:`PILOT_SCORES`): its held-out error
    (identity shapes of labelled photos of new identities, rigidly aligned RMSE) and its MICC
    error (mean over subjects, mm), each as a multiple of the mean face's.

    >>> s = {"models": {"m": {"heldout_rmse_mm": 3.0, "heldout_mean_face_rmse_mm": 4.0,
    ...                       "units": {"micc_mm": [0.9, 1.1]}}}}
    >>> print(describe_pilot("m", s, 1.25))
    m: held-out error 0.75 x the mean face's, MICC 1.000 mm (0.80 x the mean face's)
    """
    if name not in scores["models"]:
        raise KeyError(f"name: no scored model {name!r}; scored: {', '.join(scores['models'])}")
    if not mean_face_micc_mm > 0:
        raise ValueError(f"mean_face_micc_mm: must be > 0, got {mean_face_micc_mm}")
    entry = scores["models"][name]
    heldout = entry["heldout_rmse_mm"] / entry["heldout_mean_face_rmse_mm"]
    micc = float(np.mean(entry["units"]["micc_mm"]))
    return (f"{name}: held-out error {heldout:.2f} x the mean face's, MICC {micc:.3f} mm "
            f"({micc / mean_face_micc_mm:.2f} x the mean face's)")


def _fmt(cell: dict | None) -> str:
    return "—" if not cell else f"{cell['mean']:.3f} ± {cell['std']:.3f}"


def results_markdown(result: dict) -> str:
    """Tables 1 and 2 and the identity consistency as Markdown."""
    conds = ("cooperative", "indoor", "outdoor")
    head = "| method | " + " | ".join(conds) + " |\n| --- | " + " | ".join("---" for _ in conds) + " |\n"
    seeds = result.get("seeds", [0])
    over = f"; means over training seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else ""
    parts = [f"Gao et al. 2020 on SynthFaces ({result['profile']} profile); MICC point-to-plane error, mm, "
             f"mean ± std over subjects{over}.\n"]
    for row in TABLE1_ROWS:
        parts.append(f"\n**Table 1, {row.replace('_', ' ')}**\n\n" + head + "".join(
            f"| {name} | " + " | ".join(_fmt(v.get(c)) for c in conds) + " |\n" for name, v in result["table1"][row].items()))
    parts.append("\n**Table 2, ablation (average over identity)**\n\n" + head + "".join(
        f"| {name} | " + " | ".join(_fmt(v.get(c)) for c in conds) + " |\n" for name, v in result["table2"].items()))
    parts.append("\n**Identity consistency** (identity shape: spread within a video, between people, their ratio; "
                 "mean identity RMSE, mm)\n\n| model | within | between | ratio | mean error |\n"
                 "| --- | --- | --- | --- | --- |\n" + "".join(
                     f"| {k} | {v['within_mm']:.3f} | {v['between_mm']:.3f} | {v['ratio']:.3f} | {v['mean_mm']:.3f} |\n"
                     for k, v in result["identity_consistency"].items()))
    if "claims" in result:
        from facelab.metrics.report import claims_markdown

        parts.append("\n" + claims_markdown(result["claims"]) + "\n")
    return "".join(parts)
