"""facelab.metrics.verification against an independent, loop-based LFW evaluation."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import KFold

from facelab.metrics.verification import (
    contiguous_folds,
    pair_distances,
    rank1_identification,
    roc,
    verify,
)


def _pairs(n=600, d=16, noise=1.2, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d))
    same = rng.random(n) < 0.5
    b = np.where(same[:, None], a + noise * rng.normal(size=(n, d)), rng.normal(size=(n, d)))
    return a, b, same


def _reference(a, b, same, thresholds, n_folds=10, far_target=1e-3):
    """Plain loops: the protocol written out independently of the library."""
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    dist = np.array([float(np.dot(x - y, x - y)) for x, y in zip(an, bn)])
    accs, best, vals, fars = [], [], [], []
    for train, test in KFold(n_splits=n_folds, shuffle=False).split(dist):
        best_acc, best_t = -1.0, None
        far_train = []
        for t in thresholds:
            pred = dist[train] < t
            acc = np.mean(pred == same[train])
            if acc > best_acc:  # strict: ties keep the first threshold
                best_acc, best_t = acc, t
            far_train.append(np.sum(pred & ~same[train]) / np.sum(~same[train]))
        best.append(best_t)
        accs.append(np.mean((dist[test] < best_t) == same[test]))
        if max(far_train) >= far_target:
            j = max(k for k, f in enumerate(far_train) if f <= far_target)
            if j + 1 < len(far_train) and far_train[j] < far_target:
                frac = (far_target - far_train[j]) / (far_train[j + 1] - far_train[j])
                thr = thresholds[j] + frac * (thresholds[j + 1] - thresholds[j])
            else:
                thr = thresholds[j]
        else:
            thr = 0.0
        pred = dist[test] < thr
        vals.append(np.sum(pred & same[test]) / np.sum(same[test]))
        fars.append(np.sum(pred & ~same[test]) / np.sum(~same[test]))
    return dist, accs, best, vals, fars


def test_smoke_and_keys():
    a, b, same = _pairs()
    d = verify(a, b, same).to_dict()
    assert list(d) == ["accuracy_mean", "accuracy_std", "auc", "eer", "val", "val_std", "far", "tar_at_far", "best_thresholds"]
    assert list(d["tar_at_far"]) == ["0.001", "0.01", "0.1"]
    assert len(d["best_thresholds"]) == 10


def test_matches_independent_fold_loop():
    a, b, same = _pairs()
    thresholds = np.arange(0, 4, 0.01)
    dist, accs, best, vals, fars = _reference(a, b, same, thresholds)
    res = verify(a, b, same)
    assert 0.6 < res.accuracy_mean < 0.99  # a non-trivial operating point
    assert res.accuracy_mean == pytest.approx(np.mean(accs), abs=1e-12)
    assert res.accuracy_std == pytest.approx(np.sqrt(np.mean((np.array(accs) - np.mean(accs)) ** 2)), abs=1e-12)
    np.testing.assert_allclose(res.best_thresholds, best, atol=1e-12)
    assert res.val == pytest.approx(np.mean(vals), abs=1e-12)
    assert res.val_std == pytest.approx(np.std(vals), abs=1e-12)
    assert res.far == pytest.approx(np.mean(fars), abs=1e-12)
    assert res.auc == pytest.approx(roc_auc_score(same, -dist), abs=1e-12)


def test_eer_and_tar_at_far_match_roc_curve():
    a, b, same = _pairs(seed=3)
    res = verify(a, b, same)
    dist = pair_distances(a, b)
    fpr, tpr, _ = roc_curve(same, -dist)
    # EER: linear search for the sign change of 1 - fpr - tpr along the curve.
    g = 1 - fpr - tpr
    k = np.flatnonzero((g[:-1] >= 0) & (g[1:] <= 0))[0]
    x0, x1, y0, y1 = fpr[k], fpr[k + 1], tpr[k], tpr[k + 1]
    # on the segment: tpr = y0 + (x - x0) * slope; solve 1 - x = tpr
    slope = (y1 - y0) / (x1 - x0) if x1 > x0 else np.inf
    eer = x0 if not np.isfinite(slope) else (1 - y0 + slope * x0) / (1 + slope)
    assert res.eer == pytest.approx(eer, abs=1e-9)
    for f in (1e-3, 1e-2, 1e-1):
        gap = np.abs(fpr - f)
        expected = tpr[gap == gap.min()].max()
        assert res.tar_at_far[str(f)] == pytest.approx(expected)


def test_perfect_separation():
    a, b, same = _pairs(noise=0.01)
    res = verify(a, b, same)
    assert res.accuracy_mean == 1.0 and res.accuracy_std == 0.0
    assert res.auc == 1.0 and res.eer == pytest.approx(0.0, abs=1e-9)


def test_accepts_tensors(device, dtype):
    a, b, same = _pairs()
    ref = verify(a, b, same).to_dict()
    got = verify(torch.tensor(a, dtype=dtype, device=device), torch.tensor(b, dtype=dtype, device=device),
                 torch.tensor(same, device=device)).to_dict()
    tol = 1e-12 if dtype == torch.float64 else 0.02
    assert got["accuracy_mean"] == pytest.approx(ref["accuracy_mean"], abs=tol)
    assert got["auc"] == pytest.approx(ref["auc"], abs=tol)


def test_folds_are_sklearn_kfold():
    for n, k in [(600, 10), (17, 4), (10, 10)]:
        ours = contiguous_folds(n, k)
        theirs = list(KFold(n_splits=k, shuffle=False).split(np.zeros(n)))
        for (tr, te), (tr2, te2) in zip(ours, theirs):
            np.testing.assert_array_equal(tr, tr2)
            np.testing.assert_array_equal(te, te2)


def test_roc_helper_matches_sklearn():
    a, b, same = _pairs(n=100)
    fpr, tpr, thr = roc(a, b, same)
    fpr2, tpr2, _ = roc_curve(same, -pair_distances(a, b))
    np.testing.assert_array_equal(fpr, fpr2)
    np.testing.assert_array_equal(tpr, tpr2)
    assert np.all(np.diff(thr[1:]) >= 0)  # distance thresholds grow along the curve


def test_rank1_matches_brute_force():
    rng = np.random.default_rng(2)
    gallery = rng.normal(size=(20, 8))
    glabels = np.arange(20)
    plabels = rng.integers(0, 20, size=50)
    probe = gallery[plabels] + 0.9 * rng.normal(size=(50, 8))
    hits = 0
    for p, lab in zip(probe, plabels):
        cos = [np.dot(p, g) / np.linalg.norm(p) / np.linalg.norm(g) for g in gallery]
        hits += glabels[int(np.argmax(cos))] == lab
    got = rank1_identification(gallery, glabels, probe, plabels)
    assert got == pytest.approx(hits / 50)
    assert 0 < got < 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(emb2=np.zeros((600, 15))), "emb2"),
        (dict(emb1=np.full((600, 16), np.nan)), "emb1: contains NaN"),
        (dict(issame=np.ones(599, dtype=bool)), "issame"),
        (dict(issame=np.full(600, 2)), "issame"),
        (dict(n_folds=1), "n_folds"),
        (dict(thresholds=np.array([0.5, 0.2])), "thresholds"),
    ],
)
def test_bad_inputs(kwargs, match):
    a, b, same = _pairs()
    args = dict(emb1=a, emb2=b, issame=same)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        verify(**args)


def test_empty_and_one_class_fold_raise():
    with pytest.raises(ValueError, match="empty"):
        verify(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0, dtype=bool))
    a, b, same = _pairs()
    same = same.copy()
    same[:60] = True  # fold 0 has no mismatched pair
    with pytest.raises(ValueError, match="fold 0"):
        verify(a, b, same)


def test_pair_correct_matches_each_folds_threshold():
    """pair_correct is (dist < the fold's best threshold) == issame, and averages to the fold accuracies."""
    a, b, same = _pairs()
    res = verify(a, b, same)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    dist = 2 - 2 * np.sum(unit(a) * unit(b), axis=1)  # squared distance of unit vectors
    correct = np.asarray(res.pair_correct)
    assert correct.shape == same.shape and correct.dtype == bool
    folds = np.array_split(np.arange(len(same)), 10)
    for k, idx in enumerate(folds):
        np.testing.assert_array_equal(correct[idx], (dist[idx] < res.best_thresholds[k]) == same[idx])
        assert correct[idx].mean() == pytest.approx(res.fold_accuracies[k], abs=1e-12)
    assert "pair_correct" not in res.to_dict()  # per-pair data stays out of the JSON summary
