"""The Sphere Face Model (facelab.morphable.sphere): shapes, closed-form values, the
MorphableModel export and save/load, stage-1 fitting, SFM vs PCA clustering and its paired intervals, bad input."""

import numpy as np
import pytest
import torch

from facelab.morphable.sphere import _lstsq

from facelab.morphable import (
    MorphableModel, SFMConfig, SphereFaceModel, SynthFacesConfig, build_synthfaces, fit_pca, fit_sfm_stage1,
    load_world, noisy_identity_shapes, split_radius,
)
from facelab.metrics import shape_models
from facelab.metrics.shape_models import sfm_vs_pca

D64 = torch.float64
QUICK = SynthFacesConfig(resolution="quick", n_population=20, n_shape=8, n_albedo=4, n_expression_samples=200)


@pytest.fixture(scope="module")
def base() -> MorphableModel:
    return build_synthfaces(QUICK, use_cache=False)


def _random_sfm(V=7, K=3, seed=0, dtype=D64) -> SphereFaceModel:
    g = torch.Generator().manual_seed(seed)
    return SphereFaceModel(torch.randn(V, 3, generator=g, dtype=dtype), 5.0 * torch.randn(3 * V, K, generator=g, dtype=dtype))


# ------------------------------------------------------------------ shapes and closed forms
def test_shapes_and_unit_directions():
    sfm = _random_sfm()
    shapes = torch.randn(5, 7, 3, dtype=D64)
    u, r = sfm.encode(shapes)
    assert u.shape == (5, 3) and r.shape == (5,)
    assert torch.allclose(u.norm(dim=1), torch.ones(5, dtype=D64)) and (r > 0).all()
    assert sfm.decode(u, r).shape == (5, 7, 3) and sfm(shapes).shape == (5, 7, 3)
    assert isinstance(sfm.basis, torch.nn.Parameter) and "mean" in dict(sfm.named_buffers())


def test_encode_decode_round_trip_and_radius():
    sfm = _random_sfm(seed=1)
    u = torch.nn.functional.normalize(torch.randn(4, 3, dtype=D64), dim=1)
    r = torch.tensor([0.5, 1.0, 2.0, 7.0], dtype=D64)
    u2, r2 = sfm.encode(sfm.decode(u, r))
    assert torch.allclose(u2, u, atol=1e-10) and torch.allclose(r2, r, atol=1e-10)
    # decode normalises u: a scaled direction decodes to the same shape
    assert torch.allclose(sfm.decode(3.0 * u, r), sfm.decode(u, r))
    # r = None means r = 1
    assert torch.allclose(sfm.decode(u), sfm.decode(u, torch.ones(4, dtype=D64)))


def test_coefficients_match_numpy_pseudo_inverse():
    sfm = _random_sfm(V=9, K=4, seed=2)
    shapes = torch.randn(6, 9, 3, dtype=D64)
    x = (shapes - sfm.mean).reshape(6, -1).numpy()
    expected = x @ np.linalg.pinv(sfm.basis.detach().numpy()).T
    assert np.allclose(sfm.coefficients(shapes).detach().numpy(), expected, atol=1e-10)


def test_split_radius_zero_row():
    u, r = split_radius(torch.tensor([[0.0, 0.0], [0.0, -2.0]], dtype=D64))
    assert u.tolist() == [[0.0, 0.0], [0.0, -1.0]] and r.tolist() == [0.0, 2.0]


def test_fit_pca_matches_numpy_svd_projection():
    g = torch.Generator().manual_seed(3)
    shapes = torch.randn(12, 6, 3, generator=g, dtype=D64)
    pca = fit_pca(shapes, 4)
    x = shapes.reshape(12, -1).numpy()
    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    proj = x.mean(0) + xc @ vt[:4].T @ vt[:4]
    assert np.allclose(pca(shapes).detach().reshape(12, -1).numpy(), proj, atol=1e-10)
    # coefficients are standardised: unit sample variance per component
    a = pca.coefficients(shapes).detach()
    assert torch.allclose(a.var(dim=0), torch.ones(4, dtype=D64), atol=1e-10)
    assert np.allclose(torch.linalg.svdvals(pca.basis.detach()).numpy(), s[:4] / np.sqrt(11))


