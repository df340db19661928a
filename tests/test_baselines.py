"""facelab.metrics.baselines and facelab.metrics.report."""

import json
import math

import numpy as np
import pytest
import torch

from facelab.metrics.baselines import (
    DETECTOR_NME,
    BaselineConfig,
    detector_landmarks,
    detector_std,
    noisy_landmarks,
    oracle_projection,
    run_baselines,
)
from facelab.metrics.report import baselines_markdown, markdown_table, to_jsonable, write_json
from facelab.morphable.model import MorphableModel

TINY = dict(micc_identities=2, bu3dfe_identities=1, lfw_identities=20, lfw_pairs_per_fold=3, oracle_ks=(10, 80))


def toy_model(V=30, K=6, E=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(3 * V, K + E, generator=g, dtype=dtype))[0]
    # expression basis not orthogonal to the identity basis, as in real models
    exp = torch.linalg.qr(Q[:, K:] + 0.5 * Q[:, :E])[0]
    return MorphableModel(
        torch.randn(V, 3, generator=g, dtype=dtype) * 50, Q[:, :K], torch.linspace(10, 1, K, dtype=dtype),
        exp, torch.ones(E, dtype=dtype), torch.zeros(V, 3, dtype=dtype), torch.zeros(3 * V, 0, dtype=dtype),
        torch.zeros(0, dtype=dtype), torch.tensor([[0, 1, 2]]), torch.zeros(0, dtype=torch.long), torch.arange(V),
        torch.ones(V, dtype=torch.bool), 0,
    )


# ------------------------------------------------------------- oracle_projection
def test_oracle_projection_matches_numpy_lstsq(dtype):
    model = toy_model()
    g = torch.Generator().manual_seed(1)
    truth = model.mean_shape + torch.randn(4, model.n_verts, 3, generator=g, dtype=torch.float64) * 5
    for k, expression in ((2, False), (4, True)):
        got = oracle_projection(model, truth.to(dtype), k, expression=expression)
        assert got.shape == truth.shape and got.dtype == dtype
        A = model.shape_basis[:, :k].numpy()
        if expression:
            A = np.concatenate([A, model.exp_basis.numpy()], axis=1)
        b = (truth - model.mean_shape).reshape(4, -1).numpy().T
        coeffs = np.linalg.lstsq(A, b, rcond=None)[0]
        expected = model.mean_shape.numpy() + (A @ coeffs).T.reshape(4, -1, 3)
        tol = 1e-9 if dtype == torch.float64 else 1e-3
        np.testing.assert_allclose(got.double().numpy(), expected, atol=tol)


def test_oracle_projection_reproduces_model_shapes():
    model = toy_model()
    g = torch.Generator().manual_seed(2)
    a = torch.randn(3, model.n_shape, generator=g, dtype=torch.float64) * model.shape_std
    e = torch.randn(3, model.n_exp, generator=g, dtype=torch.float64)
    truth = model.shape(a, e)
    assert torch.allclose(oracle_projection(model, truth, model.n_shape, expression=True), truth, atol=1e-9)
    # without the expression basis the expression cannot be represented
    assert not torch.allclose(oracle_projection(model, truth, model.n_shape), truth, atol=1e-3)


