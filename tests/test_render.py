"""facelab.render: SH shading, vertex normals, the render layer, inverse rendering."""

import contextlib
import math

import pytest
import torch

from facelab.camera import PerspectiveCamera, WeakPerspectiveCamera, centered_pose
from facelab.render import (
    DEFAULT_SH,
    Renderer,
    RenderSettings,
    ambient_sh,
    directional_sh,
    render,
    sample_sh,
    sh_basis,
    sh_shading,
    shade,
    vertex_normals,
)
from facelab.render.procedural import grid_faces, head_grid
from facelab.render.rasterize import pytorch3d_available


@contextlib.contextmanager
def one_thread():
    """Loops of small ops: on a busy 2-core machine waking a second intra-op thread
    costs more than the op (measured 5-15x slower), so run them single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fibonacci_sphere(n, dtype=torch.float64):
    i = torch.arange(n, dtype=dtype) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (3 - math.sqrt(5)) * i
    r = torch.sqrt(1 - z**2)
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)


# --------------------------------------------------------------------- SH
def test_sh_basis_hand_values():
    up = sh_basis(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    k2 = (2 * math.pi / math.sqrt(8)) * 3 * math.sqrt(5) / math.sqrt(12 * math.pi)
    # n = (0,0,1): a0 c0 = sqrt(pi)/2, a1 c1 z = sqrt(pi), band 2 only (3z^2-1) term = k2/sqrt(3)
    want = torch.tensor([math.sqrt(math.pi) / 2, 0, math.sqrt(math.pi), 0, 0, 0, k2 / math.sqrt(3), 0, 0], dtype=torch.float64)
    torch.testing.assert_close(up, want)
    x = sh_basis(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(x[[3, 6, 8]], torch.tensor([-math.sqrt(math.pi), -0.5 * k2 / math.sqrt(3), 0.5 * k2], dtype=torch.float64))


def test_sh_basis_is_lambert_scaled_orthonormal_sh():
    # dividing out a_l leaves the real SH, orthonormal over the sphere
    n = fibonacci_sphere(20000)
    a = torch.tensor([math.pi] + [2 * math.pi / math.sqrt(3)] * 3 + [2 * math.pi / math.sqrt(8)] * 5, dtype=torch.float64)
    Y = sh_basis(n) / a
    gram = 4 * math.pi * Y.T @ Y / n.shape[0]
    torch.testing.assert_close(gram, torch.eye(9, dtype=torch.float64), atol=1e-3, rtol=0)


def test_sh_shading_shapes_and_channels(device, dtype):
    normals = torch.nn.functional.normalize(torch.randn(2, 7, 3, device=device, dtype=dtype), dim=-1)
    sh = torch.randn(2, 27, device=device, dtype=dtype)
    out = sh_shading(normals, sh)
    assert out.shape == (2, 7, 3)
    # channel c uses coefficients 9c .. 9c+8 (independent loop over channels)
    for c in range(3):
        torch.testing.assert_close(out[..., c], (sh_basis(normals) * sh[:, None, 9 * c : 9 * c + 9]).sum(-1))


def test_ambient_and_directional_lighting():
    n = fibonacci_sphere(2000)[None]
    torch.testing.assert_close(sh_shading(n, ambient_sh(torch.tensor([0.7], dtype=torch.float64))), torch.full((1, 2000, 3), 0.7, dtype=torch.float64))
    d = torch.tensor([[0.3, -0.2, 0.9]], dtype=torch.float64)
    lit = sh_shading(n, directional_sh(d, torch.tensor([[1.0, 0.5, 0.0]], dtype=torch.float64)))
    lambert = (n[0] @ torch.nn.functional.normalize(d, dim=-1)[0]).clamp_min(0)
    # the 3-band approximation of the clamped cosine: max error 0.094, mean 0.03 (closed-form kernel)
    assert (lit[0, :, 0] - lambert).abs().max() < 0.1
    assert (lit[0, :, 0] - lambert).abs().mean() < 0.04
    torch.testing.assert_close(lit[0, :, 1], 0.5 * lit[0, :, 0])
    assert (lit[0, :, 2] == 0).all()


def test_default_and_sampled_lighting_are_plausible():
    frontal = torch.tensor([[[0.0, 0.0, 1.0]]])
    assert 0.9 < sh_shading(frontal, DEFAULT_SH[None]).min() < 1.1
    a = sample_sh(64, torch.Generator().manual_seed(3))
    b = sample_sh(64, torch.Generator().manual_seed(3))
    assert a.shape == (64, 27) and torch.equal(a, b)
    shading = sh_shading(fibonacci_sphere(500, torch.float32)[None].expand(64, -1, -1), a)
    front = shading[:, fibonacci_sphere(500)[:, 2] > 0.5]
    assert front.min() > 0.2 and front.max() < 1.8
    tint = shading.mean(1)
    assert ((tint.amax(1) - tint.amin(1)) / tint.mean(1)).max() < 0.35  # slightly coloured, not saturated


def test_sh_bad_input():
    with pytest.raises(ValueError, match="normals"):
        sh_basis(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="sh"):
        sh_shading(torch.zeros(2, 5, 3), torch.zeros(2, 9))
    with pytest.raises(ValueError, match="albedo"):
        shade(torch.zeros(2, 4, 3), torch.zeros(2, 5, 3), torch.zeros(2, 27))
    with pytest.raises(ValueError, match="n"):
        sample_sh(0)


def test_sh_shading_gradcheck():
    g = torch.Generator().manual_seed(0)
    normals = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    sh = torch.randn(2, 27, generator=g, dtype=torch.float64, requires_grad=True)
    with one_thread():
        assert torch.autograd.gradcheck(sh_shading, (normals, sh))


# ---------------------------------------------------------------- normals
def test_vertex_normals_hand_example_and_sphere(device, dtype):
    v = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]], device=device, dtype=dtype)
    n = vertex_normals(v, torch.tensor([[0, 1, 2], [0, 1, 3]], device=device))
    # vertex 0 and 1 average the +z face (area 1/2) and the -y face (area 1/2)
    torch.testing.assert_close(n[0, 0], torch.tensor([0.0, -1.0, 1.0], device=device, dtype=dtype) / math.sqrt(2))
    torch.testing.assert_close(n[0, 2], torch.tensor([0.0, 0.0, 1.0], device=device, dtype=dtype))
    # a closed sphere grid (u around, v up): normals point outward along the radius
    rows, cols = 30, 40
    th = torch.linspace(0.2, math.pi - 0.2, rows, dtype=torch.float64)[:, None]
    ph = torch.linspace(0, 2 * math.pi, cols, dtype=torch.float64)[None]
    pts = torch.stack([torch.sin(th) * torch.sin(ph), -torch.cos(th).expand(rows, cols), torch.sin(th) * torch.cos(ph)], -1).reshape(1, -1, 3)
    n = vertex_normals(pts, grid_faces(rows, cols)).reshape(rows, cols, 3)[2:-2, 2:-2]
    cos = (n * pts.reshape(rows, cols, 3)[2:-2, 2:-2]).sum(-1)
    assert cos.min() > 0.999


def test_vertex_normals_face_the_camera_on_the_head():
    v, f = head_grid(17, 21)
    n = vertex_normals(v[None], f)[0]
    centre = (8 * 21 + 10)
    assert n[centre, 2] > 0.9  # counter-clockwise faces: the front points toward +z


# ----------------------------------------------------------------- render
@pytest.fixture(scope="module")
def head():
    v, f = head_grid(33, 41)
    return v, f


def test_render_smoke_shapes(head, device, dtype):
    v, f = head
    B, V = 2, v.shape[0]
    verts = v.to(device, dtype)[None].expand(B, -1, -1)
    pose = centered_pose((48, 40), B, dtype=dtype, device=device)
    lm = torch.tensor([0, 100, 500], device=device)
    out = render(verts, f.to(device), torch.full((B, V, 3), 0.5, device=device, dtype=dtype), DEFAULT_SH[None].to(device, dtype).expand(B, -1),
                 pose, landmarks_idx=lm, settings=RenderSettings(image_size=(48, 40)))
    assert out.image.shape == (B, 3, 48, 40) and out.mask.shape == (B, 1, 48, 40)
    assert out.depth.shape == (B, 1, 48, 40) and out.normals.shape == (B, 3, 48, 40)
    assert out.landmarks2d.shape == (B, 3, 2) and out.verts_screen.shape == (B, V, 3)
    assert out.image.min() >= 0 and out.image.max() <= 1 and out.image.device.type == device.type
    torch.testing.assert_close(out.landmarks2d, out.verts_screen[:, lm, :2])
    covered = out.mask[:, 0] > 0
    torch.testing.assert_close(out.normals.norm(dim=1)[covered], torch.ones_like(out.normals[:, 0][covered]))


def test_render_flat_quad_hand_example():
    # a 40 x 40 mm square facing the camera, albedo 0.5, uniform light 0.8, grey background
    v = torch.tensor([[[-20.0, -20, 0], [20, -20, 0], [-20, 20, 0], [20, 20, 0]]])
    f = torch.tensor([[0, 1, 3], [0, 3, 2]])
    pose = torch.tensor([[0.0, 0.0, 0.0, 8.0, 8.0, 0.1]])  # the square spans pixels 6 .. 9
    out = render(v, f, torch.full((1, 4, 3), 0.5), ambient_sh(torch.tensor([0.8])), pose,
                 settings=RenderSettings(image_size=16, background=0.25))
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[6:10, 6:10] = True
    assert torch.equal(out.mask[0, 0] > 0, inside)
    torch.testing.assert_close(out.image[0][:, inside], torch.full((3, 16), 0.4))
    torch.testing.assert_close(out.image[0][:, ~inside], torch.full((3, 240), 0.25))
    torch.testing.assert_close(out.normals[0][:, inside], torch.tensor([0.0, 0.0, 1.0])[:, None].expand(3, 16))


def test_render_yaw_moves_the_nose_right(head):
    v, f = head
    nose = int(v[:, 2].argmax())
    angles = torch.tensor([[0.0, 0.5, 0.0]])
    out = render(v[None], f, torch.full((1, v.shape[0], 3), 0.6), DEFAULT_SH[None], centered_pose(64, angles=angles), landmarks_idx=torch.tensor([nose]))
    assert out.landmarks2d[0, 0, 0] > 32 + 5  # toward the subject's left = image right


def test_render_gradients_flow_to_all_inputs(head):
    v, f = head
    B, V = 2, v.shape[0]
    verts = v[None].repeat(B, 1, 1).requires_grad_(True)
    albedo = torch.full((B, V, 3), 0.5, requires_grad=True)
    sh = (DEFAULT_SH[None].repeat(B, 1) * 0.8).requires_grad_(True)
    pose = centered_pose(32, B, angles=torch.tensor([[0.1, 0.2, 0.0], [0.0, -0.3, 0.1]])).requires_grad_(True)
    out = render(verts, f, albedo, sh, pose, landmarks_idx=torch.tensor([1, 2]), settings=RenderSettings(image_size=32))
    (out.image.mean() + out.depth.mean() * 1e-3 + out.landmarks2d.mean() * 1e-3 + out.normals.mean()).backward()
    for name, t in (("verts", verts), ("albedo", albedo), ("sh", sh), ("pose", pose)):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, name


def test_render_gradcheck_float64():
    v, f = head_grid(4, 5, dtype=torch.float64)
    B, V = 1, v.shape[0]
    albedo = torch.rand(B, V, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    sh = (DEFAULT_SH.double()[None] * 0.5).requires_grad_(True)
    pose = centered_pose(12, B, angles=torch.tensor([[0.1, 0.2, 0.05]]), dtype=torch.float64).requires_grad_(True)
    settings = RenderSettings(image_size=12, clamp=False)
    with one_thread():
        assert torch.autograd.gradcheck(lambda a, s, p: render(v[None], f, a, s, p, settings=settings).image, (albedo, sh, pose), atol=1e-6, fast_mode=True)


def test_render_bad_input(head):
    v, f = head
    V = v.shape[0]
    ok = dict(verts=v[None], faces=f, albedo=torch.zeros(1, V, 3), sh=DEFAULT_SH[None], pose=centered_pose(16))
    with pytest.raises(ValueError, match="albedo"):
        render(**{**ok, "albedo": torch.zeros(1, V, 4)})
    with pytest.raises(ValueError, match="sh"):
        render(**{**ok, "sh": torch.zeros(2, 27)})
    with pytest.raises(ValueError, match="pose"):
        render(**{**ok, "pose": torch.zeros(1, 7)})
    with pytest.raises(TypeError, match="pose"):
        render(**{**ok, "pose": "frontal"})
    with pytest.raises(ValueError, match="backend"):
        RenderSettings(backend="vulkan")
    with pytest.raises(ValueError, match="image_size"):
        RenderSettings(image_size=(0, 4))


def test_renderer_module_and_perspective_camera(head):
    v, f = head
    V = v.shape[0]
    pose = centered_pose(40, angles=torch.tensor([[0.0, 0.3, 0.0]]))
    albedo, sh = torch.full((1, V, 3), 0.6), DEFAULT_SH[None]
    r = Renderer(f, RenderSettings(image_size=40))
    torch.testing.assert_close(r(v[None], albedo, sh, pose).image, render(v[None], f, albedo, sh, pose, settings=r.settings).image)
    far = PerspectiveCamera.from_pose(pose, focal_px=1e6, principal_point=(20.0, 20.0))
    weak = WeakPerspectiveCamera.from_pose(pose)
    a, b = r(v[None], albedo, sh, far), r(v[None], albedo, sh, weak)
    assert ((a.mask - b.mask).abs().sum() / b.mask.sum()) < 0.01


@pytest.mark.skipif(not pytorch3d_available(), reason="PyTorch3D not installed")
def test_soft_render_has_silhouette_gradients(head):
    v, f = head
    V = v.shape[0]
    pose = centered_pose(32).requires_grad_(True)
    settings = RenderSettings(image_size=32, backend="pytorch3d", blur_radius=1.0, faces_per_pixel=4, sigma=0.3)
    out = render(v[None], f, torch.full((1, V, 3), 0.6), DEFAULT_SH[None], pose, settings=settings)
    hard = render(v[None], f, torch.full((1, V, 3), 0.6), DEFAULT_SH[None], pose.detach(), settings=RenderSettings(image_size=32))
    assert 0 < out.mask.min() or (out.mask < 1).any()
    edge = (out.mask > 0.01) & (out.mask < 0.99)
    assert edge.sum() > 0
    # away from the silhouette the soft image equals the hard one
    core = hard.mask > 0
    core &= torch.nn.functional.max_pool2d(1 - hard.mask, 5, 1, 2) == 0
    # (faces within the blur radius and nearer in depth blend in, so only on average)
    assert ((out.image - hard.image).abs() * core).sum() / (3 * core.sum()) < 5e-3
    out.mask.sum().backward()  # the silhouette alone moves with the translation
    assert pose.grad[0, 3:5].abs().sum() > 0


# ------------------------------------------------------- inverse rendering
def test_inverse_rendering_recovers_pose_and_light():
    torch.manual_seed(0)
    v, f = head_grid(25, 31)
    V = v.shape[0]
    lm = torch.arange(0, V, 37)
    albedo = torch.full((1, V, 3), 0.6)
    settings = RenderSettings(image_size=48)
    true_pose = centered_pose(48, angles=torch.tensor([[0.15, 0.35, 0.0]]))
    true_sh = sample_sh(1, torch.Generator().manual_seed(5))
    target = render(v[None], f, albedo, true_sh, true_pose, lm, settings)

    angles = torch.zeros(1, 2, requires_grad=True)  # pitch, yaw from a frontal start
    sh = DEFAULT_SH[None].clone().requires_grad_(True)
    opt = torch.optim.Adam([{"params": [angles], "lr": 0.03}, {"params": [sh], "lr": 0.03}])
    rest = true_pose[:, 2:]
    with one_thread():
        for _ in range(150):
            opt.zero_grad()
            out = render(v[None], f, albedo, sh, torch.cat([angles, rest], 1), lm, settings)
            both = out.mask * target.mask
            photo = ((out.image - target.image) ** 2 * both).sum() / both.sum()
            landmark = ((out.landmarks2d - target.landmarks2d) ** 2).mean()
            (photo + 1e-3 * landmark).backward()
            opt.step()
    err = (angles.detach() - true_pose[:, :2]).abs()
    assert err.max() < math.radians(1.0), err
    front = fibonacci_sphere(400, torch.float32)
    front = front[front[:, 2] > 0.3][None]
    shading_err = (sh_shading(front, sh.detach()) - sh_shading(front, true_sh)).abs().max()
    assert shading_err < 0.05, shading_err


# ------------------------------------------------------------------ bench
@pytest.mark.slow
def test_bench_render_reports_both_backends():
    from facelab.bench.render import bench_render

    out = bench_render(image_sizes=(24,), batch=2, repeats=1, resolution="quick", threads=1)
    row = out["24"]
    assert row["torch_images_per_s"] > 0
    if pytorch3d_available():
        assert row["pytorch3d_images_per_s"] > 0
        assert row["speedup"] == pytest.approx(row["torch_images_per_s"] / row["pytorch3d_images_per_s"], rel=0.1)
    assert out["meta"]["threads"] == 1 and out["meta"]["n_faces"] > 1000
