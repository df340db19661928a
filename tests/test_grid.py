"""Grid topology and the exact mesh hierarchy (facelab.morphable.grid)."""

import pytest
import torch

from facelab.morphable.grid import (
    GRID_PRESETS, MeshHierarchy, edges_from_faces, grid_faces, grid_shape, grid_symmetry, hierarchy_for,
)


def _grid_xy(rows, cols, dtype=torch.float64):
    """Vertex positions of a flat grid: x grows with the column, y falls with the row."""
    i, j = torch.meshgrid(torch.arange(rows, dtype=dtype), torch.arange(cols, dtype=dtype), indexing="ij")
    return torch.stack([j, -i, torch.zeros_like(i)], -1).reshape(-1, 3)


def test_presets_vertex_counts():
    assert {k: v[0] * v[1] for k, v in GRID_PRESETS.items()} == {"quick": 1353, "default": 5265, "large": 20769}
    with pytest.raises(ValueError, match="resolution"):
        grid_shape("huge")


@pytest.mark.parametrize("rows,cols", [(2, 3), (5, 7), (9, 9)])
def test_faces_ccw_from_front_and_cover_the_grid(rows, cols):
    faces = grid_faces(rows, cols)
    assert faces.shape == (2 * (rows - 1) * (cols - 1), 3)
    v = _grid_xy(rows, cols)[faces]
    area2 = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)[:, 2]
    assert (area2 > 0).all()  # counter-clockwise seen from +z
    assert torch.allclose(area2.sum() / 2, torch.tensor(float((rows - 1) * (cols - 1)), dtype=torch.float64))


def test_triangulation_is_mirror_symmetric():
    rows, cols = 5, 9
    faces, sym = grid_faces(rows, cols), grid_symmetry(rows, cols)
    as_sets = {frozenset(f.tolist()) for f in faces}
    assert {frozenset(sym[f].tolist()) for f in faces} == as_sets


def test_symmetry_map_closed_form():
    sym = grid_symmetry(3, 5)
    assert sym.tolist()[:5] == [4, 3, 2, 1, 0]
    assert torch.equal(sym[sym], torch.arange(15))


def test_edges_match_brute_force():
    faces = grid_faces(4, 5)
    e = edges_from_faces(faces)
    brute = set()
    for f in faces.tolist():
        for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            brute |= {(a, b), (b, a)}
    assert set(map(tuple, e.T.tolist())) == brute
    # Euler: V - E + F = 1 for a disc
    assert 20 - e.shape[1] // 2 + faces.shape[0] == 1
    with pytest.raises(TypeError, match="faces"):
        edges_from_faces(faces.float())


@pytest.mark.parametrize("res,levels", [("quick", 3), ("default", 4)])
def test_hierarchy_vertex_counts(res, levels):
    h = hierarchy_for(res)
    assert h.n_levels == levels
    rows, cols = GRID_PRESETS[res]
    for lvl in h.levels:
        assert lvl.n_verts == lvl.grid_shape[0] * lvl.grid_shape[1] == lvl.parent_index.numel()
        assert lvl.faces.max() < lvl.n_verts and lvl.edge_index.max() < lvl.n_verts
    for fine, coarse in zip(h.levels, h.levels[1:]):
        assert coarse.grid_shape == ((fine.grid_shape[0] - 1) // 2 + 1, (fine.grid_shape[1] - 1) // 2 + 1)
        assert fine.n_verts / coarse.n_verts > 3.0
    assert h.levels[0].n_verts == rows * cols


def test_hierarchy_rejects_inexact_levels():
    with pytest.raises(ValueError, match="n_levels"):
        MeshHierarchy(33, 41, 4)  # 40 is not divisible by 16


def test_downsample_picks_even_rows_and_columns(dtype, device):
    h = MeshHierarchy(9, 9, 2)
    xy = _grid_xy(9, 9, dtype).to(device)[None]
    down = h.downsample(xy, 0)
    assert down.shape == (1, 25, 3)
    assert torch.equal(down[0], (2 * _grid_xy(5, 5, dtype)).to(device))


def test_up_down_identities(dtype, device):
    h = MeshHierarchy(17, 9, 3)
    g = torch.Generator().manual_seed(0)
    for level in range(h.n_levels):
        coarse = torch.randn(2, h.levels[level + 1].n_verts, 4, generator=g, dtype=dtype).to(device)
        assert torch.equal(h.downsample(h.upsample(coarse, level), level), coarse)
    # a bilinear field a + b i + c j + d ij is reproduced exactly by down -> up
    xy = _grid_xy(17, 9, torch.float64)
    i, j = -xy[:, 1], xy[:, 0]
    field = torch.stack([1 + 2 * i - 3 * j + 0.5 * i * j, i * j], -1)[None]
    assert torch.allclose(h.upsample(h.downsample(field, 0), 0), field, atol=1e-12)
    # a quadratic field is not (the test can fail)
    quad = (i**2)[None, :, None]
    assert not torch.allclose(h.upsample(h.downsample(quad, 0), 0), quad)


def test_upsample_matrix_matches_upsample():
    h = MeshHierarchy(9, 17, 2)
    x = torch.randn(1, h.levels[2].n_verts, 3, generator=torch.Generator().manual_seed(1))
    m = h.upsample_matrix(1)
    assert m.shape == (h.levels[1].n_verts, h.levels[2].n_verts)
    assert torch.allclose(m @ x[0], h.upsample(x, 1)[0], atol=1e-6)


def test_bad_inputs():
    h = MeshHierarchy(9, 9, 2)
    with pytest.raises(ValueError, match="x: expected shape"):
        h.downsample(torch.zeros(1, 80, 3), 0)
    with pytest.raises(ValueError, match="level"):
        h.upsample(torch.zeros(1, 25, 3), 2)
    with pytest.raises(ValueError, match="rows, cols"):
        grid_faces(1, 5)


def test_upsample_gradcheck():
    h = MeshHierarchy(5, 5, 1)
    x = torch.randn(1, 9, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: h.upsample(t, 0), (x,))
    assert torch.autograd.gradcheck(lambda t: h.downsample(t, 0), (torch.randn(1, 25, 2, dtype=torch.float64, requires_grad=True),))
