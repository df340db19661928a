"""A procedural head-front test mesh for the renderer's tests and benchmark.

It stands in for a face model where none is needed (or none is built yet): a
regular (u, v) grid over an ellipsoidal head front with a nose bump, in the model
frame (mm, x = the subject's left, y up, z toward the camera), triangles
counter-clockwise seen from the front.  Book chapter ``book/03_rendering.ipynb``.
"""

from __future__ import annotations

import math

import torch

from facelab.checks import check_positive

__all__ = ["grid_faces", "head_grid", "GRID_ROWS", "GRID_COLS"]

#: the default grid, the size of SynthFaces' default resolution (65 x 81, 10 240 triangles)
GRID_ROWS = 65
GRID_COLS = 81
HEAD_HALF_WIDTH_MM = 62.0
HEAD_HALF_HEIGHT_MM = 75.0
HEAD_DEPTH_MM = 80.0
AZIMUTH_RANGE = math.radians(100.0)  # from the face centre to each side
NOSE_HEIGHT_MM = 22.0
NOSE_WIDTH_MM = 16.0


def grid_faces(rows: int, cols: int) -> torch.Tensor:
    """Triangles of a ``rows x cols`` vertex grid (row-major, v up, u toward +x).

    Returns:
        ``(2 (rows-1)(cols-1), 3)`` long, counter-clockwise seen from +z.

    >>> grid_faces(2, 2)
    tensor([[0, 1, 3],
            [0, 3, 2]])
    """
    check_positive(rows - 1, "rows - 1", integer=True)
    check_positive(cols - 1, "cols - 1", integer=True)
    r, c = torch.meshgrid(torch.arange(rows - 1), torch.arange(cols - 1), indexing="ij")
    a = (r * cols + c).reshape(-1)
    b, d, e = a + 1, a + cols + 1, a + cols  # right, up-right, up
    return torch.cat([torch.stack([a, b, d], 1), torch.stack([a, d, e], 1)], 0)


def head_grid(rows: int = GRID_ROWS, cols: int = GRID_COLS, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertices and faces of the procedural head front, centred on the origin.

    Returns:
        ``verts: (rows*cols, 3)`` float, mm; ``faces: (F, 3)`` long.

    >>> v, f = head_grid(9, 11)
    >>> v.shape, f.shape
    (torch.Size([99, 3]), torch.Size([160, 3]))
    """
    v = torch.linspace(-1.0, 1.0, rows, dtype=torch.float64)
    u = torch.linspace(-AZIMUTH_RANGE, AZIMUTH_RANGE, cols, dtype=torch.float64)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    ring = torch.sqrt((1 - 0.85 * vv**2).clamp_min(0.05))  # narrows toward the crown and the chin
    x = HEAD_HALF_WIDTH_MM * ring * torch.sin(uu)
    y = HEAD_HALF_HEIGHT_MM * vv
    z = HEAD_DEPTH_MM * ring * torch.cos(uu) - HEAD_DEPTH_MM * 0.6
    nose = NOSE_HEIGHT_MM * torch.exp(-((x / NOSE_WIDTH_MM) ** 2) - ((y + 5) / 25.0) ** 2)
    verts = torch.stack([x, y, z + nose], dim=-1).reshape(-1, 3)
    return verts.to(dtype), grid_faces(rows, cols)
