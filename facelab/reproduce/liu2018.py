"""Reproduce the ablation table of Liu et al. 2018 (training phase x loss) on SynthFaces.

Book chapter: ``book/08_three_phases.ipynb``. :func:`reproduce_liu2018` trains the three
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
from facelab.metrics.report import claims_markdown
from facelab.train.liu2018 import DOSE_STAGES, LAMBDA_R_DOSES, dose_stage

PROFILES = ("quick", "standard", "full")
#: the ablation rows, in table order: (training stage, phase, identity disentangling, identification loss)
ROWS = (
    ("phase1", "I", True, "none"),
    ("phase2_joint", "II", False, "none"),
    ("phase2", "II", True, "none"),
    ("phase3_no_lc", "III", True, "none (control: L_R only, same steps)"),
    ("phase3_softmax", "III", True, "softmax"),
    ("phase3", "III", True, "A-Softmax"),
    *((dose_stage(w), "III", True, f"A-Softmax, λ_R = {w:g}") for w in LAMBDA_R_DOSES),
    ("phase3_no_lr", "III", True, "A-Softmax without L_R (recognition ceiling)"),
)
#: rows scored on LFW only: without L_R nothing ties the decoders to a shape, so their
#: reconstructions are meaningless (rigid alignment of such shapes diverges) and slow to score
RECOGNITION_ONLY_ROWS = ("phase3_no_lr",)
#: training seeds per profile; seed 0 trains in the run folder, seed k in ``seed<k>/``
PROFILE_SEEDS = {"quick": (0,), "standard": (0, 1, 2), "full": (0,)}
#: the claims of Liu et al. (2018) tested here: (id, text, (row A, row B), metric, better,
#: the loss term that must have pulled on training for the comparison to mean anything)
CLAIMS = (
    ("L1", "Disentangling lowers the reconstruction error (Phase II)", ("phase2", "phase2_joint"), "micc_mm", "lower",
     "phase2"),
    ("L2", "The identification loss lowers the reconstruction error (Phase III vs the same steps without L_C)",
     ("phase3", "phase3_no_lc"), "micc_mm", "lower", "L_C"),
    ("L3", "The identification loss raises recognition (Phase III vs Phase II)", ("phase3", "phase2"),
     "lfw_accuracy", "higher", "L_C"),
    ("L4", "A-Softmax beats softmax", ("phase3", "phase3_softmax"), "lfw_accuracy", "higher", "L_C"),
    ("T1", "Phase III beats a landmark fit with detector-like landmark noise on MICC", ("phase3", "landmark_fit"),
     "micc_mm", "lower", None),
    ("T2", "Phase III beats a landmark fit with detector-like landmark noise on LFW", ("phase3", "landmark_fit"),
     "lfw_accuracy", "higher", None),
)
#: the dose-response of the reconstruction weight: at each lambda_R, the Phase III row against
#: the same steps without L_C (MICC) and against Phase II (LFW); the term is that stage's L_C
DOSE_CLAIMS = (("L2", "phase3_no_lc", "micc_mm", "lower"), ("L3", "phase2", "lfw_accuracy", "higher"))
# Phase II pulled when its loss fell by this fraction (its decoders start at the generating
# 3DMM, so a loss that does not move means the disentangling row cannot differ).
MIN_PHASE2_LOSS_DROP = 0.05
UNITS_NPZ = "units.npz"
FRONTAL_YAW_MAX_DEG = 10  # "frontal-ish" expression images: yaw 0 and +-10 degrees
NEUTRAL = "neutral"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
COLUMNS = ("rmse_micc", "rmse_bu3dfe_pose", "rmse_bu3dfe_exp", "lfw_accuracy")
OVERRIDE_GROUPS = ("train", "eval", "baselines")
#: the committed runs other papers take their Liu et al. row from, first present wins (same network
#: and input size). The quick run's Phase III comes first: the standard run trades reconstruction
#: for recognition (lambda_R = 0.1) and reconstructs worse than the mean face on held-out subjects.
LIU_ARTIFACTS = ("liu2018-quick", "liu2018-standard")
FINAL_STAGE_FILE = "phase3.pt"
# Baseline rows of the table, and the MICC row that matches "average over identity".
BASELINE_MICC_ROW = {"landmark_fit": "landmark_fit_avg", "landmark_fit_exact": "landmark_fit_exact_avg"}


def liu_reference(liu, profile: str, artifacts: tuple[str, ...] = LIU_ARTIFACTS):
    """The Liu et al. Phase III model other papers' tables compare with, as an evaluable.

    Args:
        liu: a ``phase3.pt``, a ``reproduce liu2018`` run folder, None (the committed
            artifact of ``artifacts`` of the same profile if present, else the first present,
            in the CPU profiles) or False (no Liu et al. row).
        profile: ``"quick"``, ``"standard"`` or ``"full"``; the committed artifacts are CPU
            runs, so ``"full"`` needs ``liu``.

    Returns:
        ``(evaluable, checkpoint path as str)``, or ``(None, None)`` when there is none.

    >>> liu_reference(False, "quick")
    (None, None)
    """
    from facelab.models.registry import load_evaluable
    from facelab.reproduce.artifacts import ARTIFACTS_DIR, has_artifact

    if liu is False:
        return None, None
    if liu is None and profile in ("quick", "standard"):  # the same profile's artifact first
        ordered = sorted(artifacts, key=lambda name: not name.endswith(f"-{profile}"))
        liu = next((ARTIFACTS_DIR / name for name in ordered if has_artifact(name)), None)
    if liu is None:
        return None, None
    path = Path(liu)
    path = path / FINAL_STAGE_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"liu: {path} is not a Liu et al. {FINAL_STAGE_FILE} checkpoint")
    return load_evaluable(path, expect_model="liu2018"), str(path)


# ------------------------------------------------------------------ scoring
class ScoringSuites:
    """The MICC, BU-3DFE and LFW suites of one profile, rendered once and shared by every model scored."""

    def __init__(self, profile: str, eval_cfg) -> None:
        self.profile = profile
        self.cfg = eval_cfg.resolved(profile)
        self._suites: dict = {}

    def get(self, model, name: str):
        from facelab.metrics.model_eval import RenderedSuite, suite_for

        cfg = self.cfg
        key = (name, tuple(model.config.image_size), model.config.resolution)
        if key not in self._suites:
            sizes = {"micc": dict(n_identities=cfg.micc_identities), "bu3dfe": dict(n_identities=cfg.bu3dfe_identities),
                     "lfw": dict(n_identities=cfg.lfw_identities, pairs_per_fold=cfg.lfw_pairs_per_fold)}[name]
            self._suites[key] = RenderedSuite(suite_for(model, name, self.profile, cfg, **sizes))
        return self._suites[key]


def _bu3dfe_columns(model, suites: ScoringSuites) -> tuple[dict, dict]:
    """``({"rmse_bu3dfe_pose", "rmse_bu3dfe_exp"}, identity RMSE per |yaw|)`` in mm."""
    from facelab.data import BU3DFE_EXPRESSIONS
    from facelab.metrics.baselines import by_abs_yaw
    from facelab.metrics.model_eval import predict_suite
    from facelab.metrics.reconstruction import rmse

    suite = suites.get(model, "bu3dfe")
    pred = predict_suite(model, suite, suites.cfg.batch_size)
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


def score_phase(model, profile: str, eval_cfg, suites: ScoringSuites | None = None,
                reconstruction: bool = True) -> tuple[dict, dict, dict]:
    """The four table columns of one model, its BU-3DFE identity RMSE per |yaw| (mm), and its units.

    ``units`` are ``{"micc_mm": (n_subjects,) mm, "lfw_accuracy": (n_pairs,) 0/1}``: each MICC
    subject's "average over identity" error and whether each LFW pair was verified right,
    the samples a paired bootstrap resamples. ``suites`` (rendered once) are reused when given.
    ``reconstruction=False`` scores LFW only (the RMSE columns are None, ``micc_mm`` is absent).
    """
    from facelab.metrics.model_eval import predict_suite, score_lfw, score_micc

    suites = suites or ScoringSuites(profile, eval_cfg)
    cfg = suites.cfg
    with torch_threads(cfg.num_threads):
        lfw = score_lfw(model, profile, cfg, suite=suites.get(model, "lfw"))
        if not reconstruction:
            cols = {"rmse_micc": None, "rmse_bu3dfe_pose": None, "rmse_bu3dfe_exp": None,
                    "lfw_accuracy": lfw.accuracy_mean}
            return cols, {}, {"lfw_accuracy": np.asarray(lfw.pair_correct, dtype=float)}
        micc_suite = suites.get(model, "micc")
        micc, micc_units = score_micc(model, profile, cfg, suite=micc_suite,
                                      pred=predict_suite(model, micc_suite, cfg.batch_size), return_units=True)
        bu, yaw_rmse = _bu3dfe_columns(model, suites)
    cols = {"rmse_micc": micc["average_over_identity"]["all"]["mean"], **bu, "lfw_accuracy": lfw.accuracy_mean}
    units = {"micc_mm": micc_units["average_over_identity"], "lfw_accuracy": np.asarray(lfw.pair_correct, dtype=float)}
    return cols, yaw_rmse, units


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
def rows_markdown(result: dict) -> str:
    """The phase rows of a :func:`reproduce_liu2018` result as a Markdown table (means over seeds).

    >>> r = {"rows": [{"phase": "I", "disentangling": True, "identification_loss": "none", "stage": "phase1",
    ...      "rmse_micc": 1.0, "rmse_bu3dfe_pose": 2.0, "rmse_bu3dfe_exp": 3.0, "lfw_accuracy": 0.5}]}
    >>> print(rows_markdown(r).splitlines()[-1])
    | phase1 | I | yes | none | 1.000 | 2.000 | 3.000 | 0.500 |
    """
    from facelab.metrics.report import markdown_table

    rows = {r.get("stage", r["phase"]): {**({"phase": r["phase"]} if "stage" in r else {}),
                                         "disentangling": "yes" if r["disentangling"] else "no",
                                         "identification loss": r["identification_loss"], **{c: r[c] for c in COLUMNS}}
            for r in result["rows"]}
    return markdown_table(rows, row_header="stage")


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

    seeds = result.get("seeds", [0])
    parts = [f"# Liu et al. 2018 ablation on SynthFaces ({result['profile']} profile)",
             "**Phases** (RMSE in mm; LFW: verification accuracy of c_Id"
             + (f"; means over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else "") + ")\n\n" + rows_markdown(result),
             "**Baselines** (bu3dfe: full shape, all expressions and yaws)\n\n"
             + (markdown_table(result["baselines"], row_header="method") if result["baselines"] else "not run"),
             claims_markdown(result.get("claims", [])),
             "**Phase III identity RMSE (mm) per |yaw| (degrees), neutral BU-3DFE images**\n\n"
             + markdown_table({"phase III": result["yaw_rmse"]}, row_header="model"),
             f"Time: {result['seconds']} s"]
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------ claims
def seed_dir(out: Path, seed: int, seeds: tuple[int, ...]) -> Path:
    """The run folder of training seed ``seed``: ``out`` for the first seed, else ``out/seed<k>``.

    >>> seed_dir(Path("runs/x"), 0, (0, 1)), seed_dir(Path("runs/x"), 1, (0, 1))
    (PosixPath('runs/x'), PosixPath('runs/x/seed1'))
    """
    return out if seed == seeds[0] else out / f"seed{seed}"


def _phase2_pulled(run: Path) -> bool:
    """Did Phase II's loss fall by :data:`MIN_PHASE2_LOSS_DROP` (its first vs last logged rows)?"""
    from facelab.train import read_metrics

    path = run / "phase2"
    if not path.is_dir():
        return False
    losses = read_metrics(path)["loss"]
    losses = losses[np.isfinite(losses)]
    return len(losses) >= 2 and bool((losses[0] - losses[-1]) >= MIN_PHASE2_LOSS_DROP * abs(losses[0]))


