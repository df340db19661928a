"""The shape identity-aware regularisation (SIR) loss, in facelab's definition.

Book chapter: ``book/10_sir.ipynb``.

Why: a recognition loss on the *direction* of the standardised shape coefficients
``a = alpha / sigma`` can separate identities in parameter space while the shapes it
reconstructs look alike, because a unit of ``a_k`` moves the surface by ``sigma_k`` mm:
a large difference along a small-``sigma`` component is a small difference in geometry.
The SIR loss therefore works in the *geometry-weighted space*

    ``g = sigma * a / sqrt(V)``   (per sample, ``(K,)``, mm),

where, for an orthonormal shape basis ``U (3V, K)``, ``||g_i - g_j||`` equals the per-vertex
RMS distance (mm) between the reconstructed shapes ``mean + U (sigma * a_i)`` and
``mean + U (sigma * a_j)``: ``||U sigma (a_i - a_j)|| = ||sigma (a_i - a_j)||`` summed over the
3V coordinates, and dividing by ``sqrt(V)`` turns the root-sum into a per-vertex RMS.

facelab's own definitions (the SIR paper is available to us only as an abstract, its code
is incomplete): the center/margin form below, the squared hinge, the per-batch centres,
the means used for normalisation and the default margin :data:`SIR_MARGIN_MM`.

With ``c_i`` the mean of ``g`` over the batch samples of identity ``i``:

* pull  = ``mean_b ||g_b - c_{y_b}||^2``  (over all B samples; a sample whose identity
  appears once in the batch contributes 0), mm^2;
* push  = ``mean_{i < j} relu(margin_mm - ||c_i - c_j||)^2`` over the pairs of distinct
  identities in the batch (0 when the batch holds fewer than two identities), mm^2;
* ``sir_loss = pull + push``.

No rigid alignment is involved: the shapes share the model's frame, and the identity
part of a reconstruction carries no pose.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from facelab.checks import check_positive, check_tensor

#: Default push margin between identity centres, per-vertex RMS in mm. SynthFaces
#: identities (quick grid) are 6.7 mm RMS apart on average and 4.2 mm at the 10 % quantile,
#: so 3 mm only pushes centres that have nearly collapsed onto each other.
SIR_MARGIN_MM = 3.0
# Squared centre distances below this (mm^2) are clamped before the square root, whose
# slope is infinite at 0; such pairs then get no push gradient (a measure-zero case).
_DIST2_EPS = 1e-12


def _check_n_verts(n_verts) -> int:
    if n_verts is None:
        raise ValueError("n_verts: required, the number of mesh vertices V (sets the per-vertex RMS scale)")
    return check_positive(n_verts, "n_verts", integer=True)


def geometry_weighted(alpha_std: torch.Tensor, shape_std: torch.Tensor, n_verts: int | None = None) -> torch.Tensor:
    """Map standardised coefficients to the geometry-weighted space ``g = sigma * a / sqrt(V)``.

    Args:
        alpha_std: ``(B, K)`` float, standardised shape coefficients ``a = alpha / sigma`` (unitless).
        shape_std: ``(K,)`` float, mm, the model's ``shape_std`` (sigma, root-sum over 3V coords).
        n_verts: V, the number of mesh vertices.

    Returns:
        ``(B, K)`` float, mm: for an orthonormal basis, ``||g_i - g_j||`` is the per-vertex RMS
        distance between the reconstructed shapes ``i`` and ``j``.

    >>> geometry_weighted(torch.tensor([[1.0, 2.0]]), torch.tensor([4.0, 1.0]), n_verts=4)
    tensor([[2., 1.]])
    """
    check_tensor(alpha_std, "alpha_std", ("B", "K"))
    check_tensor(shape_std, "shape_std", (alpha_std.shape[1] if alpha_std.dim() == 2 else "K",))
    V = _check_n_verts(n_verts)
    if (shape_std < 0).any():
        raise ValueError("shape_std: standard deviations must be >= 0")
    return alpha_std * shape_std.to(alpha_std) / math.sqrt(V)


def sir_loss_terms(
    alpha_std: torch.Tensor,
    labels: torch.Tensor,
    shape_std: torch.Tensor,
    margin_mm: float = SIR_MARGIN_MM,
    n_verts: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pull and push terms of :func:`sir_loss`, separately: ``(pull (), push ())``, mm^2.

    >>> pull, push = sir_loss_terms(torch.tensor([[0.0], [2.0]]), torch.tensor([0, 0]),
    ...                             torch.tensor([1.0]), n_verts=1)
    >>> pull.item(), push.item()
    (1.0, 0.0)
    """
    g = geometry_weighted(alpha_std, shape_std, n_verts)
    check_tensor(labels, "labels", (g.shape[0],), dtype_kind="int")
    if g.shape[0] == 0:
        raise ValueError("alpha_std: empty batch")
    if not isinstance(margin_mm, (int, float)) or isinstance(margin_mm, bool) or margin_mm < 0:
        raise ValueError(f"margin_mm: expected a number >= 0 (mm), got {margin_mm!r}")
    uniq, inv = torch.unique(labels, return_inverse=True)
    n_ids = uniq.shape[0]
    counts = torch.bincount(inv, minlength=n_ids).to(g)
    centres = torch.zeros(n_ids, g.shape[1], dtype=g.dtype, device=g.device).index_add(0, inv, g) / counts[:, None]
    pull = (g - centres[inv]).pow(2).sum(dim=1).mean()
    if n_ids < 2:
        return pull, g.sum() * 0.0  # keeps the graph (and dtype/device) for callers that sum terms
    i, j = torch.triu_indices(n_ids, n_ids, offset=1, device=g.device)
    dist = (centres[i] - centres[j]).pow(2).sum(dim=1).clamp_min(_DIST2_EPS).sqrt()
    push = torch.relu(margin_mm - dist).pow(2).mean()
    return pull, push