def test_gradients_reach_the_basis_gradcheck():
    sfm = _random_sfm(V=4, K=2, seed=4)
    shapes = torch.randn(3, 4, 3, dtype=D64)
    basis = sfm.basis.detach().clone().requires_grad_(True)
    x = (shapes - sfm.mean).reshape(3, -1)
    assert torch.autograd.gradcheck(lambda b: split_radius(_lstsq(b, x))[0], (basis,))
    # the Parameter itself gets a gradient through encode -> decode (what stage 2 trains)
    u, r = sfm.encode(shapes)
    sfm.decode(u, r).pow(2).sum().backward()
    assert sfm.basis.grad is not None and torch.isfinite(sfm.basis.grad).all()


def test_geometry_coefficients_give_vertex_distances_and_sir_loss():
    from facelab.losses import sir_loss

    sfm = _random_sfm(V=10, K=3, seed=8)
    alpha = torch.randn(2, 3, dtype=D64, generator=torch.Generator().manual_seed(9))
    g = sfm.geometry_coefficients(alpha)
    shapes = sfm.decode_alpha(alpha)
    rms = ((shapes[0] - shapes[1]) ** 2).sum(-1).mean().sqrt()
    assert torch.allclose((g[0] - g[1]).norm() / 10 ** 0.5, rms, atol=1e-10)
    # pull of two same-identity samples = (d/2)^2 each -> mean (d/2)^2 = rms^2 / 4
    loss = sir_loss(g, torch.tensor([0, 0]), torch.ones(3, dtype=D64), n_verts=10)
    assert loss.item() == pytest.approx(rms.item() ** 2 / 4, rel=1e-10)


