"""Scan-based reconstruction protocols: MICC Florence style and NoW style.

Book chapter: ``book/07_evaluation.ipynb``. Both compare a predicted mesh with a ground
truth scan that is *not* in correspondence with it, so the prediction is first aligned
(landmarks, then closest-point ICP) and errors are distances to surfaces, in mm.

MICC (as used by Gao et al. 2020, after Tran et al. 2017): the scan is cropped to 95 mm
around its nose tip; the prediction is aligned to the crop by landmark-initialised ICP
(optionally with scale); the error of each cropped scan vertex is its point-to-plane
distance to the predicted surface. What is passed in is the model's business: for
"average over identity" the mesh decoded from the identity code averaged over a video
with the neutral expression code; for "three-view" the average of the meshes
reconstructed from a left, a frontal and a right frame. :func:`micc_table` then
summarises per-subject mean errors per condition (cooperative / indoor / outdoor).

NoW (Sanyal et al. 2019): 7-landmark similarity Procrustes of the prediction to the scan,
rigid refinement of the scan against the predicted surface, then unsigned scan-to-mesh
distances, pooled over all scan vertices of all images by :func:`now_summary`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from facelab.metrics._common import as_float_array, as_index_array
from facelab.metrics.alignment import Similarity, apply, icp, procrustes
from facelab.metrics.surface import point_to_plane, point_to_surface

MICC_RADIUS_MM = 95.0
MICC_CONDITIONS = ("cooperative", "indoor", "outdoor")
NOW_N_LANDMARKS = 7
PROTOCOL_ICP_ITERS = 100
PROTOCOL_ICP_TOL = 1e-5  # mm change of the RMS distance: far below the errors reported


def _summary(distances: np.ndarray) -> dict:
    return {
        "mean": float(np.mean(distances)),
        "std": float(np.std(distances)),
        "median": float(np.median(distances)),
    }


def crop_around(verts, center, radius: float = MICC_RADIUS_MM) -> tuple[np.ndarray, np.ndarray]:
    """Vertices within ``radius`` of ``center`` (inclusive).

    Args:
        verts: ``(V, 3)`` float, mm. center: ``(3,)`` float, mm (e.g. the nose tip).
        radius: mm (95 for MICC).

    Returns:
        ``(cropped (M, 3) float64 mm, index (M,) int64)`` with ``cropped = verts[index]``.

    >>> crop_around(np.array([[0.0, 0, 0], [0, 0, 100]]), np.zeros(3))[1]
    array([0])
    """
    v = as_float_array(verts, "verts", ("V", 3))
    c = as_float_array(center, "center", (3,))
    if not radius > 0:
        raise ValueError(f"radius: must be positive, got {radius}")
    index = np.flatnonzero(np.linalg.norm(v - c, axis=1) <= radius)
    if index.size == 0:
        raise ValueError(f"verts: no vertex lies within {radius} mm of center {c.tolist()}")
    return v[index], index


def micc_error(
    pred_verts,
    pred_faces,
    gt_verts,
    gt_faces=None,
    *,
    nose_tip_gt,
    pred_landmarks=None,
    gt_landmarks=None,
    radius: float = MICC_RADIUS_MM,
    scale: bool = True,
    max_iter: int = PROTOCOL_ICP_ITERS,
    tol: float = PROTOCOL_ICP_TOL,
) -> dict:
    """MICC-style point-to-plane error of a predicted mesh against a ground-truth scan.

    Steps: crop the scan to ``radius`` mm around ``nose_tip_gt``; initialise the alignment
    by Procrustes of ``gt_landmarks`` onto ``pred_landmarks`` (or, without landmarks, by
    matching centroids); ICP of the cropped scan onto the predicted surface (the direction
    in which the error is measured, so prediction parts outside the crop cannot bias it);
    move the prediction by the inverse transform into the scan's frame; measure the
    distance of every cropped scan vertex to the plane of its closest predicted triangle.

    Args:
        pred_verts: ``(Vp, 3)`` float, mm. pred_faces: ``(Fp, 3)`` int.
        gt_verts: ``(Vg, 3)`` float scan vertices, mm. gt_faces: unused, accepted so that a
            scan mesh can be passed whole (the error is per scan vertex).
        nose_tip_gt: ``(3,)`` float, mm, the crop centre on the scan.
        pred_landmarks, gt_landmarks: optional ``(K, 3)`` corresponding landmarks, mm, K >= 3.
        radius: crop radius, mm. scale: allow a global scale in the alignment.
        max_iter, tol: ICP limits (iterations, mm).

    Returns:
        dict with ``mean, std, median`` (mm, floats), ``distances`` ``(M,)`` mm per cropped
        scan vertex, ``crop_index`` ``(M,)`` their indices in ``gt_verts``, and ``transform``
        (the :class:`Similarity` that moved the prediction onto the scan).

    >>> g = np.linspace(-60, 60, 25); u, v = np.meshgrid(g, g)
    >>> verts = np.stack([u.ravel(), v.ravel(), 30 * np.exp(-(u**2 + v**2).ravel() / 2000)], 1)
    >>> idx = np.arange(625).reshape(25, 25)
    >>> faces = np.concatenate([np.stack([idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel()], 1),
    ...                         np.stack([idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()], 1)])
    >>> out = micc_error(verts + [1.0, 2.0, 0.5], faces, verts, nose_tip_gt=verts[312])
    >>> out["mean"] < 1e-4
    True
    """
    pv = as_float_array(pred_verts, "pred_verts", ("V", 3))
    pf = as_index_array(pred_faces, "pred_faces", ("F", 3), upper=pv.shape[0])
    gv = as_float_array(gt_verts, "gt_verts", ("V", 3))
    if gt_faces is not None:
        as_index_array(gt_faces, "gt_faces", ("F", 3), upper=gv.shape[0])
    crop, crop_index = crop_around(gv, nose_tip_gt, radius)

    init = _landmark_init(pred_landmarks, gt_landmarks, scale)
    if init is None:
        init = Similarity(np.eye(3), pv.mean(axis=0) - crop.mean(axis=0), 1.0)
    scan_to_pred, _ = icp(crop, pv, pf, init=init, scale=scale, max_iter=max_iter, tol=tol)
    pred_to_scan = scan_to_pred.inverse()
    distances = point_to_plane(crop, apply(pred_to_scan, pv), pf)
    return {**_summary(distances), "distances": distances, "crop_index": crop_index, "transform": pred_to_scan}


def _landmark_init(pred_landmarks, gt_landmarks, scale: bool) -> Similarity | None:
    """Procrustes of gt landmarks onto pred landmarks (the scan moves in ICP)."""
    if (pred_landmarks is None) != (gt_landmarks is None):
        raise ValueError("pred_landmarks, gt_landmarks: give both or neither")
    if pred_landmarks is None:
        return None
    pl = as_float_array(pred_landmarks, "pred_landmarks", ("K", 3))
    gl = as_float_array(gt_landmarks, "gt_landmarks", pl.shape)
    return procrustes(gl, pl, scale=scale)


def micc_table(per_sample_errors, conditions: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean and population std of per-sample MICC errors for each condition.

    Args:
        per_sample_errors: ``(S,)`` float, mm, e.g. ``micc_error(...)["mean"]`` per subject
            and video. conditions: ``S`` strings, e.g. ``"cooperative"``, ``"indoor"``,
            ``"outdoor"``.

    Returns:
        ``{condition: {"mean", "std", "n"}}``: the MICC conditions first in their usual
        order, then any others sorted.

    >>> micc_table([1.0, 3.0, 2.0], ["indoor", "cooperative", "indoor"])
    {'cooperative': {'mean': 3.0, 'std': 0.0, 'n': 1}, 'indoor': {'mean': 1.5, 'std': 0.5, 'n': 2}}
    """
    err = as_float_array(per_sample_errors, "per_sample_errors", ("S",))
    cond = np.asarray(list(conditions), dtype=object)
    if cond.shape != err.shape:
        raise ValueError(f"conditions: expected {err.shape[0]} entries, got {cond.shape[0]}")
    present = set(cond.tolist())
    order = [c for c in MICC_CONDITIONS if c in present] + sorted(present - set(MICC_CONDITIONS))
    return {
        c: {"mean": float(err[cond == c].mean()), "std": float(err[cond == c].std()), "n": int((cond == c).sum())}
        for c in order
    }


