"""facelab.metrics.model_eval: evaluate_model on a tiny trained regressor checkpoint."""

import json

import numpy as np
import pytest
import torch

from facelab.metrics.model_eval import evaluate_model, evaluate_model_cli
from facelab.metrics.protocols import micc_error
from facelab.models.regressor import CoefficientRegressor
from facelab.models.registry import load_model
from facelab.train.regressor import train_regressor
from facelab.train.trainer import LoopConfig

SIZE = 32
TINY_SUITES = dict(micc_identities=2, bu3dfe_identities=2, lfw_identities=20, lfw_pairs_per_fold=3, icp_iters=10)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("regressor")
    train_regressor(out_dir=str(out), image_size=(SIZE, SIZE), n_identities=32, images_per_identity=2, steps=60,
                    cache_pool=False,
                    train=LoopConfig(batch_size=16, lr=3e-3, ckpt_every=60, log_every=10, progress=False))
    return out / "last.pt"


def untrained(checkpoint):
    """The same network with a zero head: it predicts the mean face in the mean pose."""
    model, _ = load_model(checkpoint)
    fresh = CoefficientRegressor(model.config)
    fresh.load_state_dict(model.state_dict())
    torch.nn.init.zeros_(fresh.head.weight)
    torch.nn.init.zeros_(fresh.head.bias)
    return fresh.eval()


