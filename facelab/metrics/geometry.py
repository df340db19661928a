"""Local geometry and plausibility of reconstructed meshes (same topology as the truth).

Whole-face RMSE averages thousands of vertices, so a prior that only changes small, curved
features (the nostrils, the eye corners, the mouth's edge) barely moves it. These measures
look where such a prior acts:

* :func:`local_curvature_error`: the error of the umbrella Laplacian (a discrete mean
  curvature normal, mm) at chosen vertices after rigid alignment. A Laplacian smoothness
  loss that pulls every vertex towards its neighbours' mean flattens exactly these features.
* :func:`linear_span_distance`: how far a shape lies from the span of a linear shape model
  (mm): a plausibility score that needs no learned critic.

Book chapter: ``book/09_gao2020.ipynb``.
"""

from __future__ import annotations

import numpy as np
import torch

from facelab.checks import check_choice
from facelab.losses.shape import uniform_laplacian
from facelab.metrics._common import as_float_array, as_mask
from facelab.metrics.reconstruction import align_to

__all__ = ["LOCAL_DETAIL_LANDMARKS", "ring_vertices", "local_curvature_error", "linear_span_distance"]

#: iBUG-68 landmarks of the small, curved features a smoothness prior shapes: the nostrils'
#: base (31-35), the eye corners (36, 39, 42, 45) and the mouth corners (48, 54)
LOCAL_DETAIL_LANDMARKS = {"nostrils": (31, 32, 33, 34, 35), "eye_corners": (36, 39, 42, 45), "mouth_corners": (48, 54)}
#: neighbourhood scored around each landmark vertex, in edges (2 rings span ~3 grid cells)
DETAIL_RINGS = 2


def ring_vertices(seeds, edge_index: torch.Tensor, rings: int = DETAIL_RINGS) -> np.ndarray:
    """The vertices within ``rings`` edges of ``seeds`` (sorted, seeds included).

    Args:
        seeds: vertex indices (int sequence or array).
        edge_index: ``(2, E)`` long, both directions of every edge
            (:func:`facelab.morphable.grid.edges_from_faces`).
        rings: ``>= 0``.

    >>> edges = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])   # a path 0-1-2-3
    >>> ring_vertices([0], edges, 2).tolist()
    [0, 1, 2]
    """
    if not isinstance(rings, int) or rings < 0:
        raise ValueError(f"rings: expected an int >= 0, got {rings!r}")
    src, dst = (np.asarray(e) for e in torch.as_tensor(edge_index).cpu().numpy())
    found = set(int(s) for s in np.asarray(seeds).ravel())
    frontier = set(found)
    for _ in range(rings):
        frontier = set(dst[np.isin(src, list(frontier))].tolist()) - found
        found |= frontier
    return np.array(sorted(found), dtype=np.int64)


