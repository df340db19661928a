"""Barycentric resampling of a morphable model onto another mesh (the SynthFaces grid), and back.

Gao et al.'s graph decoders run on the SynthFaces *grid* mesh: its hierarchy is exact 2x
decimation with bilinear upsampling (:mod:`facelab.morphable.grid`), the step-2 CNN albedo
decoder reads the grid as its UV map, and the grid's mirror map is exact. A model with another
topology (BFM, SFM, FLAME) therefore enters the decoders by being *resampled* onto the grid:

1. align the grid mesh's mean to the model's mean with the least-squares similarity (Umeyama)
   of their 68 iBUG landmarks (the only correspondence two unrelated meshes share);
2. project each aligned grid vertex onto the model's mean surface (the exact closest point)
   and store its triangle and barycentric weights (:func:`barycentric_transfer`);
3. interpolate every per-vertex quantity with those weights (:func:`apply_transfer`): the mean
   shape, each column of the identity, expression and albedo bases, the mean albedo and the
   face mask. The map is linear, so ``resampled.shape(a, e) == T(model.shape(a, e))`` for any
   coefficients: labelled coefficients of the original model (300W-LP's) keep their meaning.

The reverse transfer (:func:`mesh_transfers`) projects the model's vertices onto the resampled
grid surface, so a per-vertex result on the grid (a decoded shape) maps back to the model's
topology. Why not the alternative, a mesh hierarchy built for the arbitrary mesh by quadric
decimation (as COMA does): it would keep the model's vertices but lose the grid's UV map (the
CNN albedo decoder), its exact mirror map (the albedo symmetry loss) and the exact
down/up-sampling, and each new model would need its own hierarchy and decoder sizes; the
resampling keeps Gao's network unchanged and costs one interpolation error, measured by the
round trip (the SynthFaces face from the quick grid to the 65 x 81 one and back: 0.04 mm on
average, 0.34 mm at most).

Resampled bases are the linear images of the original orthonormal bases, so their columns are
only nearly orthonormal (exactly so when the transfer is a permutation);
:meth:`~facelab.morphable.model.MorphableModel.project_shape` on the result is then a projection
onto a nearly orthonormal basis, not the least-squares fit.

Book chapter: ``book/02_morphable_models.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facelab.checks import check_tensor
from facelab.morphable.model import MorphableModel

__all__ = ["Transfer", "barycentric_transfer", "apply_transfer", "similarity_to", "mesh_transfers",
           "resample_model", "same_topology", "RESAMPLED_META_KEY"]

N_LANDMARKS = 68  # iBUG points: the correspondence the alignment uses
MIN_ALIGN_LANDMARKS = 4  # common landmarks a similarity (7 dof) is fitted to; 3 fix it, a fourth checks it
SEED_TRIANGLES = 8  # nearest-centroid triangles that give each point's first distance bound
POINT_BLOCK = 256  # points searched at once: a far point's candidates can be most triangles, so memory is bounded per block
PAIR_CHUNK = 200_000  # (point, triangle) pairs evaluated at once
RADIUS_SLACK = 1e-9  # relative + absolute slack on the candidate radius (round-off)
DEGENERATE_REL = 1e-12  # |ab x ac|^2 below this fraction of |ab|^2 |ac|^2: a sliver triangle
FACE_MASK_THRESHOLD = 0.5  # an interpolated face-mask value at or above this is inside the face
RESAMPLED_META_KEY = "resampled"  # the resampled model's meta entry describing its source


@dataclass
class Transfer:
    """Where each vertex of one mesh lies on another mesh's surface.

    Attributes:
        faces: ``(F, 3)`` long, the triangles of the sampled mesh.
        face_index: ``(N,)`` long, the triangle each target point lies on.
        weights: ``(N, 3)`` float64 barycentric weights (each row >= 0, sums to 1).
        distance: ``(N,)`` float64, mm: how far each target point was from the surface.
    """

    faces: torch.Tensor
    face_index: torch.Tensor
    weights: torch.Tensor
    distance: torch.Tensor

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        """``(..., V, C)`` per-vertex values of the sampled mesh -> ``(..., N, C)`` (:func:`apply_transfer`)."""
        return apply_transfer(values, self.faces, self.face_index, self.weights)


def _as_array(x, name: str, cols: int | None = None, integer: bool = False) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 2 or (cols is not None and a.shape[1] != cols) or a.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty (N, {cols}) array, got shape {tuple(a.shape)}")
    if integer:
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name}: expected integer vertex indices, got {a.dtype}")
        return a.astype(np.int64)
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: holds non-finite values")
    return a


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.einsum("...i,...i->...", x, y)


def _segment_weight(p, a, b) -> np.ndarray:
    """Parameter ``t`` in [0, 1] of the closest point ``a + t (b - a)`` on segment ``ab``."""
    ab = b - a
    length2 = _dot(ab, ab)
    return np.clip(_dot(p - a, ab) / np.where(length2 > 0, length2, 1.0), 0.0, 1.0)


def _closest_barycentric(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric weights ``(M, 3)`` of the closest point to ``p`` on triangle ``abc`` (all ``(M, 3)``).

    Ericson's Voronoi-region test ("Real-Time Collision Detection", 5.1.5), returning weights
    instead of the point; a sliver triangle falls back to the nearest of its edges.
    """
    ab, ac, ap, bp, cp = b - a, c - a, p - a, p - b, p - c
    d1, d2, d3, d4, d5, d6 = _dot(ab, ap), _dot(ac, ap), _dot(ab, bp), _dot(ac, bp), _dot(ab, cp), _dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2

    def ratio(num, den):
        return num / np.where(den != 0, den, 1.0)

    def w(u, v, x):
        return np.stack(np.broadcast_arrays(u, v, x), axis=-1).astype(np.float64)

    denom = va + vb + vc
    v_in, w_in = ratio(vb, denom), ratio(vc, denom)
    out = w(1 - v_in - w_in, v_in, w_in)  # interior
    t_ab, t_ac = ratio(d1, d1 - d3), ratio(d2, d2 - d6)
    t_bc = ratio(d4 - d3, (d4 - d3) + (d5 - d6))
    zero, one = np.zeros_like(d1), np.ones_like(d1)
    # regions in reverse order of Ericson's precedence, so that the first that holds wins
    regions = [
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), w(zero, 1 - t_bc, t_bc)),   # edge BC
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), w(1 - t_ac, zero, t_ac)),             # edge AC
        ((d6 >= 0) & (d5 <= d6), w(zero, zero, one)),                             # vertex C
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), w(1 - t_ab, t_ab, zero)),             # edge AB
        ((d3 >= 0) & (d4 <= d3), w(zero, one, zero)),                             # vertex B
        ((d1 <= 0) & (d2 <= 0), w(one, zero, zero)),                              # vertex A
    ]
    for cond, weights in regions:
        out = np.where(cond[:, None], weights, out)
    degenerate = denom <= DEGENERATE_REL * _dot(ab, ab) * _dot(ac, ac)
    if np.any(degenerate):
        idx = np.flatnonzero(degenerate)
        pp, aa, bb, cc = p[idx], a[idx], b[idx], c[idx]
        cands = []
        for (s, e, i, j) in ((aa, bb, 0, 1), (bb, cc, 1, 2), (cc, aa, 2, 0)):
            t = _segment_weight(pp, s, e)
            wt = np.zeros((idx.size, 3))
            wt[:, i], wt[:, j] = 1 - t, t
            cands.append(wt)
        cands = np.stack(cands, axis=1)  # (M', 3 edges, 3)
        points = np.einsum("mek,mkd->med", cands, np.stack([aa, bb, cc], axis=1))
        best = np.argmin(np.sum((points - pp[:, None]) ** 2, axis=2), axis=1)
        out[idx] = cands[np.arange(idx.size), best]
    return out


