"""The 68 iBUG landmarks on the SynthFaces grid.

Landmarks are vertex indices. Each right-side or mid-line landmark has a target
position ``(s, y)`` in the template's frontal coordinates (``s`` is arc length
around the head at the front, mm, negative on the subject's right; ``y`` is
height, mm); it is snapped to the nearest grid vertex. Left-side landmarks are
the mirror partners of their right-side twins through the grid's symmetry map,
so the annotation is exactly symmetric.

iBUG order: 0-16 jaw contour from the subject's right ear to the left one, 17-21
right brow (outer to inner), 22-26 left brow (inner to outer), 27-30 nose bridge
(top to tip), 31-35 nostril base (right to left), 36-41 right eye (outer corner,
two upper-lid points, inner corner, two lower-lid points), 42-47 left eye (inner
corner first), 48-59 outer lip contour (right corner, upper lip, left corner,
lower lip), 60-67 inner lip contour.

Book chapter: ``book/02_morphable_models.ipynb``.
"""

from __future__ import annotations

import torch

from facelab.checks import check_tensor

N_LANDMARKS = 68

#: Landmark index ranges by facial part.
LANDMARK_GROUPS: dict[str, range] = {
    "jaw": range(0, 17), "right_brow": range(17, 22), "left_brow": range(22, 27),
    "nose_bridge": range(27, 31), "nostrils": range(31, 36),
    "right_eye": range(36, 42), "left_eye": range(42, 48),
    "outer_lips": range(48, 60), "inner_lips": range(60, 68),
}

#: ``IBUG_MIRROR[k]`` is the landmark that ``k`` becomes when the face is mirrored (x -> -x).
IBUG_MIRROR: tuple[int, ...] = (
    *range(16, -1, -1),                       # jaw
    26, 25, 24, 23, 22, 21, 20, 19, 18, 17,   # brows
    27, 28, 29, 30,                           # bridge
    35, 34, 33, 32, 31,                       # nostrils
    45, 44, 43, 42, 47, 46,                   # right eye -> left eye
    39, 38, 37, 36, 41, 40,                   # left eye -> right eye
    54, 53, 52, 51, 50, 49, 48,               # upper outer lip
    59, 58, 57, 56, 55,                       # lower outer lip
    64, 63, 62, 61, 60,                       # upper inner lip
    67, 66, 65,                               # lower inner lip
)

#: The 7 landmarks of NoW-style rigid alignment: eye corners, nose tip, mouth corners.
SEVEN_LANDMARKS: tuple[int, ...] = (36, 39, 42, 45, 30, 48, 54)

#: Landmarks that lie on the mid-line (their own mirror partner).
MIDLINE_LANDMARKS: tuple[int, ...] = tuple(k for k in range(N_LANDMARKS) if IBUG_MIRROR[k] == k)


#: the vertex index that marks an iBUG point a model does not map (e.g. eos's jaw contour)
UNMAPPED = -1


def ibug_point_list(indices) -> str:
    """The 1-based iBUG numbers of 0-based landmark ``indices``, runs collapsed, for messages.

    >>> ibug_point_list([0, 1, 2, 16, 60, 64])
    '1-3, 17, 61, 65'
    """
    nums = sorted({int(i) + 1 for i in indices})
    runs: list[list[int]] = []
    for n in nums:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def right_side_landmarks() -> tuple[int, ...]:
    """Landmarks that are placed directly: the subject's right side and the mid-line.

    The remaining (left-side) landmarks are mirror images of these.

    >>> len(right_side_landmarks())
    39
    """
    return tuple(k for k in range(N_LANDMARKS) if k == IBUG_MIRROR[k] or _is_right(k))


def _is_right(k: int) -> bool:
    right = {*range(0, 8), *range(17, 22), 31, 32, *range(36, 42), 48, 49, 50, 58, 59, 60, 61, 67}
    return k in right


def snap_to_grid(
    targets: dict[int, tuple[float, float]],
    s_cols: torch.Tensor,
    y_rows: torch.Tensor,
    symmetry: torch.Tensor,
) -> torch.Tensor:
    """Snap right-side/mid-line landmark targets to grid vertices and mirror them.

    Args:
        targets: ``{landmark: (s, y)}`` in mm for every index of
            :func:`right_side_landmarks`; mid-line targets must have ``s == 0``.
        s_cols: ``(cols,)`` float, frontal arc coordinate of each grid column, mm.
        y_rows: ``(rows,)`` float, height of each grid row, mm.
        symmetry: ``(rows * cols,)`` long, the grid's mirror map.

    Returns:
        ``(68,)`` long vertex indices.

    >>> from facelab.morphable.grid import grid_symmetry
    >>> s, y = torch.linspace(-40, 40, 9), torch.linspace(40, -40, 9)
    >>> tg = {k: (-30.0 if k not in MIDLINE_LANDMARKS else 0.0, 0.0) for k in right_side_landmarks()}
    >>> lm = snap_to_grid(tg, s, y, grid_symmetry(9, 9))
    >>> int(lm[36]), int(lm[45]), int(lm[30])
    (37, 43, 40)
    """
    check_tensor(s_cols, "s_cols", ("C",))
    check_tensor(y_rows, "y_rows", ("R",))
    cols = s_cols.shape[0]
    check_tensor(symmetry, "symmetry", (y_rows.shape[0] * cols,), dtype_kind="int")
    missing = [k for k in right_side_landmarks() if k not in targets]
    if missing:
        raise ValueError(f"targets: missing landmarks {missing}")
    out = torch.full((N_LANDMARKS,), -1, dtype=torch.long)
    for k in right_side_landmarks():
        s, y = targets[k]
        if k in MIDLINE_LANDMARKS:
            if s != 0:
                raise ValueError(f"targets: mid-line landmark {k} must have s == 0, got {s}")
            j = (cols - 1) // 2
        else:
            j = int(torch.argmin((s_cols - s).abs()))
        i = int(torch.argmin((y_rows - y).abs()))
        out[k] = i * cols + j
    for k in range(N_LANDMARKS):
        if out[k] < 0:
            out[k] = symmetry[out[IBUG_MIRROR[k]]]
    return out
