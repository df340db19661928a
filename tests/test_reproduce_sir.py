"""Tests of ``facelab reproduce sir`` (facelab.reproduce.sir)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facelab.config import split_overrides
from facelab.metrics.model_eval import RenderedSuite
from facelab.metrics.sir import sir_ratio
from facelab.reproduce.liu2018 import liu_reference
from facelab.reproduce.sir import (
    COLUMNS, LIU_ROW, MEAN_FACE_ROW, OVERRIDE_GROUPS, ROW_NAMES, SIREvalConfig, _cosine_rank1,
    gallery_split, reproduce_sir, results_markdown, score_sir,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = {"train.image_size": "32,32", "train.n_shape": 8, "train.n_exp": 4, "train.base_steps": 2, "train.steps": 2,
         "train.batch_lp": 4, "train.batch_id": 4, "train.ids_per_batch": 2, "train.n_identities": 4,
         "train.images_per_identity": 4, "train.lp_identities": 4, "train.lp_images_per_identity": 4,
         "train.sfm_identities": 10, "train.sfm_samples": 3, "train.sfm_steps": 5, "train.progress": "false",
         "train.cache_pool": "false"}
EVAL = {"eval.micc_identities": 2, "eval.lfw_identities": 20, "eval.lfw_pairs_per_fold": 1, "eval.icp_iters": 3,
        "sir.identities": 3, "sir.frames_per_video": 2, "sir.sfm_test_identities": 12, "sir.sfm_k": "4"}


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce_sir") / "run"
    return out, reproduce_sir("quick", out, overrides={**TRAIN, **EVAL}, liu=False)


def _pred(shapes, gt, labels, conditions, yaws, emb):
    return {"identity_shape": torch.as_tensor(shapes), "gt_identity": torch.as_tensor(gt), "label": torch.as_tensor(labels),
            "condition": torch.as_tensor(conditions), "yaw_deg": torch.as_tensor(yaws), "embedding": torch.as_tensor(emb)}


def _synthetic(noise: float, n_ids=4, seed=0):
    """Reconstructions = true identity shape + noise; 3 videos x 2 frames per identity."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(n_ids, 30, 3)) * 10
    labels = np.repeat(np.arange(n_ids), 6)
    conditions = np.tile(np.repeat([0, 1, 2], 2), n_ids)
    yaws = np.tile([20.0, -5.0, 0, 0, 0, 0], n_ids)
    gt = truth[labels]
    shapes = gt + noise * rng.normal(size=gt.shape)
    emb = np.eye(n_ids)[labels] + 0.01 * rng.normal(size=(len(labels), n_ids))
    return _pred(shapes, gt, labels, conditions, yaws, emb)


# ----------------------------------------------------------------- scoring
def test_gallery_split():
    g, p = gallery_split(np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 2, 0, 0, 1]), np.array([-20.0, 5, 0, 3, 30, 0]))
    assert g.tolist() == [1, 3] and p.tolist() == [2, 5]
    with pytest.raises(ValueError, match="cooperative"):
        gallery_split(np.array([0, 1]), np.array([0, 1]), np.zeros(2))


def test_cosine_rank1_hand_case():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0]])
    probes = np.array([[2.0, 0.1], [0.1, 3.0], [1.0, 0.9]])
    assert _cosine_rank1(probes, np.array([0, 1, 1]), gallery, np.array([0, 1])) == pytest.approx(2 / 3)


def test_score_sir_perfect_and_noisy_reconstructions():
    mask = np.ones(30, bool)
    perfect = score_sir(_synthetic(0.0), mask)
    assert perfect["geo_rank1"] == 1.0 and perfect["geo_rank1_truth"] == 1.0 and perfect["param_rank1"] == 1.0
    assert perfect["intra_mm"] < 1e-6 and perfect["sir_ratio"] < 1e-6
    noisy = score_sir(_synthetic(30.0), mask)
    assert noisy["sir_ratio"] > 0.5 and noisy["geo_rank1_truth"] < 1.0
    assert set(COLUMNS) - {"rmse_micc", "lfw_accuracy"} == set(perfect)


