"""Tests of facelab.fitting.landmarks: weak-perspective pose estimation and (multi-image) landmark fitting."""

import math
import time

import numpy as np
import pytest
import torch

from facelab.camera import euler_to_rotation, weak_perspective
from facelab.fitting import LandmarkFitConfig, estimate_pose, fit_landmarks, project_landmarks
from facelab.morphable import MorphableModel


# ----------------------------------------------------------------- helpers
def tiny_model(V=200, K=10, E=5, seed=0, dtype=torch.float64, device="cpu"):
    """A random morphable model: a half-ellipsoid mean, orthonormal bases via QR, 68 random landmark vertices."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.rand(V, generator=g, dtype=torch.float64) * math.pi - math.pi / 2
    phi = (torch.rand(V, generator=g, dtype=torch.float64) - 0.5) * 0.8 * math.pi
    mean = torch.stack([70 * torch.sin(theta) * torch.cos(phi), 90 * torch.sin(phi), 80 * torch.cos(theta) * torch.cos(phi)], 1)
    Q = torch.linalg.qr(torch.randn(3 * V, K + E, generator=g, dtype=torch.float64))[0]
    model = MorphableModel(
        mean, Q[:, :K], torch.linspace(30, 5, K, dtype=torch.float64), Q[:, K:], torch.linspace(10, 2, E, dtype=torch.float64),
        torch.zeros(V, 3, dtype=torch.float64), torch.zeros(3 * V, 0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64),
        torch.tensor([[0, 1, 2], [1, 3, 2]]), torch.randperm(V, generator=g)[:68], torch.arange(V),
        torch.ones(V, dtype=torch.bool), 0, name="tiny",
    )
    return model.to(device, dtype)


def random_poses(B, generator, dtype=torch.float64, device="cpu", image=224.0, yaw_max=1.2):
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(B, generator=generator, dtype=torch.float64)  # noqa: E731
    pose = torch.stack([u(-0.4, 0.4), u(-yaw_max, yaw_max), u(-0.3, 0.3), u(0.4, 0.6) * image, u(0.4, 0.6) * image,
                        u(0.8, 1.6)], 1)
    return pose.to(device, dtype)


def rmse_mm(a, b):
    """``(B,)`` RMS vertex distance, mm."""
    return ((a - b) ** 2).sum(-1).mean(-1).sqrt()


def map_objective(model, landmarks2d, fit, std_px):
    """The MAP objective fit_landmarks minimises, written directly (independent of its solver)."""
    shapes = model.shape(fit.alpha_id[fit.group_index], fit.alpha_exp)
    data = ((project_landmarks(shapes[:, model.landmarks], fit.pose) - landmarks2d) ** 2).sum() / std_px**2
    return data + (fit.alpha_id**2 / model.shape_std**2).sum() + (fit.alpha_exp**2 / model.exp_std**2).sum()


def synthfaces_quick():
    try:
        from facelab.morphable import SynthFacesConfig, build_synthfaces
    except ImportError:
        try:
            from facelab.morphable.synthfaces import SynthFacesConfig, build_synthfaces
        except ImportError:
            pytest.skip("SynthFaces model not available yet")
    return build_synthfaces(SynthFacesConfig(resolution="quick"))


@pytest.fixture(scope="module")
def quick_model():
    return synthfaces_quick()


# ------------------------------------------------------------ estimate_pose
def test_estimate_pose_smoke_and_shape(device, dtype):
    g = torch.Generator().manual_seed(0)
    pts = (torch.randn(3, 20, 3, generator=g, dtype=torch.float64) * 50).to(device, dtype)
    pose = random_poses(3, g, dtype, device)
    p2d = project_landmarks(pts, pose)
    out = estimate_pose(pts, p2d)
    assert out.shape == (3, 6) and out.dtype == dtype and out.device.type == torch.device(device).type


def test_estimate_pose_inverts_weak_perspective(device, dtype):
    g = torch.Generator().manual_seed(1)
    B = 64
    pts = (torch.randn(B, 68, 3, generator=g, dtype=torch.float64) * 50).to(device, dtype)
    pose = random_poses(B, g, dtype, device)
    screen = weak_perspective(pts, euler_to_rotation(pose[:, :3]), pose[:, 5], pose[:, 3:5])
    est = estimate_pose(pts, screen[..., :2])
    torch.testing.assert_close(est, pose, atol=1e-4, rtol=1e-4)


def test_estimate_pose_hand_example(dtype):
    # roll = +90 deg turns model +x to camera +y (up the image) and +y to camera -x
    v = torch.tensor([[[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]]], dtype=dtype)
    p = torch.tensor([[[40.0, 30], [40, 10], [20, 30], [40, 30]]], dtype=dtype)  # s = 2, origin at (40, 30)
    want = torch.tensor([[0.0, 0.0, math.pi / 2, 40.0, 30.0, 2.0]], dtype=dtype)
    torch.testing.assert_close(estimate_pose(v, p), want, atol=1e-5, rtol=0)


def test_estimate_pose_zero_weight_ignores_outlier():
    g = torch.Generator().manual_seed(2)
    pts = torch.randn(2, 30, 3, generator=g, dtype=torch.float64) * 50
    pose = random_poses(2, g)
    p2d = project_landmarks(pts, pose) + torch.randn(2, 30, 2, generator=g, dtype=torch.float64)
    p2d[:, 0] += 500.0  # a gross outlier
    w = torch.ones(2, 30, dtype=torch.float64)
    w[:, 0] = 0
    torch.testing.assert_close(estimate_pose(pts, p2d, w), estimate_pose(pts[:, 1:], p2d[:, 1:]))


def test_estimate_pose_matches_numpy_affine_least_squares():
    # with noise the scale is the mean singular value of the lstsq affine camera (numpy, independent)
    g = torch.Generator().manual_seed(3)
    pts = torch.randn(1, 40, 3, generator=g, dtype=torch.float64) * 50
    p2d = project_landmarks(pts, random_poses(1, g)) + 2 * torch.randn(1, 40, 2, generator=g, dtype=torch.float64)
    X = np.concatenate([pts[0].numpy(), np.ones((40, 1))], 1)
    Y = p2d[0].numpy() * np.array([1.0, -1.0])
    P = np.linalg.lstsq(X, Y, rcond=None)[0]  # (4, 2)
    want_scale = np.linalg.svd(P[:3].T, compute_uv=False).mean()
    assert estimate_pose(pts, p2d)[0, 5].item() == pytest.approx(want_scale, rel=1e-10)


def test_estimate_pose_gradcheck():
    g = torch.Generator().manual_seed(4)
    pts = (torch.randn(2, 8, 3, generator=g, dtype=torch.float64) * 50).requires_grad_()
    p2d = (project_landmarks(pts.detach(), random_poses(2, g)) + torch.randn(2, 8, 2, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(estimate_pose, (pts, p2d), eps=1e-6, atol=1e-5)


def test_estimate_pose_bad_inputs():
    pts, p2d = torch.randn(2, 10, 3), torch.randn(2, 10, 2)
    with pytest.raises(ValueError, match="points2d"):
        estimate_pose(pts, p2d[:, :9])
    with pytest.raises(ValueError, match="points3d"):
        estimate_pose(pts[:, :3], p2d[:, :3])
    with pytest.raises(ValueError, match="weights"):
        estimate_pose(pts, p2d, -torch.ones(2, 10))
    bad = p2d.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="points2d: contains NaN"):
        estimate_pose(pts, bad)
    flat = pts.clone()
    flat[..., 2] = 0  # coplanar: the affine camera is not determined
    with pytest.raises(ValueError, match="points3d: degenerate"):
        estimate_pose(flat, p2d)


# ------------------------------------------------------------ fit_landmarks
def test_fit_landmarks_shapes_and_groups(device, dtype):
    model = tiny_model(dtype=dtype, device=device)
    g = torch.Generator().manual_seed(5)
    pose = random_poses(5, g, dtype, device)
    s = model.sample(5, generator=g)
    lm = project_landmarks(model.shape(s["alpha_id"].to(device), s["alpha_exp"].to(device))[:, model.landmarks], pose)
    groups = torch.tensor([5, 2, 5, 9, 2], device=device)
    fit = fit_landmarks(model, lm, groups, n_shape=6, n_exp=3)
    assert fit.alpha_id.shape == (3, model.n_shape) and fit.alpha_exp.shape == (5, model.n_exp)
    assert fit.pose.shape == (5, 6) and fit.residual_px.shape == (5,)
    assert fit.shapes.shape == (5, model.n_verts, 3) and fit.identity_shapes.shape == (3, model.n_verts, 3)
    assert fit.group_labels.tolist() == [2, 5, 9] and fit.group_index.tolist() == [1, 0, 1, 2, 0]
    assert (fit.alpha_id[:, 6:] == 0).all() and (fit.alpha_exp[:, 3:] == 0).all()  # only the leading components
    torch.testing.assert_close(fit.shapes, fit.identity_shapes[fit.group_index] + model.expression_offset(fit.alpha_exp))
    assert fit_landmarks(model, lm).alpha_id.shape == (5, model.n_shape)  # groups=None: one identity per image


def test_fit_landmarks_noise_free_recovery_tiny(device, dtype):
    model = tiny_model(dtype=dtype, device=device)
    g = torch.Generator().manual_seed(6)
    B = 16
    s = model.sample(B, generator=g)
    truth = model.shape(s["alpha_id"].to(device), s["alpha_exp"].to(device))
    pose = random_poses(B, g, dtype, device)
    lm = project_landmarks(truth[:, model.landmarks], pose)
    fit = fit_landmarks(model, lm, landmark_std_px=0.01)  # noise-free: tiny noise, so a weak prior
    refit = project_landmarks(fit.shapes[:, model.landmarks], fit.pose)
    assert (refit - lm).norm(dim=-1).max() < 0.01
    assert fit.residual_px.max() < 0.01
    assert (fit.pose[:, :3] - pose[:, :3]).abs().max() < 1e-3
    assert rmse_mm(fit.shapes, truth).max() < 0.01  # a random 68-point basis pins all 15 coefficients


def test_fit_landmarks_pose_only_with_zero_components(device, dtype):
    # n_shape = n_exp = 0 fits the pose of the mean face alone (this crashed in a reshape)
    model = tiny_model(dtype=dtype, device=device)
    g = torch.Generator().manual_seed(9)
    pose = random_poses(5, g, dtype, device)
    lm = project_landmarks(model.mean_shape[model.landmarks].expand(5, -1, -1), pose)
    fit = fit_landmarks(model, lm, n_shape=0, n_exp=0, landmark_std_px=0.01)
    assert fit.alpha_id.abs().max() == 0 and fit.alpha_exp.abs().max() == 0
    assert (fit.pose[:, :3] - pose[:, :3]).abs().max() < 1e-3
    assert fit.residual_px.max() < 0.01


def test_fit_landmarks_noise_free_recovery_synthfaces(quick_model):
    model = quick_model.truncate(20, 10)
    g = torch.Generator().manual_seed(7)
    B = 32
    s = model.sample(B, generator=g)
    pose = random_poses(B, g, torch.float32)
    lm = project_landmarks(model.shape(s["alpha_id"], s["alpha_exp"])[:, model.landmarks], pose)
    fit = fit_landmarks(quick_model, lm, landmark_std_px=0.01, n_shape=20, n_exp=10)
    refit = project_landmarks(fit.shapes[:, model.landmarks], fit.pose)
    assert (refit - lm).norm(dim=-1).max() < 0.01
    assert (fit.pose[:, :3] - pose[:, :3]).abs().max() < 1e-3


def test_fit_landmarks_shape_step_matches_dense_least_squares():
    # One alternation = pose from the mean shape, then the MAP linear solve. Check the
    # Schur-complement solve against numpy's lstsq on the explicit stacked system.
    model = tiny_model(K=6, E=3)
    g = torch.Generator().manual_seed(8)
    B, std_px = 5, 1.5
    groups = torch.tensor([0, 0, 1, 1, 1])
    s = model.sample(B, generator=g)
    lm = project_landmarks(model.shape(s["alpha_id"], s["alpha_exp"])[:, model.landmarks], random_poses(B, g))
    lm = lm + std_px * torch.randn(B, 68, 2, generator=g, dtype=torch.float64)
    fit = fit_landmarks(model, lm, groups, n_iter=1, n_refine=0, landmark_std_px=std_px)

    pose = estimate_pose(model.mean_shape[model.landmarks].expand(B, -1, -1), lm)
    K, E, G = model.n_shape, model.n_exp, 2

    def columns(basis):  # d(landmark px)/d(coefficient), by projecting each unit offset
        offs = basis.T.reshape(-1, model.n_verts, 3)[:, model.landmarks]
        return torch.stack([(project_landmarks(o.expand(B, -1, -1), pose) - pose[:, None, 3:5]).reshape(B, -1) for o in offs], -1)

    J_id, J_exp = columns(model.shape_basis), columns(model.exp_basis)
    resid = (lm - project_landmarks(model.mean_shape[model.landmarks].expand(B, -1, -1), pose)).reshape(B, -1)
    rows, rhs = [], []
    for b in range(B):
        A = torch.zeros(136, G * K + B * E, dtype=torch.float64)
        A[:, groups[b] * K:(groups[b] + 1) * K] = J_id[b]
        A[:, G * K + b * E:G * K + (b + 1) * E] = J_exp[b]
        rows.append(A / std_px)
        rhs.append(resid[b] / std_px)
    prior = torch.cat([(1 / model.shape_std).repeat(G), (1 / model.exp_std).repeat(B)])
    rows.append(torch.diag(prior))
    rhs.append(torch.zeros(G * K + B * E, dtype=torch.float64))
    sol = np.linalg.lstsq(torch.cat(rows).numpy(), torch.cat(rhs).numpy(), rcond=None)[0]
    np.testing.assert_allclose(fit.alpha_id.numpy(), sol[:G * K].reshape(G, K), atol=1e-8)
    np.testing.assert_allclose(fit.alpha_exp.numpy(), sol[G * K:].reshape(B, E), atol=1e-8)


def test_fit_landmarks_refinement_reaches_a_stationary_point():
    # The MAP objective, differentiated by autograd, must be flat at the returned fit in
    # everything but the scale (which fit_landmarks sets from the expression-marginal objective).
    model = tiny_model(K=8, E=4)
    g = torch.Generator().manual_seed(9)
    B, std_px = 6, 1.0
    s = model.sample(B, generator=g)
    lm = project_landmarks(model.shape(s["alpha_id"], s["alpha_exp"])[:, model.landmarks], random_poses(B, g))
    lm = lm + std_px * torch.randn(B, 68, 2, generator=g, dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    fit = fit_landmarks(model, lm, groups, landmark_std_px=std_px, n_refine=50)
    params = [t.clone().requires_grad_() for t in (fit.alpha_id, fit.alpha_exp, fit.pose)]
    fit_vars = type(fit)(*params, fit.shapes, fit.identity_shapes, fit.residual_px, fit.group_index, fit.group_labels)
    value = map_objective(model, lm, fit_vars, std_px)
    grads = torch.autograd.grad(value, params)
    grads = [grads[0], grads[1], grads[2][:, :5]]
    assert max(gr.abs().max().item() for gr in grads) < 1e-6 * value.item()


def test_fit_landmarks_zero_weight_ignores_landmark():
    model = tiny_model()
    g = torch.Generator().manual_seed(10)
    s = model.sample(3, generator=g)
    lm = project_landmarks(model.shape(s["alpha_id"], s["alpha_exp"])[:, model.landmarks], random_poses(3, g))
    lm = lm + torch.randn(3, 68, 2, generator=g, dtype=torch.float64)
    w = torch.ones(3, 68, dtype=torch.float64)
    w[:, 5] = 0
    bad = lm.clone()
    bad[:, 5] += 300.0
    a = fit_landmarks(model, lm, weights=w)
    b = fit_landmarks(model, bad, weights=w)
    torch.testing.assert_close(a.alpha_id, b.alpha_id)
    torch.testing.assert_close(a.residual_px, b.residual_px)


def test_fit_landmarks_gradcheck():
    model = tiny_model(V=80, K=3, E=2)
    g = torch.Generator().manual_seed(11)
    s = model.sample(2, generator=g)
    lm = project_landmarks(model.shape(s["alpha_id"], s["alpha_exp"])[:, model.landmarks], random_poses(2, g))
    lm = lm + torch.randn(2, 68, 2, generator=g, dtype=torch.float64)
    groups = torch.tensor([0, 0])
    moved = lm[:, :3].clone().requires_grad_()  # differentiate w.r.t. a few landmarks to keep it fast

    def f(x):
        fit = fit_landmarks(model, torch.cat([x, lm[:, 3:]], dim=1), groups, n_iter=1, n_refine=1)
        return fit.alpha_id, fit.alpha_exp, fit.pose

    assert torch.autograd.gradcheck(f, (moved,), eps=1e-6, atol=1e-5)


def _multi_vs_single(model, n_id, m_max, noise, seed):
    """Identity RMSE (mm) of multi-image fits and of single-image fits, for 2 and m_max images per identity."""
    g = torch.Generator().manual_seed(seed)
    ident = model.shape(model.sample(n_id, generator=g)["alpha_id"])
    B = n_id * m_max
    s = model.sample(B, generator=g)
    groups = torch.arange(n_id).repeat_interleave(m_max)
    shapes = ident[groups] + model.expression_offset(s["alpha_exp"])
    lm = project_landmarks(shapes[:, model.landmarks], random_poses(B, g, model.dtype))
    lm = lm + noise * torch.randn(B, 68, 2, generator=g, dtype=model.dtype)
    single = rmse_mm(fit_landmarks(model, lm, landmark_std_px=noise).identity_shapes, ident[groups]).reshape(n_id, m_max)
    out = {}
    for m in (2, m_max):
        keep = (torch.arange(B) % m_max) < m  # the first m images of each identity
        multi = fit_landmarks(model, lm[keep], groups[keep], landmark_std_px=noise)
        out[m] = (rmse_mm(multi.identity_shapes, ident).mean().item(), single[:, :m].mean().item())
    return out


def test_multi_image_fitting_beats_single_tiny():
    out = _multi_vs_single(tiny_model(), n_id=32, m_max=8, noise=3.0, seed=12)
    (multi2, single2), (multi8, single8) = out[2], out[8]
    assert multi2 < single2 and multi8 < single8
    assert single8 - multi8 > single2 - multi2


@pytest.mark.slow
def test_multi_image_fitting_beats_single_synthfaces(quick_model):
    out = _multi_vs_single(quick_model, n_id=32, m_max=8, noise=1.5, seed=13)
    (multi2, single2), (multi8, single8) = out[2], out[8]
    assert multi2 < single2 and multi8 < single8
    assert single8 - multi8 > single2 - multi2


def test_fit_landmarks_256_images_under_2s(quick_model):
    g = torch.Generator().manual_seed(14)
    B = 256
    s = quick_model.sample(B, generator=g)
    lm = project_landmarks(quick_model.shape(s["alpha_id"], s["alpha_exp"])[:, quick_model.landmarks], random_poses(B, g, torch.float32))
    fit_landmarks(quick_model, lm[:8])  # warm-up (first-call allocations)
    # CPU time of this process, so that other jobs on a busy machine do not count
    t0 = time.process_time()
    fit_landmarks(quick_model, lm + torch.randn(B, 68, 2, generator=g), torch.arange(B) // 8)
    assert time.process_time() - t0 < 2.0 * torch.get_num_threads()


def test_fit_landmarks_bad_inputs():
    model = tiny_model()
    lm = torch.randn(4, 68, 2, dtype=torch.float64) * 10 + 100
    with pytest.raises(ValueError, match="landmarks2d"):
        fit_landmarks(model, lm[:, :60])
    nan = lm.clone()
    nan[1, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="landmarks2d: contains NaN"):
        fit_landmarks(model, nan)
    with pytest.raises(ValueError, match="groups: expected one label per image"):
        fit_landmarks(model, lm, torch.tensor([0, 0, 1]))
    with pytest.raises(TypeError, match="groups"):
        fit_landmarks(model, lm, torch.tensor([0.0, 0, 1, 1]))
    with pytest.raises(TypeError, match="unknown option"):
        fit_landmarks(model, lm, n_iters=3)
    with pytest.raises(ValueError, match="n_shape"):
        fit_landmarks(model, lm, n_shape=model.n_shape + 1)
    with pytest.raises(ValueError, match="shape_prior"):
        fit_landmarks(model, lm, shape_prior=-1.0)
    with pytest.raises(ValueError, match="landmark_std_px"):
        fit_landmarks(model, lm, config=LandmarkFitConfig(landmark_std_px=0.0))
    with pytest.raises(ValueError, match="weights"):
        fit_landmarks(model, lm, weights=-torch.ones(4, 68, dtype=torch.float64))
    with pytest.raises(TypeError, match="model"):
        fit_landmarks("bfm", lm)