def barycentric_transfer(src_verts, src_faces, dst_verts) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact closest point on the mesh ``(src_verts, src_faces)`` of each point of ``dst_verts``.

    Candidate triangles come from a KD-tree over triangle centroids with a radius that cannot
    miss the closest one: the distance to the nearest-centroid triangles bounds it from above,
    and a triangle whose centroid is farther than that bound plus the largest
    centroid-to-vertex radius cannot be closer. Ties go to the lowest triangle index.

    Args:
        src_verts: ``(V, 3)`` float, mm; src_faces: ``(F, 3)`` int vertex indices.
        dst_verts: ``(N, 3)`` float, mm, in the same frame.

    Returns:
        ``face_index (N,)`` long and ``weights (N, 3)`` float64: the closest point of
        ``dst_verts[i]`` is ``weights[i] @ src_verts[src_faces[face_index[i]]]``.

    >>> v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]); f = torch.tensor([[0, 1, 2]])
    >>> idx, w = barycentric_transfer(v, f, torch.tensor([[0.25, 0.5, 3.0], [2.0, -1.0, 0.0]]))
    >>> idx.tolist(), w.tolist()
    ([0, 0], [[0.25, 0.25, 0.5], [0.0, 1.0, 0.0]])
    """
    idx, weights, _ = _transfer(src_verts, src_faces, dst_verts)
    return idx, weights


def _transfer(src_verts, src_faces, dst_verts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from scipy.spatial import cKDTree

    verts = _as_array(src_verts, "src_verts", 3)
    faces = _as_array(src_faces, "src_faces", 3, integer=True)
    points = _as_array(dst_verts, "dst_verts", 3)
    if faces.min() < 0 or faces.max() >= verts.shape[0]:
        raise ValueError(f"src_faces: vertex indices must lie in [0, {verts.shape[0]}), "
                         f"got [{faces.min()}, {faces.max()}]")
    tri = verts[faces]  # (F, 3, 3)
    centroids = tri.mean(axis=1)
    radius = float(np.linalg.norm(tri - centroids[:, None], axis=2).max())
    tree = cKDTree(centroids)
    n_pts, n_faces = points.shape[0], faces.shape[0]

    def exact(pidx: np.ndarray, fidx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        weights, dist = np.empty((pidx.size, 3)), np.empty(pidx.size)
        for lo in range(0, pidx.size, PAIR_CHUNK):
            sl = slice(lo, lo + PAIR_CHUNK)
            t = tri[fidx[sl]]
            weights[sl] = _closest_barycentric(points[pidx[sl]], t[:, 0], t[:, 1], t[:, 2])
            dist[sl] = np.linalg.norm(np.einsum("mk,mkd->md", weights[sl], t) - points[pidx[sl]], axis=1)
        return weights, dist

    k = min(SEED_TRIANGLES, n_faces)
    face_index, weights, distance = np.empty(n_pts, np.int64), np.empty((n_pts, 3)), np.empty(n_pts)
    for lo in range(0, n_pts, POINT_BLOCK):
        block = np.arange(lo, min(lo + POINT_BLOCK, n_pts))
        _, seed = tree.query(points[block], k=k)
        _, seed_dist = exact(np.repeat(block, k), seed.reshape(-1))
        bound = seed_dist.reshape(block.size, k).min(axis=1)
        reach = (bound + radius) * (1 + RADIUS_SLACK) + RADIUS_SLACK
        lists = tree.query_ball_point(points[block], reach)
        pidx = np.repeat(block, [len(c) for c in lists])
        fidx = np.concatenate([np.asarray(c, dtype=np.int64) for c in lists])
        w, dist = exact(pidx, fidx)
        order = np.lexsort((fidx, dist, pidx))  # per point: nearest first, then lowest triangle index
        first = order[np.r_[0, np.flatnonzero(np.diff(pidx[order])) + 1]]
        face_index[pidx[first]], weights[pidx[first]], distance[pidx[first]] = fidx[first], w[first], dist[first]
    return torch.from_numpy(face_index), torch.from_numpy(weights), torch.from_numpy(distance)


def apply_transfer(values: torch.Tensor, faces: torch.Tensor, face_index: torch.Tensor,
                   weights: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex ``values (..., V, C)`` at barycentric points -> ``(..., N, C)``.

    ``faces (F, 3)`` long: the triangles of the mesh ``values`` live on; ``face_index (N,)``,
    ``weights (N, 3)``: from :func:`barycentric_transfer`. Linear in ``values``; the result
    takes ``values``' dtype.

    >>> f = torch.tensor([[0, 1, 2]]); vals = torch.tensor([[0.0], [10.0], [20.0]])
    >>> apply_transfer(vals, f, torch.tensor([0]), torch.tensor([[0.5, 0.25, 0.25]])).tolist()
    [[7.5]]
    """
    check_tensor(faces, "faces", (None, 3), dtype_kind="int")
    check_tensor(face_index, "face_index", ("N",), dtype_kind="int")
    check_tensor(weights, "weights", (face_index.shape[0], 3))
    if values.dim() < 2:
        raise ValueError(f"values: expected (..., V, C) per-vertex values, got shape {tuple(values.shape)}")
    if int(faces.max()) >= values.shape[-2]:
        raise ValueError(f"values: {values.shape[-2]} vertices, but faces index vertex {int(faces.max())}")
    if face_index.numel() and (int(face_index.min()) < 0 or int(face_index.max()) >= faces.shape[0]):
        raise ValueError(f"face_index: must lie in [0, {faces.shape[0]})")
    corners = faces.to(values.device)[face_index.to(values.device)]  # (N, 3)
    w = weights.to(device=values.device, dtype=values.dtype)
    return sum(w[:, k, None] * values[..., corners[:, k], :] for k in range(3))


