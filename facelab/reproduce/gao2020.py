"""Reproduce Gao et al. 2020's MICC tables on SynthFaces: ``facelab reproduce gao2020``.

The run trains (or reuses) four variants of :mod:`facelab.train.gao2020` (the full model first:
the other three start from its shape warm-up) and scores them on
the ``micc`` suite with the MICC protocol of :mod:`facelab.metrics.model_eval`:

* **Table 1 analogue**: point-to-plane error (mm), mean ± std over subjects, per condition
  (cooperative / indoor / outdoor), for "average over identity" and "three-view", with rows
  for the full model, the Liu et al. 2018 model (Phase III of ``facelab reproduce liu2018``)
  the landmark-only linear 3DMM fit and the mean face (:mod:`facelab.metrics.baselines`).
* **Table 2 analogue**: "average over identity" for the ablations *w/o L_recog*,
  *w/o L_adv*, *conventional Laplacian* and the full model.
* ``identity_consistency``: per model, the standard deviation over a subject's video
  frames of the identity shape's error (rigidly aligned RMSE against the true identity
  shape, mm), averaged over subjects and videos — the paper's "spread across frames".

Book chapter: ``book/08_gao2020.ipynb``.
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

PROFILES = ("quick", "full")
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
VARIANT_LABELS = {"full": "Full model", "no_recog": "w/o L_recog", "no_adv": "w/o L_adv",
                  "laplacian": "conventional Laplacian"}
FINAL_STAGE = "step2"
TABLE1_ROWS = ("average_over_identity", "three_view")
# the landmark-fit baseline's rows of facelab.metrics.baselines.micc_baselines per protocol
BASELINE_ROWS = {"average_over_identity": "landmark_fit_avg", "three_view": "landmark_fit_3view"}
MEAN_FACE_ROW = "Mean face (no reconstruction)"


def identity_consistency(pred: dict, mask: np.ndarray) -> dict[str, float]:
    """Spread of the identity shape's error across a subject's frames.

    Args:
        pred: :func:`~facelab.metrics.model_eval.predict_suite` output (``identity_shape``,
            ``gt_identity (N, V, 3)`` mm, ``label``, ``condition (N,)``).
        mask: ``(V,)`` bool, the vertices scored.

    Returns:
        ``{"std_mm": mean over (subject, video) of the std over frames of the rigidly aligned
        identity RMSE, "mean_mm": mean of that RMSE}``.

    >>> v = torch.zeros(4, 3, 3); v[:, 1, 0] = 1; v[:, 2, 1] = 1
    >>> pred = {"identity_shape": v, "gt_identity": v, "label": torch.zeros(4), "condition": torch.zeros(4)}
    >>> identity_consistency(pred, np.ones(3, bool))["std_mm"]
    0.0
    """
    from facelab.metrics.reconstruction import rmse

    err = np.asarray(rmse(pred["identity_shape"].double().numpy(), pred["gt_identity"].double().numpy(),
                          mask=mask, align="rigid"))
    key = (pred["label"].long() * 1000 + pred["condition"].long()).numpy()
    stds = [float(err[key == k].std()) for k in np.unique(key)]
    return {"std_mm": float(np.mean(stds)), "mean_mm": float(err.mean())}


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
    return {"micc": micc, "units": {"micc_mm": units["average_over_identity"]},
            "identity_consistency": identity_consistency(pred, mask),
            "heat_map": {"subject": 0, "condition": suite.condition_names[0], "errors_mm": heat.tolist()}}


#: the claims of Gao et al. (2020) tested here: (id, text, (row A, row B), metric, better, the
#: term that must have pulled in the full model's training for the comparison to mean anything)
CLAIMS = (
    ("G1", "The recognition loss lowers the reconstruction error", ("full", "no_recog"), "micc_mm", "lower", "recog"),
    ("G2", "The adversarial loss lowers the reconstruction error", ("full", "no_adv"), "micc_mm", "lower", "adv"),
    ("G3", "Template-relative smoothness beats the conventional Laplacian", ("full", "laplacian"), "micc_mm", "lower",
     "smooth"),
    ("G4", "The semi-supervised model beats Liu et al.'s linear decoders", ("full", "liu2018"), "micc_mm", "lower", None),
    ("T1", "It beats a landmark fit with detector-like landmark noise", ("full", "landmark_fit"), "micc_mm", "lower",
     None),
)
# the module each ablated term is meant to shape: recognition the encoder, the adversary and
# the smoothness prior the shape decoder
TERM_MODULES = {"recog": "encoder", "adv": "shape_decoder", "smooth": "shape_decoder"}


def gao_activity(diagnostics: dict, variant: str = VARIANT_LABELS["full"]) -> dict[str, bool]:
    """``{term: pulled}`` for the ablated terms in ``variant``'s training steps (all of them must pull).

    >>> d = {"Full model": {"step1": {"terms": {"adv": {"shape_decoder": {"active": False}}}}}}
    >>> gao_activity(d)["adv"], gao_activity({})["recog"]
    (False, False)
    """
    from facelab.metrics.stats import term_pulled

    steps = diagnostics.get(variant, {})
    return {term: bool(steps) and all(term_pulled(d, term, module, head=term == "recog") for d in steps.values())
            for term, module in TERM_MODULES.items()}


def gao_claims(units: dict, baseline_units: dict, activity: dict, n_boot: int | None = None) -> list[dict]:
    """The :data:`CLAIMS` entries with 95 % intervals (:func:`facelab.metrics.stats.claims_table`).

    ``units``: ``{variant or "liu2018": {"micc_mm": (n_subjects,)}}`` (one training seed);
    ``baseline_units``: ``{"landmark_fit": {"micc_mm": (n_subjects,)}}``.
    """
    from facelab.metrics.stats import N_BOOTSTRAP, claims_table

    return claims_table(CLAIMS, units, baseline_units, activity, n_boot=n_boot or N_BOOTSTRAP)


def _table_row(micc: dict, row: str) -> dict:
    return {cond: {"mean": v["mean"], "std": v["std"]} for cond, v in micc[row].items() if cond != "all"}


def reproduce_gao2020(profile: str = "quick", out_dir="runs/reproduce-gao2020", overrides=None, liu=None,
                      variants=tuple(VARIANTS), with_baseline: bool = True) -> dict:
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
        variants: which of :data:`VARIANTS` to train and score (``"full"`` is required).
        with_baseline: add the landmark-only linear 3DMM fit and mean-face rows.

    Returns:
        ``{"profile", "table1": {row_name: {condition: {"mean", "std"}}} per protocol under
        keys "average_over_identity" / "three_view", "table2": {variant: {condition: {...}}},
        "identity_consistency": {model: {"std_mm", "mean_mm"}}, "diagnostics": {variant: {step:
        summarize_shares(...)}} (:mod:`facelab.train.diagnostics`), "claims" (:func:`gao_claims`:
        paired differences over MICC subjects with 95 % intervals and verdicts), "heat_maps", "train_seconds",
        "seconds", "train_config", "liu_checkpoint"}``.
    """
    from facelab.config import apply_overrides, split_overrides
    from facelab.metrics.baselines import BaselineConfig, micc_subject_errors, run_baselines
    from facelab.metrics.model_eval import ModelEvalConfig, micc_suite
    from facelab.metrics.report import write_json
    from facelab.train.gao2020 import Gao2020TrainConfig, train_gao2020
    from facelab.train.stages import read_summary

    check_choice(profile, "profile", PROFILES)
    for v in variants:
        check_choice(v, "variants", list(VARIANTS))
    if "full" not in variants:
        raise ValueError(f"variants: must include 'full' (the reference row), got {list(variants)}")
    variants = ("full",) + tuple(v for v in variants if v != "full")  # its warm-up is the others' start
    groups = split_overrides(overrides, OVERRIDE_GROUPS)
    start = time.perf_counter()
    out = Path(out_dir)
    eval_cfg = apply_overrides(ModelEvalConfig(), groups["eval"])
    train_cfgs = {}
    for v in variants:
        cfg = apply_overrides(Gao2020TrainConfig(profile=profile, out_dir=str(out / v)), groups["train"])
        for key, value in VARIANTS[v].items():
            setattr(cfg, key, value)
        cfg.out_dir = str(out / v)
        if v != "full" and cfg.warmup_steps:  # the ablations continue from the full model's warm-up
            cfg.warmup_from = str(out / "full" / "warmup.pt")
        train_cfgs[v] = cfg
        train_gao2020(cfg)  # skips the steps whose checkpoint exists
    t_train = time.perf_counter() - start

    scores, suite = {}, None
    for v in variants:
        model = load_evaluable(out / v / f"{FINAL_STAGE}.pt", expect_model="gao2020")
        suite = suite if suite is not None else micc_suite(model, profile, eval_cfg)
        scores[v] = score_model(model, profile, eval_cfg, suite=suite)
    liu_model, liu_path = liu_reference(liu, profile)
    if liu_model is not None:
        scores["liu2018"] = score_model(liu_model, profile, eval_cfg)

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
        base.pop("details")
        for row, name in BASELINE_ROWS.items():
            table1[row]["Linear 3DMM, landmark fit"] = _table_row(base, name)
            table1[row][MEAN_FACE_ROW] = _table_row(base, "mean_face")  # the floor: no reconstruction at all
    table2 = {VARIANT_LABELS[v]: _table_row(scores[v]["micc"], "average_over_identity") for v in variants}
    diagnostics = {VARIANT_LABELS[v]: {stage: row["diagnostics"] for stage, row in read_summary(out / v).items()
                                       if "diagnostics" in row} for v in variants}
    claims = gao_claims({k: s["units"] for k, s in scores.items()}, baseline_units, gao_activity(diagnostics))
    result = {
        "profile": profile, "out_dir": str(out), "table1": table1, "table2": table2,
        "identity_consistency": {VARIANT_LABELS.get(k, k): s["identity_consistency"] for k, s in scores.items()},
        # per variant and training step: each weighted term's share of the gradient on the encoder
        # and decoders, and the identity head's accuracy against chance (facelab.train.diagnostics)
        "diagnostics": diagnostics, "claims": claims,
        "heat_maps": {VARIANT_LABELS.get(k, k): s["heat_map"] for k, s in scores.items()},
        "liu_checkpoint": liu_path,
        "train_config": {v: dataclasses.asdict(c) for v, c in train_cfgs.items()},
        "train_seconds": round(t_train, 2), "seconds": round(time.perf_counter() - start, 2),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(result, out / RESULTS_JSON)
    (out / RESULTS_MD).write_text(results_markdown(result))
    return result


def _fmt(cell: dict | None) -> str:
    return "—" if not cell else f"{cell['mean']:.3f} ± {cell['std']:.3f}"


def results_markdown(result: dict) -> str:
    """Tables 1 and 2 and the identity consistency as Markdown."""
    conds = ("cooperative", "indoor", "outdoor")
    head = "| method | " + " | ".join(conds) + " |\n| --- | " + " | ".join("---" for _ in conds) + " |\n"
    parts = [f"Gao et al. 2020 on SynthFaces ({result['profile']} profile); MICC point-to-plane error, mm, mean ± std over subjects.\n"]
    for row in TABLE1_ROWS:
        parts.append(f"\n**Table 1, {row.replace('_', ' ')}**\n\n" + head + "".join(
            f"| {name} | " + " | ".join(_fmt(v.get(c)) for c in conds) + " |\n" for name, v in result["table1"][row].items()))
    parts.append("\n**Table 2, ablation (average over identity)**\n\n" + head + "".join(
        f"| {name} | " + " | ".join(_fmt(v.get(c)) for c in conds) + " |\n" for name, v in result["table2"].items()))
    parts.append("\n**Identity consistency** (std over a subject's frames of the identity-shape RMSE, mm)\n\n"
                 "| model | std | mean |\n| --- | --- | --- |\n" + "".join(
                     f"| {k} | {v['std_mm']:.3f} | {v['mean_mm']:.3f} |\n" for k, v in result["identity_consistency"].items()))
    if "claims" in result:
        from facelab.metrics.report import claims_markdown

        parts.append("\n" + claims_markdown(result["claims"]) + "\n")
    return "".join(parts)
