"""Rigid and similarity alignment: Umeyama/Procrustes and closest-point ICP.

Book chapter: ``book/07_evaluation.ipynb``. A :class:`Similarity` maps points as
``x -> s * R @ x + t``. :func:`procrustes` is Umeyama (1991): the least-squares rotation
(never a reflection), translation and optionally scale between corresponding points.
:func:`icp` alternates closest points on the target and Procrustes from the original
source points, starting from landmark Procrustes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from facelab.checks import check_positive, check_tensor
from facelab.metrics._common import as_float_array
from facelab.metrics.surface import SurfaceIndex

MIN_POINTS = 3  # a rotation in 3D needs three non-collinear correspondences
DEFAULT_ICP_ITERS = 100
DEFAULT_ICP_TOL = 1e-9  # mm: stop when the RMS closest-point distance improves less
_VAR_EPS = 1e-300
ACCEL_COS = 0.99  # cos of the largest angle between successive steps that still extrapolates
ACCEL_MAX_GAIN = 25.0  # cap on the extrapolation factor (limit of a series with ratio 0.96)


@dataclass
class Similarity:
    """``x -> s * R @ x + t`` with ``R: (3, 3)`` rotation, ``t: (3,)`` mm, ``s`` scale (1 = rigid)."""

    R: np.ndarray
    t: np.ndarray
    s: float = 1.0

    @classmethod
    def identity(cls) -> "Similarity":
        """The identity transform.

        >>> Similarity.identity().s
        1.0
        """
        return cls(np.eye(3), np.zeros(3), 1.0)

    def inverse(self) -> "Similarity":
        """The inverse transform ``y -> R.T @ (y - t) / s``.

        >>> T = Similarity(np.eye(3), np.ones(3), 2.0)
        >>> apply(T.inverse(), apply(T, np.zeros((1, 3))))
        array([[0., 0., 0.]])
        """
        return Similarity(self.R.T, -self.R.T @ self.t / self.s, 1.0 / self.s)

    def compose(self, first: "Similarity") -> "Similarity":
        """``self ∘ first``: apply ``first`` then ``self``.

        >>> T = Similarity(np.eye(3), np.ones(3), 2.0)
        >>> T.compose(T.inverse()).t
        array([0., 0., 0.])
        """
        return Similarity(self.R @ first.R, self.s * self.R @ first.t + self.t, self.s * first.s)

    def to_dict(self) -> dict:
        return {"R": self.R.tolist(), "t": self.t.tolist(), "s": float(self.s)}


def apply(transform: Similarity, pts) -> np.ndarray:
    """Apply a :class:`Similarity` to ``pts: (N, 3)`` float, mm -> ``(N, 3)`` float64, mm.

    >>> apply(Similarity(np.eye(3), np.array([1.0, 0, 0]), 2.0), np.ones((1, 3)))
    array([[3., 2., 2.]])
    """
    p = as_float_array(pts, "pts", ("N", 3))
    return transform.s * p @ transform.R.T + transform.t


def procrustes(src, dst, scale: bool = False, weights=None) -> Similarity:
    """Least-squares similarity (or rigid) transform mapping ``src`` onto ``dst`` (Umeyama 1991).

    Minimises ``sum_i w_i |s R src_i + t - dst_i|^2`` over rotations ``R`` (det +1: a
    reflection is never returned), ``t`` and, if ``scale``, ``s > 0``.

    Args:
        src, dst: ``(N, 3)`` float corresponding points, mm, ``N >= 3``.
        scale: estimate the scale (similarity) instead of fixing ``s = 1`` (rigid).
        weights: optional ``(N,)`` non-negative float weights.

    Returns:
        :class:`Similarity` with ``R (3, 3)``, ``t (3,)`` mm, ``s`` float.

    >>> src = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    >>> T = procrustes(src, 2 * src + 5, scale=True)
    >>> round(T.s, 6), T.t.round(6).tolist()
    (2.0, [5.0, 5.0, 5.0])
    """
    s_pts = as_float_array(src, "src", ("N", 3))
    d_pts = as_float_array(dst, "dst", (s_pts.shape[0], 3))
    if s_pts.shape[0] < MIN_POINTS:
        raise ValueError(f"src: need at least {MIN_POINTS} correspondences, got {s_pts.shape[0]}")
    if weights is None:
        w = np.full(s_pts.shape[0], 1.0 / s_pts.shape[0])
    else:
        w = as_float_array(weights, "weights", (s_pts.shape[0],))
        if np.any(w < 0) or w.sum() <= 0:
            raise ValueError("weights: must be non-negative with a positive sum")
        w = w / w.sum()
    mu_s, mu_d = w @ s_pts, w @ d_pts
    xs, xd = s_pts - mu_s, d_pts - mu_d
    cov = (xd * w[:, None]).T @ xs  # (3, 3): sum_i w_i dst_i src_i^T
    U, D, Vt = np.linalg.svd(cov)
    S = np.ones(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2] = -1.0  # the reflection fix of Umeyama's theorem
    R = (U * S) @ Vt
    s = 1.0
    if scale:
        var_s = float(w @ np.sum(xs * xs, axis=1))
        if var_s <= _VAR_EPS:
            raise ValueError("src: all points coincide; the scale is undefined")
        s = float(np.sum(D * S) / var_s)
    return Similarity(R, mu_d - s * R @ mu_s, s)


def procrustes_batched(src: torch.Tensor, dst: torch.Tensor, scale: bool = False):
    """Batched, differentiable Umeyama in torch (one transform per batch element).

    Args:
        src, dst: ``(B, N, 3)`` float tensors, mm (any device), ``N >= 3``.
        scale: also estimate a per-element scale.

    Returns:
        ``R (B, 3, 3)``, ``t (B, 3)`` mm, ``s (B,)`` such that ``s R src + t ≈ dst``.

    >>> src = torch.randn(2, 5, 3, dtype=torch.float64)
    >>> R, t, s = procrustes_batched(src, src + 1.0)
    >>> torch.allclose(R, torch.eye(3, dtype=torch.float64).expand(2, 3, 3)), t[0].tolist()
    (True, [1.0, 1.0, 1.0])
    """
    check_tensor(src, "src", ("B", "N", 3))
    check_tensor(dst, "dst", (src.shape[0], src.shape[1], 3))
    if src.shape[1] < MIN_POINTS:
        raise ValueError(f"src: need at least {MIN_POINTS} correspondences, got {src.shape[1]}")
    mu_s, mu_d = src.mean(dim=1), dst.mean(dim=1)
    xs, xd = src - mu_s[:, None], dst - mu_d[:, None]
    cov = xd.transpose(1, 2) @ xs / src.shape[1]
    U, D, Vh = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(U) * torch.linalg.det(Vh))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    S = torch.ones_like(D)
    S = torch.cat([S[:, :2], sign[:, None]], dim=1)
    R = (U * S[:, None, :]) @ Vh
    if scale:
        var_s = (xs * xs).sum(dim=(1, 2)) / src.shape[1]
        s = (D * S).sum(dim=1) / var_s.clamp_min(torch.finfo(src.dtype).tiny)
    else:
        s = torch.ones(src.shape[0], dtype=src.dtype, device=src.device)
    t = mu_d - s[:, None] * (R @ mu_s[:, :, None])[..., 0]
    return R, t, s


def _closest_points_fn(dst_verts: np.ndarray, dst_faces):
    if dst_faces is None:
        tree = cKDTree(dst_verts)

        def closest(p):
            d, i = tree.query(p)
            return dst_verts[i], d

        return closest
    index = SurfaceIndex(dst_verts, dst_faces)

    def closest_on_surface(p):
        hit = index.query(p)
        return hit.closest, hit.distances

    return closest_on_surface


def _initial_transform(init) -> Similarity:
    if init is None:
        return Similarity.identity()
    if isinstance(init, Similarity):
        return init
    if isinstance(init, (tuple, list)) and len(init) == 2:
        return None  # landmark pairs: resolved by the caller, which knows ``scale``
    raise TypeError("init: expected None, a Similarity or a (src_landmarks, dst_landmarks) pair")


def icp(
    src_points,
    dst_verts,
    dst_faces=None,
    init=None,
    scale: bool = False,
    max_iter: int = DEFAULT_ICP_ITERS,
    tol: float = DEFAULT_ICP_TOL,
) -> tuple[Similarity, list[float]]:
    """Point-to-point ICP aligning ``src_points`` onto a target point set or mesh surface.

    Each iteration finds, for every transformed source point, its closest target point
    (a target vertex via a KD-tree, or the exact closest point on the triangles when
    ``dst_faces`` is given) and re-solves :func:`procrustes` from the *original* source
    points, so the returned transform is the total one.

    Args:
        src_points: ``(N, 3)`` float, mm, moved by the transform.
        dst_verts: ``(V, 3)`` float, mm. dst_faces: optional ``(F, 3)`` int triangles.
        init: ``None`` (identity), a :class:`Similarity`, or a pair
            ``(src_landmarks (K, 3), dst_landmarks (K, 3))`` whose Procrustes fit (with
            ``scale``) starts the iterations.
        scale: estimate a scale as well (similarity ICP).
        max_iter: maximum number of closest-point iterations. tol: stop when the RMS
            closest-point distance (mm) improves by less than this.

    Returns:
        ``(transform, history)``: the :class:`Similarity` mapping source onto target and
        the RMS closest-point distance (mm; the quantity ICP never increases) before the first and after every iteration
        (with ``dst_faces``: first the vertex stage, then the surface stage).

    >>> rng = np.random.default_rng(0)
    >>> dst = rng.normal(size=(200, 3)) * [30.0, 40.0, 10.0]
    >>> T, hist = icp(dst + [0.5, -0.3, 0.2], dst)
    >>> T.t.round(6).tolist(), hist[-1] < 1e-9
    ([-0.5, 0.3, -0.2], True)
    """
    src = as_float_array(src_points, "src_points", ("N", 3))
    dst = as_float_array(dst_verts, "dst_verts", ("V", 3))
    check_positive(max_iter, "max_iter", integer=True)
    if not tol >= 0:
        raise ValueError(f"tol: must be non-negative, got {tol}")
    transform = _initial_transform(init)
    if transform is None:
        transform = procrustes(init[0], init[1], scale=scale)
    history: list[float] = []
    if dst_faces is not None:
        # Vertex ICP is cheap and gets close; the exact-surface stage then only refines.
        transform = _iterate(src, _closest_points_fn(dst, None), transform, scale, max_iter, tol, history)
    closest = _closest_points_fn(dst, dst_faces)
    transform = _iterate(src, closest, transform, scale, max_iter, tol, history)
    return transform, history


def _rms(dist: np.ndarray) -> float:
    return float(np.sqrt(np.mean(dist * dist)))


def _params(T: Similarity) -> np.ndarray:
    return np.concatenate([Rotation.from_matrix(T.R).as_rotvec(), T.t, [np.log(T.s)]])


def _from_params(q: np.ndarray) -> Similarity:
    return Similarity(Rotation.from_rotvec(q[:3]).as_matrix(), q[3:6].copy(), float(np.exp(q[6])))


def _extrapolate(q_prev2, q_prev, q_now) -> np.ndarray | None:
    """Besl & McKay (1992) style acceleration: when the last two parameter steps point the
    same way and shrink geometrically, jump to the limit of the geometric series."""
    step, last = q_now - q_prev, q_prev - q_prev2
    n_step, n_last = np.linalg.norm(step), np.linalg.norm(last)
    if n_step == 0 or n_last == 0 or step @ last < ACCEL_COS * n_step * n_last:
        return None
    ratio = n_step / n_last
    if ratio >= 1:
        return None
    return q_now + step * min(ratio / (1 - ratio), ACCEL_MAX_GAIN)


def _iterate(src, closest, transform, scale, max_iter, tol, history) -> Similarity:
    target, dist = closest(apply(transform, src))
    history.append(_rms(dist))
    params = [_params(transform)]
    for _ in range(max_iter):
        candidate = procrustes(src, target, scale=scale)
        target_c, dist_c = closest(apply(candidate, src))
        if _rms(dist_c) > history[-1]:
            break  # a warm start can already be better than the next step; keep it
        transform, target = candidate, target_c
        params.append(_params(transform))
        if len(params) >= 3:
            jump = _extrapolate(*params[-3:])
            if jump is not None:
                target_j, dist_j = closest(apply(_from_params(jump), src))
                if _rms(dist_j) < _rms(dist_c):  # accept only if it helps: ICP stays monotone
                    transform, target, dist_c = _from_params(jump), target_j, dist_j
                    params.append(jump)
        history.append(_rms(dist_c))
        if history[-2] - history[-1] < tol:
            break
    return transform
