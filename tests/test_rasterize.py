"""facelab.render.rasterize: the torch backend against hand-worked examples and brute force,
and torch vs PyTorch3D agreement.

Agreement tolerances (torch vs PyTorch3D, hard rasterization): coverage IoU >= 0.99 and
the same winning face on >= 99 % of the pixels both cover; on the pixels where the
face agrees, barycentrics within 1e-2 and depth within 1 mm (PyTorch3D works in
float32 NDC, where triangles of ~0.1 px^2 lose ~3 digits), and the rendered colour
within 2e-2 per pixel and 1e-3 on average.
"""

import sys

import numpy as np
import pytest
import torch

from facelab.camera import WeakPerspectiveCamera, centered_pose
from facelab.render import RenderSettings, render, sample_sh
from facelab.render.procedural import head_grid
from facelab.render.rasterize import Fragments, interpolate, rasterize, screen_to_ndc

needs_p3d = pytest.mark.skipif("not __import__('facelab.render.rasterize', fromlist=['x']).pytorch3d_available()",
                               reason="PyTorch3D not installed")

IOU_MIN = 0.99
FACE_AGREE_MIN = 0.99
BARY_ATOL = 1e-2
DEPTH_ATOL_MM = 1.0
COLOUR_MAX_ATOL = 2e-2
COLOUR_MEAN_ATOL = 1e-3


def brute_force(verts_screen: np.ndarray, faces: np.ndarray, H: int, W: int):
    """Reference z-buffer: every pixel centre against every face, in float64 numpy."""
    p2f = -np.ones((H, W), dtype=np.int64)
    zbuf = np.full((H, W), np.inf)
    for i in range(H):
        for j in range(W):
            p = np.array([j + 0.5, i + 0.5])
            for f, (a, b, c) in enumerate(faces):
                v0, v1, v2 = verts_screen[a], verts_screen[b], verts_screen[c]
                area = (v1[0] - v0[0]) * (v2[1] - v0[1]) - (v2[0] - v0[0]) * (v1[1] - v0[1])
                if abs(area) < 1e-12:
                    continue
                w = []
                for q, r in ((v1, v2), (v2, v0), (v0, v1)):
                    w.append(((q[0] - p[0]) * (r[1] - p[1]) - (r[0] - p[0]) * (q[1] - p[1])) / area)
                if min(w) < 0:
                    continue
                z = w[0] * v0[2] + w[1] * v1[2] + w[2] * v2[2]
                if z < zbuf[i, j]:
                    zbuf[i, j], p2f[i, j] = z, f
    return p2f, zbuf


