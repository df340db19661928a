"""facelab.camera: rotations, weak-perspective and perspective projection."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from facelab.camera import (
    PerspectiveCamera,
    WeakPerspectiveCamera,
    centered_pose,
    euler_to_rotation,
    image_hw,
    perspective,
    rotation_to_euler,
    weak_perspective,
)


def random_angles(n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    lim = torch.tensor([math.pi, math.pi / 2 - 0.05, math.pi], dtype=dtype)
    return (torch.rand(n, 3, generator=g, dtype=dtype) * 2 - 1) * lim


# ------------------------------------------------------------------ rotations
def test_rotation_smoke_shape(device, dtype):
    R = euler_to_rotation(torch.zeros(4, 3, device=device, dtype=dtype))
    assert R.shape == (4, 3, 3) and R.device.type == device.type and R.dtype == dtype
    torch.testing.assert_close(R, torch.eye(3, device=device, dtype=dtype).expand(4, 3, 3))


def test_rotation_orthonormal():
    R = euler_to_rotation(random_angles(64))
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=R.dtype).expand_as(R))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(64, dtype=R.dtype))


def test_rotation_matches_scipy():
    a = random_angles(32, seed=1)
    # R = Rz(roll) Ry(yaw) Rx(pitch) is scipy's extrinsic "xyz" with [pitch, yaw, roll]
    want = Rotation.from_euler("xyz", a.numpy()).as_matrix()
    np.testing.assert_allclose(euler_to_rotation(a).numpy(), want, atol=1e-12)


def test_rotation_hand_examples():
    z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    y = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    t = 0.3
    yaw = euler_to_rotation(torch.tensor([[0.0, t, 0.0]], dtype=torch.float64))[0]
    pitch = euler_to_rotation(torch.tensor([[t, 0.0, 0.0]], dtype=torch.float64))[0]
    roll = euler_to_rotation(torch.tensor([[0.0, 0.0, t]], dtype=torch.float64))[0]
    s, c = math.sin(t), math.cos(t)
    # positive yaw turns the face toward the subject's left (+x)
    torch.testing.assert_close(yaw @ z, torch.tensor([s, 0.0, c], dtype=torch.float64))
    # positive pitch tips the face down
    torch.testing.assert_close(pitch @ z, torch.tensor([0.0, -s, c], dtype=torch.float64))
    # positive roll tilts the head top toward the subject's right (-x)
    torch.testing.assert_close(roll @ y, torch.tensor([-s, c, 0.0], dtype=torch.float64))


def test_euler_round_trip():
    a = random_angles(100, seed=2)
    torch.testing.assert_close(rotation_to_euler(euler_to_rotation(a)), a)


def test_euler_gimbal_lock_reconstructs_matrix():
    a = torch.tensor([[0.4, math.pi / 2, 0.1], [0.2, -math.pi / 2, -0.5]], dtype=torch.float64)
    R = euler_to_rotation(a)
    back = rotation_to_euler(R)
    torch.testing.assert_close(euler_to_rotation(back), R, atol=1e-7, rtol=0)


def test_rotation_bad_input():
    with pytest.raises(ValueError, match="angles"):
        euler_to_rotation(torch.zeros(3))
    with pytest.raises(TypeError, match="angles"):
        euler_to_rotation(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="rotation"):
        rotation_to_euler(torch.zeros(2, 3, 4))


def test_rotation_gradcheck():
    a = random_angles(3, seed=3).requires_grad_(True)
    assert torch.autograd.gradcheck(euler_to_rotation, (a,))


# ----------------------------------------------------------- weak perspective
def test_weak_perspective_hand_example(device, dtype):
    v = torch.tensor([[[10.0, 20.0, 5.0], [0.0, 0.0, 0.0]]], device=device, dtype=dtype)
    R = euler_to_rotation(torch.tensor([[0.0, math.pi / 2, 0.0]], device=device, dtype=dtype))
    out = weak_perspective(v, R, torch.tensor([2.0], device=device, dtype=dtype), torch.tensor([[32.0, 30.0]], device=device, dtype=dtype))
    # R v = (Z, Y, -X) = (5, 20, -10): x = 32 + 2*5, y = 30 - 2*20, depth = 10 mm
    want = torch.tensor([[[42.0, -10.0, 10.0], [32.0, 30.0, 0.0]]], device=device, dtype=dtype)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_weak_perspective_image_orientation():
    # a camera looking along -z with up +y sees +x on the right and +y at the top
    v = torch.tensor([[[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]]])
    out = WeakPerspectiveCamera.from_pose(torch.tensor([[0.0, 0.0, 0.0, 32.0, 32.0, 1.0]])).project(v)[0]
    assert out[0, 0] > 32 and out[1, 1] < 32  # right, up (smaller row)
    assert out[2, 2] < 0  # nearer to the camera than the origin: smaller depth


def test_weak_perspective_bad_input():
    v, R = torch.zeros(2, 5, 3), torch.eye(3).expand(2, 3, 3)
    with pytest.raises(ValueError, match="scale"):
        weak_perspective(v, R, torch.ones(3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="translation"):
        weak_perspective(v, R, torch.ones(2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="verts"):
        weak_perspective(torch.zeros(5, 3), R, torch.ones(2), torch.zeros(2, 2))


def test_weak_perspective_gradcheck():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    pose = torch.randn(2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, p: WeakPerspectiveCamera.from_pose(p).project(v), (v, pose))


def test_pose_round_trip():
    pose = torch.cat([random_angles(8, seed=4), torch.rand(8, 3, dtype=torch.float64) + 0.5], dim=1)
    torch.testing.assert_close(WeakPerspectiveCamera.from_pose(pose).to_pose(), pose)


# --------------------------------------------------------------- perspective
def test_perspective_hand_example(device, dtype):
    v = torch.tensor([[[10.0, 20.0, 100.0]]], device=device, dtype=dtype)
    out = perspective(v, torch.eye(3, device=device, dtype=dtype)[None], torch.tensor([[0.0, 0.0, -500.0]], device=device, dtype=dtype),
                      torch.tensor([800.0], device=device, dtype=dtype), torch.tensor([[32.0, 24.0]], device=device, dtype=dtype))
    # depth 400 mm: x = 32 + 800*10/400, y = 24 - 800*20/400
    torch.testing.assert_close(out, torch.tensor([[[52.0, -16.0, 400.0]]], device=device, dtype=dtype))


def test_perspective_tends_to_weak_perspective():
    g = torch.Generator().manual_seed(5)
    v = torch.randn(3, 50, 3, generator=g, dtype=torch.float64) * 60
    pose = torch.cat([random_angles(3, seed=6) * 0.3, torch.full((3, 2), 40.0, dtype=torch.float64), torch.full((3, 1), 0.4, dtype=torch.float64)], 1)
    weak = WeakPerspectiveCamera.from_pose(pose).project(v)
    persp = PerspectiveCamera.from_pose(pose, focal_px=4e6, principal_point=(32.0, 32.0)).project(v)
    torch.testing.assert_close(persp[..., :2], weak[..., :2], atol=1e-3, rtol=0)
    # the model origin lands on (tx, ty) exactly at any focal length
    near = PerspectiveCamera.from_pose(pose, focal_px=300.0, principal_point=(32.0, 32.0)).project(torch.zeros(3, 1, 3, dtype=torch.float64))
    torch.testing.assert_close(near[:, 0, :2], pose[:, 3:5])


def test_perspective_behind_camera_raises():
    with pytest.raises(ValueError, match="behind"):
        perspective(torch.zeros(1, 1, 3), torch.eye(3)[None], torch.tensor([[0.0, 0.0, 10.0]]), torch.tensor([100.0]), torch.zeros(1, 2))


def test_perspective_gradcheck():
    g = torch.Generator().manual_seed(7)
    v = torch.randn(2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.0, 0.0, -300.0], [5.0, 1.0, -400.0]], dtype=torch.float64, requires_grad=True)
    R = euler_to_rotation(random_angles(2, seed=8))
    f = torch.tensor([500.0, 600.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v, t: perspective(v, R, t, f, torch.zeros(2, 2, dtype=torch.float64)), (v, t))


# ------------------------------------------------------------- centred pose
def test_centered_pose_frames_the_face():
    H, W = 48, 64
    pose = centered_pose((H, W), batch=2)
    assert pose.shape == (2, 6)
    ends = torch.tensor([[[-75.0, 0.0, 0.0], [75.0, 0.0, 0.0]]]).expand(2, 2, 3)
    px = WeakPerspectiveCamera.from_pose(pose).project(ends)
    torch.testing.assert_close(px[:, :, 0].mean(1), torch.full((2,), W / 2))
    torch.testing.assert_close(px[:, 1, 0] - px[:, 0, 0], torch.full((2,), 0.9 * H))


def test_centered_pose_bad_input():
    with pytest.raises(ValueError, match="image_size"):
        centered_pose((64, 64, 3))
    with pytest.raises(ValueError, match="image_size"):
        image_hw(0)
    with pytest.raises(ValueError, match="angles"):
        centered_pose(64, batch=2, angles=torch.zeros(3, 3))