def now_error(
    pred_verts,
    pred_faces,
    pred_lmk7,
    scan_points,
    scan_lmk7,
    max_iter: int = PROTOCOL_ICP_ITERS,
    tol: float = PROTOCOL_ICP_TOL,
) -> dict:
    """NoW-style scan-to-mesh error of one prediction.

    Steps: similarity Procrustes of the 7 predicted landmarks onto the scan's 7 landmarks
    (moves the prediction into the scan's frame and scale); rigid ICP of the scan points
    onto the predicted surface (exact closest points on triangles), which minimises the
    scan-to-mesh distance; then the unsigned distance of every scan point to the surface.

    Args:
        pred_verts: ``(V, 3)`` float, mm (any scale; fixed by the landmarks).
        pred_faces: ``(F, 3)`` int. pred_lmk7: ``(7, 3)`` float predicted landmarks.
        scan_points: ``(P, 3)`` float, mm. scan_lmk7: ``(7, 3)`` float scan landmarks, mm.

    Returns:
        dict with ``median, mean, std`` (mm) and ``distances`` ``(P,)`` mm.

    >>> g = np.linspace(-60, 60, 20); u, v = np.meshgrid(g, g)
    >>> verts = np.stack([u.ravel(), v.ravel(), 30 * np.exp(-(u**2 + v**2).ravel() / 2000)], 1)
    >>> idx = np.arange(400).reshape(20, 20)
    >>> faces = np.concatenate([np.stack([idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel()], 1),
    ...                         np.stack([idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()], 1)])
    >>> lmk = verts[[0, 19, 380, 399, 210, 150, 250]]
    >>> now_error(0.5 * verts, faces, 0.5 * lmk, verts, lmk)["median"] < 1e-6
    True
    """
    pv = as_float_array(pred_verts, "pred_verts", ("V", 3))
    pf = as_index_array(pred_faces, "pred_faces", ("F", 3), upper=pv.shape[0])
    pl = as_float_array(pred_lmk7, "pred_lmk7", (NOW_N_LANDMARKS, 3))
    scan = as_float_array(scan_points, "scan_points", ("P", 3))
    sl = as_float_array(scan_lmk7, "scan_lmk7", (NOW_N_LANDMARKS, 3))

    pred_in_scan = apply(procrustes(pl, sl, scale=True), pv)
    refine, _ = icp(scan, pred_in_scan, pf, init=None, scale=False, max_iter=max_iter, tol=tol)
    distances = point_to_surface(apply(refine, scan), pred_in_scan, pf).distances
    return {**_summary(distances), "distances": distances}


def now_summary(distance_arrays) -> dict[str, float]:
    """Pool the scan-to-mesh distances of all images: ``{"median", "mean", "std"}`` in mm.

    ``distance_arrays``: a sequence of ``(P_i,)`` float arrays, mm (``now_error(...)["distances"]``).

    >>> now_summary([np.array([1.0, 2.0]), np.array([3.0])])
    {'median': 2.0, 'mean': 2.0, 'std': 0.816496580927726}
    """
    arrays = list(distance_arrays)
    if not arrays:
        raise ValueError("distance_arrays: is empty")
    pooled = np.concatenate([as_float_array(a, f"distance_arrays[{k}]", (None,)) for k, a in enumerate(arrays)])
    s = _summary(pooled)
    return {"median": s["median"], "mean": s["mean"], "std": s["std"]}