def random_soup(n_faces, size, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n_faces, 1, 3, generator=g, dtype=torch.float64) * torch.tensor([size + 4.0, size + 4.0, 50.0]) - torch.tensor([2.0, 2.0, 25.0])
    offsets = (torch.rand(n_faces, 3, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([size / 2, size / 2, 20.0])
    verts = (centres + offsets).reshape(1, -1, 3).to(dtype)
    faces = torch.arange(3 * n_faces).reshape(n_faces, 3)
    return verts, faces


# --------------------------------------------------------------- hand examples
def test_single_triangle_coverage_bary_depth(device, dtype):
    v = torch.tensor([[[0.0, 0.0, 10.0], [4.0, 0.0, 20.0], [0.0, 4.0, 30.0]]], device=device, dtype=dtype)
    frag = rasterize(v, torch.tensor([[0, 1, 2]], device=device), 4, backend="torch")
    assert isinstance(frag, Fragments)
    assert frag.pix_to_face.shape == (1, 4, 4) and frag.bary.shape == (1, 4, 4, 3)
    assert frag.depth.shape == (1, 4, 4) and frag.mask.dtype == torch.bool
    jj, ii = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="xy")
    inside = (jj + ii + 1 <= 4).to(device)  # pixel centres with x + y <= 4
    assert torch.equal(frag.mask[0], inside)
    assert torch.equal(frag.pix_to_face[0], torch.where(inside, 0, -1))
    # centre (0.5, 0.5): bary = (1 - 1/8 - 1/8, 1/8, 1/8), depth = 7.5 + 2.5 + 3.75 = 13.75
    torch.testing.assert_close(frag.bary[0, 0, 0], torch.tensor([0.75, 0.125, 0.125], device=device, dtype=dtype))
    torch.testing.assert_close(frag.depth[0, 0, 0], torch.tensor(13.75, device=device, dtype=dtype))
    assert frag.depth[0, 3, 3] == 0 and (frag.bary[0, 3, 3] == 0).all()


def test_nearest_triangle_wins_in_either_order():
    # two squares' worth of triangles covering the 4x4 image, one at depth 5, one at 2
    far = [[0.0, 0.0, 5.0], [8.0, 0.0, 5.0], [0.0, 8.0, 5.0]]
    near = [[0.0, 0.0, 2.0], [4.0, 0.0, 2.0], [0.0, 4.0, 2.0]]
    for order in ([far, near], [near, far]):
        v = torch.tensor([order[0] + order[1]])
        frag = rasterize(v, torch.tensor([[0, 1, 2], [3, 4, 5]]), 4)
        near_id = 1 if order[0] is far else 0
        expect_near = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
        assert frag.mask[0].all()
        assert torch.equal(frag.pix_to_face[0] == near_id, expect_near)
        torch.testing.assert_close(frag.depth[0], torch.where(expect_near, 2.0, 5.0))


def test_negative_depths_are_ordered():
    v = torch.tensor([[[0.0, 0.0, -3.0], [8.0, 0.0, -3.0], [0.0, 8.0, -3.0], [0.0, 0.0, -7.0], [8.0, 0.0, -7.0], [0.0, 8.0, -7.0]]])
    frag = rasterize(v, torch.tensor([[0, 1, 2], [3, 4, 5]]), 2)
    assert (frag.pix_to_face[0] == 1).all()


def test_both_windings_and_culling():
    ccw_camera = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 4.0, 1.0], [4.0, 0.0, 1.0]]])  # counter-clockwise seen from the camera (y up)
    faces, flipped = torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 1]])
    a = rasterize(ccw_camera, faces, 4)
    b = rasterize(ccw_camera, flipped, 4)
    assert a.mask.sum() == 10 and torch.equal(a.mask, b.mask)
    torch.testing.assert_close(a.bary[..., [0, 2, 1]], b.bary)
    assert torch.equal(rasterize(ccw_camera, faces, 4, cull_backfaces=True).mask, a.mask)
    assert not rasterize(ccw_camera, flipped, 4, cull_backfaces=True).mask.any()


def test_offscreen_and_degenerate_faces_are_skipped():
    v = torch.tensor([[[-10.0, -10.0, 1.0], [-5.0, -10.0, 1.0], [-10.0, -5.0, 1.0],  # left of the image
                       [1.0, 1.0, 1.0], [2.0, 2.0, 1.0], [3.0, 3.0, 1.0],  # zero area
                       [100.0, 1.0, 1.0], [200.0, 1.0, 1.0], [100.0, 50.0, 1.0]]])  # right of it
    frag = rasterize(v, torch.arange(9).reshape(3, 3), (6, 8))
    assert frag.pix_to_face.shape == (1, 6, 8) and not frag.mask.any()


def test_matches_brute_force_on_random_soup():
    H, W = 12, 16
    verts, faces = random_soup(40, 14, seed=3, dtype=torch.float64)
    frag = rasterize(verts.expand(2, -1, -1), faces, (H, W))
    p2f, zbuf = brute_force(verts[0].numpy(), faces.numpy(), H, W)
    for b in range(2):
        assert np.array_equal(frag.pix_to_face[b].numpy(), p2f)
        np.testing.assert_allclose(frag.depth[b].numpy(), np.where(p2f >= 0, zbuf, 0.0), atol=1e-9)


def test_batch_elements_are_independent():
    v, f = head_grid(9, 11)
    pose = centered_pose(24, 2, angles=torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.7, 0.1]]))
    vs = WeakPerspectiveCamera.from_pose(pose).project(v[None].expand(2, -1, -1))
    both = rasterize(vs, f, 24)
    for b in range(2):
        one = rasterize(vs[b : b + 1], f, 24)
        assert torch.equal(both.pix_to_face[b], one.pix_to_face[0])


# ----------------------------------------------------------------- bad input
def test_bad_input_raises():
    v, f = torch.zeros(1, 3, 3), torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match="backend"):
        rasterize(v, f, 4, backend="opengl")
    with pytest.raises(ValueError, match="verts_screen"):
        rasterize(torch.zeros(3, 3), f, 4)
    with pytest.raises(ValueError, match="faces"):
        rasterize(v, torch.tensor([[0, 1, 3]]), 4)
    with pytest.raises(TypeError, match="faces"):
        rasterize(v, f.float(), 4)
    with pytest.raises(ValueError, match="image_size"):
        rasterize(v, f, (4, 4, 4))
    with pytest.raises(ValueError, match="backend 'torch'"):
        rasterize(v, f, 4, backend="torch", blur_radius=1.0)
    with pytest.raises(ValueError, match="blur_radius"):
        rasterize(v, f, 4, blur_radius=-1.0)
    with pytest.raises(ValueError, match="attrs"):
        interpolate(rasterize(v, f, 4), torch.zeros(2, 3, 1), f)


