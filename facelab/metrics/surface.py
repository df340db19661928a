"""Exact point-to-triangle-mesh distances (unsigned, mm).

Book chapter: ``book/07_evaluation.ipynb``. The closest point on one triangle is Ericson's
region test ("Real-Time Collision Detection", 5.1.5), vectorised over many
(point, triangle) pairs. Candidate triangles come from a KD-tree over triangle centroids
with a radius that can never miss the true closest triangle:

1. an upper bound ``d_ub`` on the distance is the exact distance to the triangles whose
   centroids are nearest;
2. a triangle with centroid ``c`` and bounding radius ``r`` (max centroid-vertex distance)
   is at least ``|p - c| - r`` away, so only triangles with ``|p - c| <= d_ub + r`` can
   beat the bound; all of them are evaluated exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from facelab.metrics._common import as_float_array, as_index_array

N_SEED_CANDIDATES = 8  # nearest-centroid triangles used for the initial upper bound
_DEGENERATE_REL = 1e-12  # |ab x ac|^2 below this fraction of |ab|^2 |ac|^2: a sliver
_RADIUS_SLACK = 1e-9  # relative + absolute slack on the search radius (round-off)
_CHUNK = 200_000  # (point, triangle) pairs evaluated at once, bounds memory


class SurfaceQuery(NamedTuple):
    """Closest points on a mesh: ``distances (P,)`` mm, ``closest (P, 3)`` mm, ``face_idx (P,)``."""

    distances: np.ndarray
    closest: np.ndarray
    face_idx: np.ndarray


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.einsum("...i,...i->...", x, y)


def closest_point_on_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Closest point to ``p`` on segment ``ab``; all ``(M, 3)`` float, mm -> ``(M, 3)``.

    >>> closest_point_on_segment(np.array([[0.5, 1.0, 0]]), np.zeros((1, 3)), np.array([[1.0, 0, 0]]))
    array([[0.5, 0. , 0. ]])
    """
    ab = b - a
    length2 = _dot(ab, ab)
    t = np.clip(_dot(p - a, ab) / np.where(length2 > 0, length2, 1.0), 0.0, 1.0)
    return a + t[:, None] * ab