# ------------------------------------------------------------------ MorphableModel export
def test_from_morphable_of_pca_model_is_scaled_basis(base):
    m5 = base.to(dtype=D64).truncate(n_shape=5)
    sfm = SphereFaceModel.from_morphable(m5)
    assert torch.allclose(sfm.basis.detach(), m5.shape_basis * m5.shape_std)
    # the SFM coefficients of a model shape are its standardised coefficients a
    a = torch.randn(3, 5, dtype=D64, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(sfm.coefficients(m5.shape(m5.shape_std * a)).detach(), a, atol=1e-5)


def test_to_morphable_layout_and_decoding(base):
    g = torch.Generator().manual_seed(5)
    basis = torch.randn(3 * base.n_verts, 4, generator=g, dtype=D64) * torch.tensor([9.0, 5.0, 3.0, 1.0], dtype=D64)
    sfm = SphereFaceModel(base.mean_shape.double() + 0.1, basis, name="toy", meta={"note": "x"})
    m = sfm.to_morphable(base.to(dtype=D64))
    U, S = m.shape_basis, m.shape_std
    assert torch.allclose(U.T @ U, torch.eye(4, dtype=D64), atol=1e-10)
    assert (S[:-1] >= S[1:]).all()
    W = torch.tensor(m.meta["sfm"]["rotation"], dtype=D64)
    assert torch.allclose(W.T @ W, torch.eye(4, dtype=D64), atol=1e-10)
    # standardised coefficients a decode to the SFM's decode_alpha(W a)
    a = torch.randn(3, 4, generator=g, dtype=D64)
    assert torch.allclose(m.shape(S * a), sfm.decode_alpha(a @ W.T), atol=1e-9)
    # ... and have the SFM's radius and the same cosines
    shapes = sfm.decode(torch.randn(3, 4, generator=g, dtype=D64), torch.tensor([1.0, 2.0, 3.0], dtype=D64))
    a_m = m.project_shape(shapes) / S
    u, r = sfm.encode(shapes)
    assert torch.allclose(a_m.norm(dim=1), r, atol=1e-8)
    assert torch.allclose(a_m @ a_m.T / torch.outer(r, r), u @ u.T, atol=1e-8)
    assert m.meta["sfm"]["name"] == "toy" and m.meta["sfm"]["sfm_meta"] == {"note": "x"}
    assert m.n_exp == base.n_exp and torch.equal(m.faces, base.faces)


def test_save_load_round_trip(base, tmp_path):
    shapes, labels = noisy_identity_shapes(load_world(QUICK), torch.arange(6), 3, seed=1)
    sfm = fit_sfm_stage1(shapes.float(), labels, K=4, config=SFMConfig(n_steps=30))
    path = sfm.to_morphable(base).save(tmp_path / "sfm.npz")
    loaded = MorphableModel.load(path)
    back = SphereFaceModel.from_morphable(loaded)
    assert back.n_shape == 4 and back.name == sfm.name and back.meta["stage"] == 1
    scale = sfm.basis.detach().abs().max()
    assert torch.allclose(back.basis.detach(), sfm.basis.detach(), atol=1e-5 * scale)
    u0, r0 = sfm.encode(shapes.float())
    u1, r1 = back.encode(shapes.float())
    assert torch.allclose(u0, u1, atol=1e-4) and torch.allclose(r0, r1, rtol=1e-4)


def test_exported_model_truncated_raises(base):
    m = SphereFaceModel.from_morphable(base, n_shape=4).to_morphable(base)
    with pytest.raises(ValueError, match="rotation"):
        SphereFaceModel.from_morphable(m.truncate(n_shape=3))
    with pytest.raises(ValueError, match="n_shape"):
        SphereFaceModel.from_morphable(m, n_shape=2)


# ------------------------------------------------------------------ stage 1 and the comparison
def test_stage1_starts_at_pca_and_lowers_the_angular_loss():
    g = torch.Generator().manual_seed(6)
    # 6 identities in 8-D, nuisance variation along two other directions larger than the identity spread
    ids = torch.randn(6, 8, 3, generator=g, dtype=D64)
    nuisance = torch.randn(2, 8, 3, generator=g, dtype=D64)
    coef = 2.0 * torch.randn(36, 2, generator=g, dtype=D64)
    shapes = ids.repeat(6, 1, 1) + torch.einsum("nk,kvc->nvc", coef, nuisance)
    labels = torch.arange(6).repeat(6)
    short = fit_sfm_stage1(shapes, labels, K=4, config=SFMConfig(n_steps=1, lr=1e-12))
    assert torch.allclose(short(shapes), fit_pca(shapes, 4)(shapes), atol=1e-6)
    long = fit_sfm_stage1(shapes, labels, K=4, config=SFMConfig(n_steps=150))
    assert long.meta["final_head_loss"] < short.meta["final_head_loss"]
    u, _ = long.encode(shapes)
    assert torch.allclose(u.norm(dim=1), torch.ones(36, dtype=D64))


def test_sfm_clusters_synthfaces_identities_better_than_pca():
    world = load_world(QUICK)
    tr, ytr = noisy_identity_shapes(world, torch.arange(40), 4, expression_scale=2.0, noise_mm=1.0, seed=1)
    te, yte = noisy_identity_shapes(world, torch.arange(1000, 1020), 4, expression_scale=2.0, noise_mm=1.0, seed=2)
    out = sfm_vs_pca(tr, ytr, te, yte, K=10, config=SFMConfig(n_steps=150))
    assert set(out["pca"]) == set(out["sfm"]) == {"rmse_mm", "nmi", "verification_accuracy", "verification_auc"}
    assert out["sfm"]["nmi"] > out["pca"]["nmi"]
    assert out["sfm"]["verification_auc"] > out["pca"]["verification_auc"]
    # equal dimension: the SFM does not buy its clustering with a much worse representation
    assert out["sfm"]["rmse_mm"] < 1.2 * out["pca"]["rmse_mm"]


# ------------------------------------------------------------------ SFM vs PCA: paired intervals
def _fake_model(labels, pairs, rmse, clusters, correct) -> tuple[dict, dict]:
    """The figures and per-sample details of a stand-in model, as sfm_vs_pca computes them."""
    from sklearn.metrics import normalized_mutual_info_score

    weighted = correct.astype(float) / correct.shape[0]  # one fold: weights 1 / P
    scores = {"rmse_mm": float(rmse.mean()), "nmi": float(normalized_mutual_info_score(labels, clusters)),
              "verification_accuracy": float(weighted.sum())}
    return scores, {"rmse_per_shape": rmse, "clusters": clusters, "pair_correct": weighted}


def _two_models(effect: bool, seed: int = 0):
    """30 identities x 4 shapes; with ``effect`` model A has lower RMSE, truer clusters and more
    correct pairs than B, without it both are draws of the same model."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(30), 4)
    pairs = shape_models._verification_pairs(labels, np.random.default_rng(seed))

    def draw(rmse_mm, wrong_cluster, pair_accuracy):
        clusters = np.where(rng.random(labels.shape[0]) < wrong_cluster, rng.integers(0, 30, labels.shape[0]), labels)
        return _fake_model(labels, pairs, rmse_mm + 0.2 * rng.standard_normal(labels.shape[0]), clusters,
                           rng.random(pairs[0].shape[0]) < pair_accuracy)

    a = draw(1.0, 0.05, 0.95) if effect else draw(1.0, 0.3, 0.8)
    b = draw(1.5, 0.6, 0.6) if effect else draw(1.0, 0.3, 0.8)
    return labels, pairs, a, b


def _paired(a, b, labels, pairs, seed=0):
    return shape_models._paired(a[0], b[0], {"sfm": a[1], "pca": b[1]}, labels, pairs, n_boot=2000, seed=seed)


def test_paired_intervals_hold_for_a_clearly_better_model_and_reverse_when_swapped():
    labels, pairs, a, b = _two_models(effect=True)
    better = _paired(a, b, labels, pairs)
    assert {k: v["verdict"] for k, v in better.items()} == {m: "holds" for m in shape_models.PAIRED_METRICS}
    worse = _paired(b, a, labels, pairs)
    assert {k: v["verdict"] for k, v in worse.items()} == {m: "reversed" for m in shape_models.PAIRED_METRICS}
    for metric, entry in better.items():
        assert entry["estimate"] == pytest.approx(a[0][metric] - b[0][metric], abs=1e-12)
        assert entry["ci95"][0] < entry["estimate"] < entry["ci95"][1] and entry["n_identities"] == 30
        assert worse[metric]["estimate"] == pytest.approx(-entry["estimate"], abs=1e-12)


def test_paired_intervals_of_equivalent_models_are_within_noise():
    for seed in range(3):
        labels, pairs, a, b = _two_models(effect=False, seed=seed)
        out = _paired(a, b, labels, pairs, seed=seed)
        assert {k: v["verdict"] for k, v in out.items()} == {m: "within noise" for m in shape_models.PAIRED_METRICS}
        # not a degenerate interval: the two draws differ, and the interval has to cover that
        assert all(v["ci95"][1] - v["ci95"][0] > 0 for v in out.values())


def test_nmi_from_counts_matches_sklearn():
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(4)
    truth, found = rng.integers(0, 7, 60), rng.integers(0, 5, 60)
    counts = np.zeros((7, 5))
    np.add.at(counts, (truth, found), 1.0)
    assert shape_models._nmi_from_counts(counts) == pytest.approx(normalized_mutual_info_score(truth, found), abs=1e-12)
    assert shape_models._nmi_from_counts(np.diag([3.0, 2.0, 4.0])) == pytest.approx(1.0)


def test_sfm_vs_pca_paired_estimates_are_the_differences_of_the_figures():
    g = torch.Generator().manual_seed(1)
    ids = 8.0 * torch.randn(14, 6, 3, generator=g, dtype=D64)
    noisy = lambda idx: ids[idx] + 6.0 * torch.randn(len(idx), 6, 3, generator=g, dtype=D64)  # noqa: E731
    tr = torch.arange(8).repeat(4)
    # unequal identities, and 48 verification pairs in 10 folds of 4 or 5: the per-identity units
    # must weight shapes and pairs to reproduce the figures
    te = torch.repeat_interleave(torch.arange(8, 14), torch.tensor([2, 3, 5, 2, 4, 3]))
    train, test = noisy(tr), noisy(te)
    out = sfm_vs_pca(train, tr, test, te, K=4, config=SFMConfig(n_steps=20), n_boot=500)
    assert all(out["sfm"][m] != out["pca"][m] for m in out["paired"])  # nothing trivially equal
    assert set(out["paired"]) == {"rmse_mm", "nmi", "verification_accuracy"}
    for metric, entry in out["paired"].items():
        assert set(entry) == {"estimate", "ci95", "verdict", "n_identities"}
        assert entry["estimate"] == pytest.approx(out["sfm"][metric] - out["pca"][metric], abs=1e-12)
        assert entry["ci95"][0] <= entry["estimate"] <= entry["ci95"][1] and entry["n_identities"] == 6
    again = sfm_vs_pca(train, tr, test, te, K=4, config=SFMConfig(n_steps=20), n_boot=500)
    assert again["paired"] == out["paired"]  # deterministic given the seed


def test_sfm_vs_pca_paired_bad_input_raises():
    shapes, labels = torch.randn(6, 7, 3, dtype=D64), torch.tensor([0, 0, 1, 1, 2, 2])
    for n_boot in (50, 1000.0, True):
        with pytest.raises(ValueError, match="n_boot"):
            sfm_vs_pca(shapes, labels, shapes, labels, K=2, config=SFMConfig(n_steps=2), n_boot=n_boot)


# ------------------------------------------------------------------ bad input
def test_bad_input_raises(base):
    sfm = _random_sfm()
    with pytest.raises(ValueError, match="shapes"):
        sfm.encode(torch.zeros(2, 6, 3, dtype=D64))
    with pytest.raises(ValueError, match="u"):
        sfm.decode(torch.zeros(2, 4, dtype=D64))
    with pytest.raises(ValueError, match="r"):
        sfm.decode(torch.ones(2, 3, dtype=D64), torch.ones(3, dtype=D64))
    with pytest.raises(ValueError, match="basis"):
        SphereFaceModel(torch.zeros(4, 3), torch.zeros(11, 2))
    with pytest.raises(ValueError, match="basis"):
        SphereFaceModel(torch.zeros(2, 3), torch.zeros(6, 2)).coefficients(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="base"):
        sfm.to_morphable(base)
    with pytest.raises(TypeError, match="base"):
        sfm.to_morphable("model.npz")
    shapes, labels = torch.randn(6, 7, 3, dtype=D64), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="K"):
        fit_sfm_stage1(shapes, labels, K=6)
    with pytest.raises(TypeError, match="labels"):
        fit_sfm_stage1(shapes, labels.double(), K=2)
    with pytest.raises(ValueError, match="labels"):
        fit_sfm_stage1(shapes, torch.zeros(6, dtype=torch.long), K=2)
    with pytest.raises(ValueError, match="labels"):
        fit_sfm_stage1(shapes, labels[:5], K=2)
    with pytest.raises(TypeError, match="config"):
        fit_sfm_stage1(shapes, labels, K=2, config={"n_steps": 3})
    with pytest.raises(ValueError, match="loss"):
        SFMConfig(loss="sphereface")
    with pytest.raises(ValueError, match="margin"):
        SFMConfig(margin=-0.1)
    with pytest.raises(ValueError, match="test_labels"):
        sfm_vs_pca(shapes, labels, shapes, torch.arange(6), K=2, config=SFMConfig(n_steps=2))
