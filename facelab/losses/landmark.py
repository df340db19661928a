"""Sparse landmark loss with a landmark GDL (Gao et al. 2020, eq. 6).

Book chapter: ``book/06_losses.ipynb``.

``L_lmk = ||s2D[:, L] - U||_2^2 + L_gdl,lmk`` (eq. 6): the projected landmark vertices of
the reconstruction are pulled onto the detected 2D landmarks ``U``, and the
*distances between chosen landmark pairs* are pulled onto the target's distances.
The paper stresses the eyelid and lip openings: a closed-vs-open eye is a 1-2 px
difference that a plain per-point loss weighs no more than any other 1-2 px error,
while the pair term measures exactly that opening.
"""

from __future__ import annotations

import torch
from torch import nn

from facelab.checks import check_tensor

#: iBUG-68 (0-based) landmark pairs of the landmark GDL, as ``(K, 2)`` long.
LANDMARK_GDL_PAIRS = torch.tensor([
    # eye openings: upper lid -> lower lid (right eye 36-41, left eye 42-47)
    [37, 41], [38, 40], [43, 47], [44, 46],
    # inner-lip opening (60-67) and outer-lip opening (48-59)
    [61, 67], [62, 66], [63, 65], [50, 58], [51, 57], [52, 56],
    # face-size distances: outer eye corners, mouth corners, nose root to chin,
    # nose width, jaw width
    [36, 45], [48, 54], [27, 8], [31, 35], [0, 16],
], dtype=torch.long)

#: Number of iBUG landmarks.
N_LANDMARKS = 68


