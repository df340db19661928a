"""Barycentric resampling of morphable models (facelab.morphable.resample), against independent references:
trimesh's point-triangle closest points (brute force over every triangle), scipy's cKDTree, and a model
whose resampled form is known in closed form (the grid model itself, shuffled and moved)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from facelab.morphable import SynthFacesConfig, build_synthfaces
from facelab.morphable.resample import (
    RESAMPLED_META_KEY, apply_transfer, barycentric_transfer, mesh_transfers, resample_model, same_topology,
)

FIELDS = ("mean_shape", "shape_basis", "exp_basis", "mean_albedo", "albedo_basis", "shape_std", "exp_std", "albedo_std")
N_POINTS = 200
#: a similarity no test could pass by chance: 1.15x, a 3-axis rotation, a shift of centimetres
SCALE, EULER_DEG, SHIFT_MM = 1.15, (20.0, -35.0, 10.0), (12.0, -30.0, 45.0)


@pytest.fixture(scope="module")
def quick():
    return build_synthfaces(SynthFacesConfig(resolution="quick"))


@pytest.fixture(scope="module")
def fine():
    """Another topology over the same face: the 65 x 81 grid."""
    return build_synthfaces(SynthFacesConfig(resolution="default"))


def _brute_closest(verts: np.ndarray, faces: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """trimesh's closest point of every (point, triangle) pair, the nearest kept: ``(closest, distance)``."""
    tri = verts[faces]
    best = np.full(points.shape[0], np.inf)
    closest = np.zeros_like(points)
    for i, p in enumerate(points):
        c = trimesh.triangles.closest_point(tri, np.repeat(p[None], tri.shape[0], axis=0))
        d = np.linalg.norm(c - p, axis=1)
        j = int(np.argmin(d))
        best[i], closest[i] = d[j], c[j]
    return closest, best


def _moved(model, perm_seed: int = 0):
    """``model`` with its vertices shuffled and moved by ``x -> s R x + t`` (bases rotated, stds scaled by s):
    another topology whose resampling onto ``model`` is known exactly."""
    R = torch.from_numpy(Rotation.from_euler("xyz", EULER_DEG, degrees=True).as_matrix())
    t = torch.tensor(SHIFT_MM, dtype=torch.float64)
    perm = torch.from_numpy(np.random.default_rng(perm_seed).permutation(model.n_verts))
    inv = torch.argsort(perm)  # new index of each old vertex

    def basis(b):
        k = b.shape[1]
        per_vertex = b.double().reshape(-1, 3, k)[perm]
        return torch.einsum("ij,vjk->vik", R, per_vertex).reshape(-1, k)

    faces = inv[model.faces]
    return dataclasses.replace(
        model, mean_shape=SCALE * model.mean_shape.double()[perm] @ R.T + t,
        shape_basis=basis(model.shape_basis), shape_std=model.shape_std.double() * SCALE,
        exp_basis=basis(model.exp_basis), exp_std=model.exp_std.double() * SCALE,
        mean_albedo=model.mean_albedo[perm], albedo_basis=model.albedo_basis.reshape(-1, 3, model.n_albedo)[perm]
        .reshape(-1, model.n_albedo), faces=faces[torch.randperm(faces.shape[0], generator=torch.Generator().manual_seed(1))],
        landmarks=inv[model.landmarks], symmetry=inv[model.symmetry[perm]], face_mask=model.face_mask[perm],
        nose_tip=int(inv[model.nose_tip]), grid_shape=None, name="moved"), (R, t)