def liu_claims(units: dict, baseline_units: dict, activity: dict, n_boot: int | None = None) -> list[dict]:
    """The :data:`CLAIMS` entries with 95 % intervals (:func:`facelab.metrics.stats.claims_table`).

    ``units``: ``{stage: {metric: (n_seeds, n_units)}}``; ``baseline_units``: ``{row: {metric:
    (n_units,)}}``; ``activity``: ``{"phase2": the Phase II loss moved, "L_C": the identification
    loss pulled}``. Claims whose rows were not run, or with fewer than two units, are left out.
    """
    from facelab.metrics.stats import N_BOOTSTRAP, claims_table

    return claims_table(CLAIMS, units, baseline_units, activity, n_boot=n_boot or N_BOOTSTRAP)


def liu_dose_response(units: dict, lambda_r: float, activity: dict, n_boot: int | None = None) -> list[dict]:
    """L2 and L3 at each reconstruction weight: the profile's ``lambda_r`` (``phase3``) and :data:`LAMBDA_R_DOSES`.

    ``units`` as for :func:`liu_claims`; ``activity``: ``{stage: L_C pulled in that stage}``.
    Returns :func:`facelab.metrics.stats.claims_table` entries, each with its ``lambda_r``,
    ordered by claim and then by weight; weights whose stage was not run are left out.
    """
    from facelab.metrics.stats import N_BOOTSTRAP, claims_table

    doses = sorted([(lambda_r, "phase3")] + [(w, dose_stage(w)) for w in LAMBDA_R_DOSES if w != lambda_r])
    specs, weights = [], {}
    for claim_id, control, metric, better in DOSE_CLAIMS:
        for weight, stage in doses:
            spec_id = f"{claim_id} at λ_R = {weight:g}"
            weights[spec_id] = weight
            specs.append((spec_id, f"{stage} vs {control}", (stage, control), metric, better, stage))
    entries = claims_table(specs, units, {}, activity, n_boot=n_boot or N_BOOTSTRAP)
    return [{**entry, "lambda_r": weights[entry["id"]]} for entry in entries]


