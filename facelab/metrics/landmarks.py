"""2D landmark accuracy: NME normalised by the face box, reported per yaw bucket.

Book chapter: ``book/07_evaluation.ipynb``. This is the AFLW2000-3D convention: the mean
per-landmark Euclidean error divided by ``sqrt(w * h)`` of the ground-truth landmarks'
bounding box, summarised in the |yaw| buckets [0, 30], (30, 60] and > 60 degrees and as
the mean of the three bucket means ("balanced" NME).
"""

from __future__ import annotations

import numpy as np

from facelab.metrics._common import as_float_array

YAW_BUCKETS = (("[0,30]", 0.0, 30.0), ("(30,60]", 30.0, 60.0), (">60", 60.0, np.inf))


def landmark_nme(pred, gt, box=None) -> np.ndarray:
    """Per-image NME normalised by ``sqrt(w * h)`` of the ground-truth box.

    Args:
        pred, gt: ``(N, K, 2)`` float, pixels (K = 68 for iBUG).
        box: optional ``(N, 4)`` float boxes ``(x0, y0, x1, y1)``, pixels; by default the
            bounding box of each image's ground-truth landmarks.

    Returns:
        ``(N,)`` float64, unitless (multiply by 100 for the usual percent).

    >>> gt = np.array([[[0.0, 0.0], [4.0, 0.0], [4.0, 9.0]]])
    >>> landmark_nme(gt + [0.0, 3.0], gt)  # error 3 / sqrt(4 * 9)
    array([0.5])
    """
    p = as_float_array(pred, "pred", ("N", "K", 2))
    g = as_float_array(gt, "gt", p.shape)
    if box is None:
        size = g.max(axis=1) - g.min(axis=1)  # (N, 2): w, h
    else:
        b = as_float_array(box, "box", (p.shape[0], 4))
        size = b[:, 2:] - b[:, :2]
    area = size[:, 0] * size[:, 1]
    if np.any(area <= 0):
        bad = np.flatnonzero(area <= 0).tolist()
        raise ValueError(f"{'gt' if box is None else 'box'}: zero or negative box area for images {bad}")
    return np.mean(np.linalg.norm(p - g, axis=2), axis=1) / np.sqrt(area)


def nme_by_yaw(nme, yaw_deg) -> dict[str, float]:
    """Mean NME per |yaw| bucket and the mean of the bucket means.

    Args:
        nme: ``(N,)`` float per-image NME. yaw_deg: ``(N,)`` float yaw, degrees (sign ignored).

    Returns:
        ``{"[0,30]", "(30,60]", ">60", "mean"}`` -> float. An empty bucket is ``nan`` and is
        left out of ``"mean"`` (which is then the mean of the non-empty buckets).

    >>> nme_by_yaw([1.0, 3.0, 2.0, 6.0], [0.0, -30.0, 45.0, 90.0])
    {'[0,30]': 2.0, '(30,60]': 2.0, '>60': 6.0, 'mean': 3.3333333333333335}
    """
    e = as_float_array(nme, "nme", ("N",))
    yaw = np.abs(as_float_array(yaw_deg, "yaw_deg", (e.shape[0],)))
    out: dict[str, float] = {}
    for name, lo, hi in YAW_BUCKETS:
        inside = (yaw <= hi) & ((yaw > lo) if lo > 0 else (yaw >= lo))
        out[name] = float(e[inside].mean()) if inside.any() else float("nan")
    means = [v for v in out.values() if not np.isnan(v)]
    out["mean"] = float(np.mean(means))
    return out