def sir_loss(
    alpha_std: torch.Tensor,
    labels: torch.Tensor,
    shape_std: torch.Tensor,
    margin_mm: float = SIR_MARGIN_MM,
    n_verts: int | None = None,
) -> torch.Tensor:
    """SIR loss: pull same-identity shapes together, push identity centres apart, in mm.

    Center/margin form in the geometry-weighted space ``g = sigma * a / sqrt(V)`` (see the
    module docstring; this form, its normalisation and margin are facelab's definitions):
    ``pull + push`` with ``pull = mean_b ||g_b - c_{y_b}||^2`` and
    ``push = mean_{i<j} relu(margin_mm - ||c_i - c_j||)^2`` over the batch's identity centres.

    Args:
        alpha_std: ``(B, K)`` float, standardised shape coefficients ``a = alpha / sigma``.
        labels: ``(B,)`` int, identity labels (any integers; equal = same identity).
        shape_std: ``(K,)`` float, mm, the shape model's ``shape_std`` (sigma).
        margin_mm: push margin between identity centres, per-vertex RMS mm (>= 0).
        n_verts: V, the number of mesh vertices (required).

    Returns:
        ``()`` float, mm^2. Differentiable in ``alpha_std``.

    >>> a = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 2.0], [1.0, 2.0]])
    >>> # centres (1, 0) and (1, 2): pull = (1 + 1 + 0 + 0) / 4, push = (3 - 2)^2
    >>> sir_loss(a, torch.tensor([0, 0, 1, 1]), torch.tensor([1.0, 1.0]), margin_mm=3.0, n_verts=1)
    tensor(1.5000)
    """
    pull, push = sir_loss_terms(alpha_std, labels, shape_std, margin_mm, n_verts)
    return pull + push


class SIRLoss(nn.Module):
    """:func:`sir_loss` with the model's ``shape_std`` (a buffer) and ``n_verts`` fixed.

    Args:
        shape_std: ``(K,)`` float, mm, e.g. ``morphable.shape_std[:K]``.
        n_verts: V, the number of mesh vertices.
        margin_mm: push margin, per-vertex RMS mm.

    ``forward(alpha_std (B, K), labels (B,)) -> ()`` mm^2.

    >>> loss = SIRLoss(torch.ones(2), n_verts=1)
    >>> loss(torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 2.0], [1.0, 2.0]]), torch.tensor([0, 0, 1, 1]))
    tensor(1.5000)
    """

    def __init__(self, shape_std: torch.Tensor, n_verts: int, margin_mm: float = SIR_MARGIN_MM) -> None:
        super().__init__()
        check_tensor(shape_std, "shape_std", ("K",))
        _check_n_verts(n_verts)
        if not isinstance(margin_mm, (int, float)) or isinstance(margin_mm, bool) or margin_mm < 0:
            raise ValueError(f"margin_mm: expected a number >= 0 (mm), got {margin_mm!r}")
        self.register_buffer("shape_std", shape_std.detach().clone())
        self.n_verts, self.margin_mm = int(n_verts), float(margin_mm)

    @classmethod
    def from_morphable(cls, morphable, n_shape: int | None = None, margin_mm: float = SIR_MARGIN_MM) -> "SIRLoss":
        """Build from a :class:`~facelab.morphable.MorphableModel` (its first ``n_shape`` stds)."""
        k = morphable.n_shape if n_shape is None else n_shape
        if not 0 < k <= morphable.n_shape:
            raise ValueError(f"n_shape: must lie in [1, {morphable.n_shape}], got {k}")
        return cls(morphable.shape_std[:k], morphable.n_verts, margin_mm)

    def terms(self, alpha_std: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pull, push)``, each ``()`` mm^2 (see :func:`sir_loss_terms`)."""
        return sir_loss_terms(alpha_std, labels, self.shape_std, self.margin_mm, self.n_verts)

    def forward(self, alpha_std: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return sir_loss(alpha_std, labels, self.shape_std, self.margin_mm, self.n_verts)

    def extra_repr(self) -> str:
        return f"K={self.shape_std.shape[0]}, n_verts={self.n_verts}, margin_mm={self.margin_mm}"