def _check_points(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """Shapes, and finite values at the points that count (all, or those ``mask`` keeps)."""
    check_tensor(pred, "pred", ("B", "K", 2), finite=mask is None)
    check_tensor(target, "target", tuple(pred.shape), finite=mask is None)
    if mask is not None:
        check_tensor(mask, "mask", (pred.shape[1],), dtype_kind=None)
        keep = mask.to(device=pred.device, dtype=torch.bool)
        check_tensor(pred[:, keep], "pred", None)
        check_tensor(target[:, keep], "target", None)


def _masked(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None):
    """``(pred, target)`` with unmapped points (``mask`` False) set to 0 in both.

    Zeroing the inputs (not the loss) keeps NaN placeholders at unmapped points out of the
    value and the gradient: ``0 * NaN`` would be NaN.
    """
    if mask is None:
        return pred, target
    keep = mask.to(device=pred.device, dtype=torch.bool)[None, :, None]
    return torch.where(keep, pred, 0.0), torch.where(keep, target, 0.0)


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared 2D landmark distance, the first term of eq. 6.

    ``sum_{b,k} w_bk ||pred_bk - target_bk||^2 / sum_{b,k} w_bk`` (the plain mean for
    ``weight=None``). Zero weights drop a landmark (e.g. an invisible one).

    Args:
        pred: ``(B, K, 2)`` float, projected landmarks, px (K = 68 for iBUG).
        target: ``(B, K, 2)`` float, ground-truth landmarks, px.
        weight: ``(K,)`` or ``(B, K)`` float >= 0, or None.
        mask: ``(K,)`` bool or None: the points the model maps (``model.landmark_mask``); the
            mean runs over these only, and ``pred``/``target`` elsewhere (NaN included) are ignored.

    Returns:
        ``()`` scalar, px^2.

    >>> landmark_loss(torch.tensor([[[3.0, 4.0], [0.0, 0.0]]]), torch.zeros(1, 2, 2))
    tensor(12.5000)
    >>> landmark_loss(torch.tensor([[[3.0, 4.0], [float("nan"), 0.0]]]), torch.zeros(1, 2, 2),
    ...               mask=torch.tensor([True, False]))
    tensor(25.)
    """
    _check_points(pred, target, mask)
    pred, target = _masked(pred, target, mask)
    d2 = (pred - target).pow(2).sum(dim=-1)  # (B, K) px^2
    if weight is None and mask is None:
        return d2.mean()
    if weight is None:
        weight = torch.ones(pred.shape[1], dtype=d2.dtype, device=d2.device)
    if weight.dim() == 1:
        check_tensor(weight, "weight", (pred.shape[1],))
    else:
        check_tensor(weight, "weight", tuple(pred.shape[:2]))
    if (weight < 0).any():
        raise ValueError("weight: landmark weights must be >= 0")
    w = weight.to(d2.dtype).expand_as(d2)
    if mask is not None:
        w = w * mask.to(device=d2.device, dtype=d2.dtype)
    return (w * d2).sum() / w.sum().clamp_min(torch.finfo(d2.dtype).tiny)


def _check_pairs(pairs: torch.Tensor, n_points: int | None = None) -> torch.Tensor:
    check_tensor(pairs, "pairs", (None, 2), dtype_kind="int")
    if pairs.numel() == 0:
        raise ValueError("pairs: need at least one landmark pair")
    top = "" if n_points is None else f", {n_points})"
    if int(pairs.min()) < 0 or (n_points is not None and int(pairs.max()) >= n_points):
        raise ValueError(f"pairs: landmark indices must lie in [0{top or ', inf)'}, got [{int(pairs.min())}, {int(pairs.max())}]")
    return pairs


def landmark_gdl(pred: torch.Tensor, target: torch.Tensor, pairs: torch.Tensor = LANDMARK_GDL_PAIRS,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Landmark gradient difference loss ``L_gdl,lmk`` of eq. 6.

    ``mean_{b, (i, j)} (||pred_i - pred_j|| - ||target_i - target_j||)^2``.

    Args:
        pred: ``(B, K, 2)`` float, px.
        target: ``(B, K, 2)`` float, px.
        pairs: ``(P, 2)`` long landmark indices (default :data:`LANDMARK_GDL_PAIRS`).
        mask: ``(K,)`` bool or None: the mapped points; pairs with an unmapped end are left
            out (0 when none is left, e.g. jaw width without the jaw contour).

    Returns:
        ``()`` scalar, px^2.

    >>> pred = torch.tensor([[[0.0, 0.0], [0.0, 3.0]]])     # opening 3 px
    >>> target = torch.tensor([[[0.0, 0.0], [4.0, 0.0]]])   # opening 4 px
    >>> landmark_gdl(pred, target, torch.tensor([[0, 1]]))
    tensor(1.)
    """
    _check_points(pred, target, mask)
    pairs = _check_pairs(pairs, pred.shape[1]).to(pred.device)
    if mask is not None:
        pred, target = _masked(pred, target, mask)
        keep = mask.to(device=pred.device, dtype=torch.bool)
        pairs = pairs[keep[pairs].all(dim=1)]
        if not pairs.numel():
            return pred.sum() * 0.0  # no pair left: a zero that still has a graph
    # vector_norm's backward is 0 (not NaN) at a zero distance, e.g. a fully closed eye.
    dp = torch.linalg.vector_norm(pred[:, pairs[:, 0]] - pred[:, pairs[:, 1]], dim=-1)
    dt = torch.linalg.vector_norm(target[:, pairs[:, 0]] - target[:, pairs[:, 1]], dim=-1)
    return (dp - dt).pow(2).mean()


class LandmarkLoss(nn.Module):
    """``L_lmk = landmark_loss + gdl_weight * landmark_gdl`` (Gao et al. 2020, eq. 6).

    ``forward(pred (B, K, 2) px, target (B, K, 2) px, weight=None, mask=None) -> ()`` px^2;
    ``mask (K,)`` bool (``model.landmark_mask``) leaves unmapped points out of both terms.

    >>> LandmarkLoss()(torch.ones(2, 68, 2), torch.zeros(2, 68, 2))
    tensor(2.)
    """

    def __init__(self, gdl_weight: float = 1.0, pairs: torch.Tensor = LANDMARK_GDL_PAIRS) -> None:
        super().__init__()
        if not isinstance(gdl_weight, (int, float)) or isinstance(gdl_weight, bool) or gdl_weight < 0:
            raise ValueError(f"gdl_weight: expected a number >= 0, got {gdl_weight!r}")
        self.gdl_weight = float(gdl_weight)
        self.register_buffer("pairs", _check_pairs(pairs).clone())

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        loss = landmark_loss(pred, target, weight, mask)
        if self.gdl_weight == 0:
            return loss
        return loss + self.gdl_weight * landmark_gdl(pred, target, self.pairs, mask)

    def extra_repr(self) -> str:
        return f"gdl_weight={self.gdl_weight}, n_pairs={self.pairs.shape[0]}"