def local_curvature_error(pred, gt, edge_index: torch.Tensor, vertices, align_mask=None, align: str = "rigid"):
    """Mean distance (mm) between the umbrella Laplacians of ``pred`` and ``gt`` at ``vertices``.

    ``pred`` is aligned to ``gt`` on ``align_mask`` first (the Laplacian is translation
    invariant but turns with the mesh).

    Args:
        pred, gt: ``(V, 3)`` or ``(B, V, 3)`` float, mm, same topology.
        edge_index: ``(2, E)`` long, both directions of every edge.
        vertices: the scored vertex indices (e.g. :func:`ring_vertices` of
            :data:`LOCAL_DETAIL_LANDMARKS`).
        align_mask: ``(V,)`` bool or indices the alignment is fitted on (None: all vertices).
        align: ``"rigid"`` or ``"none"`` (``pred`` is already in ``gt``'s frame).

    Returns:
        A float, or a ``(B,)`` float64 array for batched inputs.

    >>> gt = torch.tensor([[0.0, 0, 0], [2, 0, 0], [1, 1, 0], [1, 0.3, 1]])
    >>> edges = torch.tensor([[0, 1, 0, 2, 1, 2, 3, 0, 3, 1, 3, 2], [1, 0, 2, 0, 2, 1, 0, 3, 1, 3, 2, 3]])
    >>> bumped = gt.clone(); bumped[3, 2] += 3.0     # push vertex 3 out by 3 mm
    >>> local_curvature_error(gt, gt, edges, [3]), round(local_curvature_error(bumped, gt, edges, [3], align_mask=[0, 1, 2]), 6)
    (0.0, 3.0)
    """
    p = as_float_array(pred, "pred")
    batched = p.ndim == 3
    p = as_float_array(pred, "pred", ("B", "V", 3) if batched else ("V", 3))
    g = as_float_array(gt, "gt", p.shape)
    n_verts = p.shape[-2]
    idx = np.arange(n_verts) if align_mask is None else as_mask(align_mask, "align_mask", n_verts)
    scored = np.asarray(vertices, dtype=np.int64).ravel()
    if scored.size == 0 or scored.min() < 0 or scored.max() >= n_verts:
        raise ValueError(f"vertices: expected indices in [0, {n_verts}), got {scored.size} of them "
                         f"spanning [{scored.min() if scored.size else '-'}, {scored.max() if scored.size else '-'}]")
    ps, gs = (p, g) if batched else (p[None], g[None])
    check_choice(align, "align", ("rigid", "none"))
    aligned = np.stack([align_to(a, b, idx, align) for a, b in zip(ps, gs)])
    lap_p = uniform_laplacian(torch.from_numpy(aligned), edge_index)[:, scored]
    lap_g = uniform_laplacian(torch.from_numpy(np.ascontiguousarray(gs)), edge_index)[:, scored]
    out = (lap_p - lap_g).norm(dim=-1).mean(-1).numpy()
    return out if batched else float(out[0])


def linear_span_distance(shapes, mean_shape, basis, mask=None, align: str = "rigid"):
    """RMS distance (mm) from each shape to the affine span ``mean + basis @ alpha`` (least squares).

    With ``align="rigid"`` the shape is aligned to ``mean_shape`` on ``mask`` first, so pose
    is not counted (``"none"``: the exact orthogonal residual, for shapes in the model's frame).

    Args:
        shapes: ``(V, 3)`` or ``(B, V, 3)`` float, mm.
        mean_shape: ``(V, 3)`` float, mm.
        basis: ``(V * 3, K)`` or ``(V, 3, K)`` float, the span's directions (mm per unit).
        mask: ``(V,)`` bool or indices fitted and scored (None: all).

    Returns:
        A float, or a ``(B,)`` float64 array.

    >>> mean = torch.zeros(4, 3); basis = torch.zeros(4, 3, 1); basis[:, 2, 0] = 1.0
    >>> x = mean.clone(); x[:, 2] = 5.0     # along the span: distance 0
    >>> round(linear_span_distance(x, mean, basis), 9)
    0.0
    """
    s = as_float_array(shapes, "shapes")
    batched = s.ndim == 3
    s = as_float_array(shapes, "shapes", ("B", "V", 3) if batched else ("V", 3))
    n_verts = s.shape[-2]
    mu = as_float_array(mean_shape, "mean_shape", (n_verts, 3))
    b = np.asarray(torch.as_tensor(basis).detach().cpu().double().numpy())
    if b.ndim == 2 and b.shape[0] == n_verts * 3:
        b = b.reshape(n_verts, 3, -1)
    if b.ndim != 3 or b.shape[:2] != (n_verts, 3):
        raise ValueError(f"basis: expected ({n_verts * 3}, K) or ({n_verts}, 3, K), got {tuple(b.shape)}")
    idx = np.arange(n_verts) if mask is None else as_mask(mask, "mask", n_verts)
    check_choice(align, "align", ("rigid", "none"))
    flat_basis = b[idx].reshape(-1, b.shape[-1])
    out = []
    for shape in (s if batched else s[None]):
        x = (align_to(shape, mu, idx, align)[idx] - mu[idx]).ravel()
        coef, *_ = np.linalg.lstsq(flat_basis, x, rcond=None)
        residual = (x - flat_basis @ coef).reshape(-1, 3)
        out.append(float(np.sqrt(np.mean(np.sum(residual ** 2, axis=1)))))
    return np.array(out) if batched else out[0]