def _baseline_units(bcfg) -> tuple[dict, dict]:
    """Rows for the results table and per-subject / per-pair units of the classical baselines."""
    from facelab.metrics.baselines import micc_subject_errors, run_baselines

    raw = run_baselines(config=bcfg, details=True)
    units: dict = {}
    if "details" in raw.get("micc", {}):
        for row, name in (("mean_face", "mean_face"), ("landmark_fit", BASELINE_MICC_ROW["landmark_fit"])):
            units.setdefault(row, {})["micc_mm"] = micc_subject_errors(raw["micc"], name)
        raw["micc"].pop("details")
    lfw = raw.get("lfw", {}).pop("details", None)
    if lfw is not None:
        units.setdefault("landmark_fit", {})["lfw_accuracy"] = lfw["pair_correct"]["landmark_fit"].astype(float)
    raw.get("bu3dfe", {}).pop("details", None)
    return baseline_rows(raw), units


def _targets(rows: list[dict], baselines: dict) -> dict:
    """Absolute checks: Phase III MICC over the mean face's, and the share of the λ_R = 0 ceiling reached on LFW."""
    by_stage = {r["stage"]: r for r in rows}
    out = {}
    p3, mean_face = by_stage.get("phase3"), baselines.get("mean_face")
    if p3 and mean_face and mean_face.get("rmse_micc"):
        out["micc_over_mean_face"] = p3["rmse_micc"] / mean_face["rmse_micc"]
    ceiling, p2 = by_stage.get("phase3_no_lr"), by_stage.get("phase2")
    if p3 and ceiling and p2 and ceiling["lfw_accuracy"] > p2["lfw_accuracy"]:
        out["lfw_fraction_of_ceiling"] = (p3["lfw_accuracy"] - p2["lfw_accuracy"]) / (ceiling["lfw_accuracy"] - p2["lfw_accuracy"])
    if p3:
        out["lfw_accuracy"] = p3["lfw_accuracy"]
    return out