def closest_point_on_triangle(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Closest point to ``p`` on triangle ``abc`` (Ericson's Voronoi-region test).

    ``p, a, b, c: (M, 3)`` float64, mm (row i pairs point i with triangle i) -> ``(M, 3)``.
    Degenerate (zero-area) triangles fall back to the closest of their three edges.

    >>> one = lambda *v: np.array([v], dtype=float)
    >>> closest_point_on_triangle(one(0.2, 0.2, 5), one(0, 0, 0), one(1, 0, 0), one(0, 1, 0))
    array([[0.2, 0.2, 0. ]])
    >>> closest_point_on_triangle(one(2, 2, 0), one(0, 0, 0), one(1, 0, 0), one(0, 1, 0))
    array([[0.5, 0.5, 0. ]])
    """
    ab, ac, ap = b - a, c - a, p - a
    bp, cp = p - b, p - c
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2

    def ratio(num, den):
        return num / np.where(den != 0, den, 1.0)

    # Regions in Ericson's order of precedence: vertex A, B, edge AB, vertex C, edge AC,
    # edge BC, interior.
    regions = [
        ((d1 <= 0) & (d2 <= 0), a),
        ((d3 >= 0) & (d4 <= d3), b),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), a + ratio(d1, d1 - d3)[:, None] * ab),
        ((d6 >= 0) & (d5 <= d6), c),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), a + ratio(d2, d2 - d6)[:, None] * ac),
        (
            (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0),
            b + ratio(d4 - d3, (d4 - d3) + (d5 - d6))[:, None] * (c - b),
        ),
    ]
    denom = va + vb + vc
    out = a + ratio(vb, denom)[:, None] * ab + ratio(vc, denom)[:, None] * ac
    for cond, point in reversed(regions):
        out = np.where(cond[:, None], point, out)

    degenerate = denom <= _DEGENERATE_REL * _dot(ab, ab) * _dot(ac, ac)
    if np.any(degenerate):
        out[degenerate] = _closest_on_edges(p[degenerate], a[degenerate], b[degenerate], c[degenerate])
    return out


def _closest_on_edges(p, a, b, c) -> np.ndarray:
    cands = np.stack(
        [closest_point_on_segment(p, a, b), closest_point_on_segment(p, b, c), closest_point_on_segment(p, c, a)],
        axis=1,
    )
    best = np.argmin(np.sum((cands - p[:, None]) ** 2, axis=2), axis=1)
    return cands[np.arange(p.shape[0]), best]


class SurfaceIndex:
    """A triangle mesh prepared for repeated closest-point queries (the KD-tree is built once).

    ``verts: (V, 3)`` float, mm; ``faces: (F, 3)`` int vertex indices.

    >>> verts = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]); faces = np.array([[0, 1, 2]])
    >>> SurfaceIndex(verts, faces).query(np.array([[0.2, 0.2, 3.0]])).distances
    array([3.])
    """

    def __init__(self, verts, faces):
        self.verts = as_float_array(verts, "verts", ("V", 3))
        self.faces = as_index_array(faces, "faces", ("F", 3), upper=self.verts.shape[0])
        self.tri = self.verts[self.faces]  # (F, 3, 3)
        self.centroids = self.tri.mean(axis=1)
        self.radii = np.linalg.norm(self.tri - self.centroids[:, None], axis=2).max(axis=1)
        self.tree = cKDTree(self.centroids)

    def _exact(self, points: np.ndarray, pidx: np.ndarray, fidx: np.ndarray):
        closest = np.empty((pidx.shape[0], 3))
        for lo in range(0, pidx.shape[0], _CHUNK):
            sl = slice(lo, lo + _CHUNK)
            t = self.tri[fidx[sl]]
            closest[sl] = closest_point_on_triangle(points[pidx[sl]], t[:, 0], t[:, 1], t[:, 2])
        return closest, np.linalg.norm(closest - points[pidx], axis=1)

    def query(self, points) -> SurfaceQuery:
        """Exact closest points on the mesh for ``points: (P, 3)`` float, mm."""
        pts = as_float_array(points, "points", ("P", 3))
        n_pts, n_faces = pts.shape[0], self.faces.shape[0]
        k = min(N_SEED_CANDIDATES, n_faces)
        _, seed = self.tree.query(pts, k=k)
        seed = seed.reshape(n_pts, k)
        _, seed_d = self._exact(pts, np.repeat(np.arange(n_pts), k), seed.ravel())
        upper = seed_d.reshape(n_pts, k).min(axis=1)

        search = (upper + self.radii.max()) * (1 + _RADIUS_SLACK) + _RADIUS_SLACK
        hits = self.tree.query_ball_point(pts, search)
        counts = np.fromiter((len(h) for h in hits), dtype=np.int64, count=n_pts)
        fidx = np.concatenate([np.asarray(h, dtype=np.int64) for h in hits]) if n_pts else np.zeros(0, np.int64)
        pidx = np.repeat(np.arange(n_pts), counts)
        reach = np.linalg.norm(pts[pidx] - self.centroids[fidx], axis=1)
        keep = reach <= (upper[pidx] + self.radii[fidx]) * (1 + _RADIUS_SLACK) + _RADIUS_SLACK
        pidx, fidx = pidx[keep], fidx[keep]

        closest, dist = self._exact(pts, pidx, fidx)
        order = np.lexsort((dist, pidx))  # by point, then by distance
        first = order[np.r_[True, pidx[order][1:] != pidx[order][:-1]]]
        return SurfaceQuery(dist[first], closest[first], fidx[first])


def point_to_surface(points, verts, faces) -> SurfaceQuery:
    """Unsigned distance from each point to a triangle mesh, with the closest points.

    Args:
        points: ``(P, 3)`` float, mm. verts: ``(V, 3)`` float, mm. faces: ``(F, 3)`` int.

    Returns:
        :class:`SurfaceQuery` ``(distances (P,) mm, closest (P, 3) mm, face_idx (P,) int)``.

    >>> verts = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    >>> faces = np.array([[0, 1, 2], [1, 3, 2]])
    >>> d, closest, f = point_to_surface(np.array([[0.9, 0.9, 2.0], [2.0, 0.5, 0.0]]), verts, faces)
    >>> d.round(6).tolist(), f.tolist()
    ([2.0, 1.0], [1, 1])
    """
    return SurfaceIndex(verts, faces).query(points)


def face_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit normals ``(F, 3)`` of ``faces (F, 3)`` on ``verts (V, 3)`` (right-hand rule; zero
    for degenerate triangles).

    >>> face_normals(np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]), np.array([[0, 1, 2]]))
    array([[0., 0., 1.]])
    """
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(norm > 0, n / np.where(norm > 0, norm, 1.0), 0.0)


def point_to_plane(points, verts, faces) -> np.ndarray:
    """Distance from each point to the plane of its closest triangle (MICC "point-to-plane").

    This is the error of the MICC protocol used by Gao et al. (2020): it ignores sliding
    along the surface, so it is never larger than :func:`point_to_surface`. For a
    degenerate closest triangle the point-to-surface distance is used.

    Args:
        points: ``(P, 3)`` float, mm. verts: ``(V, 3)`` float, mm. faces: ``(F, 3)`` int.

    Returns:
        ``(P,)`` float64, unsigned, mm.

    >>> verts = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    >>> point_to_plane(np.array([[2.0, 2.0, 1.0]]), verts, np.array([[0, 1, 2]]))
    array([1.])
    """
    index = SurfaceIndex(verts, faces)
    pts = as_float_array(points, "points", ("P", 3))
    hit = index.query(pts)
    normals = face_normals(index.verts, index.faces)[hit.face_idx]
    on_plane = index.tri[hit.face_idx, 0]
    plane = np.abs(_dot(pts - on_plane, normals))
    degenerate = ~np.any(normals != 0, axis=1)
    return np.where(degenerate, hit.distances, plane)
