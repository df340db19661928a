"""facelab.metrics.surface against brute force over all triangles (independent algorithm)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from facelab.metrics.surface import (
    SurfaceIndex,
    closest_point_on_triangle,
    point_to_plane,
    point_to_surface,
)


def grid_mesh(rows=30, cols=32, bump=40.0, noise=1.0, seed=0):
    """A face-like height field on a regular grid, mm, CCW triangles seen from +z."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.linspace(-80, 80, cols), np.linspace(-100, 100, rows))
    z = bump * np.exp(-(u**2 + v**2) / 5000) + noise * rng.normal(size=u.shape)
    verts = np.stack([u, v, z], -1).reshape(-1, 3)
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return verts, np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


def _segment(p, a, b):
    ab = b - a
    t = 0.0 if ab @ ab == 0 else np.clip((p - a) @ ab / (ab @ ab), 0, 1)
    return a + t * ab


def _brute_closest(p, a, b, c):
    """Independent: project onto the plane if inside (barycentric), else best edge point."""
    n = np.cross(b - a, c - a)
    cands = [_segment(p, a, b), _segment(p, b, c), _segment(p, c, a)]
    if n @ n > 1e-18:
        q = p - (p - a) @ n / (n @ n) * n
        m = np.array([b - a, c - a]).T
        lam = np.linalg.lstsq(m, q - a, rcond=None)[0]
        if lam.min() >= 0 and lam.sum() <= 1:
            cands.append(q)
    d = [np.linalg.norm(x - p) for x in cands]
    return cands[int(np.argmin(d))], min(d)


def _brute_mesh(points, verts, faces):
    out = []
    for p in points:
        out.append(min(_brute_closest(p, *verts[f])[1] for f in faces))
    return np.array(out)


def test_smoke_shapes():
    verts, faces = grid_mesh(10, 10)
    d, closest, fidx = point_to_surface(verts[:7] + 1.0, verts, faces)
    assert d.shape == (7,) and closest.shape == (7, 3) and fidx.shape == (7,)
    assert d.dtype == np.float64 and fidx.dtype == np.int64


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_grid_mesh(seed):
    verts, faces = grid_mesh(9, 10, seed=seed)
    rng = np.random.default_rng(seed)
    near = verts[rng.choice(len(verts), 25)] + rng.normal(scale=4, size=(25, 3))
    far = rng.uniform(-150, 150, size=(8, 3))  # far away points stress the candidate bound
    pts = np.concatenate([near, far])
    d, closest, fidx = point_to_surface(pts, verts, faces)
    np.testing.assert_allclose(d, _brute_mesh(pts, verts, faces), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(closest - pts, axis=1), d, atol=1e-9)
    # the reported face really attains the distance
    np.testing.assert_allclose([_brute_closest(p, *verts[faces[f]])[1] for p, f in zip(pts, fidx)], d, atol=1e-9)


def test_matches_brute_force_on_triangle_soup():
    rng = np.random.default_rng(5)
    verts = rng.uniform(-10, 10, size=(60, 3))
    faces = rng.integers(0, 60, size=(40, 3))
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    pts = rng.uniform(-15, 15, size=(60, 3))
    d, _, _ = point_to_surface(pts, verts, faces)
    np.testing.assert_allclose(d, _brute_mesh(pts, verts, faces), atol=1e-9)


coord = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(coord, min_size=12, max_size=12))
def test_single_triangle_hypothesis(xs):
    p, a, b, c = np.array(xs).reshape(4, 1, 3)
    got = closest_point_on_triangle(p, a, b, c)[0]
    _, d_ref = _brute_closest(p[0], a[0], b[0], c[0])
    assert np.linalg.norm(got - p[0]) == pytest.approx(d_ref, abs=1e-7)


def test_degenerate_triangle_uses_edges():
    a, b, c = np.array([[0.0, 0, 0]]), np.array([[2.0, 0, 0]]), np.array([[1.0, 0, 0]])  # collinear
    got = closest_point_on_triangle(np.array([[1.5, 3.0, 0]]), a, b, c)
    np.testing.assert_allclose(got, [[1.5, 0, 0]], atol=1e-12)


def test_point_to_plane_hand_example_and_bound():
    verts = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    faces = np.array([[0, 1, 2]])
    pts = np.array([[0.2, 0.2, -2.0], [3.0, 0.0, 1.0]])
    np.testing.assert_allclose(point_to_plane(pts, verts, faces), [2.0, 1.0])
    np.testing.assert_allclose(point_to_surface(pts, verts, faces).distances, [2.0, np.sqrt(5.0)])
    mv, mf = grid_mesh(10, 10)
    q = mv + np.random.default_rng(0).normal(scale=3, size=mv.shape)
    assert np.all(point_to_plane(q, mv, mf) <= point_to_surface(q, mv, mf).distances + 1e-12)


def test_accepts_tensors(device, dtype):
    verts, faces = grid_mesh(8, 8)
    pts = verts + 0.5
    ref = point_to_surface(pts, verts, faces).distances
    got = point_to_surface(torch.tensor(pts, dtype=dtype, device=device), torch.tensor(verts, dtype=dtype, device=device),
                           torch.tensor(faces, device=device)).distances
    np.testing.assert_allclose(got, ref, atol=1e-4 if dtype == torch.float32 else 1e-12)


def test_index_reuse_equals_fresh_query():
    verts, faces = grid_mesh(8, 9)
    index = SurfaceIndex(verts, faces)
    pts = verts[:5] + [0.0, 0.0, 2.0]
    np.testing.assert_array_equal(index.query(pts).distances, point_to_surface(pts, verts, faces).distances)


@pytest.mark.parametrize(
    "points, faces, match",
    [
        (np.zeros((3, 2)), None, "points: expected shape"),
        (np.full((3, 3), np.nan), None, "points: contains NaN"),
        (np.zeros((0, 3)), None, "points: is empty"),
        (np.zeros((3, 3)), np.array([[0, 1, 99]]), r"faces: indices must lie in \[0, 3\)"),
        (np.zeros((3, 3)), np.array([[0.0, 1.0, 2.0]]), "faces: expected an integer"),
    ],
)
def test_bad_inputs(points, faces, match):
    verts = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    faces = np.array([[0, 1, 2]]) if faces is None else faces
    with pytest.raises((ValueError, TypeError), match=match):
        point_to_surface(points, verts, faces)