def test_missing_pytorch3d_gives_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch3d.renderer.mesh.rasterize_meshes", None)
    with pytest.raises(ImportError, match="backend='torch'"):
        rasterize(torch.zeros(1, 3, 3), torch.tensor([[0, 1, 2]]), 4, backend="pytorch3d")


# ----------------------------------------------------------------- gradients
def test_interpolate_values_and_shapes(device, dtype):
    v = torch.tensor([[[0.0, 0.0, 1.0], [4.0, 0.0, 1.0], [0.0, 4.0, 1.0]]], device=device, dtype=dtype)
    f = torch.tensor([[0, 1, 2]], device=device)
    frag = rasterize(v, f, 4)
    out = interpolate(frag, v[..., :2], f)  # interpolating x, y returns the pixel centres
    assert out.shape == (1, 4, 4, 2)
    jj, ii = torch.meshgrid(torch.arange(4, device=device, dtype=dtype) + 0.5, torch.arange(4, device=device, dtype=dtype) + 0.5, indexing="xy")
    centres = torch.stack([jj, ii], -1)
    torch.testing.assert_close(out[0][frag.mask[0]], centres[frag.mask[0]])
    assert (out[0][~frag.mask[0]] == 0).all()


def test_interpolate_gradcheck_verts_and_attrs():
    v, f = head_grid(4, 5, dtype=torch.float64)
    pose = centered_pose(12, 2, angles=torch.tensor([[0.1, 0.3, 0.0], [0.0, -0.2, 0.1]]), dtype=torch.float64)
    vs = WeakPerspectiveCamera.from_pose(pose).project(v[None].expand(2, -1, -1)).detach().requires_grad_(True)
    attrs = torch.rand(2, v.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)

    def fn(vs, attrs):
        frag = rasterize(vs, f, 12)
        return interpolate(frag, attrs, f), frag.depth

    assert rasterize(vs, f, 12).mask.sum() > 40
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny evaluations: a second thread only adds wake-up latency
    try:
        assert torch.autograd.gradcheck(fn, (vs, attrs), atol=1e-6, fast_mode=True)
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------- torch vs PyTorch3D
def test_screen_to_ndc_matches_pytorch3d_pixel_centres():
    # PyTorch3D's pixel (row i, col j) centre for H x W: x = (W - 2 j - 1)/S, y = (H - 2 i - 1)/S
    H, W = 6, 10
    centres = torch.tensor([[[0.5, 0.5, 1.0], [W - 0.5, H - 0.5, 1.0]]])
    ndc = screen_to_ndc(centres, H, W)
    torch.testing.assert_close(ndc[0, :, :2], torch.tensor([[(W - 1) / H, (H - 1) / H], [-(W - 1) / H, -(H - 1) / H]]))


def agreement(a: Fragments, b: Fragments):
    """Coverage IoU, share of co-covered pixels with the same face, and that pixel mask."""
    iou = ((a.mask & b.mask).sum() / (a.mask | b.mask).sum()).item()
    both = a.mask & b.mask
    same = both & (a.pix_to_face == b.pix_to_face)
    return iou, (same.sum() / both.sum()).item(), same


def check_agreement(verts, faces, pose, size, seed):
    B, V = verts.shape[:2]
    g = torch.Generator().manual_seed(seed)
    albedo, sh = torch.rand(B, V, 3, generator=g) * 0.8, sample_sh(B, g)
    outs = [render(verts, faces, albedo, sh, pose, settings=RenderSettings(image_size=size, backend=be)) for be in ("torch", "pytorch3d")]
    a, b = outs[0].fragments, outs[1].fragments
    iou, face_agree, same = agreement(a, b)
    assert iou >= IOU_MIN, iou
    assert face_agree >= FACE_AGREE_MIN, face_agree
    assert (a.bary - b.bary)[same].abs().max() <= BARY_ATOL
    assert (a.depth - b.depth)[same].abs().max() <= DEPTH_ATOL_MM
    diff = (outs[0].image - outs[1].image).abs().permute(0, 2, 3, 1)[same]
    assert diff.max() <= COLOUR_MAX_ATOL and diff.mean() <= COLOUR_MEAN_ATOL, (diff.max(), diff.mean())