def test_score_sir_ratio_is_the_library_metric():
    pred = _synthetic(3.0, n_ids=5)
    mask = np.ones(30, bool)
    mask[:4] = False
    ours = score_sir(pred, mask, max_pairs=40, seed=3)
    ref = sir_ratio(pred["identity_shape"].numpy(), pred["label"].numpy(), mask=mask, max_pairs=40, seed=3)
    assert ours["sir_ratio"] == pytest.approx(ref, rel=1e-12)
    assert ours["sir_ratio"] == pytest.approx(ours["intra_mm"] / ours["inter_mm"])


def test_score_sir_bad_input_raises():
    pred = _synthetic(1.0, n_ids=1)
    with pytest.raises(ValueError, match="two identities"):
        score_sir(pred, np.ones(30, bool))


def test_cached_suite_renders_once():
    class Suite:
        calls = 0
        n_identities = 3

        def batches(self, batch_size, indices=None, progress=False):
            Suite.calls += 1
            yield {"image": torch.zeros(2)}

        def __len__(self):
            return 2

    cached = RenderedSuite(Suite(), fields=None)
    assert [len(list(cached.batches(4))) for _ in range(3)] == [1, 1, 1] and Suite.calls == 1
    assert cached.n_identities == 3 and len(cached) == 2


def test_overrides_and_config_errors():
    groups = split_overrides(["train.steps=3", "sir.identities=4", "eval.icp_iters=2"], OVERRIDE_GROUPS)
    assert groups == {"train": ["steps=3"], "eval": ["icp_iters=2"], "sir": ["identities=4"]}
    with pytest.raises(ValueError, match="must start with"):
        split_overrides(["baselines.x=1"], OVERRIDE_GROUPS)
    assert SIREvalConfig().resolved("quick").identities == 40
    with pytest.raises(ValueError, match="profile"):
        SIREvalConfig().resolved("huge")
    with pytest.raises(FileNotFoundError, match="liu"):
        liu_reference("/no/such/phase3.pt", "quick")
    assert liu_reference(False, "quick") == (None, None)


# ----------------------------------------------------------------- end to end
def test_reproduce_sir_rows_and_files(tiny_result):
    out, result = tiny_result
    names = [r["name"] for r in result["rows"]]
    assert names == [MEAN_FACE_ROW, LIU_ROW, *ROW_NAMES.values()]
    assert all(result["rows"][1][c] is None for c in COLUMNS)  # no Liu checkpoint: empty row
    mean_face = result["rows"][0]
    assert mean_face["rmse_micc"] > 0 and all(mean_face[c] is None for c in COLUMNS if c != "rmse_micc")
    assert result["precondition"]["micc_over_mean_face"] == pytest.approx(
        result["rows"][2]["rmse_micc"] / mean_face["rmse_micc"])
    for row in result["rows"][2:]:
        assert 0.0 <= row["lfw_accuracy"] <= 1.0 and 0.0 <= row["geo_rank1"] <= 1.0
        assert row["sir_ratio"] > 0 and row["rmse_micc"] > 0
    svp = result["sfm_vs_pca"]
    assert [r["K"] for r in svp] == [4, 8] and svp[0]["n_test_identities"] == 12
    assert all({"rmse_mm", "nmi", "verification_accuracy"} <= set(r["sfm"]) for r in svp)
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) >= {"rows", "sfm_vs_pca"} and "SFM vs PCA" in (out / "results.md").read_text()


