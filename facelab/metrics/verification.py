"""Face verification (the LFW protocol) and closed-set identification.

Book chapter: ``book/07_evaluation.ipynb``. The protocol follows the FaceNet /
insightface ``verification.py`` evaluation code:

* embeddings are L2-normalised, the pair distance is the squared Euclidean distance
  ``2 - 2 cos`` (in ``[0, 4]``);
* the pairs are split into ``n_folds`` contiguous folds without shuffling
  (``sklearn.model_selection.KFold(shuffle=False)``);
* for each test fold the threshold with the best accuracy on the other folds is picked
  from ``thresholds`` (ties -> the smallest threshold), predicting "same" if
  ``dist < thr``; accuracy is reported as mean and population std over the folds;
* VAL@FAR: per fold, the threshold giving the target FAR on the training folds is found by
  piecewise-linear interpolation of threshold against FAR, then VAL and FAR are measured
  on the test fold;
* ROC/AUC/EER use all pairs with similarity ``-dist``; TAR@FAR takes the ROC point whose
  FPR is nearest the target (as in the IJB-C evaluation script).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import brentq
from sklearn.metrics import auc as sklearn_auc
from sklearn.metrics import roc_curve

from facelab.checks import check_positive
from facelab.metrics._common import as_bool_array, as_float_array, as_label_array

DEFAULT_N_FOLDS = 10
DEFAULT_THRESHOLDS = np.arange(0.0, 4.0, 0.01)
DEFAULT_FAR_TARGETS = (1e-3, 1e-2, 1e-1)
VAL_FAR_TARGET = 1e-3  # the single FAR at which VAL is reported (LFW convention)
_NORM_EPS = 1e-12


@dataclass
class VerificationResult:
    """Outcome of :func:`verify`. Accuracies, VAL, FAR, TAR, AUC and EER are fractions in [0, 1].

    ``to_dict()`` gives exactly the keys ``accuracy_mean, accuracy_std, auc, eer, val,
    val_std, far, tar_at_far, best_thresholds`` (JSON-ready).
    """

    accuracy_mean: float
    accuracy_std: float
    auc: float
    eer: float
    val: float
    val_std: float
    far: float
    tar_at_far: dict[str, float]
    best_thresholds: list[float]
    fold_accuracies: list[float] = field(default_factory=list)
    #: per pair, whether its fold's threshold (chosen on the other folds) classified it right;
    #: the units a paired bootstrap of two models' accuracies resamples
    pair_correct: list[bool] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "accuracy_mean": self.accuracy_mean,
            "accuracy_std": self.accuracy_std,
            "auc": self.auc,
            "eer": self.eer,
            "val": self.val,
            "val_std": self.val_std,
            "far": self.far,
            "tar_at_far": dict(self.tar_at_far),
            "best_thresholds": list(self.best_thresholds),
        }


def l2_normalise(emb: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length. ``emb: (N, D)`` float -> ``(N, D)`` float64.

    >>> l2_normalise(np.array([[3.0, 4.0]]))
    array([[0.6, 0.8]])
    """
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, _NORM_EPS)


def pair_distances(emb1, emb2) -> np.ndarray:
    """Squared Euclidean distance of L2-normalised pairs, ``2 - 2 cos``.

    ``emb1, emb2: (N, D)`` float (tensor or array) -> ``(N,)`` float64 in ``[0, 4]``.

    >>> pair_distances([[1.0, 0.0], [1.0, 0.0]], [[0.0, 2.0], [-1.0, 0.0]])
    array([2., 4.])
    """
    e1 = as_float_array(emb1, "emb1", ("N", "D"))
    e2 = as_float_array(emb2, "emb2", (e1.shape[0], e1.shape[1]))
    diff = l2_normalise(e1) - l2_normalise(e2)
    return np.sum(diff * diff, axis=1)


def contiguous_folds(n: int, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, test_idx) pairs of ``KFold(n_folds, shuffle=False)``: contiguous test folds,
    the first ``n % n_folds`` folds one element longer.

    >>> [test.tolist() for _, test in contiguous_folds(5, 2)]
    [[0, 1, 2], [3, 4]]
    """
    check_positive(n_folds, "n_folds", integer=True)
    if n_folds < 2 or n < n_folds:
        raise ValueError(f"n_folds: need 2 <= n_folds <= number of pairs ({n}), got {n_folds}")
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    idx = np.arange(n)
    return [
        (np.concatenate([idx[:lo], idx[hi:]]), idx[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])
    ]


def _accuracy(threshold: float, dist: np.ndarray, issame: np.ndarray) -> float:
    return float(np.mean((dist < threshold) == issame))


def _val_far(threshold: float, dist: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    predict = dist < threshold
    val = np.sum(predict & issame) / np.sum(issame)
    far = np.sum(predict & ~issame) / np.sum(~issame)
    return float(val), float(far)


def _threshold_at_far(far_train: np.ndarray, thresholds: np.ndarray, far_target: float) -> float:
    # FaceNet's interp1d(far_train, thresholds, kind="slinear"): piecewise linear, but
    # np.interp also tolerates the repeated FAR values that modern scipy rejects.
    if np.max(far_train) < far_target:
        return 0.0
    return float(np.interp(far_target, far_train, thresholds))


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """EER: the FPR where ``FPR = 1 - TPR`` on the linearly interpolated ROC.

    ``fpr, tpr: (T,)`` float, increasing, from ``roc_curve``. Returns a float in [0, 1].

    >>> round(equal_error_rate(np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0])), 6)
    0.0
    """
    return float(brentq(lambda x: 1.0 - x - np.interp(x, fpr, tpr), 0.0, 1.0))


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far_targets=DEFAULT_FAR_TARGETS) -> dict[str, float]:
    """TAR at the ROC point with the FPR nearest each target (IJB-C evaluation style).

    ``fpr, tpr: (T,)`` from ``roc_curve``. Returns ``{str(far): tar}``. As in the IJB-C
    script the curve is flipped first, so among equally near points the one with the
    highest TPR wins.

    >>> tar_at_far(np.array([0.0, 0.1, 1.0]), np.array([0.5, 0.9, 1.0]), (0.09,))
    {'0.09': 0.9}
    """
    fpr_f, tpr_f = np.flipud(fpr), np.flipud(tpr)
    return {str(f): float(tpr_f[np.argmin(np.abs(fpr_f - f))]) for f in far_targets}


def roc(emb1, emb2, issame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC over all pairs, similarity ``-dist``: ``(fpr (T,), tpr (T,), dist_thresholds (T,))``.

    ``emb1, emb2: (N, D)`` float; ``issame: (N,)`` bool. ``dist_thresholds`` are distances
    (a pair is accepted when ``dist <= threshold``); the first one is ``-inf``.

    >>> fpr, tpr, thr = roc([[1.0, 0], [1, 0]], [[1.0, 0], [-1, 0]], [True, False])
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 1.0], [0.0, 1.0, 1.0])
    """
    dist = pair_distances(emb1, emb2)
    same = as_bool_array(issame, "issame", dist.shape[0])
    _require_both_classes(same, "issame")
    fpr, tpr, thr = roc_curve(same, -dist)
    return fpr, tpr, -thr


