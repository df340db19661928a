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
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

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
# Baseline rows of the table, and the MICC row that matches "average over identity".
BASELINE_MICC_ROW = {"landmark_fit": "landmark_fit_avg", "landmark_fit_exact": "landmark_fit_exact_avg"}


class Liu2018Evaluable(nn.Module):
    """Wraps a :class:`~facelab.models.liu2018.Liu2018Model` into the interface of
    :func:`facelab.metrics.evaluate_model`: ``config.image_size`` (of the photos),
    ``config.resolution``, ``prepare_images(batch)``, ``reconstruct(images, morphable)`` and
    ``decode_identity(code, morphable)``.

    ``prepare_images`` cuts five-point aligned crops from the batch's photos when the model
    was trained on them (``align``; photos rendered at ``render_size``). ``reconstruct`` maps
    encoder inputs ``(B, 3, H, W)`` float [0, 1] to ``shape``, ``identity_shape`` ``(B, V, 3)``
    mm and ``embedding`` = ``c_Id (B, n_id)``. A model trained without identity
    disentangling (``disentangled=False``) has no identity part: its embedding is the whole
    code ``[c_Id, c_Res]`` and its identity shape is the full shape.

    >>> from facelab.train.liu2018 import build_liu2018_model
    >>> net = build_liu2018_model({"resolution": "quick", "model": {"encoder": {"depth": "sphere_tiny",
    ...       "embedding_dim": 8, "input_size": [32, 32]}}})
    >>> wrapped = Liu2018Evaluable(net, "quick")
    >>> out = wrapped.reconstruct(torch.zeros(2, 3, 32, 32), None)
    >>> out["shape"].shape, out["embedding"].shape, wrapped.config.image_size
    (torch.Size([2, 1353, 3]), torch.Size([2, 80]), (32, 32))
    """

    def __init__(self, model: nn.Module, resolution: str, align: bool = False, render_size=None,
                 disentangled: bool = True) -> None:
        super().__init__()
        if not hasattr(model, "encode") or not hasattr(model, "id_decoder"):
            raise TypeError(f"model: expected a Liu2018Model, got {type(model).__name__}")
        self.model = model
        self.input_size = tuple(model.config.encoder.input_size)
        self.align, self.disentangled = bool(align), bool(disentangled)
        photo = tuple(render_size) if (align and render_size) else self.input_size
        self.config = SimpleNamespace(image_size=photo, resolution=resolution)

    def prepare_images(self, batch: dict) -> torch.Tensor:
        """The encoder inputs of a suite batch: aligned crops (``align``) or the photos."""
        if not self.align:
            return batch["image"]
        from facelab.data.align import align_faces

        return align_faces(batch["image"], batch["landmarks2d"], self.input_size)[0]

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, morphable=None) -> dict[str, torch.Tensor]:
        out = self.model(images)
        if not self.disentangled:
            return {"shape": out["shape"], "identity_shape": out["shape"],
                    "embedding": torch.cat([out["c_id"], out["c_res"]], 1)}
        return {"shape": out["shape"], "identity_shape": out["shape_id"], "embedding": out["c_id"]}

    @torch.no_grad()
    def decode_identity(self, code: torch.Tensor, morphable=None) -> torch.Tensor:
        """``code (B, D)`` (an embedding of :meth:`reconstruct`) -> neutral identity shape ``(B, V, 3)`` mm."""
        if not self.disentangled:
            n = self.model.n_id
            return self.model.decode(code[:, :n], code[:, n:])["shape"]
        return self.model.mean_shape + self.model.id_decoder(code)


def evaluable(model: nn.Module, checkpoint: dict) -> Liu2018Evaluable:
    """Wrap a loaded Liu et al. model with the input pipeline recorded in its ``checkpoint``."""
    inp = checkpoint["model_config"].get("input", {})
    return Liu2018Evaluable(model.eval(), checkpoint["model_config"]["resolution"], align=inp.get("align", False),
                            render_size=inp.get("render_size"), disentangled=inp.get("disentangled", True)).eval()


def load_phase(path) -> Liu2018Evaluable:
    """The stage checkpoint ``path`` (e.g. ``phase3.pt``) as an evaluable model (CPU, eval mode)."""
    from facelab.train.checkpoint import load_model

    model, ckpt = load_model(Path(path), map_location="cpu")
    return evaluable(model, ckpt)


def _split_overrides(overrides) -> dict[str, list[str]]:
    """``["train.phase_steps=1,1,1", "eval.micc_identities=2"]`` (or a dict) -> per-group lists."""
    if overrides is None:
        return {g: [] for g in OVERRIDE_GROUPS}
    if isinstance(overrides, dict):
        overrides = [f"{k}={v}" if not isinstance(v, (tuple, list)) else f"{k}={','.join(map(str, v))}"
                     for k, v in overrides.items()]
    groups = {g: [] for g in OVERRIDE_GROUPS}
    for item in overrides:
        key = item.split("=", 1)[0]
        group, _, field = key.partition(".")
        if group not in groups or not field:
            raise ValueError(f"overrides: {item!r} must start with one of {', '.join(g + '.' for g in OVERRIDE_GROUPS)}")
        groups[group].append(item[len(group) + 1:])
    return groups


# ------------------------------------------------------------------ scoring
def _bu3dfe_columns(model: Liu2018Evaluable, profile: str, cfg) -> tuple[dict, dict]:
    """``({"rmse_bu3dfe_pose", "rmse_bu3dfe_exp"}, identity RMSE per |yaw|)`` in mm."""
    from facelab.data import BU3DFE_EXPRESSIONS
    from facelab.metrics.baselines import by_abs_yaw
    from facelab.metrics.model_eval import _suite, predict_suite
    from facelab.metrics.reconstruction import rmse

    suite = _suite(model, "bu3dfe", profile, cfg, n_identities=cfg.bu3dfe_identities)
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


def score_phase(model: Liu2018Evaluable, profile: str, eval_cfg) -> tuple[dict, dict]:
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
        {method: {...}}, "yaw_rmse": {"0".."90", "overall"}, "train_config", "seconds"}``.
    """
    from facelab.config import apply_overrides
    from facelab.metrics.baselines import BaselineConfig, run_baselines
    from facelab.metrics.model_eval import ModelEvalConfig
    from facelab.metrics.report import write_json
    from facelab.train.liu2018 import ABLATION_STAGES, Liu2018TrainConfig, train_liu2018

    check_choice(profile, "profile", PROFILES)
    groups = _split_overrides(overrides)
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
        cols, per_yaw = score_phase(load_phase(out / f"{stage}.pt"), profile, eval_cfg)
        rows.append({"phase": phase, "disentangling": disentangling, "identification_loss": loss, "stage": stage,
                     **cols})
        if stage == "phase3":
            yaw_rmse = per_yaw
    baselines = {}
    if with_baselines:
        bcfg = apply_overrides(BaselineConfig(profile=profile), groups["baselines"])
        baselines = baseline_rows(run_baselines(config=bcfg))
    result = {"profile": profile, "out_dir": str(out), "rows": rows, "baselines": baselines, "yaw_rmse": yaw_rmse,
              "train_config": dataclasses.asdict(train_cfg), "train_seconds": round(t_train, 2),
              "seconds": round(time.perf_counter() - start, 2)}
    out.mkdir(parents=True, exist_ok=True)
    write_json(result, out / RESULTS_JSON)
    (out / RESULTS_MD).write_text(results_markdown(result))
    return result
