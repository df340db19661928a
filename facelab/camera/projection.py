"""Projection of model-frame vertices to screen space: weak perspective and perspective.

Conventions (book chapter ``book/03_rendering.ipynb``):

* **Model frame**: mm, x = the subject's left, y = up, z = toward the camera.  A
  camera looking along -z with up +y sees +x on the image's right.
* **Camera frame**: the model frame after rotation (and, for the perspective camera,
  translation); the camera sits at the origin looking along -z.
* **Screen space** ``verts_screen: (B, V, 3)``: x, y in pixels with the origin at the
  image's top-left corner, x right, y down; pixel (row i, col j) has its centre at
  ``(j + 0.5, i + 0.5)``; z is the depth in mm, larger = farther.
* **Pose 6-vector** (Gao et al. 2020): ``[pitch, yaw, roll, tx, ty, scale]`` in
  radians, pixels and px/mm; ``(tx, ty)`` is where the model origin lands on the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facelab.camera.rotation import euler_to_rotation, rotate_points, rotation_to_euler
from facelab.checks import check_positive, check_tensor

__all__ = [
    "weak_perspective", "perspective", "WeakPerspectiveCamera", "PerspectiveCamera",
    "centered_pose", "image_hw", "FACE_SIZE_MM", "FACE_FILL",
]

#: the extent of a face (ear to ear, chin to forehead), mm; used to frame a face
FACE_SIZE_MM = 150.0
#: the fraction of the image's shorter side that a framed face spans
FACE_FILL = 0.9


def image_hw(image_size) -> tuple[int, int]:
    """``(H, W)`` from an int (square) or an ``(H, W)`` pair; raises on anything else.

    >>> image_hw(64), image_hw((48, 64))
    ((64, 64), (48, 64))
    """
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        size = tuple(image_size)
    else:
        raise ValueError(f"image_size: expected an int or an (H, W) pair, got {image_size!r}")
    for s in size:
        check_positive(s, "image_size", integer=True)
    return int(size[0]), int(size[1])


def _to_screen(xy_cam: torch.Tensor, depth: torch.Tensor, centre: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # camera y is up, pixel y is down: flip y when moving to pixels
    x = centre[:, None, 0] + scale * xy_cam[..., 0]
    y = centre[:, None, 1] - scale * xy_cam[..., 1]
    return torch.stack([x, y, depth], dim=-1)


def weak_perspective(verts: torch.Tensor, rotation: torch.Tensor, scale: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Gao et al. eq. 3, ``s2D = f * Pr * R * s + t2D``, in pixel coordinates.

    Args:
        verts: ``(B, V, 3)`` float, mm, model frame.
        rotation: ``(B, 3, 3)`` float.
        scale: ``(B,)`` float, px/mm (``f`` in the paper).
        translation: ``(B, 2)`` float, px: where the model origin lands.

    Returns:
        ``(B, V, 3)`` float screen space: ``x = tx + f X``, ``y = ty - f Y`` (px) and
        depth ``z = -Z`` (mm, not scaled), with ``(X, Y, Z) = R v``.

    >>> v = torch.tensor([[[10.0, 20.0, 5.0]]])
    >>> weak_perspective(v, torch.eye(3)[None], torch.tensor([2.0]), torch.tensor([[32.0, 32.0]]))
    tensor([[[52., -8., -5.]]])
    """
    B = verts.shape[0] if verts.dim() == 3 else None
    check_tensor(verts, "verts", ("B", "V", 3))
    check_tensor(rotation, "rotation", (B, 3, 3))
    check_tensor(scale, "scale", (B,))
    check_tensor(translation, "translation", (B, 2))
    cam = rotate_points(verts, rotation)
    return _to_screen(cam[..., :2], -cam[..., 2], translation, scale[:, None])


def perspective(
    verts: torch.Tensor,
    rotation: torch.Tensor,
    translation_mm: torch.Tensor,
    focal_px: torch.Tensor,
    principal_point: torch.Tensor,
) -> torch.Tensor:
    """Pinhole projection of ``X_cam = R v + t`` seen by a camera at the origin looking along -z.

    Args:
        verts: ``(B, V, 3)`` float, mm, model frame.
        rotation: ``(B, 3, 3)`` float.
        translation_mm: ``(B, 3)`` float, mm (a face in front of the camera has ``t_z < 0``).
        focal_px: ``(B,)`` float, focal length in pixels.
        principal_point: ``(B, 2)`` float, px, image position of the optical axis.

    Returns:
        ``(B, V, 3)`` float screen space: ``x = cx + f X/d``, ``y = cy - f Y/d`` (px)
        and ``z = d = -Z_cam`` (mm, > 0).

    Raises:
        ValueError: a vertex lies at or behind the camera (``d <= 0``).

    >>> v = torch.tensor([[[10.0, 20.0, 0.0]]])
    >>> perspective(v, torch.eye(3)[None], torch.tensor([[0.0, 0.0, -500.0]]),
    ...             torch.tensor([1000.0]), torch.tensor([[32.0, 32.0]]))
    tensor([[[ 52., -8., 500.]]])
    """
    B = verts.shape[0] if verts.dim() == 3 else None
    check_tensor(verts, "verts", ("B", "V", 3))
    check_tensor(rotation, "rotation", (B, 3, 3))
    check_tensor(translation_mm, "translation_mm", (B, 3))
    check_tensor(focal_px, "focal_px", (B,))
    check_tensor(principal_point, "principal_point", (B, 2))
    cam = rotate_points(verts, rotation) + translation_mm[:, None, :]
    depth = -cam[..., 2]
    if not (depth > 0).all():
        raise ValueError("verts: some vertices lie at or behind the perspective camera (depth <= 0); move the face to t_z < 0")
    return _to_screen(cam[..., :2], depth, principal_point, focal_px[:, None] / depth)


