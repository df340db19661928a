"""Landmark-based 3DMM fitting: one photo, or a photo collection sharing one identity.

Book chapter: ``book/04_fitting.ipynb`` ("Fitting a 3DMM to a photo collection").

Liu et al. 2018 build their training targets by fitting one 3DMM identity to all the
photos of a subject; their text gives no algorithm, so facelab uses the standard one.
The camera is weak perspective (:func:`facelab.camera.weak_perspective`): a landmark
``v`` (mm, model frame) lands at ``x = tx + s (R v)_x``, ``y = ty - s (R v)_y`` (px,
y down). For a fixed camera the landmarks are *linear* in the shape coefficients, so:

1. **alternate** (``n_iter`` times) two closed-form steps:

   * pose -- :func:`estimate_pose`: the least-squares affine camera from the 2D-3D
     correspondences, then the closest scaled rotation (the "gold standard"
     algorithm, as in the eos library);
   * shape -- with the poses fixed, the MAP estimate under the Gaussian priors
     ``alpha_id ~ N(0, std_id^2)``, ``alpha_exp ~ N(0, std_exp^2)`` and landmark
     noise ``N(0, landmark_std_px^2)``. Images of one identity share ``alpha_id`` and
     each has its own ``alpha_exp``; the per-image blocks are eliminated by a Schur
     complement, so each group's identity comes from one ``K x K`` solve, batched
     over groups;

2. **refine** (``n_refine`` times) pose and shape jointly by Gauss-Newton, with the
   same structure (the per-image block is then expression + a 6-dof pose step).
   Alternation alone crawls along the depth/rotation ambiguity of weak perspective.
   For the scale, each image's expression is integrated out (the exact Gaussian
   marginal adds ``log det`` of its expression block): as a plain joint-MAP
   parameter a larger scale makes every expression cheaper, and with many images per
   identity the fitted identity shrinks more and more (a Neyman-Scott bias).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facelab.camera.rotation import euler_to_rotation, rotation_to_euler
from facelab.checks import check_nonnegative_int, check_positive, check_tensor
from facelab.config import with_options
from facelab.morphable.model import MorphableModel

__all__ = ["estimate_pose", "fit_landmarks", "LandmarkFit", "LandmarkFitConfig", "project_landmarks"]

#: number of iBUG landmarks the fitter expects
N_LANDMARKS = 68
#: fewest mapped landmarks an affine camera (8 unknowns, 2 equations a point) can be fitted to
MIN_MAPPED_LANDMARKS = 4
#: model standard deviations are clamped to at least this (mm) so priors stay finite
MIN_STD_MM = 1e-6
#: Marquardt damping of the pose step in the joint refinement (relative to the diagonal)
POSE_DAMPING = 1e-6
#: largest rotation (rad) of one refinement step
MAX_ROTATION_STEP = 0.1
#: pose unknowns of a refinement step: a small rotation (3), the translation (2), the scale
N_POSE_STEP = 6
#: pixel y points down, camera y up: screen = t + s * FLIP_Y * (R v)[:2]
FLIP_Y = (1.0, -1.0)


@dataclass
class LandmarkFitConfig:
    """Options of :func:`fit_landmarks`.

    Attributes:
        n_iter: alternations of a closed-form pose step (:func:`estimate_pose`) and a
            MAP shape step.
        n_refine: joint Gauss-Newton steps on pose and shape after the alternation
            (0 = none); alternation alone converges slowly along the depth-rotation ambiguity.
        shape_prior: multiplier of the identity prior precision ``1/std_id^2``
            (1 = the model's Gaussian prior; small = weak prior, 0 = none).
        exp_prior: the same for expression.
        landmark_std_px: landmark noise standard deviation, px; weighs data against prior.
        n_shape: use only the leading identity components (None = all).
        n_exp: use only the leading expression components (None = all, 0 = none).
    """

    n_iter: int = 5
    n_refine: int = 5
    shape_prior: float = 1.0
    exp_prior: float = 1.0
    landmark_std_px: float = 2.0
    n_shape: int | None = None
    n_exp: int | None = None


@dataclass
class LandmarkFit:
    """Result of :func:`fit_landmarks` (B images, G identity groups).

    Attributes:
        alpha_id: ``(G, K_id)`` float, identity coefficients (zero past ``n_shape``).
        alpha_exp: ``(B, K_exp)`` float, expression coefficients (zero past ``n_exp``).
        pose: ``(B, 6)`` float ``[pitch, yaw, roll, tx, ty, scale]`` (rad, px, px/mm).
        shapes: ``(B, V, 3)`` float, mm: identity + expression of each image.
        identity_shapes: ``(G, V, 3)`` float, mm: each group's neutral face.
        residual_px: ``(B,)`` float, px: RMS landmark reprojection error.
        group_index: ``(B,)`` long, the group (row of ``alpha_id``) of each image.
        group_labels: ``(G,)`` long, the label of each group (sorted ``unique(groups)``).
    """

    alpha_id: torch.Tensor
    alpha_exp: torch.Tensor
    pose: torch.Tensor
    shapes: torch.Tensor
    identity_shapes: torch.Tensor
    residual_px: torch.Tensor
    group_index: torch.Tensor
    group_labels: torch.Tensor


def _flip(like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(FLIP_Y, dtype=like.dtype, device=like.device)


def estimate_pose(points3d: torch.Tensor, points2d: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weak-perspective camera from 2D-3D correspondences (gold-standard algorithm).

    Solves the affine camera ``p = t + A v`` by weighted least squares (on centred
    points), replaces ``A`` by the closest scaled rotation ``s [r1; r2]`` (SVD; ``s`` =
    mean singular value, third row ``r1 x r2``) and recomputes ``t`` from the centroids.
    Inverts :func:`facelab.camera.weak_perspective` exactly on noise-free data.

    Args:
        points3d: ``(B, N, 3)`` float, mm, model frame; N >= 4, not coplanar.
        points2d: ``(B, N, 2)`` float, px, screen space (x right, y down).
        weights: ``(B, N)`` float >= 0 or None (all 1), per-point weights.

    Returns:
        ``(B, 6)`` float pose ``[pitch, yaw, roll, tx, ty, scale]`` (rad, px, px/mm).

    >>> v = torch.tensor([[[0., 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]]])
    >>> p = torch.tensor([[[32., 32], [52, 32], [32, 12], [32, 32]]])  # s = 2, frontal
    >>> estimate_pose(v, p).round(decimals=4) + 0.0  # + 0.0 turns -0. into 0.
    tensor([[ 0.,  0.,  0., 32., 32.,  2.]])
    """
    B = points3d.shape[0] if points3d.dim() == 3 else None
    N = points3d.shape[1] if points3d.dim() == 3 else None
    check_tensor(points3d, "points3d", ("B", "N", 3))
    check_tensor(points2d, "points2d", (B, N, 2))
    if N < 4:
        raise ValueError(f"points3d: need at least 4 correspondences for an affine camera, got {N}")
    if weights is None:
        weights = torch.ones(points3d.shape[:2], dtype=points3d.dtype, device=points3d.device)
    check_tensor(weights, "weights", (B, N))
    if (weights < 0).any():
        raise ValueError("weights: must be >= 0")
    w = weights.to(points3d.dtype)
    wsum = w.sum(1, keepdim=True)
    if (wsum <= 0).any():
        raise ValueError("weights: every image needs some positive weight")
    c3 = (w[..., None] * points3d).sum(1) / wsum  # (B, 3) weighted centroids
    c2 = (w[..., None] * points2d).sum(1) / wsum
    X = points3d - c3[:, None]
    Y = (points2d - c2[:, None]) * _flip(points2d)  # to camera axes (y up)
    XtW = (X * w[..., None]).transpose(1, 2)  # (B, 3, N)
    try:
        A_t = torch.linalg.solve(XtW @ X, XtW @ Y)  # (B, 3, 2) = A^T
    except RuntimeError:  # torch raises on exactly singular systems
        raise ValueError("points3d: degenerate (coplanar or repeated) points; the affine camera is not determined") from None
    U, S, Vh = torch.linalg.svd(A_t.transpose(1, 2), full_matrices=False)  # A: (B, 2, 3)
    rows = U @ Vh  # closest matrix with orthonormal rows
    R = torch.cat([rows, torch.linalg.cross(rows[:, 0], rows[:, 1])[:, None]], dim=1)
    scale = S.mean(-1)
    t = c2 - scale[:, None] * (c3[:, None] @ rows.transpose(1, 2))[:, 0] * _flip(c2)
    return torch.cat([rotation_to_euler(R), t, scale[:, None]], dim=-1)


def project_landmarks(points3d: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """Weak-perspective image positions of model-frame points.

    Args:
        points3d: ``(B, N, 3)`` float, mm.
        pose: ``(B, 6)`` float ``[pitch, yaw, roll, tx, ty, scale]``.

    Returns:
        ``(B, N, 2)`` float, px (x right, y down).

    >>> project_landmarks(torch.tensor([[[10., 20, 5]]]), torch.tensor([[0., 0, 0, 32, 32, 2]]))
    tensor([[[52., -8.]]])
    """
    check_tensor(points3d, "points3d", ("B", None, 3))
    check_tensor(pose, "pose", (points3d.shape[0], 6))
    R = euler_to_rotation(pose[:, :3])
    cam = points3d @ R[:, :2].transpose(1, 2)
    return pose[:, None, 3:5] + pose[:, None, 5:6] * cam * _flip(cam)


def _pixels(cam: torch.Tensor, scale: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """``(B, N, 2)`` px from camera-frame points ``cam: (B, N, 3)`` mm."""
    return trans[:, None] + scale[:, None, None] * cam[..., :2] * _flip(cam)


def _coeff_jacobian(basis_lm: torch.Tensor, R: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(B, 2N, K)``: d(landmark px)/d(coefficients) for ``basis_lm: (N, 3, K)`` (exact: linear)."""
    PR = R[:, :2] * _flip(R)[None, :, None] * scale[:, None, None]  # (B, 2, 3)
    # explicit 2N: with no coefficients (K = 0) a -1 would be ambiguous
    return torch.einsum("bij,njk->bnik", PR, basis_lm).reshape(R.shape[0], 2 * basis_lm.shape[0], basis_lm.shape[-1])


def _pose_jacobian(cam: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(B, 2N, 6)``: d(landmark px)/d[omega, tx, ty, scale] at camera points ``cam: (B, N, 3)``.

    ``omega`` is a small rotation applied in the camera frame, ``R <- exp([omega]_x) R``,
    so ``d cam = omega x cam``.
    """
    X, Y, Z = cam.unbind(-1)
    s = scale[:, None]
    zero, one = torch.zeros_like(X), torch.ones_like(X)
    dx = torch.stack([zero, s * Z, -s * Y, one, zero, X], dim=-1)
    dy = torch.stack([s * Z, zero, -s * X, zero, one, -Y], dim=-1)  # y = ty - s Y
    return torch.stack([dx, dy], dim=-2).reshape(cam.shape[0], -1, 6)


def _expression_volume_gradient(J_exp: torch.Tensor, w: torch.Tensor, prec_exp: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(B,)``: d/d(scale) of ``log det(J_exp' W J_exp + diag(prec_exp))``, J_exp proportional to scale.

    This is the term that integrating each image's expression out adds to the objective.
    """
    H_data = (J_exp * w[..., None]).transpose(1, 2) @ J_exp
    H = H_data + torch.diag_embed(prec_exp)
    trace = torch.cholesky_solve(H_data, torch.linalg.cholesky(H)).diagonal(dim1=1, dim2=2).sum(-1)
    return 2 * trace / scale


def _small_rotation(omega: torch.Tensor) -> torch.Tensor:
    """``(B, 3, 3)`` rotation ``exp([omega]_x)`` for ``omega: (B, 3)`` rad."""
    x, y, z = omega.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(-1, 3, 3)
    return torch.linalg.matrix_exp(skew)


def _solve_map(
    J: torch.Tensor, resid: torch.Tensor, w: torch.Tensor, n_id: int,
    prec_id: torch.Tensor, prec_loc: torch.Tensor, damp_loc: torch.Tensor,
    group_index: torch.Tensor, n_groups: int, extra_g: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Regularised linear least squares with unknowns shared per group and per image.

    ``J: (B, 2N, K + P)`` holds the Jacobians of the K shared (identity) unknowns, then
    of the P per-image unknowns (expression, and pose steps when refining). Minimises
    ``sum_b ||sqrt(w_b) (J_b [a_g(b); l_b] - r_b)||^2 + a' diag(prec_id) a
    + sum_b l_b' (diag(prec_loc) + diag(damp_loc * diag(H_ll,b))) l_b``.
    Each image's ``l_b`` is eliminated with a Schur complement (``L`` = Cholesky factor of
    its block), leaving one K x K system per group: ``(G, K)`` and ``(B, P)`` are returned.
    ``extra_g: (B, P)`` is added to the per-image right-hand side (minus half the gradient
    of extra objective terms).
    """
    K, P = n_id, J.shape[-1] - n_id
    Jw = J * w[..., None]
    H = Jw.transpose(1, 2) @ J  # (B, K+P, K+P) per-image normal matrix
    g = (Jw.transpose(1, 2) @ resid[..., None])[..., 0]
    if extra_g is not None:
        g = torch.cat([g[:, :K], g[:, K:] + extra_g], dim=1)
    H_aa, g_a = H[:, :K, :K], g[:, :K]
    if P:
        H_ll = H[:, K:, K:]
        L = torch.linalg.cholesky(H_ll + torch.diag_embed(prec_loc + damp_loc * H_ll.diagonal(dim1=1, dim2=2)))
        Z = torch.linalg.solve_triangular(L, H[:, K:, :K], upper=False)  # L^-1 H_la, (B, P, K)
        z = torch.linalg.solve_triangular(L, g[:, K:, None], upper=False)  # L^-1 g_l, (B, P, 1)
        H_aa = H_aa - Z.transpose(1, 2) @ Z
        g_a = g_a - (Z.transpose(1, 2) @ z)[..., 0]
    H_g = torch.zeros(n_groups, K, K, dtype=J.dtype, device=J.device).index_add_(0, group_index, H_aa)
    g_g = torch.zeros(n_groups, K, dtype=J.dtype, device=J.device).index_add_(0, group_index, g_a)
    H_g = H_g + torch.diag_embed(prec_id)
    L_g, info = torch.linalg.cholesky_ex(H_g)
    if (info > 0).any():  # no prior and too few landmarks: fall back to the least-norm solution
        alpha_id = torch.linalg.pinv(H_g, hermitian=True) @ g_g[..., None]
    else:
        alpha_id = torch.cholesky_solve(g_g[..., None], L_g)
    alpha_id = alpha_id[..., 0]
    if not P:
        return alpha_id, J.new_zeros(J.shape[0], 0)
    local = torch.linalg.solve_triangular(L.transpose(1, 2), z - Z @ alpha_id[group_index][..., None], upper=True)
    return alpha_id, local[..., 0]


def group_index_of(groups: torch.Tensor | None, B: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(labels (G,), index (B,))`` long: the sorted identity labels of ``groups (B,)`` and each
    image's group. ``groups=None`` puts every image in a group of its own.

    >>> group_index_of(torch.tensor([7, 3, 7]), 3, "cpu")
    (tensor([3, 7]), tensor([1, 0, 1]))
    """
    if groups is None:
        labels = torch.arange(B, device=device)
        return labels, labels
    if not isinstance(groups, torch.Tensor):
        raise TypeError(f"groups: expected a torch.Tensor of identity labels, got {type(groups).__name__}")
    check_tensor(groups, "groups", (None,), dtype_kind="int")
    if groups.shape[0] != B:
        raise ValueError(f"groups: expected one label per image ({B}), got {groups.shape[0]}")
    labels, index = torch.unique(groups.to(device), return_inverse=True)
    return labels, index


def _resolve_config(config: LandmarkFitConfig | None, overrides: dict) -> LandmarkFitConfig:
    cfg = with_options(config, LandmarkFitConfig, overrides, "fit_landmarks")
    check_positive(cfg.n_iter, "n_iter", integer=True)
    check_nonnegative_int(cfg.n_refine, "n_refine")
    check_positive(cfg.landmark_std_px, "landmark_std_px")
    for name in ("shape_prior", "exp_prior"):
        if not getattr(cfg, name) >= 0:
            raise ValueError(f"{name}: must be >= 0, got {getattr(cfg, name)}")
    return cfg


def leading_components(n: int | None, have: int, name: str, at_most: bool = False) -> int:
    """How many leading basis components of the ``have`` a model has a fit uses.

    ``n=None`` means all of them. Otherwise ``n`` must be an int >= 0, and at most ``have``
    unless ``at_most`` (then ``n`` is a cap: ``min(n, have)``). Errors name ``name``.

    >>> leading_components(None, 10, "n_shape"), leading_components(40, 10, "n_shape", at_most=True)
    (10, 10)
    >>> leading_components(40, 10, "n_shape")
    Traceback (most recent call last):
    ...
    ValueError: n_shape: expected an int in [0, 10] or None, got 40
    """
    if n is None:
        return have
    if not isinstance(n, int) or isinstance(n, bool) or n < 0 or (n > have and not at_most):
        bound = ">= 0" if at_most else f"in [0, {have}]"
        raise ValueError(f"{name}: expected an int {bound} or None, got {n!r}")
    return min(n, have)


def fit_landmarks(
    model: MorphableModel,
    landmarks2d: torch.Tensor,
    groups: torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    config: LandmarkFitConfig | None = None,
    **options,
) -> LandmarkFit:
    """Fit identity, expression and weak-perspective pose to 68 2D landmarks per image.

    Images with the same ``groups`` label share one identity (multi-image fitting,
    Liu et al. 2018); each image has its own expression and pose. See the module
    docstring and ``book/04_fitting.ipynb``.

    A model that maps only some iBUG points (``-1`` in ``model.landmarks``, e.g. eos's SFM
    mapping without the jaw contour) is fitted to its mapped points alone: the result is the
    fit of that subset, and ``landmarks2d`` at the unmapped points is never read.

    Args:
        model: a :class:`MorphableModel` with an iBUG-68 annotation (at least
            :data:`MIN_MAPPED_LANDMARKS` points mapped; :attr:`~MorphableModel.landmark_mask`).
        landmarks2d: ``(B, 68, 2)`` float, px (x right, y down).
        groups: ``(B,)`` integer identity labels, or None (every image its own identity).
        weights: ``(B, 68)`` float >= 0 or None, per-landmark weights (0 = missing).
        config: a :class:`LandmarkFitConfig`; ``**options`` override its fields
            (``n_iter``, ``shape_prior``, ``exp_prior``, ``landmark_std_px``, ``n_shape``, ``n_exp``).

    Returns:
        :class:`LandmarkFit` with ``alpha_id (G, K_id)``, ``alpha_exp (B, K_exp)``,
        ``pose (B, 6)``, ``shapes (B, V, 3)`` mm, ``identity_shapes (G, V, 3)`` mm and
        ``residual_px (B,)`` (over the mapped points); G = number of distinct labels (B if
        ``groups`` is None).

    >>> g = torch.Generator().manual_seed(0)
    >>> V, K = 100, 4
    >>> Q = torch.linalg.qr(torch.randn(3 * V, 2 * K, generator=g))[0]
    >>> model = MorphableModel(torch.randn(V, 3, generator=g) * 50, Q[:, :K], torch.full((K,), 5.0),
    ...     Q[:, K:], torch.full((K,), 2.0), torch.zeros(V, 3), torch.zeros(3 * V, 0), torch.zeros(0),
    ...     torch.tensor([[0, 1, 2]]), torch.arange(68), torch.arange(V), torch.ones(V, dtype=torch.bool), 0)
    >>> pose = torch.tensor([[0.1, 0.3, 0.0, 64.0, 64.0, 0.5]]).repeat(2, 1)
    >>> truth = model.shape(torch.randn(1, K, generator=g).repeat(2, 1) * 5)
    >>> fit = fit_landmarks(model, project_landmarks(truth[:, model.landmarks], pose), groups=torch.tensor([7, 7]))
    >>> fit.alpha_id.shape, fit.shapes.shape, bool(fit.residual_px.max() < 1.0)
    (torch.Size([1, 4]), torch.Size([2, 100, 3]), True)
    """
    if not isinstance(model, MorphableModel):
        raise TypeError(f"model: expected a MorphableModel, got {type(model).__name__}")
    if model.landmarks.numel() != N_LANDMARKS:
        raise ValueError(f"model: has no {N_LANDMARKS}-landmark annotation (landmarks has {model.landmarks.numel()} entries)")
    check_tensor(landmarks2d, "landmarks2d", ("B", N_LANDMARKS, 2), finite=False)  # finite where mapped: below
    cfg = _resolve_config(config, options)
    B, dev, dt = landmarks2d.shape[0], landmarks2d.device, landmarks2d.dtype
    if weights is None:
        weights = torch.ones(B, N_LANDMARKS, dtype=dt, device=dev)
    check_tensor(weights, "weights", (B, N_LANDMARKS))
    if (weights < 0).any():
        raise ValueError("weights: must be >= 0")
    labels, group_index = group_index_of(groups, B, dev)
    G = labels.shape[0]
    k_id = leading_components(cfg.n_shape, model.n_shape, "n_shape")
    k_exp = leading_components(cfg.n_exp, model.n_exp, "n_exp")

    lm = model.landmarks.to(dev)
    mapped = model.landmark_mask.to(dev)
    if int(mapped.sum()) < MIN_MAPPED_LANDMARKS:
        raise ValueError(f"model: maps {int(mapped.sum())} of the {N_LANDMARKS} iBUG points to vertices; "
                         f"a landmark fit needs at least {MIN_MAPPED_LANDMARKS}")
    if not bool(mapped.all()):  # fit the mapped subset: a -1 index would silently pick the last vertex
        keep = mapped.nonzero()[:, 0]
        lm, landmarks2d, weights = lm[keep], landmarks2d[:, keep], weights[:, keep]
    check_tensor(landmarks2d, "landmarks2d", None)  # finite at the points that are fitted
    N = lm.shape[0]
    rows = (3 * lm[:, None] + torch.arange(3, device=dev)).reshape(-1)  # interleaved basis rows
    mean_lm = model.mean_shape.to(dev, dt)[lm]  # (N, 3)
    basis_lm = torch.cat([model.shape_basis[:, :k_id], model.exp_basis[:, :k_exp]], dim=1).to(dev, dt)
    basis_lm = basis_lm[rows].reshape(N, 3, k_id + k_exp)  # (N, 3, K + E)
    # prior precisions per coefficient, in units of the (px-noise-whitened) data term
    var_px = cfg.landmark_std_px ** 2
    prec_id = cfg.shape_prior * var_px / model.shape_std.to(dev, dt)[:k_id].clamp_min(MIN_STD_MM) ** 2
    prec_exp = cfg.exp_prior * var_px / model.exp_std.to(dev, dt)[:k_exp].clamp_min(MIN_STD_MM) ** 2
    no_damping = torch.zeros_like(prec_exp)
    prec_refine = torch.cat([prec_exp, prec_exp.new_zeros(N_POSE_STEP)])  # the pose step has no prior ...
    damp_refine = torch.cat([no_damping, prec_exp.new_full((N_POSE_STEP,), POSE_DAMPING)])  # ... only damping
    w2 = weights.to(dt).repeat_interleave(2, dim=1)  # (B, 2N), one weight per coordinate
    target = landmarks2d.reshape(B, -1)

    alpha_id = torch.zeros(G, k_id, dtype=dt, device=dev)
    alpha_exp = torch.zeros(B, k_exp, dtype=dt, device=dev)

    def current_landmarks3d() -> torch.Tensor:
        coeffs = torch.cat([alpha_id[group_index], alpha_exp], dim=1)
        return mean_lm + torch.einsum("nck,bk->bnc", basis_lm, coeffs)

    # 1. alternate: closed-form pose for the current shape, MAP shape for that pose
    for _ in range(cfg.n_iter):
        pose = estimate_pose(current_landmarks3d(), landmarks2d, weights)
        R, trans, scale = euler_to_rotation(pose[:, :3]), pose[:, 3:5], pose[:, 5]
        base = _pixels(mean_lm @ R.transpose(1, 2), scale, trans).reshape(B, -1)  # the mean shape's landmarks
        J = _coeff_jacobian(basis_lm, R, scale)
        alpha_id, alpha_exp = _solve_map(J, target - base, w2, k_id, prec_id, prec_exp, no_damping, group_index, G)
    # 2. refine pose and shape jointly (Gauss-Newton), which removes the slow zig-zag of
    # alternation. The expressions are integrated out for the scale: as a plain MAP
    # parameter a larger image scale makes every expression cheaper, and with many
    # images per identity the fitted identity shrinks (a Neyman-Scott bias; see the book).
    # The exact marginal adds log det(H_ee) per image, whose scale gradient enters here.
    for _ in range(cfg.n_refine):
        cam = current_landmarks3d() @ R.transpose(1, 2)
        base = _pixels(mean_lm @ R.transpose(1, 2), scale, trans).reshape(B, -1)
        J_shape = _coeff_jacobian(basis_lm, R, scale)
        J = torch.cat([J_shape, _pose_jacobian(cam, scale)], dim=-1)
        extra_g = torch.zeros(B, k_exp + N_POSE_STEP, dtype=dt, device=dev)
        if k_exp:
            extra_g[:, -1] = -0.5 * var_px * _expression_volume_gradient(J_shape[..., k_id:], w2, prec_exp, scale)
        alpha_id, local = _solve_map(J, target - base, w2, k_id, prec_id, prec_refine, damp_refine, group_index, G, extra_g)
        alpha_exp, step = local[:, :k_exp], local[:, k_exp:]
        # a trust region on the rotation: near-frontal views with a weak prior have almost
        # flat pitch/yaw-vs-shape directions, where a raw Gauss-Newton step can overshoot
        omega = step[:, :3]
        omega = omega * (MAX_ROTATION_STEP / omega.norm(dim=-1, keepdim=True).clamp_min(MAX_ROTATION_STEP))
        R = _small_rotation(omega) @ R
        trans, scale = trans + step[:, 3:5], scale + step[:, 5]

    pose = torch.cat([rotation_to_euler(R), trans, scale[:, None]], dim=-1)
    err2 = ((project_landmarks(current_landmarks3d(), pose) - landmarks2d) ** 2).sum(-1)
    residual = ((err2 * weights).sum(1) / weights.to(dt).sum(1).clamp_min(torch.finfo(dt).tiny)).sqrt()

    full_id = torch.zeros(G, model.n_shape, dtype=dt, device=dev)
    full_id[:, :k_id] = alpha_id
    full_exp = torch.zeros(B, model.n_exp, dtype=dt, device=dev)
    full_exp[:, :k_exp] = alpha_exp
    m = model.to(dev, dt)
    identity_shapes = m.shape(full_id)
    shapes = identity_shapes[group_index] + m.expression_offset(full_exp)
    return LandmarkFit(full_id, full_exp, pose, shapes, identity_shapes, residual, group_index, labels)
