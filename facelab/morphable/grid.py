"""Regular (u, v) grid topology and the exact mesh hierarchy built on it.

The SynthFaces mesh is a ``rows x cols`` grid: row ``i`` runs from the top of the
forehead (i = 0) to below the chin, column ``j`` from the subject's right (x < 0)
to the subject's left (x > 0); vertex ``i * cols + j``. Because ``rows - 1`` and
``cols - 1`` are divisible by ``2 ** levels``, keeping every other row and column
gives an exact coarser grid (about 4x fewer vertices per level), which is what the
graph-convolution decoders of the papers down- and up-sample over.

Book chapter: ``book/02_morphable_models.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facelab.checks import check_choice, check_positive, check_tensor

#: Named grid resolutions ``(rows, cols)``: about 1k, 5k and 20k vertices.
GRID_PRESETS: dict[str, tuple[int, int]] = {
    "quick": (33, 41),
    "default": (65, 81),
    "large": (129, 161),
}
#: Default number of coarser levels in the mesh hierarchy of each preset.
DEFAULT_LEVELS: dict[str, int] = {"quick": 3, "default": 4, "large": 5}


def grid_shape(resolution: str) -> tuple[int, int]:
    """``(rows, cols)`` of a named resolution.

    >>> grid_shape("quick")
    (33, 41)
    """
    check_choice(resolution, "resolution", list(GRID_PRESETS))
    return GRID_PRESETS[resolution]


def _check_grid(rows: int, cols: int) -> None:
    check_positive(rows, "rows", integer=True)
    check_positive(cols, "cols", integer=True)
    if rows < 2 or cols < 2:
        raise ValueError(f"rows, cols: a grid needs at least 2x2 vertices, got {rows}x{cols}")


def grid_faces(rows: int, cols: int) -> torch.Tensor:
    """Triangles of a ``rows x cols`` grid, counter-clockwise seen from the front (+z).

    Each quad is split in two; the diagonal is mirrored about the middle column so
    the triangulation itself is left/right symmetric (when ``cols`` is odd).

    Returns:
        ``(2 * (rows-1) * (cols-1), 3)`` long vertex indices.

    >>> grid_faces(2, 3).tolist()
    [[0, 3, 4], [0, 4, 1], [1, 4, 2], [2, 4, 5]]
    """
    _check_grid(rows, cols)
    i, j = torch.meshgrid(torch.arange(rows - 1), torch.arange(cols - 1), indexing="ij")
    a = i * cols + j          # top-left (subject's right, above)
    b = a + 1                 # top-right
    c = a + cols              # bottom-left
    d = c + 1                 # bottom-right
    right_half = (2 * j + 1) < (cols - 1)
    # Right half: diagonal a-d; left half: diagonal b-c (the mirror image).
    t1 = torch.where(right_half[..., None], torch.stack([a, c, d], -1), torch.stack([a, c, b], -1))
    t2 = torch.where(right_half[..., None], torch.stack([a, d, b], -1), torch.stack([b, c, d], -1))
    return torch.stack([t1, t2], dim=2).reshape(-1, 3)


def grid_symmetry(rows: int, cols: int) -> torch.Tensor:
    """Mirror partner of each vertex (x -> -x): ``i*cols + j -> i*cols + (cols-1-j)``.

    Returns:
        ``(rows * cols,)`` long.

    >>> grid_symmetry(2, 3).tolist()
    [2, 1, 0, 5, 4, 3]
    """
    _check_grid(rows, cols)
    i, j = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return (i * cols + (cols - 1 - j)).reshape(-1)


def edges_from_faces(faces: torch.Tensor, n_verts: int | None = None) -> torch.Tensor:
    """Undirected mesh edges in both directions, sorted, for graph convolution.

    Args:
        faces: ``(F, 3)`` long.
        n_verts: number of vertices (default ``faces.max() + 1``).

    Returns:
        ``(2, E)`` long with each edge present as (a, b) and (b, a).

    >>> edges_from_faces(torch.tensor([[0, 1, 2]])).tolist()
    [[0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1]]
    """
    check_tensor(faces, "faces", (None, 3), dtype_kind="int")
    n = int(faces.max()) + 1 if n_verts is None else n_verts
    pairs = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    pairs = torch.cat([pairs, pairs.flip(1)])
    key = torch.unique(pairs[:, 0] * n + pairs[:, 1])
    return torch.stack([key // n, key % n])


@dataclass
class MeshLevel:
    """One level of a :class:`MeshHierarchy`.

    Attributes:
        grid_shape: ``(rows, cols)``.
        faces: ``(F, 3)`` long, counter-clockwise from the front.
        edge_index: ``(2, E)`` long, both directions.
        parent_index: ``(V_l,)`` long, the index of each vertex in the next finer level
            (the identity for level 0).
    """

    grid_shape: tuple[int, int]
    faces: torch.Tensor
    edge_index: torch.Tensor
    parent_index: torch.Tensor

    @property
    def n_verts(self) -> int:
        return self.grid_shape[0] * self.grid_shape[1]


class MeshHierarchy:
    """Grids of decreasing resolution linked by exact 2x decimation.

    ``levels[0]`` is the full mesh; ``levels[l + 1]`` keeps every other row and
    column of ``levels[l]``. :meth:`downsample` decimates, :meth:`upsample`
    interpolates bilinearly on the grid, so ``downsample(upsample(y)) == y`` and
    ``upsample(downsample(x)) == x`` for any field ``x`` that is bilinear on each
    coarse cell.

    >>> h = MeshHierarchy(33, 41, 3)
    >>> [lvl.n_verts for lvl in h.levels]
    [1353, 357, 99, 30]
    >>> h.upsample(h.downsample(torch.ones(1, 1353, 2), 0), 0).shape
    torch.Size([1, 1353, 2])
    """

    def __init__(self, rows: int, cols: int, n_levels: int) -> None:
        _check_grid(rows, cols)
        if not isinstance(n_levels, int) or n_levels < 0:
            raise ValueError(f"n_levels: expected a non-negative int, got {n_levels!r}")
        step = 2 ** n_levels
        if (rows - 1) % step or (cols - 1) % step:
            raise ValueError(
                f"n_levels: a {rows}x{cols} grid cannot be halved {n_levels} times exactly; "
                f"rows-1 and cols-1 must be divisible by {step}")
        self.levels: list[MeshLevel] = []
        r, c = rows, cols
        for level in range(n_levels + 1):
            faces = grid_faces(r, c)
            if level == 0:
                parent = torch.arange(r * c)
            else:
                fine_cols = 2 * (c - 1) + 1
                i, j = torch.meshgrid(torch.arange(r), torch.arange(c), indexing="ij")
                parent = (2 * i * fine_cols + 2 * j).reshape(-1)
            self.levels.append(MeshLevel((r, c), faces, edges_from_faces(faces, r * c), parent))
            r, c = (r - 1) // 2 + 1, (c - 1) // 2 + 1

    @property
    def n_levels(self) -> int:
        """Number of coarser levels (``len(levels) - 1``)."""
        return len(self.levels) - 1

    def _check_level(self, level: int) -> None:
        if not isinstance(level, int) or not 0 <= level < self.n_levels:
            raise ValueError(f"level: expected an int in [0, {self.n_levels}), got {level!r}")

    def downsample(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """Decimate a per-vertex field from ``level`` to ``level + 1``.

        Args:
            x: ``(B, V_level, C)`` float.
            level: the finer level, in ``[0, n_levels)``.

        Returns:
            ``(B, V_{level+1}, C)``.

        >>> h = MeshHierarchy(5, 5, 2)
        >>> h.downsample(torch.arange(25.).reshape(1, 25, 1), 0)[0, :, 0].tolist()
        [0.0, 2.0, 4.0, 10.0, 12.0, 14.0, 20.0, 22.0, 24.0]
        """
        self._check_level(level)
        check_tensor(x, "x", ("B", self.levels[level].n_verts, "C"))
        return x[:, self.levels[level + 1].parent_index.to(x.device)]

    def upsample(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """Bilinearly interpolate a field from ``level + 1`` up to ``level``.

        Args:
            x: ``(B, V_{level+1}, C)`` float.
            level: the finer (target) level, in ``[0, n_levels)``.

        Returns:
            ``(B, V_level, C)``; coarse vertices keep their values, the others are
            averages of their 2 or 4 coarse neighbours.

        >>> h = MeshHierarchy(3, 3, 1)
        >>> h.upsample(torch.tensor([[[0.], [2.], [4.], [6.]]]), 0)[0, :, 0].tolist()
        [0.0, 1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 5.0, 6.0]
        """
        self._check_level(level)
        r, c = self.levels[level + 1].grid_shape
        check_tensor(x, "x", ("B", r * c, "C"))
        g = x.reshape(x.shape[0], r, c, x.shape[2])
        # Interpolate along columns, then rows; both are exact for bilinear fields.
        mid_c = 0.5 * (g[:, :, :-1] + g[:, :, 1:])
        row = torch.stack([g[:, :, :-1], mid_c], dim=3).reshape(x.shape[0], r, 2 * (c - 1), x.shape[2])
        row = torch.cat([row, g[:, :, -1:]], dim=2)
        mid_r = 0.5 * (row[:, :-1] + row[:, 1:])
        full = torch.stack([row[:, :-1], mid_r], dim=2).reshape(x.shape[0], 2 * (r - 1), row.shape[2], x.shape[2])
        full = torch.cat([full, row[:, -1:]], dim=1)
        return full.reshape(x.shape[0], -1, x.shape[2])

    def upsample_matrix(self, level: int) -> torch.Tensor:
        """The sparse ``(V_level, V_{level+1})`` matrix of :meth:`upsample` (for GCN layers).

        >>> MeshHierarchy(3, 3, 1).upsample_matrix(0).to_dense().sum(1).tolist()
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
        """
        self._check_level(level)
        r, c = self.levels[level].grid_shape
        i, j = torch.meshgrid(torch.arange(r), torch.arange(c), indexing="ij")
        i, j = i.reshape(-1), j.reshape(-1)
        coarse_cols = self.levels[level + 1].grid_shape[1]
        rows, cols, vals = [], [], []
        # Each fine vertex averages coarse rows i//2, (i+1)//2 and columns j//2, (j+1)//2;
        # for even indices the two coincide and coalesce() sums the halves back to 1.
        for ci in (i // 2, (i + 1) // 2):
            for cj in (j // 2, (j + 1) // 2):
                rows.append(i * c + j)
                cols.append(ci * coarse_cols + cj)
                vals.append(torch.full((i.numel(),), 0.25))
        idx = torch.stack([torch.cat(rows), torch.cat(cols)])
        shape = (r * c, self.levels[level + 1].n_verts)
        with torch.sparse.check_sparse_tensor_invariants(enable=True):
            return torch.sparse_coo_tensor(idx, torch.cat(vals), shape).coalesce()

    def to(self, device) -> "MeshHierarchy":
        """Move every index tensor to ``device`` (in place); returns ``self``."""
        for lvl in self.levels:
            lvl.faces, lvl.edge_index, lvl.parent_index = (
                lvl.faces.to(device), lvl.edge_index.to(device), lvl.parent_index.to(device))
        return self


def hierarchy_for(resolution: str, n_levels: int | None = None) -> MeshHierarchy:
    """The :class:`MeshHierarchy` of a named resolution (default levels per preset).

    >>> hierarchy_for("default").levels[-1].grid_shape
    (5, 6)
    """
    rows, cols = grid_shape(resolution)
    return MeshHierarchy(rows, cols, DEFAULT_LEVELS[resolution] if n_levels is None else n_levels)