@dataclass
class WeakPerspectiveCamera:
    """A batch of weak-perspective cameras (see :func:`weak_perspective`).

    Attributes:
        rotation: ``(B, 3, 3)`` float.
        scale: ``(B,)`` float, px/mm.
        translation: ``(B, 2)`` float, px.

    >>> cam = WeakPerspectiveCamera.from_pose(torch.tensor([[0.0, 0.0, 0.0, 32.0, 32.0, 0.4]]))
    >>> cam.project(torch.zeros(1, 1, 3))
    tensor([[[32., 32., -0.]]])
    """

    rotation: torch.Tensor
    scale: torch.Tensor
    translation: torch.Tensor

    @classmethod
    def from_pose(cls, pose: torch.Tensor) -> "WeakPerspectiveCamera":
        """From ``pose: (B, 6)`` = ``[pitch, yaw, roll, tx, ty, scale]`` (rad, px, px/mm)."""
        check_tensor(pose, "pose", ("B", 6))
        return cls(euler_to_rotation(pose[:, :3]), pose[:, 5], pose[:, 3:5])

    def to_pose(self) -> torch.Tensor:
        """``(B, 6)`` pose vector; inverse of :meth:`from_pose`."""
        return torch.cat([rotation_to_euler(self.rotation), self.translation, self.scale[:, None]], dim=-1)

    def project(self, verts: torch.Tensor) -> torch.Tensor:
        """``verts: (B, V, 3)`` mm model frame -> ``(B, V, 3)`` screen space (px, px, mm)."""
        return weak_perspective(verts, self.rotation, self.scale, self.translation)


@dataclass
class PerspectiveCamera:
    """A batch of pinhole cameras (see :func:`perspective`).

    Attributes:
        rotation: ``(B, 3, 3)`` float.
        translation: ``(B, 3)`` float, mm.
        focal: ``(B,)`` float, px.
        principal_point: ``(B, 2)`` float, px.

    >>> pose = torch.tensor([[0.0, 0.0, 0.0, 32.0, 32.0, 0.4]])
    >>> cam = PerspectiveCamera.from_pose(pose, focal_px=200.0, principal_point=(32.0, 32.0))
    >>> cam.translation  # 200 px / 0.4 px/mm = 500 mm away
    tensor([[   0.,    0., -500.]])
    """

    rotation: torch.Tensor
    translation: torch.Tensor
    focal: torch.Tensor
    principal_point: torch.Tensor

    @classmethod
    def from_pose(cls, pose: torch.Tensor, focal_px: float, principal_point: tuple[float, float]) -> "PerspectiveCamera":
        """The pinhole camera that agrees with a weak-perspective ``pose: (B, 6)`` at the model origin.

        The face is placed at distance ``focal_px / scale`` mm so that it has the
        same size, and shifted so that its origin lands on ``(tx, ty)``.  As
        ``focal_px`` grows, the projection tends to the weak-perspective one.
        """
        check_tensor(pose, "pose", ("B", 6))
        check_positive(focal_px, "focal_px")
        pp = torch.as_tensor(principal_point, dtype=pose.dtype, device=pose.device).expand(pose.shape[0], 2)
        dist = focal_px / pose[:, 5]
        tx = (pose[:, 3] - pp[:, 0]) / pose[:, 5]
        ty = -(pose[:, 4] - pp[:, 1]) / pose[:, 5]
        translation = torch.stack([tx, ty, -dist], dim=-1)
        focal = torch.full_like(pose[:, 5], float(focal_px))
        return cls(euler_to_rotation(pose[:, :3]), translation, focal, pp.clone())

    def project(self, verts: torch.Tensor) -> torch.Tensor:
        """``verts: (B, V, 3)`` mm model frame -> ``(B, V, 3)`` screen space (px, px, mm)."""
        return perspective(verts, self.rotation, self.translation, self.focal, self.principal_point)


def centered_pose(
    image_size,
    batch: int = 1,
    angles: torch.Tensor | None = None,
    face_size_mm: float = FACE_SIZE_MM,
    fill: float = FACE_FILL,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> torch.Tensor:
    """A pose that centres a ``face_size_mm`` face in an ``H x W`` image.

    Args:
        image_size: int or ``(H, W)``.
        batch: B.
        angles: ``(B, 3)`` float radians ``[pitch, yaw, roll]``, or None (frontal).
        face_size_mm: extent of the face, mm.
        fill: fraction of ``min(H, W)`` the face spans.

    Returns:
        ``(B, 6)`` float pose ``[pitch, yaw, roll, W/2, H/2, fill*min(H,W)/face_size_mm]``.

    >>> centered_pose(64)
    tensor([[ 0.0000,  0.0000,  0.0000, 32.0000, 32.0000,  0.3840]])
    """
    H, W = image_hw(image_size)
    check_positive(batch, "batch", integer=True)
    check_positive(face_size_mm, "face_size_mm")
    check_positive(fill, "fill")
    pose = torch.zeros(batch, 6, dtype=dtype, device=device)
    if angles is not None:
        check_tensor(angles, "angles", (batch, 3))
        pose[:, :3] = angles.to(dtype=dtype, device=pose.device)
    pose[:, 3] = W / 2
    pose[:, 4] = H / 2
    pose[:, 5] = fill * min(H, W) / face_size_mm
    return pose
