"""Masked photometric loss with the gradient difference loss (Gao et al. 2020, eq. 5).

Book chapter: ``book/06_losses.ipynb``.

``L_photo = M * (||I_hat - I||_2^2 + L_gdl)`` (eq. 5): the rendered image ``I_hat`` is
compared with the input ``I`` only where the mask ``M`` is on (rendered face, minus
occluders). The gradient difference loss (GDL) of Mathieu et al. 2016 compares the
*magnitudes of the image gradients* rather than the intensities, which the paper uses
to recover sharper albedo detail: a blurry reconstruction has the right mean colour
but too-small gradients, so L2 alone barely penalises it while GDL does.

Both terms are masked *means* (over pixels of the whole batch), so they do not scale
with the image size or the size of the face in the frame; the paper's ``M *`` leaves
the normalisation open.
"""

from __future__ import annotations

import torch
from torch import nn

from facelab.checks import check_tensor

#: Keeps a masked mean finite when the mask is empty (the loss is then 0).
MASK_EPS = 1e-8
#: Exponent of the GDL (Mathieu et al. 2016 use 1 or 2).
GDL_ALPHA = 1.0


def _check_images(pred: torch.Tensor, target: torch.Tensor) -> None:
    check_tensor(pred, "pred", ("B", "C", "H", "W"))
    check_tensor(target, "target", tuple(pred.shape))


def _mask_like(mask: torch.Tensor | None, pred: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` mask in ``pred``'s dtype (all ones for None)."""
    B, _, H, W = pred.shape
    if mask is None:
        return pred.new_ones(B, 1, H, W)
    check_tensor(mask, "mask", (B, 1, H, W), dtype_kind=None)
    return mask.to(dtype=pred.dtype)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values (B, C, H, W) * mask (B, 1, H, W)`` over everything, over the mask's sum."""
    return (values * mask).sum() / mask.sum().clamp_min(MASK_EPS)


def image_gradients(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences of an image along x (columns) and y (rows).

    Args:
        img: ``(B, C, H, W)`` float (any units, e.g. linear RGB in [0, 1]).

    Returns:
        ``dx (B, C, H, W-1) = img[..., 1:] - img[..., :-1]`` and
        ``dy (B, C, H-1, W) = img[..., 1:, :] - img[..., :-1, :]``, per pixel step.

    >>> dx, dy = image_gradients(torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]]]))
    >>> dx.tolist(), dy.tolist()
    ([[[[1.0, 2.0], [0.0, 0.0]]]], [[[[2.0, 1.0, -1.0]]]])
    """
    check_tensor(img, "img", ("B", "C", "H", "W"))
    return img[..., :, 1:] - img[..., :, :-1], img[..., 1:, :] - img[..., :-1, :]


def gradient_difference_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    alpha: float = GDL_ALPHA,
) -> torch.Tensor:
    """Gradient difference loss (Mathieu et al. 2016), the ``L_gdl`` of eq. 5.

    ``L_gdl = mean_x ||dx pred| - |dx target||^alpha + mean_y ||dy pred| - |dy target||^alpha``,
    summed over channels; each mean runs over the gradient positions whose *both*
    pixels are inside the mask, over the whole batch.

    Args:
        pred: ``(B, C, H, W)`` float, the rendered image, [0, 1].
        target: ``(B, C, H, W)`` float, the input image, [0, 1].
        mask: ``(B, 1, H, W)`` float or bool in [0, 1], or None (every pixel). Used as
            given: detach it if it comes from the renderer's coverage.
        alpha: exponent, > 0.

    Returns:
        ``()`` scalar, (intensity per pixel step) ** alpha.

    >>> pred = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    >>> gradient_difference_loss(pred, torch.zeros(1, 1, 2, 2))  # |dx| = 1 on both rows, dy = 0
    tensor(1.)
    """
    _check_images(pred, target)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha > 0:
        raise ValueError(f"alpha: expected a number > 0, got {alpha!r}")
    m = _mask_like(mask, pred)
    (pdx, pdy), (tdx, tdy) = image_gradients(pred), image_gradients(target)
    mdx = m[..., :, 1:] * m[..., :, :-1]
    mdy = m[..., 1:, :] * m[..., :-1, :]
    ex = (pdx.abs() - tdx.abs()).abs().pow(alpha).sum(dim=1, keepdim=True)
    ey = (pdy.abs() - tdy.abs()).abs().pow(alpha).sum(dim=1, keepdim=True)
    return _masked_mean(ex, mdx) + _masked_mean(ey, mdy)


def photometric_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    gdl_weight: float = 1.0,
    alpha: float = GDL_ALPHA,
) -> torch.Tensor:
    """Masked photometric loss of Gao et al. 2020, eq. 5.

    ``L_photo = mean_{p in M} ||pred_p - target_p||_2^2 + gdl_weight * L_gdl``, the squared
    colour distance summed over channels and averaged over the masked pixels of the
    batch, plus :func:`gradient_difference_loss`. In Gao et al. the mask is the
    rendered face region without occluders: ``render.mask * (1 - occlusion_mask)``.

    Args:
        pred: ``(B, 3, H, W)`` float, rendered image, [0, 1].
        target: ``(B, 3, H, W)`` float, input image, [0, 1].
        mask: ``(B, 1, H, W)`` float or bool in [0, 1], or None (every pixel).
        gdl_weight: weight of the GDL term, >= 0.
        alpha: GDL exponent.

    Returns:
        ``()`` scalar, squared intensity.

    >>> pred, target = torch.full((1, 3, 2, 2), 0.5), torch.zeros(1, 3, 2, 2)
    >>> photometric_loss(pred, target, torch.ones(1, 1, 2, 2))
    tensor(0.7500)
    """
    _check_images(pred, target)
    if not isinstance(gdl_weight, (int, float)) or isinstance(gdl_weight, bool) or gdl_weight < 0:
        raise ValueError(f"gdl_weight: expected a number >= 0, got {gdl_weight!r}")
    m = _mask_like(mask, pred)
    l2 = _masked_mean((pred - target).pow(2).sum(dim=1, keepdim=True), m)
    if gdl_weight == 0:
        return l2
    return l2 + gdl_weight * gradient_difference_loss(pred, target, m, alpha)


class PhotometricLoss(nn.Module):
    """:func:`photometric_loss` as a module: ``forward(pred, target, mask=None) -> ()``.

    >>> PhotometricLoss(gdl_weight=0.5)(torch.ones(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
    tensor(3.)
    """

    def __init__(self, gdl_weight: float = 1.0, alpha: float = GDL_ALPHA) -> None:
        super().__init__()
        if not isinstance(gdl_weight, (int, float)) or isinstance(gdl_weight, bool) or gdl_weight < 0:
            raise ValueError(f"gdl_weight: expected a number >= 0, got {gdl_weight!r}")
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha > 0:
            raise ValueError(f"alpha: expected a number > 0, got {alpha!r}")
        self.gdl_weight, self.alpha = float(gdl_weight), float(alpha)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return photometric_loss(pred, target, mask, self.gdl_weight, self.alpha)

    def extra_repr(self) -> str:
        return f"gdl_weight={self.gdl_weight}, alpha={self.alpha}"
