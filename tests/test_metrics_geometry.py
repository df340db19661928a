"""Tests of facelab.metrics.geometry: local curvature error, ring neighbourhoods, linear-span distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from facelab.metrics.geometry import LOCAL_DETAIL_LANDMARKS, linear_span_distance, local_curvature_error, ring_vertices
from facelab.morphable.grid import edges_from_faces, grid_faces


@pytest.fixture(scope="module")
def grid():
    """A 6 x 7 grid mesh with a bumpy height field, mm."""
    rows, cols = 6, 7
    faces = grid_faces(rows, cols)
    y, x = np.meshgrid(np.arange(rows, dtype=float), np.arange(cols, dtype=float), indexing="ij")
    z = np.sin(x) * np.cos(0.7 * y)
    verts = np.stack([x.ravel() * 10, y.ravel() * 10, z.ravel() * 3], axis=1)
    return verts, edges_from_faces(faces, rows * cols)


def _umbrella(verts: np.ndarray, edges: torch.Tensor) -> np.ndarray:
    """The umbrella Laplacian by an explicit loop (the independent reference)."""
    src, dst = edges.numpy()
    out = np.zeros_like(verts)
    for i in range(len(verts)):
        out[i] = verts[i] - verts[dst[src == i]].mean(0)
    return out


def test_ring_vertices_grow_by_one_edge_per_ring(grid):
    _, edges = grid
    assert ring_vertices([0], edges, 0).tolist() == [0]
    one = set(ring_vertices([0], edges, 1).tolist())
    src, dst = edges.numpy()
    assert one == {0} | set(dst[src == 0].tolist())
    assert set(ring_vertices([0], edges, 2).tolist()) > one
    with pytest.raises(ValueError, match="rings"):
        ring_vertices([0], edges, -1)


def test_curvature_error_matches_an_explicit_loop_and_ignores_pose(grid):
    verts, edges = grid
    rng = np.random.default_rng(0)
    noisy = verts + rng.normal(scale=0.5, size=verts.shape)
    scored = np.array([8, 9, 15, 16, 24])
    ref = np.linalg.norm(_umbrella(noisy, edges)[scored] - _umbrella(verts, edges)[scored], axis=1).mean()
    assert local_curvature_error(noisy, verts, edges, scored, align="none") == pytest.approx(ref, rel=1e-12)
    # a rigid motion of the prediction changes nothing (it is aligned first)
    motion = Rotation.from_euler("xyz", [20, -10, 35], degrees=True)
    moved = motion.apply(verts) + [5.0, -3.0, 40.0]
    assert local_curvature_error(moved, verts, edges, scored) == pytest.approx(0.0, abs=1e-9)
    assert local_curvature_error(motion.apply(noisy), verts, edges, scored) == pytest.approx(
        local_curvature_error(noisy, verts, edges, scored), rel=1e-9)


def test_curvature_error_batches_like_single_calls_and_takes_float32(grid):
    verts, edges = grid
    rng = np.random.default_rng(1)
    batch = verts[None] + rng.normal(scale=0.3, size=(3,) + verts.shape)
    out = local_curvature_error(batch, np.repeat(verts[None], 3, axis=0), edges, [10, 11])
    assert out.shape == (3,)
    for b in range(3):
        assert out[b] == pytest.approx(local_curvature_error(batch[b], verts, edges, [10, 11]))
    single = local_curvature_error(torch.tensor(batch[0], dtype=torch.float32), verts, edges, [10, 11])
    assert single == pytest.approx(out[0], rel=1e-4)


def test_curvature_error_bad_inputs_name_the_argument(grid):
    verts, edges = grid
    with pytest.raises(ValueError, match="vertices"):
        local_curvature_error(verts, verts, edges, [len(verts)])
    with pytest.raises(ValueError, match="gt"):
        local_curvature_error(verts, verts[:-1], edges, [0])
    with pytest.raises(ValueError, match="align_mask"):
        local_curvature_error(verts, verts, edges, [0], align_mask=np.ones(3, bool))


def test_span_distance_is_the_orthogonal_residual():
    rng = np.random.default_rng(2)
    n_verts, k = 20, 4
    mean = rng.normal(size=(n_verts, 3)) * 10
    basis, _ = np.linalg.qr(rng.normal(size=(n_verts * 3, k)))
    inside = mean + (basis @ rng.normal(size=k) * 5).reshape(n_verts, 3)
    assert linear_span_distance(inside, mean, basis, align="none") == pytest.approx(0.0, abs=1e-9)
    # add a component orthogonal to the span (and to rotations: checked against the projection)
    off = rng.normal(size=n_verts * 3)
    off -= basis @ (basis.T @ off)
    shape = inside + off.reshape(n_verts, 3) * 0.01
    residual = (np.eye(n_verts * 3) - basis @ basis.T) @ (shape - mean).ravel()
    expected = np.sqrt(np.mean(np.sum(residual.reshape(-1, 3) ** 2, axis=1)))
    assert linear_span_distance(shape, mean, basis, align="none") == pytest.approx(expected, rel=1e-9)
    # with alignment the pose is not counted: a rigidly moved shape scores the same
    moved = Rotation.from_euler("z", 30, degrees=True).apply(shape) + 7.0
    assert linear_span_distance(moved, mean, basis) == pytest.approx(linear_span_distance(shape, mean, basis), rel=1e-9)
    batch = linear_span_distance(np.stack([inside, shape]), mean, torch.tensor(basis).reshape(n_verts, 3, k))
    assert batch.shape == (2,) and batch[1] == pytest.approx(linear_span_distance(shape, mean, basis))
    with pytest.raises(ValueError, match="basis"):
        linear_span_distance(shape, mean, basis[:-1])
    with pytest.raises(ValueError, match="align"):
        linear_span_distance(shape, mean, basis, align="similarity")


def test_detail_landmarks_are_ibug_indices():
    ids = [i for group in LOCAL_DETAIL_LANDMARKS.values() for i in group]
    assert len(set(ids)) == len(ids) and all(0 <= i < 68 for i in ids)