def random_poses(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    angles = (torch.rand(n, 3, generator=g) * 2 - 1) * torch.tensor([0.5, 1.4, 0.35])
    pose = centered_pose(size, n, angles=angles)
    pose[:, 3:5] += torch.randn(n, 2, generator=g) * size / 20
    pose[:, 5] *= 0.8 + 0.4 * torch.rand(n, generator=g)
    return pose


@needs_p3d
@pytest.mark.parametrize("size", [64, 112])
def test_torch_matches_pytorch3d_procedural(size):
    v, f = head_grid(33, 41)
    check_agreement(v[None].expand(3, -1, -1), f, random_poses(3, size, seed=size), size, seed=size)


@needs_p3d
def test_torch_matches_pytorch3d_random_soup_non_square():
    verts, faces = random_soup(300, 40, seed=11)
    for H, W in ((30, 44), (44, 30)):
        vs = verts * torch.tensor([W / 40, H / 40, 1.0])
        a, b = rasterize(vs, faces, (H, W), backend="torch"), rasterize(vs, faces, (H, W), backend="pytorch3d")
        iou, face_agree, same = agreement(a, b)
        assert iou >= IOU_MIN and face_agree >= FACE_AGREE_MIN, (iou, face_agree)
        assert (a.depth - b.depth)[same].abs().max() <= DEPTH_ATOL_MM


@needs_p3d
def test_pytorch3d_culling_matches_torch():
    v, f = head_grid(17, 21)
    verts = v[None].expand(2, -1, -1)
    vs = WeakPerspectiveCamera.from_pose(random_poses(2, 48, seed=1)).project(verts)
    both = torch.cat([f, f[:, [0, 2, 1]]])  # every face also with the other winding
    a = rasterize(vs, both, 48, backend="torch", cull_backfaces=True)
    b = rasterize(vs, both, 48, backend="pytorch3d", cull_backfaces=True)
    assert torch.equal(a.mask, b.mask)
    covered = a.mask & b.mask
    assert (a.pix_to_face[covered] < f.shape[0]).float().mean() > 0.99  # the front-facing copy wins
    assert torch.equal(a.pix_to_face[covered], b.pix_to_face[covered])


@needs_p3d
def test_pytorch3d_soft_rasterization():
    v, f = head_grid(17, 21)
    verts = v[None].expand(2, -1, -1)
    vs = WeakPerspectiveCamera.from_pose(centered_pose(32, 2)).project(verts).requires_grad_(True)
    frag = rasterize(vs, f, 32, backend="auto", blur_radius=1.5, faces_per_pixel=4)
    assert frag.pix_to_face.shape == (2, 32, 32, 4) and frag.bary.shape == (2, 32, 32, 4, 3)
    assert frag.dists.shape == (2, 32, 32, 4)
    hard = rasterize(vs, f, 32)
    assert (frag.mask | ~hard.mask).all() and frag.mask.sum() > hard.mask.sum()  # blur grows the footprint
    # faces are listed nearest first among those within the blur radius, so with a
    # negligible radius the first one is the hard winner, which contains the centre
    sharp = rasterize(vs, f, 32, backend="pytorch3d", blur_radius=1e-3, faces_per_pixel=4)
    first = sharp.pix_to_face[..., 0]
    assert (first[hard.mask] == hard.pix_to_face[hard.mask]).float().mean() > 0.99
    assert (sharp.dists[..., 0][hard.mask] <= 1e-6).float().mean() > 0.99
    out = interpolate(frag, torch.rand(2, v.shape[0], 3), f)
    assert out.shape == (2, 32, 32, 4, 3)
    frag.dists.sum().backward()
    assert vs.grad.abs().sum() > 0


@needs_p3d
@pytest.mark.slow
def test_torch_matches_pytorch3d_synthfaces():
    sf = pytest.importorskip("facelab.morphable.synthfaces")
    model = sf.build_synthfaces(sf.SynthFacesConfig(resolution="quick"))
    g = torch.Generator().manual_seed(0)
    coeffs = model.sample(6, generator=g)
    verts = model.shape(coeffs["alpha_id"], coeffs["alpha_exp"])
    for size in (64, 112):
        check_agreement(verts, model.faces, random_poses(6, size, seed=size + 1), size, seed=size)