# ------------------------------------------------------------------ the transfer itself
def test_transfer_is_the_exact_closest_point(fine):
    """Points scattered around the mesh: the transfer's points are trimesh's closest points (brute force)."""
    verts, faces = fine.mean_shape.double().numpy(), fine.faces.numpy()
    rng = np.random.default_rng(0)
    points = verts[rng.choice(fine.n_verts, N_POINTS)] + rng.normal(0.0, 4.0, (N_POINTS, 3))
    points[:10] += [0.0, 0.0, 60.0]  # far in front: the search radius must still find the triangle
    idx, w = barycentric_transfer(torch.from_numpy(verts), fine.faces, torch.from_numpy(points))
    assert idx.dtype == torch.long and w.shape == (N_POINTS, 3)
    assert (w >= -1e-12).all() and torch.allclose(w.sum(1), torch.ones(N_POINTS, dtype=w.dtype))
    ours = apply_transfer(torch.from_numpy(verts), fine.faces, idx, w).numpy()
    closest, distance = _brute_closest(verts, faces, points)
    np.testing.assert_allclose(np.linalg.norm(ours - points, axis=1), distance, atol=1e-9)
    np.testing.assert_allclose(ours, closest, atol=1e-6)  # unique closest points: the same point


def test_linear_field_is_reproduced_exactly(fine):
    """Barycentric interpolation of an affine field f(x) = A x + b gives f at the closest point, for x, y, z alike."""
    rng = np.random.default_rng(1)
    A, b = rng.normal(size=(3, 4)), rng.normal(size=4)
    verts = fine.mean_shape.double()
    points = verts.numpy()[rng.choice(fine.n_verts, N_POINTS)] + rng.normal(0.0, 2.0, (N_POINTS, 3))
    idx, w = barycentric_transfer(verts, fine.faces, torch.from_numpy(points))
    field = verts @ torch.from_numpy(A) + torch.from_numpy(b)
    closest, _ = _brute_closest(verts.numpy(), fine.faces.numpy(), points)
    np.testing.assert_allclose(apply_transfer(field, fine.faces, idx, w).numpy(), closest @ A + b, atol=1e-6)
    np.testing.assert_allclose(apply_transfer(verts, fine.faces, idx, w).numpy(), closest, atol=1e-6)


def test_vertices_land_on_themselves(quick):
    """A mesh's own vertices: weight 1 on themselves, as cKDTree's nearest vertex says."""
    verts = quick.mean_shape.double()
    idx, w = barycentric_transfer(verts, quick.faces, verts)
    corner = quick.faces[idx, w.argmax(1)]
    _, nearest = cKDTree(verts.numpy()).query(verts.numpy())
    assert torch.equal(corner, torch.from_numpy(nearest)) and torch.equal(w.max(1).values, torch.ones(quick.n_verts, dtype=w.dtype))


# ------------------------------------------------------------------ models
def test_resampling_a_model_onto_itself_is_the_identity(quick):
    r = resample_model(quick, quick)
    for name in FIELDS:
        np.testing.assert_allclose(getattr(r, name).numpy(), getattr(quick, name).numpy(), atol=1e-6, err_msg=name)
    assert torch.equal(r.faces, quick.faces) and torch.equal(r.landmarks, quick.landmarks)
    assert torch.equal(r.symmetry, quick.symmetry) and torch.equal(r.face_mask, quick.face_mask)
    assert r.nose_tip == quick.nose_tip and r.grid_shape == quick.grid_shape and same_topology(r, quick)
    assert r.meta[RESAMPLED_META_KEY]["source_sha256"] == quick.content_sha256()


def test_shuffled_moved_model_resamples_to_the_grid_in_its_frame(quick):
    """The grid model shuffled (another topology) and moved by a similarity: resampled onto the grid it is the
    grid model again, moved, and keeps the meaning of its coefficients."""
    moved, (R, t) = _moved(quick)
    assert not same_topology(moved, quick)
    r = resample_model(moved, quick)
    expected = SCALE * quick.mean_shape.double() @ R.T + t
    np.testing.assert_allclose(r.mean_shape.double().numpy(), expected.numpy(), atol=1e-3)  # float32 of ~150 mm
    assert torch.equal(r.landmarks, quick.landmarks) and torch.equal(r.face_mask, quick.face_mask)
    assert r.nose_tip == quick.nose_tip and torch.equal(r.faces, quick.faces) and r.grid_shape == quick.grid_shape
    g = torch.Generator().manual_seed(2)
    a, e = torch.randn(3, quick.n_shape, generator=g) * quick.shape_std, torch.randn(3, quick.n_exp, generator=g) * quick.exp_std
    ours = r.shape((SCALE * a).float(), (SCALE * e).float()).double()
    truth = SCALE * quick.shape(a, e).double() @ R.T + t
    np.testing.assert_allclose(ours.numpy(), truth.numpy(), atol=2e-3)
    np.testing.assert_allclose(r.mean_albedo.numpy(), quick.mean_albedo.numpy(), atol=1e-6)