def test_reproduce_sir_reuses_checkpoints(tiny_result):
    out, _ = tiny_result
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    result = reproduce_sir("quick", out, overrides={**TRAIN, **EVAL}, liu=False, variants=("params_recog",),
                           with_sfm_vs_pca=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")} == stamps
    assert [r["stage"] for r in result["rows"]] == ["mean_face", "liu2018_phase3", "params_recog"]
    assert result["sfm_vs_pca"] is None
    assert "| shape params + recognition (no SIR) |" in results_markdown(result)


def test_reproduce_sir_bad_input_raises(tmp_path):
    with pytest.raises(ValueError, match="profile"):
        reproduce_sir("huge", tmp_path)
    with pytest.raises(ValueError, match="variants"):
        reproduce_sir("quick", tmp_path, variants=("phase3",))


def test_cli_reproduce_sir_json(tiny_result, capsys):
    from facelab.cli import main

    out, _ = tiny_result
    sets = [f"{k}={v}" for k, v in {**TRAIN, **EVAL}.items()] + ["train.variants=params_recog"]
    argv = ["reproduce", "sir", "--out", str(out), "--json"] + [x for s in sets for x in ("--set", s)]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in printed["rows"]][2] == ROW_NAMES["params_recog"] and "sfm_vs_pca" in printed


def test_sir_claims_activity_and_precondition():
    from facelab.reproduce.sir import base_precondition, sir_activity, sir_claims

    rng = np.random.default_rng(2)
    ratio = rng.uniform(0.4, 0.7, size=40)
    units = {"params_recog": {"sir_ratio": ratio, "geo_rank1": rng.uniform(0.0, 0.2, 40)},
             "params_recog_sir": {"sir_ratio": ratio - 0.2, "geo_rank1": rng.uniform(0.0, 0.2, 40)}}
    claims = {c["id"]: c for c in sir_claims(units, {"sir": True}, n_boot=500)}
    assert claims["S1"]["verdict"] == "holds" and claims["S1"]["unit"] == "subject"
    assert claims["S2"]["verdict"] == "within noise"
    assert "S4" not in claims  # no SFM row
    lazy = {c["id"]: c["verdict"] for c in sir_claims(units, sir_activity({}), n_boot=500)}
    assert lazy["S1"] == "inactive"
    assert base_precondition([{"stage": "params_recog", "geo_rank1_truth": 0.3}], 40)["met"]
    assert base_precondition([], 40) == {}
    # identifies the true shapes, but reconstructs no better than the mean face: not met
    worse = base_precondition([{"stage": "params_recog", "geo_rank1_truth": 0.3, "rmse_micc": 1.1}], 40, 1.2)
    assert not worse["met"] and worse["micc_over_mean_face"] == pytest.approx(1.1 / 1.2)


def test_reproduce_sir_two_seeds(tmp_path):
    """Seed 1 trains in seed1/; rows are means over seeds and the claims' units have one row per seed."""
    out = tmp_path / "run"
    result = reproduce_sir("quick", out, overrides={**TRAIN, **EVAL}, liu=False, variants=("params_recog", "params_recog_sir"),
                           with_sfm_vs_pca=False, seeds=(0, 1))
    assert (out / "params_recog.pt").exists() and (out / "seed1" / "params_recog_sir.pt").exists()
    assert result["seeds"] == [0, 1] and set(result["rows_by_seed"]) == {"0", "1"}
    by_seed = [result["rows_by_seed"][k][0]["sir_ratio"] for k in ("0", "1")]
    assert result["rows"][2]["sir_ratio"] == pytest.approx(np.mean(by_seed))
    assert by_seed[0] != by_seed[1]  # the seeds train different networks
    assert {c["n_seeds"] for c in result["claims"]} == {2}


def test_mean_face_micc_matches_the_baseline_row():
    """score_mean_face_micc against facelab.metrics.baselines' mean_face row on the same suite."""
    from facelab.data import make_suite
    from facelab.metrics.baselines import BaselineConfig, micc_baselines
    from facelab.metrics.model_eval import ModelEvalConfig, score_mean_face_micc

    cfg = BaselineConfig(profile="quick", micc_identities=3, icp_iters=5)
    table = micc_baselines(cfg)
    suite = make_suite("micc", profile="quick", n_identities=3, seed=cfg.seed, image_size=cfg.image_size,
                       resolution=cfg.resolution)
    mine = score_mean_face_micc(suite, ModelEvalConfig(icp_iters=5, icp_tol=cfg.icp_tol).resolved("quick"))
    assert float(np.mean(mine)) == pytest.approx(table["mean_face"]["all"]["mean"], rel=1e-6)
