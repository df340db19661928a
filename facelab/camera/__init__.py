"""Cameras: Euler-angle rotations, weak-perspective and perspective projection.

See :mod:`facelab.camera.projection` for the model-frame, camera-frame and
screen-space conventions, and the book chapter ``book/03_rendering.ipynb``.
"""

from facelab.camera.projection import (
    FACE_FILL,
    FACE_SIZE_MM,
    PerspectiveCamera,
    WeakPerspectiveCamera,
    centered_pose,
    image_hw,
    perspective,
    weak_perspective,
)
from facelab.camera.rotation import euler_to_rotation, rotate_points, rotation_to_euler

__all__ = [
    "euler_to_rotation", "rotation_to_euler", "rotate_points", "weak_perspective", "perspective",
    "WeakPerspectiveCamera", "PerspectiveCamera", "centered_pose", "image_hw",
    "FACE_SIZE_MM", "FACE_FILL",
]