def test_resampled_shapes_are_the_interpolated_shapes(fine, quick):
    """Linear: shape(a, e) of the resampled model = the source's shape(a, e) carried by the transfer."""
    r = resample_model(fine, quick)
    to_grid, _, _ = mesh_transfers(fine, quick)
    g = torch.Generator().manual_seed(3)
    a, e = torch.randn(4, fine.n_shape, generator=g) * fine.shape_std, torch.randn(4, fine.n_exp, generator=g) * fine.exp_std
    np.testing.assert_allclose(r.shape(a, e).numpy(), to_grid(fine.to(dtype=torch.float64).shape(a.double(), e.double())).numpy(), atol=1e-3)
    np.testing.assert_allclose(r.albedo(torch.ones(1, fine.n_albedo)).numpy(),
                               to_grid(fine.to(dtype=torch.float64).albedo(torch.ones(1, fine.n_albedo).double())).numpy(), atol=1e-5)
    # every grid vertex lies on the source surface (trimesh's distance from it: zero)
    _, distance = _brute_closest(fine.mean_shape.double().numpy(), fine.faces.numpy(), r.mean_shape.double().numpy()[::7])
    assert distance.max() < 1e-3
    assert r.n_verts == quick.n_verts and r.meta[RESAMPLED_META_KEY]["source_n_verts"] == fine.n_verts


def test_round_trip_of_a_smooth_shape_is_small(quick, fine):
    """The quick face carried to the fine mesh and back; a smooth field on the grid carried to a model and back."""
    to_fine, back, _ = mesh_transfers(quick, fine)
    err = (back(to_fine(quick.mean_shape.double())) - quick.mean_shape.double()).norm(dim=1)
    assert err[quick.face_mask].max() < 0.3 and err.max() < 0.5 and err.mean() < 0.1  # mm, on a 150 mm face
    to_grid, to_model, _ = mesh_transfers(fine, quick)
    x = to_grid(fine.mean_shape.double())
    field = torch.stack([torch.sin(x[:, 0] / 30), torch.cos(x[:, 1] / 40), x[:, 2] / 50], dim=1)
    assert (to_grid(to_model(field)) - field).abs().max() < 0.02
    # the round trip is not the identity: a rough field (every other vertex flipped) does not come back
    rough = field * (1 - 2 * (torch.arange(quick.n_verts) % 2))[:, None]
    assert (to_grid(to_model(rough)) - rough).abs().max() > 0.1


# ------------------------------------------------------------------ errors
def test_errors_name_the_argument(quick):
    no_landmarks = dataclasses.replace(quick, landmarks=torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"model: needs its 68 iBUG landmark vertices .*load_morphable\(path, landmarks="):
        resample_model(no_landmarks, quick)
    with pytest.raises(ValueError, match=r"grid_mesh: needs its 68 iBUG"):
        resample_model(quick, no_landmarks)
    with pytest.raises(TypeError, match=r"grid_mesh: expected a MorphableModel"):
        resample_model(quick, "quick")
    with pytest.raises(ValueError, match=r"dst_verts: expected a non-empty \(N, 3\) array"):
        barycentric_transfer(quick.mean_shape, quick.faces, torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"src_faces: vertex indices must lie in \[0, 1353\)"):
        barycentric_transfer(quick.mean_shape, quick.faces + 5000, quick.mean_shape)
    idx, w = barycentric_transfer(quick.mean_shape, quick.faces, quick.mean_shape[:3])
    with pytest.raises(ValueError, match=r"values: 10 vertices, but faces index vertex 1352"):
        apply_transfer(torch.zeros(10, 3), quick.faces, idx, w)
