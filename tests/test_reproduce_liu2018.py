"""Tests of the Liu et al. 2018 ablation reproduction (facelab.reproduce.liu2018)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facelab.cli import main
from facelab.reproduce.liu2018 import (
    COLUMNS, baseline_rows, reproduce_liu2018, results_markdown,
)
from facelab.config import split_overrides
from facelab.models import Liu2018Evaluable, build_liu2018_model, load_evaluable
from facelab.reproduce.liu2018 import OVERRIDE_GROUPS

TRAIN = dict(image_size="32,32", render_size="48,48", n_identities=16, images_per_identity=4, batch_size=16, phase_steps="6,4,6",
             embedding_dim=16, log_every=2, progress="false", cache_pool="false")
EVAL = dict(micc_identities=1, bu3dfe_identities=1, lfw_identities=20, lfw_pairs_per_fold=3, icp_iters=5)
BASE = dict(micc_identities=1, bu3dfe_identities=1, lfw_identities=20, lfw_pairs_per_fold=3, oracle_ks=10, icp_iters=5)
TINY = ([f"train.{k}={v}" for k, v in TRAIN.items()] + [f"eval.{k}={v}" for k, v in EVAL.items()]
        + [f"baselines.{k}={v}" for k, v in BASE.items()])
ROW_KEYS = {"phase", "stage", "disentangling", "identification_loss", *COLUMNS}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "run"
    return out, reproduce_liu2018("quick", out, TINY)


@pytest.mark.slow
def test_reproduce_keys_and_files(tiny):
    out, result = tiny
    assert [r["phase"] for r in result["rows"]] == ["I", "II", "II", "III", "III"]
    assert [r["disentangling"] for r in result["rows"]] == [True, False, True, True, True]
    assert [r["identification_loss"] for r in result["rows"]] == ["none", "none", "none", "softmax", "A-Softmax"]
    for row in result["rows"]:
        assert set(row) == ROW_KEYS
        assert all(np.isfinite(row[c]) for c in COLUMNS)
        assert 0.0 <= row["lfw_accuracy"] <= 1.0 and row["rmse_micc"] > 0
    assert {"mean_face", "oracle_k10", "landmark_fit"} <= set(result["baselines"])
    assert set(result["yaw_rmse"]) == {str(y) for y in range(0, 91, 10)} | {"overall"}
    assert result["seconds"] > 0
    assert json.loads((out / "results.json").read_text())["rows"] == json.loads(json.dumps(result["rows"]))
    assert "| phase3 | III | yes | A-Softmax |" in (out / "results.md").read_text()


@pytest.mark.slow
def test_phase_i_is_the_linear_3dmm(tiny):
    """Phase I's decoders are the bases: decoding c_Id equals mean + B_id (c_Id * std)."""
    from facelab.morphable import SynthFacesConfig, build_synthfaces

    out, _ = tiny
    model = load_evaluable(out / "phase1.pt")
    mm = build_synthfaces(SynthFacesConfig(resolution="quick"))
    code = torch.randn(2, model.model.n_id, generator=torch.Generator().manual_seed(0))
    expected = mm.mean_shape + (mm.shape_basis @ (code * mm.shape_std).T).T.reshape(2, -1, 3)
    torch.testing.assert_close(model.decode_identity(code), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_reuses_checkpoints_and_cli(tiny, capsys):
    out, first = tiny
    stamp = (out / "phase3.pt").stat().st_mtime_ns
    assert main(["reproduce", "liu2018", "--out", str(out), "--json", "--no-baselines",
                 *[a for s in TINY if not s.startswith("baselines.") for a in ("--set", s)]]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (out / "phase3.pt").stat().st_mtime_ns == stamp  # not retrained
    assert printed["baselines"] == {}
    # same checkpoints, same suites: the same numbers
    assert [r["rmse_bu3dfe_pose"] for r in printed["rows"]] == pytest.approx([r["rmse_bu3dfe_pose"] for r in first["rows"]])


def test_adapter_matches_model_forward():
    torch.manual_seed(0)
    net = build_liu2018_model({"resolution": "quick", "model": {"encoder": {"depth": "sphere_tiny", "embedding_dim": 8,
                                                                            "input_size": [32, 32]}}}).eval()
    images = torch.rand(2, 3, 32, 32)
    wrapped = Liu2018Evaluable(net, "quick")
    out, ref = wrapped.reconstruct(images), net(images)
    torch.testing.assert_close(out["identity_shape"], ref["shape_id"])
    torch.testing.assert_close(out["embedding"], ref["c_id"])
    torch.testing.assert_close(wrapped.decode_identity(ref["c_id"]), ref["shape_id"])
    assert wrapped.config.resolution == "quick" and wrapped.config.image_size == (32, 32)


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(TypeError, match="model"):
        Liu2018Evaluable(torch.nn.Linear(2, 2), "quick")
    with pytest.raises(ValueError, match="overrides"):
        split_overrides(["phase_steps=1,1,1"], OVERRIDE_GROUPS)
    with pytest.raises(ValueError, match="profile"):
        reproduce_liu2018("medium", tmp_path)
    with pytest.raises(ValueError, match="unknown config key"):
        reproduce_liu2018("quick", tmp_path, ["train.nope=1"])


def test_split_overrides_and_baseline_rows():
    groups = split_overrides({"train.phase_steps": (1, 2, 3), "eval.icp_iters": 4}, OVERRIDE_GROUPS)
    assert groups == {"train": ["phase_steps=1,2,3"], "eval": ["icp_iters=4"], "baselines": []}
    b = {"micc": {"landmark_fit": {"all": {"mean": 9.0}}, "landmark_fit_avg": {"all": {"mean": 1.5}}},
         "bu3dfe": {"rmse": {"landmark_fit": {"overall": 2.5}}}, "lfw": {"landmark_fit": {"accuracy_mean": 0.8}}}
    # the landmark fit's MICC number is its "average over identity" row, like the phases'
    assert baseline_rows(b) == {"landmark_fit": {"rmse_micc": 1.5, "rmse_bu3dfe_shape": 2.5, "lfw_accuracy": 0.8}}


def test_results_markdown_lists_every_phase():
    rows = [{"phase": p, "disentangling": True, "identification_loss": "none", **{c: i + 0.25 for c in COLUMNS}}
            for i, p in enumerate(["I", "II"])]
    md = results_markdown({"profile": "quick", "rows": rows, "baselines": {}, "yaw_rmse": {"0": 1.0}, "seconds": 2})
    assert "| I | yes | none | 0.250 |" in md and "| II | yes | none | 1.250 |" in md and "not run" in md


@pytest.mark.slow
def test_stage_checkpoints_evaluate_with_their_input_pipeline(tiny):
    """A liu2018 checkpoint scored by `evaluate_model` sees aligned crops of render_size photos."""
    from facelab.metrics.model_eval import ModelEvalConfig, evaluate_model

    out, _ = tiny
    wrapped = load_evaluable(out / "phase3.pt")
    assert wrapped.align and wrapped.config.image_size == (48, 48) and wrapped.input_size == (32, 32)
    batch = {"image": torch.rand(2, 3, 48, 48), "landmarks2d": torch.rand(2, 68, 2) * 30 + 9}
    assert wrapped.prepare_images(batch).shape == (2, 3, 32, 32)
    res = evaluate_model(out / "phase3.pt", "lfw", config=ModelEvalConfig(lfw_identities=20, lfw_pairs_per_fold=3))
    assert res["image_size"] == [48, 48]
    assert 0.0 <= next(iter(res["lfw"].values()))["accuracy_mean"] <= 1.0
    joint = load_evaluable(out / "phase2_joint.pt")
    assert not joint.disentangled
    rec = joint.reconstruct(torch.rand(2, 3, 32, 32))
    assert rec["embedding"].shape[1] == joint.model.n_id + joint.model.n_res
    # without disentangling the "identity" is the whole code: decoding it gives the full shape
    torch.testing.assert_close(joint.decode_identity(rec["embedding"]), rec["shape"])
    torch.testing.assert_close(rec["identity_shape"], rec["shape"])


def test_liu_claims_on_known_effects():
    """A real 0.2 mm gain holds, no gain is within noise, an inactive term says so, baselines pair with every seed."""
    from facelab.reproduce.liu2018 import liu_claims

    rng = np.random.default_rng(0)
    base = rng.normal(1.0, 0.2, size=(3, 30))
    units = {"phase3": {"micc_mm": base - 0.2, "lfw_accuracy": np.ones((3, 300))},
             "phase3_no_lc": {"micc_mm": base + rng.normal(0, 0.01, size=(3, 30))},
             "phase2": {"micc_mm": base, "lfw_accuracy": (rng.random((3, 300)) < 0.7).astype(float)},
             "phase2_joint": {"micc_mm": base + rng.normal(0, 0.05, size=(3, 30))}}
    baseline = {"landmark_fit": {"micc_mm": base[0] - 0.5}}
    claims = {c["id"]: c for c in liu_claims(units, baseline, {"L_C": True, "phase2": True}, n_boot=500)}
    assert set(claims) == {"L1", "L2", "L3", "T1"}  # L4 and T2 need rows that were not run
    assert claims["L2"]["verdict"] == "holds" and claims["L2"]["estimate"] == pytest.approx(-0.2, abs=0.01)
    assert claims["L3"]["verdict"] == "holds" and claims["L3"]["unit"] == "pair"
    assert claims["L1"]["verdict"] == "within noise"
    assert claims["T1"]["verdict"] == "reversed" and claims["T1"]["n_seeds"] == 3
    lazy = {c["id"]: c for c in liu_claims(units, baseline, {"L_C": False, "phase2": True}, n_boot=500)}
    assert lazy["L2"]["verdict"] == "inactive" and lazy["L3"]["verdict"] == "inactive"


def test_dose_response_orders_weights_and_reads_each_stage_activity():
    """Each λ_R gets its own L2 / L3 entry; a dose whose L_C did not pull is inactive; unrun doses are left out."""
    from facelab.reproduce.liu2018 import liu_dose_response
    from facelab.train.liu2018 import dose_stage

    rng = np.random.default_rng(1)
    control = rng.normal(1.0, 0.2, size=(3, 30))
    # the error rises as lambda_R falls: +0.4 mm at 0.1, +0.1 mm at 1.0 (a monotone trade-off)
    units = {"phase3_no_lc": {"micc_mm": control}, "phase2": {"lfw_accuracy": np.zeros((3, 300))},
             "phase3": {"micc_mm": control + 0.4, "lfw_accuracy": np.ones((3, 300))},
             dose_stage(1.0): {"micc_mm": control + 0.1 + rng.normal(0, 0.01, (3, 30)),
                               "lfw_accuracy": np.ones((3, 300))}}
    activity = {"phase3": True, dose_stage(1.0): False}
    entries = liu_dose_response(units, 0.1, activity, n_boot=300)
    assert [(e["id"], e["lambda_r"]) for e in entries] == [("L2 at λ_R = 0.1", 0.1), ("L2 at λ_R = 1", 1.0),
                                                          ("L3 at λ_R = 0.1", 0.1), ("L3 at λ_R = 1", 1.0)]
    by_id = {e["id"]: e for e in entries}
    assert by_id["L2 at λ_R = 0.1"]["verdict"] == "reversed"
    assert by_id["L2 at λ_R = 0.1"]["estimate"] == pytest.approx(0.4, abs=1e-9)
    assert by_id["L2 at λ_R = 1"]["verdict"] == "inactive"  # its L_C never pulled


def test_term_pulled_and_seed_dirs(tmp_path):
    from facelab.metrics.stats import term_pulled
    from facelab.reproduce.liu2018 import seed_dir

    active = {"terms": {"L_C": {"encoder": {"active": True}}}, "accuracy": {"active_fraction": 0.9}}
    assert term_pulled(active, "L_C")
    assert not term_pulled({**active, "accuracy": {"active_fraction": 0.5}}, "L_C")  # a head that never learned
    assert not term_pulled({"terms": {"L_C": {"encoder": {"active": False}}}}, "L_C")
    assert seed_dir(tmp_path, 2, (0, 2)) == tmp_path / "seed2" and seed_dir(tmp_path, 0, (0, 2)) == tmp_path