def _require_both_classes(issame: np.ndarray, where: str) -> None:
    if issame.all() or not issame.any():
        raise ValueError(f"{where}: needs both matched (True) and mismatched (False) pairs")


def verify(
    emb1,
    emb2,
    issame,
    n_folds: int = DEFAULT_N_FOLDS,
    thresholds=DEFAULT_THRESHOLDS,
    far_targets=DEFAULT_FAR_TARGETS,
) -> VerificationResult:
    """The LFW verification protocol (see the module docstring for every convention).

    Args:
        emb1, emb2: ``(N, D)`` float embeddings of the two images of each pair (any scale;
            they are L2-normalised here). Tensors or arrays.
        issame: ``(N,)`` bool, True for matched pairs. Each test fold needs both kinds.
        n_folds: number of contiguous folds (10 for LFW).
        thresholds: ``(T,)`` increasing candidate distance thresholds.
        far_targets: FARs at which TAR is read off the ROC.

    Returns:
        :class:`VerificationResult` (fractions; ``best_thresholds`` per fold, distance units).

    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(40, 8)); same = np.arange(40) % 2 == 0
    >>> b = np.where(same[:, None], a + 0.1 * rng.normal(size=(40, 8)), rng.normal(size=(40, 8)))
    >>> verify(a, b, same, n_folds=4).accuracy_mean
    1.0
    """
    dist = pair_distances(emb1, emb2)
    n = dist.shape[0]
    same = as_bool_array(issame, "issame", n)
    thr = as_float_array(thresholds, "thresholds", ("T",))
    if np.any(np.diff(thr) <= 0):
        raise ValueError("thresholds: must be strictly increasing")
    folds = contiguous_folds(n, n_folds)
    for k, (_, test) in enumerate(folds):
        _require_both_classes(same[test], f"issame (fold {k})")

    accuracies, best, vals, fars = [], [], [], []
    correct = np.zeros(n, dtype=bool)
    for train, test in folds:
        predict = dist[train][None, :] < thr[:, None]  # (T, n_train)
        acc_train = np.mean(predict == same[train], axis=1)
        best_t = float(thr[int(np.argmax(acc_train))])  # argmax: first, i.e. smallest, best
        best.append(best_t)
        accuracies.append(_accuracy(best_t, dist[test], same[test]))
        correct[test] = (dist[test] < best_t) == same[test]
        far_train = np.sum(predict & ~same[train], axis=1) / np.sum(~same[train])
        v, f = _val_far(_threshold_at_far(far_train, thr, VAL_FAR_TARGET), dist[test], same[test])
        vals.append(v)
        fars.append(f)

    fpr, tpr, _ = roc_curve(same, -dist)
    return VerificationResult(
        accuracy_mean=float(np.mean(accuracies)),
        accuracy_std=float(np.std(accuracies)),
        auc=float(sklearn_auc(fpr, tpr)),
        eer=equal_error_rate(fpr, tpr),
        val=float(np.mean(vals)),
        val_std=float(np.std(vals)),
        far=float(np.mean(fars)),
        tar_at_far=tar_at_far(fpr, tpr, far_targets),
        best_thresholds=best,
        fold_accuracies=[float(a) for a in accuracies],
        pair_correct=correct.tolist(),
    )


def rank1_identification(gallery, gallery_labels, probe, probe_labels) -> float:
    """Closed-set rank-1 identification rate by cosine similarity.

    Args:
        gallery: ``(G, D)`` float embeddings; gallery_labels: ``(G,)`` identity labels.
        probe: ``(P, D)`` float embeddings; probe_labels: ``(P,)`` identity labels.

    Returns:
        Fraction of probes whose most similar gallery entry has the same label.

    >>> rank1_identification([[1.0, 0], [0, 1]], [0, 1], [[0.9, 0.1], [0.4, 0.6]], [0, 0])
    0.5
    """
    g = l2_normalise(as_float_array(gallery, "gallery", ("G", "D")))
    p = l2_normalise(as_float_array(probe, "probe", ("P", g.shape[1])))
    gl = as_label_array(gallery_labels, "gallery_labels", g.shape[0])
    pl = as_label_array(probe_labels, "probe_labels", p.shape[0])
    nearest = np.argmax(p @ g.T, axis=1)
    return float(np.mean(gl[nearest] == pl))