# ------------------------------------------------------------------ API
def reproduce_liu2018(profile: str = "quick", out_dir="runs/reproduce-liu2018", overrides=None,
                      with_baselines: bool = True, seeds: tuple[int, ...] | None = None) -> dict:
    """Train (or reuse) the three phases of Liu et al. 2018 and score each one (module docstring).

    Args:
        profile: ``"quick"`` (CPU, one seed), ``"standard"`` (CPU, every control, three
            seeds) or ``"full"``.
        out_dir: run folder: the phase checkpoints (reused when present), ``results.json``
            and ``results.md``; seeds after the first train in ``seed<k>/``.
        overrides: ``["train.KEY=VALUE", "eval.KEY=VALUE", "baselines.KEY=VALUE"]`` (or a
            dict with such keys) for :class:`~facelab.train.liu2018.Liu2018TrainConfig`,
            :class:`~facelab.metrics.model_eval.ModelEvalConfig` and
            :class:`~facelab.metrics.baselines.BaselineConfig`.
        with_baselines: also run :func:`facelab.metrics.run_baselines` (mean face, oracle,
            landmark fit).
        seeds: training seeds (None: :data:`PROFILE_SEEDS`).

    Returns:
        ``{"profile", "out_dir", "seeds", "rows": [{"phase", "disentangling",
        "identification_loss", "stage", "rmse_micc", "rmse_bu3dfe_pose", "rmse_bu3dfe_exp",
        "lfw_accuracy"}] (means over seeds), "rows_by_seed", "baselines": {method: {...}},
        "yaw_rmse": {"0".."90", "overall"}, "claims": [...], "dose_response": [...], "targets",
        "diagnostics": {stage: summarize_shares(...)}, "train_config", "seconds"}``. ``claims`` are
        :func:`liu_claims`; ``dose_response`` is :func:`liu_dose_response` (the standard
        profile trains Phase III at each of :data:`LAMBDA_R_DOSES` too); ``diagnostics`` says,
        for each Phase III stage of the first seed, what share of the gradient L_R and L_C each
        had on the encoder and the decoders, and how the identity head's training accuracy
        compares with chance (:mod:`facelab.train.diagnostics`).
    """
    from facelab.config import apply_overrides, split_overrides
    from facelab.train.stages import read_summary
    from facelab.metrics.baselines import BaselineConfig
    from facelab.metrics.model_eval import ModelEvalConfig
    from facelab.metrics.report import write_json
    from facelab.metrics.stats import term_pulled
    from facelab.models.registry import load_evaluable
    from facelab.train.liu2018 import ABLATION_STAGES, CONTROL_STAGES, Liu2018TrainConfig, train_liu2018

    check_choice(profile, "profile", PROFILES)
    seeds = tuple(seeds) if seeds is not None else PROFILE_SEEDS[profile]
    if not seeds:
        raise ValueError("seeds: give at least one training seed")
    groups = split_overrides(overrides, OVERRIDE_GROUPS)
    start = time.perf_counter()
    out = Path(out_dir)
    train_cfg = apply_overrides(Liu2018TrainConfig(profile=profile, out_dir=str(out)), groups["train"])
    train_cfg.out_dir = str(out)
    eval_cfg = apply_overrides(ModelEvalConfig(), groups["eval"])
    if "stages" not in {o.split("=", 1)[0] for o in groups["train"]}:
        train_cfg.stages = CONTROL_STAGES if profile == "standard" else ABLATION_STAGES
    for seed in seeds:  # trains only the stages whose checkpoint is missing
        train_liu2018(train_cfg, seed=seed, out_dir=str(seed_dir(out, seed, seeds)))  # seed: train.seed
    t_train = time.perf_counter() - start
    loss_name = {"asoftmax": "A-Softmax", "softmax": "softmax"}
    suites = ScoringSuites(profile, eval_cfg)
    rows_by_seed, units, yaw_rmse = {}, {}, {}
    for seed in seeds:
        run = seed_dir(out, seed, seeds)
        rows_by_seed[seed] = []
        for stage, phase, disentangling, loss in ROWS:
            if stage not in train_cfg.stages:
                continue
            if stage == "phase3" or stage in DOSE_STAGES:
                loss = loss_name[train_cfg.loss] + loss.removeprefix("A-Softmax")
            cols, per_yaw, stage_units = score_phase(load_evaluable(run / f"{stage}.pt"), profile, eval_cfg, suites,
                                                     reconstruction=stage not in RECOGNITION_ONLY_ROWS)
            rows_by_seed[seed].append({"phase": phase, "disentangling": disentangling, "identification_loss": loss,
                                       "stage": stage, **cols})
            for metric, values in stage_units.items():
                units.setdefault(stage, {}).setdefault(metric, []).append(values)
            if stage == "phase3" and seed == seeds[0]:
                yaw_rmse = per_yaw
    units = {stage: {m: np.stack(v) for m, v in metrics.items()} for stage, metrics in units.items()}
    rows = mean_rows(rows_by_seed)
    baselines, baseline_units = {}, {}
    if with_baselines:
        bcfg = apply_overrides(BaselineConfig(profile=profile), groups["baselines"])
        baselines, baseline_units = _baseline_units(bcfg)
    # whether L_R and L_C pulled on the encoder and decoders in each Phase III stage
    summaries = [read_summary(seed_dir(out, seed, seeds)) for seed in seeds]
    diagnostics = {stage: row["diagnostics"] for stage, row in summaries[0].items() if "diagnostics" in row}
    activity = {"phase2": all(_phase2_pulled(seed_dir(out, seed, seeds)) for seed in seeds),
                "L_C": all(term_pulled(s.get("phase3", {}).get("diagnostics", {}), "L_C") for s in summaries)}
    claims = liu_claims(units, baseline_units, activity)
    dose_activity = {stage: all(term_pulled(s.get(stage, {}).get("diagnostics", {}), "L_C") for s in summaries)
                     for stage in ("phase3",) + DOSE_STAGES}
    dose_response = liu_dose_response(units, train_cfg.lambda_r, dose_activity)
    result = {"profile": profile, "out_dir": str(out), "seeds": list(seeds), "rows": rows,
              "rows_by_seed": {str(k): v for k, v in rows_by_seed.items()}, "baselines": baselines,
              "yaw_rmse": yaw_rmse, "claims": claims, "dose_response": dose_response,
              "targets": _targets(rows, baselines), "activity": activity,
              "diagnostics": diagnostics, "train_config": dataclasses.asdict(train_cfg),
              "train_seconds": round(t_train, 2), "seconds": round(time.perf_counter() - start, 2)}
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / UNITS_NPZ, **{f"{stage}/{m}": v for stage, ms in units.items() for m, v in ms.items()},
                        **{f"baseline/{row}/{m}": np.asarray(v) for row, ms in baseline_units.items() for m, v in ms.items()})
    write_json(result, out / RESULTS_JSON)
    (out / RESULTS_MD).write_text(results_markdown(result))
    return result


def mean_rows(rows_by_seed: dict, columns=COLUMNS) -> list[dict]:
    """Each stage's row with its ``columns`` averaged over the seeds (one seed: the row itself);
    ``rows_by_seed``: ``{seed: [row, ...]}``, the same stages in the same order for every seed.

    >>> mean_rows({0: [{"stage": "a", "x": 1.0}], 1: [{"stage": "a", "x": 3.0}]}, columns=("x",))[0]["x"]
    2.0
    """
    runs = list(rows_by_seed.values())
    if len(runs) == 1:
        return runs[0]
    rows = []
    for i, row in enumerate(runs[0]):
        mean = dict(row)
        for col in columns:
            values = [run[i][col] for run in runs if run[i].get(col) is not None]
            mean[col] = float(np.mean(values)) if values else None
        rows.append(mean)
    return rows
