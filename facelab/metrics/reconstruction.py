"""Reconstruction error on meshes in dense correspondence (same topology as the truth).

Book chapter: ``book/07_evaluation.ipynb``. The prediction is aligned to the ground
truth by Umeyama/Procrustes on the corresponding (masked) vertices, then the error is the
root-mean-square per-vertex Euclidean distance in mm over the same vertices.
"""

from __future__ import annotations

import numpy as np

from facelab.checks import check_choice
from facelab.metrics._common import as_float_array, as_mask
from facelab.metrics.alignment import apply, procrustes

ALIGN_CHOICES = ("rigid", "similarity", "none")
OUTER_EYE_CORNERS = (36, 45)  # iBUG-68 outer eye corners


def align_to(pred: np.ndarray, gt: np.ndarray, idx: np.ndarray, align: str) -> np.ndarray:
    """``pred (V, 3)`` moved onto ``gt (V, 3)`` by Procrustes fitted on vertices ``idx``.

    ``align``: ``"rigid"``, ``"similarity"`` or ``"none"``. Returns ``(V, 3)`` float64, mm.

    >>> gt = np.eye(3); align_to(gt + 1.0, gt, np.arange(3), "rigid").round(6).tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    check_choice(align, "align", ALIGN_CHOICES)
    if align == "none":
        return pred
    return apply(procrustes(pred[idx], gt[idx], scale=align == "similarity"), pred)


def rmse(pred, gt, mask=None, align: str = "rigid"):
    """Per-vertex RMSE (mm) after alignment on corresponding vertices.

    Args:
        pred, gt: ``(V, 3)`` or ``(B, V, 3)`` float, mm, same topology.
        mask: optional ``(V,)`` bool or integer vertex indices (e.g. the model's
            ``face_mask``); used both to fit the alignment and to average the error.
        align: ``"rigid"`` (rotation + translation), ``"similarity"`` (+ scale) or ``"none"``.

    Returns:
        A float for ``(V, 3)`` inputs, a ``(B,)`` float64 array for batched inputs.

    >>> gt = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    >>> round(rmse(gt + [3.0, 4.0, 0.0], gt), 9), rmse(gt + [3.0, 4.0, 0.0], gt, align="none")
    (0.0, 5.0)
    """
    check_choice(align, "align", ALIGN_CHOICES)
    p = as_float_array(pred, "pred")
    batched = p.ndim == 3
    shape = ("B", "V", 3) if batched else ("V", 3)
    p = as_float_array(pred, "pred", shape)
    g = as_float_array(gt, "gt", p.shape)
    idx = np.arange(p.shape[-2]) if mask is None else as_mask(mask, "mask", p.shape[-2])
    if not batched:
        return _rmse_one(p, g, idx, align)
    return np.array([_rmse_one(pb, gb, idx, align) for pb, gb in zip(p, g)])


def _rmse_one(p: np.ndarray, g: np.ndarray, idx: np.ndarray, align: str) -> float:
    aligned = align_to(p, g, idx, align)
    return float(np.sqrt(np.mean(np.sum((aligned[idx] - g[idx]) ** 2, axis=1))))


def nme_interocular(pred, gt, outer_eye_idx=OUTER_EYE_CORNERS, align: str = "none"):
    """Mean landmark error normalised by the ground truth's outer interocular distance.

    Args:
        pred, gt: ``(K, D)`` or ``(N, K, D)`` float landmarks (D = 2 or 3, any common unit).
        outer_eye_idx: the two landmark indices whose gt distance normalises (iBUG-68:
            36 and 45, the outer eye corners).
        align: ``"none"`` (default), ``"rigid"`` or ``"similarity"`` Procrustes of pred to gt
            over all K landmarks first (3-D only).

    Returns:
        A float (unitless) for ``(K, D)`` input, a ``(N,)`` array for batched input.

    >>> gt = np.zeros((68, 2)); gt[45, 0] = 10.0
    >>> nme_interocular(gt + [0.0, 1.0], gt)
    0.1
    """
    check_choice(align, "align", ALIGN_CHOICES)
    p = as_float_array(pred, "pred")
    batched = p.ndim == 3
    shape = ("N", "K", "D") if batched else ("K", "D")
    p = as_float_array(pred, "pred", shape)
    g = as_float_array(gt, "gt", p.shape)
    n_lmk = p.shape[-2]
    i, j = (int(k) for k in outer_eye_idx)
    if not (0 <= i < n_lmk and 0 <= j < n_lmk) or i == j:
        raise ValueError(f"outer_eye_idx: need two distinct indices in [0, {n_lmk}), got {outer_eye_idx}")
    if align != "none" and p.shape[-1] != 3:
        raise ValueError(f"align: {align!r} alignment needs 3-D landmarks, got D={p.shape[-1]}")
    ps, gs = (p, g) if batched else (p[None], g[None])
    out = np.array([_nme_one(a, b, i, j, align) for a, b in zip(ps, gs)])
    return out if batched else float(out[0])


def _nme_one(p: np.ndarray, g: np.ndarray, i: int, j: int, align: str) -> float:
    iod = np.linalg.norm(g[i] - g[j])
    if iod <= 0:
        raise ValueError(f"gt: outer eye corners {i} and {j} coincide; interocular distance is 0")
    p = align_to(p, g, np.arange(p.shape[0]), align)
    return float(np.mean(np.linalg.norm(p - g, axis=1)) / iod)