def _landmarks_of(model: MorphableModel, name: str) -> np.ndarray:
    """``(68, 3)`` mm mean-shape landmarks, NaN at the points a partial annotation leaves unmapped."""
    if model.landmarks.numel() != N_LANDMARKS:
        raise ValueError(f"{name}: needs its {N_LANDMARKS} iBUG landmark vertices to be aligned with the other mesh "
                         f"(it has {model.landmarks.numel()}); load it with "
                         "facelab.io.load_morphable(path, landmarks=...)")
    return model.landmark_points(model.mean_shape.detach().cpu().double()[None])[0].numpy()


def _common_landmarks(grid_mesh: MorphableModel, model: MorphableModel) -> tuple[np.ndarray, np.ndarray]:
    """The landmarks both meshes map, ``(N, 3)`` each: the alignment needs no more (eos maps no jaw)."""
    a, b = _landmarks_of(grid_mesh, "grid_mesh"), _landmarks_of(model, "model")
    both = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    if both.sum() < MIN_ALIGN_LANDMARKS:
        raise ValueError(f"model, grid_mesh: map only {int(both.sum())} iBUG points in common; aligning the meshes "
                         f"needs at least {MIN_ALIGN_LANDMARKS}")
    return a[both], b[both]


def similarity_to(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``x -> s R x + t`` taking points ``src (N, 3)`` onto ``dst (N, 3)`` (Umeyama).

    Returns ``(s, R (3, 3), t (3,) mm)``; ``R`` is a rotation (never a reflection).

    >>> p = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    >>> s, R, t = similarity_to(p, 2 * p + 1); round(s, 9), np.allclose(R, np.eye(3)), t.round(9).tolist()
    (2.0, True, [1.0, 1.0, 1.0])
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    U, D, Vt = np.linalg.svd(xd.T @ xs)
    S = np.ones(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2] = -1.0  # Umeyama's reflection fix
    R = (U * S) @ Vt
    s = float(np.sum(D * S) / np.sum(xs * xs))
    return s, R, mu_d - s * R @ mu_s


def mesh_transfers(model: MorphableModel, grid_mesh: MorphableModel) -> tuple[Transfer, Transfer, np.ndarray]:
    """Both transfers between ``model``'s mean surface and ``grid_mesh``'s (module docstring).

    ``grid_mesh`` is aligned onto ``model`` by the similarity of their landmarks, so everything
    is in ``model``'s frame. Returns ``(to_grid, to_model, aligned)``: ``to_grid`` maps
    ``(..., V_model, C)`` values to the grid's ``(..., V_grid, C)``; ``to_model`` maps values on the
    *resampled* grid surface (the grid's vertices at ``to_grid(model.mean_shape)``) back to
    ``(..., V_model, C)``; ``aligned (V_grid, 3)`` mm: the grid mean in ``model``'s frame.

    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> mm = build_synthfaces(SynthFacesConfig(resolution="quick"))
    >>> to_grid, to_model, _ = mesh_transfers(mm, mm)
    >>> float((to_model(to_grid(mm.mean_shape)) - mm.mean_shape).abs().max()) < 1e-4
    True
    """
    for name, m in (("model", model), ("grid_mesh", grid_mesh)):
        if not isinstance(m, MorphableModel):
            raise TypeError(f"{name}: expected a MorphableModel, got {type(m).__name__}")
    s, R, t = similarity_to(*_common_landmarks(grid_mesh, model))
    aligned = s * grid_mesh.mean_shape.detach().cpu().double().numpy() @ R.T + t
    src_faces = model.faces.detach().cpu().long()
    idx, w, dist = _transfer(model.mean_shape.detach().cpu().double(), src_faces, aligned)
    to_grid = Transfer(src_faces, idx, w, dist)
    grid_faces = grid_mesh.faces.detach().cpu().long()
    resampled = to_grid(model.mean_shape.detach().cpu().double())
    back_idx, back_w, back_dist = _transfer(resampled, grid_faces, model.mean_shape.detach().cpu().double())
    return to_grid, Transfer(grid_faces, back_idx, back_w, back_dist), aligned


def same_topology(model: MorphableModel, grid_mesh: MorphableModel) -> bool:
    """True when ``model`` already has ``grid_mesh``'s mesh: same vertex count, grid and triangles.

    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> a, b = (build_synthfaces(SynthFacesConfig(resolution=r)) for r in ("quick", "default"))
    >>> same_topology(a, a), same_topology(b, a)
    (True, False)
    """
    return (model.n_verts == grid_mesh.n_verts and model.grid_shape == grid_mesh.grid_shape
            and model.faces.shape == grid_mesh.faces.shape
            and bool(torch.equal(model.faces.cpu().long(), grid_mesh.faces.cpu().long())))


def _basis(to_grid: Transfer, basis: torch.Tensor, n_verts: int) -> torch.Tensor:
    """A ``(3V, K)`` basis, rows interleaved per vertex, carried to the grid: ``(3 V_grid, K)``."""
    k = basis.shape[1]
    per_vertex = basis.detach().cpu().double().reshape(n_verts, 3 * k)  # row 3v + c -> vertex v, column c * K + j
    return to_grid(per_vertex).reshape(-1, k)


def resample_model(model: MorphableModel, grid_mesh: MorphableModel) -> MorphableModel:
    """``model`` carried onto ``grid_mesh``'s mesh by barycentric interpolation (module docstring).

    The result has ``grid_mesh``'s triangles, ``grid_shape`` and mirror map, lives in ``model``'s
    frame (mm), and keeps ``model``'s coefficients: ``resampled.shape(a, e)`` is ``model.shape(a, e)``
    interpolated at the grid's points, for any ``a, e`` (the stds are ``model``'s). Landmarks and
    the nose tip are the grid vertices nearest to ``model``'s; the face mask is ``model``'s,
    interpolated and thresholded at :data:`FACE_MASK_THRESHOLD`. ``meta[RESAMPLED_META_KEY]``
    records the source (name, content hash), the grid and the largest projection distance.

    Args:
        model: any :class:`MorphableModel` with 68 iBUG landmarks.
        grid_mesh: the target mesh, e.g. SynthFaces at a resolution (68 landmarks too).

    Returns:
        A float32 :class:`MorphableModel` with ``grid_mesh.n_verts`` vertices, on the CPU.

    Raises:
        TypeError: an argument is not a MorphableModel. ValueError: a model without 68 landmarks.

    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> fine, grid = (build_synthfaces(SynthFacesConfig(resolution=r)) for r in ("default", "quick"))
    >>> r = resample_model(fine, grid)
    >>> r.n_verts, r.grid_shape, r.n_shape == fine.n_shape, r.meta["resampled"]["source_n_verts"]
    (1353, (33, 41), True, 5265)
    """
    from scipy.spatial import cKDTree

    to_grid, _, _ = mesh_transfers(model, grid_mesh)
    V = model.n_verts
    mean = to_grid(model.mean_shape.detach().cpu().double())
    tree = cKDTree(mean.numpy())
    mean_np = model.mean_shape.detach().cpu().double().numpy()
    lm = model.landmarks.cpu().numpy()
    landmarks = lm.copy()  # -1 (unmapped) stays -1: only mapped points move to the grid
    if lm.size:
        _, landmarks[lm >= 0] = tree.query(mean_np[lm[lm >= 0]])
    _, nose = tree.query(mean_np[int(model.nose_tip)])
    mask = to_grid(model.face_mask.detach().cpu().double()[:, None])[:, 0] >= FACE_MASK_THRESHOLD
    meta = {**model.meta, RESAMPLED_META_KEY: {
        "source_name": model.name, "source_sha256": model.content_sha256(), "source_n_verts": V,
        "grid_name": grid_mesh.name, "grid_shape": list(grid_mesh.grid_shape) if grid_mesh.grid_shape else None,
        "max_distance_mm": float(to_grid.distance.max())}}
    out = MorphableModel(
        mean_shape=mean, shape_basis=_basis(to_grid, model.shape_basis, V), shape_std=model.shape_std.detach().cpu(),
        exp_basis=_basis(to_grid, model.exp_basis, V), exp_std=model.exp_std.detach().cpu(),
        mean_albedo=to_grid(model.mean_albedo.detach().cpu().double()),
        albedo_basis=_basis(to_grid, model.albedo_basis, V), albedo_std=model.albedo_std.detach().cpu(),
        faces=grid_mesh.faces.detach().cpu().long().clone(),
        landmarks=torch.from_numpy(np.asarray(landmarks, dtype=np.int64)),
        symmetry=grid_mesh.symmetry.detach().cpu().long().clone(), face_mask=mask, nose_tip=int(nose),
        grid_shape=tuple(grid_mesh.grid_shape) if grid_mesh.grid_shape is not None else None,
        name=f"{model.name}@{grid_mesh.name}", meta=meta)
    return out.to(dtype=torch.float32)


def grid_morphable(source: MorphableModel, resolution: str) -> MorphableModel:
    """The morphable model the graph decoders use for ``source``: ``source`` itself when it has the
    SynthFaces grid mesh of ``resolution``, else ``source`` resampled onto that grid
    (:func:`facelab.morphable.resample.resample_model`: same coefficients, the grid's topology).

    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> fine = build_synthfaces(SynthFacesConfig(resolution="default"))
    >>> grid_morphable(fine, "quick").grid_shape, grid_morphable(fine, "default") is fine
    ((33, 41), True)
    """
    from facelab.morphable.synthfaces import SynthFacesConfig, build_synthfaces

    if not isinstance(source, MorphableModel):
        raise TypeError(f"source: expected a MorphableModel, got {type(source).__name__}")
    grid = build_synthfaces(SynthFacesConfig(resolution=resolution))
    return source if same_topology(source, grid) else resample_model(source, grid)