def test_oracle_projection_error_decreases_with_k():
    model = toy_model()
    truth = model.mean_shape + torch.randn(2, model.n_verts, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    errs = [float((oracle_projection(model, truth, k) - truth).norm()) for k in range(1, model.n_shape + 1)]
    assert all(b <= a + 1e-12 for a, b in zip(errs, errs[1:]))


def test_oracle_projection_bad_input():
    model = toy_model()
    with pytest.raises(ValueError, match="k:"):
        oracle_projection(model, model.mean_shape[None], 0)
    with pytest.raises(ValueError, match="k:"):
        oracle_projection(model, model.mean_shape[None], model.n_shape + 1)
    with pytest.raises(ValueError, match="verts"):
        oracle_projection(model, model.mean_shape, 2)


# ---------------------------------------------------------------- noisy_landmarks
def test_noisy_landmarks_deterministic_and_scaled(dtype):
    x = torch.zeros(50, 68, 2, dtype=dtype)
    a, b = noisy_landmarks(x, 2.0, seed=5), noisy_landmarks(x, 2.0, seed=5)
    assert a.shape == x.shape and a.dtype == dtype and torch.equal(a, b)
    assert abs(float(a.double().std()) - 2.0) < 0.05
    assert not torch.equal(a, noisy_landmarks(x, 2.0, seed=6))
    assert torch.equal(noisy_landmarks(x, 0.0), x)
    with pytest.raises(ValueError, match="noise_px"):
        noisy_landmarks(x, -1.0)
    with pytest.raises(ValueError, match="landmarks2d"):
        noisy_landmarks(torch.zeros(68, 2), 1.0)


# ----------------------------------------------------------------- BaselineConfig
def test_config_profile_defaults_and_bad_values():
    quick, full = BaselineConfig(), BaselineConfig(profile="full")
    assert quick.resolution == "quick" and quick.micc_single_frames == 1 and quick.num_threads == 1
    assert full.resolution == "default" and full.micc_single_frames == -1 and full.micc_identities is None
    standard = BaselineConfig(profile="standard")  # quick's protocol limits, the suites' standard sizes
    assert standard.micc_single_frames == 1 and standard.micc_identities is None and standard.resolution == "quick"
    with pytest.raises(ValueError, match="micc_identities"):
        BaselineConfig(micc_identities=0)
    with pytest.raises(ValueError, match="profile"):
        BaselineConfig(profile="huge")
    with pytest.raises(ValueError, match="suites"):
        BaselineConfig(suites=("aflw",))
    with pytest.raises(ValueError, match="landmark_noise"):
        BaselineConfig(landmark_noise=-0.1)
    with pytest.raises(ValueError, match="landmark_model"):
        BaselineConfig(landmark_model="dlib")
    with pytest.raises(ValueError, match="detector_nme"):
        BaselineConfig(detector_nme=-0.01)
    with pytest.raises(TypeError, match="unknown option"):
        run_baselines(suites=("lfw",), n_images=3)


# ------------------------------------------------------------- detector_landmarks
def _frontal_iod_landmarks(n: int, yaw_deg: float = 0.0) -> torch.Tensor:
    """Random faces whose outer eye corners are 60 px apart when frontal (x scaled by cos yaw)."""
    g = torch.Generator().manual_seed(0)
    lm = torch.rand(n, 68, 2, generator=g, dtype=torch.float64) * 80
    lm[:, 36], lm[:, 45] = torch.tensor([20.0, 40.0]), torch.tensor([80.0, 40.0])
    lm[..., 0] = 50 + (lm[..., 0] - 50) * math.cos(math.radians(yaw_deg))
    return lm


def _point_error(lm: torch.Tensor, yaw: float, seed: int = 1) -> torch.Tensor:
    yaw_t = torch.full((lm.shape[0],), yaw, dtype=torch.float64)
    return (detector_landmarks(lm, yaw_t, seed=seed) - lm).norm(dim=-1)  # (B, 68) px


def test_detector_nme_is_calibrated_on_frontal_faces():
    err = _point_error(_frontal_iod_landmarks(3000), 0.0)
    assert err.mean().item() / 60.0 == pytest.approx(DETECTOR_NME, rel=0.02)


def test_detector_is_worse_on_the_jaw_and_under_yaw():
    frontal = _point_error(_frontal_iod_landmarks(3000), 0.0)
    assert frontal[:, :17].mean() > 2.5 * frontal[:, 36:48].mean()  # jaw contour vs eye corners
    turned = _point_error(_frontal_iod_landmarks(3000, 60.0), 60.0)
    # the frontal-equivalent IOD is the same, so only the yaw factor 1 + 60/90 remains
    assert (turned.mean() / frontal.mean()).item() == pytest.approx(1 + 60 / 90, rel=0.03)


def test_detector_deterministic_shapes_and_bad_input():
    lm = _frontal_iod_landmarks(4).float()
    yaw = torch.zeros(4)
    a, b = detector_landmarks(lm, yaw, seed=3), detector_landmarks(lm, yaw, seed=3)
    assert torch.equal(a, b) and a.shape == lm.shape and a.dtype == lm.dtype
    assert not torch.equal(a, detector_landmarks(lm, yaw, seed=4))
    assert torch.equal(detector_landmarks(lm, yaw, nme=0.0), lm)
    assert detector_std(lm, yaw).shape == (4, 68)
    with pytest.raises(ValueError, match="yaw_deg"):
        detector_landmarks(lm, torch.zeros(3))
    with pytest.raises(ValueError, match="landmarks2d"):
        detector_landmarks(lm[:, :10], yaw)
    with pytest.raises(ValueError, match="nme"):
        detector_landmarks(lm, yaw, nme=-1.0)


# ------------------------------------------------------------------ run_baselines
@pytest.fixture(scope="module")
def tiny():
    return run_baselines("quick", **TINY)


@pytest.mark.slow
def test_run_baselines_keys(tiny):
    assert {"config", "micc", "bu3dfe", "lfw", "timings_s"} <= set(tiny)
    rows = {"mean_face", "oracle_k10", "oracle_k80", "landmark_fit", "landmark_fit_exact"}
    assert rows - {"landmark_fit_exact"} | {"landmark_fit_avg", "landmark_fit_3view", "landmark_fit_exact_avg"} == set(tiny["micc"])
    for row in tiny["micc"].values():
        assert set(row) == {"cooperative", "indoor", "outdoor", "all"}
        assert row["all"]["n"] == 2 * 3  # subjects x conditions
    assert set(tiny["bu3dfe"]["rmse"]) == rows
    yaws = [str(y) for y in range(0, 91, 10)]
    assert list(tiny["bu3dfe"]["rmse"]["mean_face"]) == [*yaws, "overall"]
    assert set(tiny["bu3dfe"]["landmark_nme"]) == {"detector", "landmark_fit"}
    assert set(tiny["lfw"]) == rows and tiny["lfw"]["mean_face"] is None
    for key in ("accuracy_mean", "accuracy_std", "auc", "eer", "val", "far", "tar_at_far"):
        assert key in tiny["lfw"]["landmark_fit"]
    assert set(tiny["timings_s"]) == {"micc", "bu3dfe", "lfw", "total"}
    json.loads(write_json(tiny))  # JSON-ready


@pytest.mark.slow
def test_run_baselines_ordering(tiny):
    bu, micc = tiny["bu3dfe"]["rmse"], tiny["micc"]
    assert bu["oracle_k80"]["overall"] < bu["oracle_k10"]["overall"] < bu["mean_face"]["overall"]
    assert bu["oracle_k80"]["overall"] < bu["landmark_fit"]["overall"] < bu["mean_face"]["overall"]
    assert micc["oracle_k80"]["all"]["mean"] < micc["mean_face"]["all"]["mean"]
    assert micc["landmark_fit_avg"]["all"]["mean"] < micc["mean_face"]["all"]["mean"]
    # the fit's reprojected landmarks are closer to the truth than the noisy input (the
    # model prior averages the noise out)
    nme = tiny["bu3dfe"]["landmark_nme"]
    assert nme["landmark_fit"]["mean"] < nme["detector"]["mean"]
    # the true identity coefficients separate identities perfectly; the fit's do better than chance
    assert tiny["lfw"]["oracle_k80"]["accuracy_mean"] == 1.0
    assert 0.5 < tiny["lfw"]["landmark_fit"]["accuracy_mean"] <= 1.0
    # exact landmarks make a better fit than a detector's
    assert bu["landmark_fit_exact"]["overall"] < bu["landmark_fit"]["overall"]


@pytest.mark.slow
def test_mean_face_rmse_matches_direct_computation(tiny):
    # independent check of one number: the mean face against every true bu3dfe shape,
    # with the alignment done by scipy's orthogonal Procrustes instead of facelab's
    from scipy.linalg import orthogonal_procrustes

    from facelab.data import make_suite

    cfg = BaselineConfig(**TINY)
    suite = make_suite("bu3dfe", n_identities=1, image_size=cfg.image_size, resolution=cfg.resolution)
    shapes = suite.batch(torch.arange(len(suite)))["shape"].double().numpy()
    m = suite.model
    mask = m.face_mask.numpy()
    pred = m.mean_shape.double().numpy()[mask]
    errs = []
    for truth in shapes[:, mask]:
        p, t = pred - pred.mean(0), truth - truth.mean(0)
        R, _ = orthogonal_procrustes(p, t)  # no reflection occurs for these near-identical faces
        errs.append(np.sqrt(np.mean(np.sum((p @ R - t) ** 2, axis=1))))
    assert tiny["bu3dfe"]["rmse"]["mean_face"]["overall"] == pytest.approx(float(np.mean(errs)), rel=1e-6)


# ------------------------------------------------------------------------- report
def test_to_jsonable_and_write_json(tmp_path):
    obj = {"a": np.float32(0.5), "b": torch.tensor([1, 2]), "c": (float("inf"), None), "d": BaselineConfig(suites=("lfw",))}
    got = to_jsonable(obj)
    assert got["a"] == 0.5 and got["b"] == [1, 2] and got["c"] == [None, None] and got["d"]["suites"] == ["lfw"]
    text = write_json(obj, tmp_path / "sub" / "r.json")
    assert json.loads((tmp_path / "sub" / "r.json").read_text()) == json.loads(text)
    with pytest.raises(TypeError, match="obj"):
        to_jsonable({"x": object()})


def test_markdown_table():
    table = markdown_table({"a": {"x": 1.23456, "y": "s"}, "b": None, "c": {"x": math.nan}})
    lines = table.splitlines()
    assert lines[0] == "| method | x | y |"
    assert lines[2] == "| a | 1.235 | s |"
    assert lines[3] == "| b | – | – |" and lines[4] == "| c | – | – |"
    with pytest.raises(ValueError, match="rows"):
        markdown_table({})


@pytest.mark.slow
def test_baselines_markdown_names_every_row(tiny):
    text = baselines_markdown(tiny)
    for name in ("mean_face", "oracle_k80", "landmark_fit_avg", "landmark_fit_3view", "Time per protocol"):
        assert name in text
