"""Reproduce the ablation table of Liu et al. 2018 (training phase x loss) on SynthFaces.

Book chapter: ``book/10_evaluation.ipynb``. :func:`reproduce_liu2018` trains the three
phases with :func:`facelab.train.liu2018.train_liu2018` (or reuses ``phase1.pt`` ...
``phase3.pt`` already in the output folder) and scores each phase checkpoint:

* **Phase I**: ``phase1.pt``; its decoders are still the 3DMM bases, so the shape is the
  linear 3DMM of the regressed coefficients; identification uses the regressed ``c_Id``.
* **Phase II**: ``phase2.pt`` (trained decoders, encoder of Phase I).
* **Phase III**: ``phase3.pt``, joint training with the configured loss (A-Softmax).

Columns (all from the phase's ``c_Id`` / decoded shapes):

* ``rmse_micc``: MICC-style point-to-plane error (mm), "average over identity" row
  (``c_Id`` averaged over each video, decoded neutral), all conditions;
* ``rmse_bu3dfe_pose``: vertex RMSE (mm, rigid alignment over the face mask) of the
  identity shape on the *neutral* BU-3DFE images, all yaws;
* ``rmse_bu3dfe_exp``: vertex RMSE (mm) of the full shape on the *expression* images at
  ``|yaw| <= FRONTAL_YAW_MAX_DEG``;
* ``lfw_accuracy``: LFW-protocol verification accuracy of ``c_Id`` (10-fold mean).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from facelab.checks import check_choice
from facelab.config import torch_threads

PROFILES = ("quick", "full")
#: the ablation rows, in table order: (training stage, phase, identity disentangling, identification loss)
ROWS = (
    ("phase1", "I", True, "none"),
    ("phase2_joint", "II", False, "none"),
    ("phase2", "II", True, "none"),
    ("phase3_softmax", "III", True, "softmax"),
    ("phase3", "III", True, "A-Softmax"),
)
FRONTAL_YAW_MAX_DEG = 10  # "frontal-ish" expression images: yaw 0 and +-10 degrees
NEUTRAL = "neutral"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
COLUMNS = ("rmse_micc", "rmse_bu3dfe_pose", "rmse_bu3dfe_exp", "lfw_accuracy")
OVERRIDE_GROUPS = ("train", "eval", "baselines")
LIU_ARTIFACT = "liu2018-quick"  # the committed quick run other papers compare with
FINAL_STAGE_FILE = "phase3.pt"
# Baseline rows of the table, and the MICC row that matches "average over identity".
BASELINE_MICC_ROW = {"landmark_fit": "landmark_fit_avg", "landmark_fit_exact": "landmark_fit_exact_avg"}


def liu_reference(liu, profile: str, artifact: str = LIU_ARTIFACT):
    """The Liu et al. Phase III model other papers' tables compare with, as an evaluable.

    Args:
        liu: a ``phase3.pt``, a ``reproduce liu2018`` run folder, None (the quick profile's
            committed artifact ``artifact``, if present) or False (no Liu et al. row).
        profile: ``"quick"`` or ``"full"``; only the quick profile has a committed artifact.

    Returns:
        ``(evaluable, checkpoint path as str)``, or ``(None, None)`` when there is none.

    >>> liu_reference(False, "quick")
    (None, None)
    """
    from facelab.models.registry import load_evaluable
    from facelab.reproduce.artifacts import ARTIFACTS_DIR, has_artifact

    if liu is False:
        return None, None
    if liu is None and profile == "quick" and has_artifact(artifact):
        liu = ARTIFACTS_DIR / artifact
    if liu is None:
        return None, None
    path = Path(liu)
    path = path / FINAL_STAGE_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"liu: {path} is not a Liu et al. {FINAL_STAGE_FILE} checkpoint")
    return load_evaluable(path, expect_model="liu2018"), str(path)


# ------------------------------------------------------------------ scoring
def _bu3dfe_columns(model, profile: str, cfg) -> tuple[dict, dict]:
    """``({"rmse_bu3dfe_pose", "rmse_bu3dfe_exp"}, identity RMSE per |yaw|)`` in mm."""
    from facelab.data import BU3DFE_EXPRESSIONS
    from facelab.metrics.baselines import by_abs_yaw
    from facelab.metrics.model_eval import predict_suite, suite_for
    from facelab.metrics.reconstruction import rmse

    suite = suite_for(model, "bu3dfe", profile, cfg, n_identities=cfg.bu3dfe_identities)
    pred = predict_suite(model, suite, cfg.batch_size)
    mask = suite.model.face_mask.numpy()
    as_np = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
    yaw = as_np(pred["yaw_deg"])
    neutral = suite.table.expression_prototype.numpy() == BU3DFE_EXPRESSIONS.index(NEUTRAL)
    err_id = rmse(as_np(pred["identity_shape"]), as_np(pred["gt_identity"]), mask=mask, align="rigid")
    err_shape = rmse(as_np(pred["shape"]), as_np(pred["gt_shape"]), mask=mask, align="rigid")
    frontal_exp = ~neutral & (np.abs(yaw) <= FRONTAL_YAW_MAX_DEG + 0.5)
    cols = {"rmse_bu3dfe_pose": float(err_id[neutral].mean()),
            "rmse_bu3dfe_exp": float(err_shape[frontal_exp].mean()) if frontal_exp.any() else None}
    return cols, by_abs_yaw(err_id[neutral], yaw[neutral])


def score_phase(model, profile: str, eval_cfg) -> tuple[dict, dict]:
    """The four table columns of one model, and its BU-3DFE identity RMSE per |yaw| (mm)."""
    from facelab.metrics.model_eval import evaluate_model

    cfg = eval_cfg.resolved(profile)
    micc = evaluate_model(model, "micc", profile, config=cfg)["micc"]
    lfw = evaluate_model(model, "lfw", profile, config=cfg)["lfw"]
    with torch_threads(cfg.num_threads):
        bu, yaw_rmse = _bu3dfe_columns(model, profile, cfg)
    cols = {"rmse_micc": micc["average_over_identity"]["all"]["mean"], **bu,
            "lfw_accuracy": next(iter(lfw.values()))["accuracy_mean"]}
    return cols, yaw_rmse


def baseline_rows(baselines: dict) -> dict:
    """``{method: {"rmse_micc", "rmse_bu3dfe_shape", "lfw_accuracy"}}`` from :func:`run_baselines` output.

    ``rmse_bu3dfe_shape`` is the full-shape RMSE over all BU-3DFE images (every expression
    and yaw): the baselines' own protocol, not the pose/expression split of the phase rows.

    >>> b = {"micc": {"mean_face": {"all": {"mean": 2.0}}}, "bu3dfe": {"rmse": {"mean_face": {"overall": 3.0}}},
    ...      "lfw": {"mean_face": None}}
    >>> baseline_rows(b)
    {'mean_face': {'rmse_micc': 2.0, 'rmse_bu3dfe_shape': 3.0, 'lfw_accuracy': None}}
    """
    rows = {}
    for name, stats in baselines["bu3dfe"]["rmse"].items():
        micc = baselines["micc"].get(BASELINE_MICC_ROW.get(name, name))
        lfw = baselines["lfw"].get(name)
        rows[name] = {"rmse_micc": micc["all"]["mean"] if micc else None, "rmse_bu3dfe_shape": stats["overall"],
                      "lfw_accuracy": lfw["accuracy_mean"] if lfw else None}
    return rows


# ------------------------------------------------------------------ report
def results_markdown(result: dict) -> str:
    """Markdown tables of a :func:`reproduce_liu2018` result.

    >>> r = {"profile": "quick", "rows": [{"phase": "I", "disentangling": True, "identification_loss": "none",
    ...      "rmse_micc": 1.0, "rmse_bu3dfe_pose": 2.0, "rmse_bu3dfe_exp": 3.0, "lfw_accuracy": 0.5}],
    ...      "baselines": {"mean_face": {"rmse_micc": 2.0, "rmse_bu3dfe_shape": 3.0, "lfw_accuracy": None}},
    ...      "yaw_rmse": {"0": 1.0, "overall": 1.0}, "seconds": 1.0}
    >>> "| I | yes | none | 1.000" in results_markdown(r)
    True
    """
    from facelab.metrics.report import markdown_table

    rows = {r.get("stage", r["phase"]): {**({"phase": r["phase"]} if "stage" in r else {}),
                                         "disentangling": "yes" if r["disentangling"] else "no",
                                         "identification loss": r["identification_loss"], **{c: r[c] for c in COLUMNS}}
            for r in result["rows"]}
    parts = [f"# Liu et al. 2018 ablation on SynthFaces ({result['profile']} profile)",
             "**Phases** (RMSE in mm; LFW: verification accuracy of c_Id)\n\n" + markdown_table(rows, row_header="stage"),
             "**Baselines** (bu3dfe: full shape, all expressions and yaws)\n\n"
             + (markdown_table(result["baselines"], row_header="method") if result["baselines"] else "not run"),
             "**Phase III identity RMSE (mm) per |yaw| (degrees), neutral BU-3DFE images**\n\n"
             + markdown_table({"phase III": result["yaw_rmse"]}, row_header="model"),
             f"Time: {result['seconds']} s"]
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------ API
def reproduce_liu2018(profile: str = "quick", out_dir="runs/reproduce-liu2018", overrides=None,
                      with_baselines: bool = True) -> dict:
    """Train (or reuse) the three phases of Liu et al. 2018 and score each one (module docstring).

    Args:
        profile: ``"quick"`` (CPU) or ``"full"``.
        out_dir: run folder: the phase checkpoints (reused when present), ``results.json``
            and ``results.md``.
        overrides: ``["train.KEY=VALUE", "eval.KEY=VALUE", "baselines.KEY=VALUE"]`` (or a
            dict with such keys) for :class:`~facelab.train.liu2018.Liu2018TrainConfig`,
            :class:`~facelab.metrics.model_eval.ModelEvalConfig` and
            :class:`~facelab.metrics.baselines.BaselineConfig`.
        with_baselines: also run :func:`facelab.metrics.run_baselines` (mean face, oracle,
            landmark fit).

    Returns:
        ``{"profile", "out_dir", "rows": [{"phase", "disentangling", "identification_loss",
        "rmse_micc", "rmse_bu3dfe_pose", "rmse_bu3dfe_exp", "lfw_accuracy"}], "baselines":
        {method: {...}}, "yaw_rmse": {"0".."90", "overall"}, "diagnostics": {stage:
        summarize_shares(...)}, "train_config", "seconds"}``. ``diagnostics`` says, for each
        Phase III stage, what share of the gradient L_R and L_C each had on the encoder and the
        decoders, and how the identity head's training accuracy compares with chance
        (:mod:`facelab.train.diagnostics`).
    """
    from facelab.config import apply_overrides, split_overrides
    from facelab.train.stages import read_summary
    from facelab.metrics.baselines import BaselineConfig, run_baselines
    from facelab.metrics.model_eval import ModelEvalConfig
    from facelab.metrics.report import write_json
    from facelab.models.registry import load_evaluable
    from facelab.train.liu2018 import ABLATION_STAGES, Liu2018TrainConfig, train_liu2018

    check_choice(profile, "profile", PROFILES)
    groups = split_overrides(overrides, OVERRIDE_GROUPS)
    start = time.perf_counter()
    out = Path(out_dir)
    train_cfg = apply_overrides(Liu2018TrainConfig(profile=profile, out_dir=str(out)), groups["train"])
    train_cfg.out_dir = str(out)
    eval_cfg = apply_overrides(ModelEvalConfig(), groups["eval"])
    if "stages" not in {o.split("=", 1)[0] for o in groups["train"]}:
        train_cfg.stages = ABLATION_STAGES
    train_liu2018(train_cfg)  # trains only the stages whose checkpoint is missing
    t_train = time.perf_counter() - start
    loss_name = {"asoftmax": "A-Softmax", "softmax": "softmax"}
    rows, yaw_rmse = [], {}
    for stage, phase, disentangling, loss in ROWS:
        if stage not in train_cfg.stages:
            continue
        if stage == "phase3":
            loss = loss_name[train_cfg.loss]
        cols, per_yaw = score_phase(load_evaluable(out / f"{stage}.pt"), profile, eval_cfg)
        rows.append({"phase": phase, "disentangling": disentangling, "identification_loss": loss, "stage": stage,
                     **cols})
        if stage == "phase3":
            yaw_rmse = per_yaw
    baselines = {}
    if with_baselines:
        bcfg = apply_overrides(BaselineConfig(profile=profile), groups["baselines"])
        baselines = baseline_rows(run_baselines(config=bcfg))
    # whether L_R and L_C pulled on the encoder and decoders in each Phase III stage
    diagnostics = {stage: row["diagnostics"] for stage, row in read_summary(out).items() if "diagnostics" in row}
    result = {"profile": profile, "out_dir": str(out), "rows": rows, "baselines": baselines, "yaw_rmse": yaw_rmse,
              "diagnostics": diagnostics,
              "train_config": dataclasses.asdict(train_cfg), "train_seconds": round(t_train, 2),
              "seconds": round(time.perf_counter() - start, 2)}
    out.mkdir(parents=True, exist_ok=True)
    write_json(result, out / RESULTS_JSON)
    (out / RESULTS_MD).write_text(results_markdown(result))
    return result
