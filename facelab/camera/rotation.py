"""Euler angles <-> rotation matrices (pitch, yaw, roll), as in Gao et al. 2020 eq. 3.

Convention (book chapter ``book/03_rendering.ipynb``): the model frame has x = the
subject's left, y = up, z = toward the camera, in mm.  A pose's angles are
``[pitch, yaw, roll]`` in radians and the rotation is

    R = R_z(roll) @ R_y(yaw) @ R_x(pitch)

(pitch is applied first, roll last), each factor a right-handed rotation:

* positive **yaw** turns the face toward the subject's left (+x): the facing
  direction ``(0, 0, 1)`` becomes ``(sin yaw, 0, cos yaw)``;
* positive **pitch** tips the face down: ``(0, 0, 1)`` becomes ``(0, -sin, cos)``;
* positive **roll** tilts the top of the head toward the subject's right (-x), which
  a viewer sees as a counter-clockwise turn in the image.
"""

from __future__ import annotations

import torch

from facelab.checks import check_tensor

__all__ = ["euler_to_rotation", "rotation_to_euler", "rotate_points"]

#: below this |cos(yaw)| the decomposition treats the rotation as gimbal-locked
GIMBAL_EPS = 1e-6


def euler_to_rotation(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from Euler angles.

    Args:
        angles: ``(B, 3)`` float, radians, ``[pitch, yaw, roll]``.

    Returns:
        ``(B, 3, 3)`` float, ``R = R_z(roll) R_y(yaw) R_x(pitch)``; rotate column
        vectors with ``R @ v`` (row-stored points with ``v @ R.T``).

    >>> import math
    >>> R = euler_to_rotation(torch.tensor([[0.0, math.pi / 2, 0.0]]))
    >>> (R[0] @ torch.tensor([0.0, 0.0, 1.0])).round(decimals=4)  # faces the subject's left
    tensor([1., 0., 0.])
    """
    check_tensor(angles, "angles", ("B", 3))
    pitch, yaw, roll = angles.unbind(-1)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cr, sr = torch.cos(roll), torch.sin(roll)
    # The product R_z R_y R_x written out, so one stack builds the whole batch.
    rows = [
        cr * cy, cr * sy * sp - sr * cp, cr * sy * cp + sr * sp,
        sr * cy, sr * sy * sp + cr * cp, sr * sy * cp - cr * sp,
        -sy, cy * sp, cy * cp,
    ]
    return torch.stack(rows, dim=-1).reshape(angles.shape[0], 3, 3)


def rotation_to_euler(rotation: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`euler_to_rotation` (yaw in ``[-pi/2, pi/2]``).

    Args:
        rotation: ``(B, 3, 3)`` float, a proper rotation.

    Returns:
        ``(B, 3)`` float, radians, ``[pitch, yaw, roll]``.  At gimbal lock
        (``|yaw| = pi/2``) pitch and roll are not unique; one valid pair is returned.

    >>> a = torch.tensor([[0.1, -0.4, 0.25]])
    >>> torch.allclose(rotation_to_euler(euler_to_rotation(a)), a, atol=1e-6)
    True
    """
    check_tensor(rotation, "rotation", ("B", 3, 3))
    r = rotation
    yaw = torch.atan2(-r[:, 2, 0], torch.sqrt(r[:, 2, 1] ** 2 + r[:, 2, 2] ** 2))
    pitch = torch.atan2(r[:, 2, 1], r[:, 2, 2])
    roll = torch.atan2(r[:, 1, 0], r[:, 0, 0])
    # Gimbal lock: only pitch -/+ roll is determined; put it all in pitch.
    locked = torch.sqrt(r[:, 2, 1] ** 2 + r[:, 2, 2] ** 2) < GIMBAL_EPS
    sign = -torch.sign(r[:, 2, 0])
    pitch = torch.where(locked, torch.atan2(sign * r[:, 0, 1], r[:, 1, 1]), pitch)
    roll = torch.where(locked, torch.zeros_like(roll), roll)
    return torch.stack([pitch, yaw, roll], dim=-1)


def rotate_points(points: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """``R @ p`` for every point: ``points: (B, N, 3)``, ``rotation: (B, 3, 3)`` -> ``(B, N, 3)``.

    Written as three broadcast multiply-adds rather than a ``bmm``: with an inner
    dimension of 3 this is several times faster on CPU.

    >>> R = euler_to_rotation(torch.tensor([[0.0, 0.0, 0.5]]))
    >>> p = torch.randn(1, 4, 3)
    >>> torch.allclose(rotate_points(p, R), p @ R.transpose(1, 2), atol=1e-6)
    True
    """
    check_tensor(points, "points", ("B", None, 3))
    check_tensor(rotation, "rotation", (points.shape[0], 3, 3))
    cols = rotation[:, None]  # (B, 1, 3, 3): column j is cols[..., j]
    return points[..., 0:1] * cols[..., 0] + points[..., 1:2] * cols[..., 1] + points[..., 2:3] * cols[..., 2]
