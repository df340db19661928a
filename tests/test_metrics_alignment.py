"""facelab.metrics.alignment: Umeyama/Procrustes and ICP recover known transforms."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from facelab.metrics.alignment import Similarity, apply, icp, procrustes, procrustes_batched


def grid_mesh(rows=30, cols=32, seed=0):
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.linspace(-80, 80, cols), np.linspace(-100, 100, rows))
    z = 40 * np.exp(-(u**2 + v**2) / 5000) + 15 * np.sin(u / 25) * np.cos(v / 30) + rng.normal(size=u.shape)
    verts = np.stack([u, v, z], -1).reshape(-1, 3)
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return verts, np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


def random_similarity(seed, scale=True):
    rng = np.random.default_rng(seed)
    R = Rotation.from_rotvec(rng.normal(size=3) * 0.3).as_matrix()
    return Similarity(R, rng.normal(size=3) * 10, float(rng.uniform(0.8, 1.25)) if scale else 1.0)


@pytest.mark.parametrize("scale", [True, False])
def test_procrustes_recovers_transform(scale):
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3)) * 30
    T = random_similarity(1, scale)
    est = procrustes(src, apply(T, src), scale=scale)
    np.testing.assert_allclose(est.R, T.R, atol=1e-12)
    np.testing.assert_allclose(est.t, T.t, atol=1e-9)
    assert est.s == pytest.approx(T.s, abs=1e-12)


def test_procrustes_rotation_matches_scipy_align_vectors():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(30, 3))
    dst = src @ Rotation.random(random_state=4).as_matrix().T + rng.normal(scale=0.3, size=(30, 3))
    w = rng.uniform(0.1, 2.0, size=30)
    est = procrustes(src, dst, weights=w)
    mu_s, mu_d = w @ src / w.sum(), w @ dst / w.sum()
    ref, _ = Rotation.align_vectors(dst - mu_d, src - mu_s, weights=w)
    np.testing.assert_allclose(est.R, ref.as_matrix(), atol=1e-9)
    np.testing.assert_allclose(est.t, mu_d - est.R @ mu_s, atol=1e-9)


def test_procrustes_scale_is_least_squares_optimal():
    rng = np.random.default_rng(7)
    src = rng.normal(size=(40, 3))
    dst = 1.7 * src + rng.normal(scale=0.2, size=(40, 3))
    est = procrustes(src, dst, scale=True)
    cost = lambda s: np.sum((s * src @ est.R.T + (est.t + (est.s - s) * est.R @ src.mean(0)) - dst) ** 2)
    for ds in (-1e-3, 1e-3):
        assert cost(est.s) < cost(est.s + ds)


def test_procrustes_never_reflects():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(20, 3))
    mirrored = src * [-1.0, 1.0, 1.0]
    est = procrustes(src, mirrored)
    assert np.linalg.det(est.R) == pytest.approx(1.0)


def test_weights_ignore_outliers():
    rng = np.random.default_rng(4)
    src = rng.normal(size=(30, 3)) * 20
    T = random_similarity(5)
    dst = apply(T, src)
    dst[:5] += 100.0
    w = np.ones(30)
    w[:5] = 0.0
    est = procrustes(src, dst, scale=True, weights=w)
    np.testing.assert_allclose(apply(est, src[5:]), dst[5:], atol=1e-9)


def test_similarity_inverse_and_compose():
    T = random_similarity(8)
    pts = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_allclose(apply(T.inverse(), apply(T, pts)), pts, atol=1e-12)
    U = random_similarity(9)
    np.testing.assert_allclose(apply(U.compose(T), pts), apply(U, apply(T, pts)), atol=1e-12)


def test_procrustes_batched_matches_numpy(device, dtype):
    rng = np.random.default_rng(1)
    src = rng.normal(size=(4, 25, 3)) * 10
    dst = np.stack([apply(random_similarity(k), s) + rng.normal(scale=0.1, size=(25, 3)) for k, s in enumerate(src)])
    R, t, s = procrustes_batched(torch.tensor(src, dtype=dtype, device=device),
                                 torch.tensor(dst, dtype=dtype, device=device), scale=True)
    assert R.shape == (4, 3, 3) and t.shape == (4, 3) and s.shape == (4,)
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    for k in range(4):
        ref = procrustes(src[k], dst[k], scale=True)
        np.testing.assert_allclose(R[k].cpu().double().numpy(), ref.R, atol=tol)
        np.testing.assert_allclose(t[k].cpu().double().numpy(), ref.t, atol=tol * 100)
        assert s[k].item() == pytest.approx(ref.s, abs=tol)


def test_procrustes_batched_gradcheck():
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(2, 6, 3, dtype=torch.float64, generator=gen)
    dst = torch.randn(2, 6, 3, dtype=torch.float64, generator=gen, requires_grad=True)

    def f(d):
        R, t, s = procrustes_batched(src, d, scale=True)
        return R, t, s

    assert torch.autograd.gradcheck(f, (dst,))


@pytest.mark.parametrize("scale", [True, False])
def test_icp_points_recovers_transform_from_noisy_landmarks(scale):
    verts, _ = grid_mesh()
    rng = np.random.default_rng(0)
    sub = rng.choice(len(verts), 600, replace=False)
    T = random_similarity(3, scale)
    src = apply(T.inverse(), verts[sub])
    lmk = rng.choice(600, 7, replace=False)
    noisy = verts[sub][lmk] + rng.normal(scale=2.0, size=(7, 3))
    est, hist = icp(src, verts, init=(src[lmk], noisy), scale=scale, max_iter=200)
    assert np.abs(apply(est, src) - verts[sub]).max() < 1e-3
    assert hist[0] > 0.1  # the landmark start really was off
    assert np.all(np.diff(hist) <= 1e-12)  # ICP never increases the RMS distance


@pytest.mark.parametrize("scale", [True, False])
def test_icp_surface_recovers_transform_for_points_inside_triangles(scale):
    verts, faces = grid_mesh(20, 22)
    rng = np.random.default_rng(1)
    fidx = rng.choice(len(faces), 500)
    bary = rng.dirichlet([1, 1, 1], 500)
    on_surface = np.einsum("nk,nkc->nc", bary, verts[faces[fidx]])  # not at vertices
    T = random_similarity(6, scale)
    src = apply(T.inverse(), on_surface)
    init = Similarity(T.R @ Rotation.from_rotvec([0.02, -0.01, 0.01]).as_matrix(), T.t + 1.0, T.s)
    est, hist = icp(src, verts, faces, init=init, scale=scale, max_iter=300, tol=1e-12)
    assert np.abs(apply(est, src) - on_surface).max() < 1e-3
    assert hist[-1] < 1e-4


def test_icp_bad_inputs():
    verts, _ = grid_mesh(5, 5)
    with pytest.raises(TypeError, match="init"):
        icp(verts, verts, init="landmarks")
    with pytest.raises(ValueError, match="src_points: contains NaN"):
        icp(np.full((4, 3), np.nan), verts)
    with pytest.raises(TypeError, match="max_iter"):
        icp(verts, verts, max_iter=2.5)


@pytest.mark.parametrize(
    "src, dst, weights, match",
    [
        (np.zeros((2, 3)), np.zeros((2, 3)), None, "at least 3"),
        (np.zeros((5, 3)), np.zeros((4, 3)), None, "dst: expected shape"),
        (np.zeros((5, 2)), np.zeros((5, 2)), None, "src: expected shape"),
        (np.ones((5, 3)), np.zeros((5, 3)), -np.ones(5), "weights"),
        (np.zeros((0, 3)), np.zeros((0, 3)), None, "empty"),
    ],
)
def test_procrustes_bad_inputs(src, dst, weights, match):
    with pytest.raises(ValueError, match=match):
        procrustes(src, dst, weights=weights)


def test_procrustes_scale_of_coincident_points_raises():
    with pytest.raises(ValueError, match="coincide"):
        procrustes(np.ones((4, 3)), np.zeros((4, 3)), scale=True)