def test_bu3dfe_keys_and_trained_beats_untrained(checkpoint, tmp_path):
    out = evaluate_model(checkpoint, "bu3dfe", out_dir=tmp_path, **TINY_SUITES)
    assert out["suite"] == "bu3dfe" and out["model_name"] == "regressor" and out["image_size"] == [SIZE, SIZE]
    bu = out["bu3dfe"]
    assert set(bu) == {"rmse", "rmse_by_expression", "landmark_nme"}
    assert set(bu["rmse"]) == {"identity", "shape"}
    assert list(bu["rmse"]["identity"]) == [str(y) for y in range(0, 91, 10)] + ["overall"]
    assert set(bu["rmse_by_expression"]["shape"]) == {"neutral", "happy", "surprise", "anger", "sadness", "disgust", "fear"}
    ref = evaluate_model(untrained(checkpoint), "bu3dfe", **TINY_SUITES)["bu3dfe"]
    # the untrained model's identity is the mean face at every yaw
    assert np.ptp([v for k, v in ref["rmse"]["identity"].items() if k != "overall"]) < 1e-9
    # training moves the landmarks onto the face (pose + shape), beyond the mean pose
    assert bu["landmark_nme"]["model"]["mean"] < 0.85 * ref["landmark_nme"]["model"]["mean"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["bu3dfe"]["rmse"]["identity"]["overall"] == pytest.approx(bu["rmse"]["identity"]["overall"])
    assert "| identity |" in (tmp_path / "report.md").read_text()


def test_micc_matches_a_direct_computation(checkpoint):
    out = evaluate_model(checkpoint, "micc", **TINY_SUITES)["micc"]
    assert set(out) == {"average_over_identity", "three_view", "single_frame"}
    for row in out.values():
        assert list(row) == ["cooperative", "indoor", "outdoor", "all"] and row["all"]["n"] == 6
    # recompute "average over identity" of subject 0, cooperative video, by hand
    from facelab.data import make_suite

    model, _ = load_model(checkpoint)
    suite = make_suite("micc", image_size=SIZE, resolution="quick", n_identities=2)
    frames = torch.nonzero((suite.table.label == 0) & (suite.table.condition == 0)).flatten()
    with torch.no_grad():
        emb = model(suite.batch(frames)["image"])["a_id"].mean(0, keepdim=True)
        mesh = model.decode_identity(emb, suite.model)[0].double().numpy()
    scan = suite.scan(0).double().numpy()
    lm = suite.model.landmarks.numpy()
    expected = micc_error(mesh, suite.model.faces.numpy(), scan, nose_tip_gt=scan[suite.model.nose_tip],
                          pred_landmarks=mesh[lm], gt_landmarks=scan[lm], max_iter=10, tol=1e-3)["mean"]
    got = out["average_over_identity"]["cooperative"]
    assert got["n"] == 2
    # the table's mean is over both subjects; subject 0's error must be one of its two terms
    other = 2 * got["mean"] - expected
    assert other > 0 and abs(got["std"] - abs(expected - other) / 2) < 1e-6


def test_lfw_returns_verification(checkpoint, tmp_path, capsys):
    assert evaluate_model_cli(checkpoint, "lfw", as_json=True, out=tmp_path,
                              overrides=[f"{k}={v}" for k, v in TINY_SUITES.items()]) == 0
    printed = json.loads(capsys.readouterr().out)
    row = printed["lfw"]["regressor"]
    assert {"accuracy_mean", "accuracy_std", "auc", "eer", "val", "tar_at_far"} <= set(row)
    assert 0.0 <= row["accuracy_mean"] <= 1.0
    assert (tmp_path / "report.md").exists()


def test_bad_input_raises(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="suite"):
        evaluate_model(checkpoint, "now")
    with pytest.raises(ValueError, match="profile"):
        evaluate_model(checkpoint, "lfw", profile="huge")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        evaluate_model(tmp_path / "missing.pt", "lfw")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        evaluate_model_cli(tmp_path / "missing.pt", "lfw")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pt.*corrupt"):
        evaluate_model(tmp_path / "junk.pt", "lfw")
    with pytest.raises(TypeError, match="unexpected keyword|got an unexpected"):
        evaluate_model(checkpoint, "lfw", n_pairs=3)


@pytest.mark.slow
def test_quick_profile_regressor_beats_the_mean_face(tmp_path):
    """The quick recipe (300 steps, 64 px; ~1 min on one core once its image pool is cached)
    recovers identity shape better than the mean face on held-out BU-3DFE identities."""
    train_regressor(out_dir=str(tmp_path / "run"), progress=False)  # the short form of train.progress
    ckpt = tmp_path / "run" / "last.pt"
    sizes = dict(bu3dfe_identities=3)
    trained = evaluate_model(ckpt, "bu3dfe", **sizes)["bu3dfe"]
    mean_face = evaluate_model(untrained(ckpt), "bu3dfe", **sizes)["bu3dfe"]
    assert trained["rmse"]["identity"]["overall"] < mean_face["rmse"]["identity"]["overall"]
    assert trained["rmse"]["shape"]["overall"] < mean_face["rmse"]["shape"]["overall"]
    assert trained["landmark_nme"]["model"]["mean"] < 0.7 * mean_face["landmark_nme"]["model"]["mean"]


def test_units_and_rendered_suite_agree_with_the_table(checkpoint):
    """Per-subject MICC units average to the table's mean; a RenderedSuite replays the same photos."""
    from facelab.metrics.model_eval import (
        ModelEvalConfig, RenderedSuite, lfw_suite, micc_suite, predict_suite, score_lfw, score_micc,
    )

    model, _ = load_model(checkpoint)
    cfg = ModelEvalConfig(**TINY_SUITES).resolved("quick")
    suite = micc_suite(model, "quick", cfg)
    rows, units = score_micc(model, "quick", cfg, suite=suite, return_units=True)
    assert set(units) == set(rows) and units["average_over_identity"].shape == (2,)
    for row, values in units.items():
        assert values.mean() == pytest.approx(rows[row]["all"]["mean"], abs=1e-12)
    rendered = RenderedSuite(suite)
    again = predict_suite(model, rendered, cfg.batch_size)
    direct = predict_suite(model, suite, cfg.batch_size)
    torch.testing.assert_close(again["shape"], direct["shape"], rtol=0, atol=0)
    assert rendered.n_identities == suite.n_identities  # the suite's own attributes pass through
    lfw = score_lfw(model, "quick", cfg, suite=RenderedSuite(lfw_suite(model, "quick", cfg)))
    assert np.mean(lfw.pair_correct) == pytest.approx(lfw.accuracy_mean, abs=1e-12)
    with pytest.raises(ValueError, match="batch_size"):
        rendered.batches(0)
