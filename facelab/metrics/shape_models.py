"""Compare identity shape models: the Sphere Face Model against PCA at equal dimension.

Book chapter: ``book/10_sir.ipynb``. :func:`sfm_vs_pca` fits both models
(:mod:`facelab.morphable.sphere`) on labelled 3D shapes and scores them on held-out
identities: reconstruction RMSE, and how well their parameters separate identities, each
with the SFM-minus-PCA difference, its paired 95 % interval over the held-out identities
(:func:`facelab.metrics.stats.paired_bootstrap`) and a verdict on the claim "SFM beats PCA".
"""

from __future__ import annotations

import numpy as np
import torch

from facelab.metrics.stats import N_BOOTSTRAP, paired_bootstrap, verdict
from facelab.metrics.verification import contiguous_folds, l2_normalise, verify
from facelab.morphable.sphere import SFMConfig, SphereFaceModel, check_labelled_shapes, fit_pca, fit_sfm_stage1

VERIFY_NEG_PER_POS = 1  # different-identity verification pairs drawn per same-identity pair
VERIFY_FOLDS = 10
#: the paired figures and the direction in which the SFM is the better model
PAIRED_METRICS = {"rmse_mm": "lower", "nmi": "higher", "verification_accuracy": "higher"}


def _verification_pairs(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i, j = np.triu_indices(labels.shape[0], k=1)
    same = labels[i] == labels[j]
    pos = np.flatnonzero(same)
    neg = np.flatnonzero(~same)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("test_labels: need identities with >= 2 shapes and >= 2 identities")
    neg = rng.choice(neg, size=min(neg.size, VERIFY_NEG_PER_POS * pos.size), replace=False)
    pick = rng.permutation(np.concatenate([pos, neg]))
    return i[pick], j[pick], same[pick]


def _param_scores(params: np.ndarray, labels: np.ndarray, pairs, seed: int) -> tuple[dict[str, float], dict]:
    """The model's figures, and what the paired intervals need: the k-means cluster of each
    test shape ``(M,)`` and, per verification pair ``(P,)``, its correctness weighted so that
    the weights sum to the fold-mean accuracy (folds differ in size by at most one pair)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    z = l2_normalise(params)
    n_ids = int(np.unique(labels).shape[0])
    pred = KMeans(n_clusters=n_ids, n_init=10, random_state=seed).fit_predict(z)
    i, j, same = pairs
    n_folds = min(VERIFY_FOLDS, int(min(same.sum(), (~same).sum())))
    res = verify(z[i], z[j], same, n_folds=n_folds)
    fold_weight = np.empty(same.shape[0])
    for _, test in contiguous_folds(same.shape[0], n_folds):
        fold_weight[test] = 1.0 / (n_folds * test.shape[0])
    scores = {"nmi": float(normalized_mutual_info_score(labels, pred)), "verification_accuracy": res.accuracy_mean,
              "verification_auc": res.auc}
    return scores, {"clusters": pred, "pair_correct": fold_weight * np.asarray(res.pair_correct, dtype=np.float64)}


def _rmse_per_shape(model: SphereFaceModel, shapes: torch.Tensor) -> torch.Tensor:
    """Per-vertex RMSE (mm) of each shape's projection onto the model: ``(M,)``."""
    with torch.no_grad():
        rec = model(shapes.to(model.basis.dtype))
        return ((rec - shapes.to(rec.dtype)) ** 2).sum(-1).mean(-1).sqrt()


def _nmi_from_counts(counts: np.ndarray) -> float:
    """NMI of a ``(identities, clusters)`` contingency table, as sklearn's ``normalized_mutual_info_score``
    (natural log, arithmetic mean of the two entropies)."""
    n = counts.sum()
    rows, cols = counts.sum(1), counts.sum(0)
    nz = counts > 0
    mi = float((counts[nz] / n * np.log(counts[nz] * n / np.outer(rows, cols)[nz])).sum())
    entropy = lambda m: float(-(m[m > 0] / n * np.log(m[m > 0] / n)).sum())  # noqa: E731
    norm = 0.5 * (entropy(rows) + entropy(cols))
    return 1.0 if norm == 0.0 else max(mi, 0.0) / norm


def _identity_units(figure: str, detail: dict, ident: np.ndarray, pair_ids: tuple[np.ndarray, np.ndarray],
                    value: float) -> np.ndarray:
    """One model's ``figure`` as ``(n_identities,)`` per-identity units whose mean is the figure ``value``.

    ``ident``: ``(M,)`` identity index (0..n-1) of each test shape; ``pair_ids``: the identity
    indices of the two members of each verification pair.
    """
    n, m = int(ident.max()) + 1, ident.shape[0]
    if figure == "rmse_mm":  # each identity's share of the mean over shapes
        return n * np.bincount(ident, weights=detail["rmse_per_shape"], minlength=n) / m
    if figure == "verification_accuracy":  # each pair's weighted correctness, half to each member's identity
        half = detail["pair_correct"] / 2
        return n * (np.bincount(pair_ids[0], weights=half, minlength=n)
                    + np.bincount(pair_ids[1], weights=half, minlength=n))
    # NMI is not a mean over identities: its units are jackknife values, NMI recomputed without
    # each identity from the k-means clusters already found. K-means is not rerun: the interval
    # is about which identities were drawn, not k-means' initialisation, and rerunning it per
    # resample would cost far more than the comparison itself.
    counts = np.zeros((n, int(detail["clusters"].max()) + 1))
    np.add.at(counts, (ident, detail["clusters"]), 1.0)
    left_out = np.array([_nmi_from_counts(np.delete(counts, u, axis=0)) for u in range(n)])
    # centred pseudo-values: mean = the figure, variance of the mean = the jackknife variance
    return value + (n - 1) * (left_out.mean() - left_out)


def _paired(sfm: dict, pca: dict, details: dict, labels: np.ndarray, pairs, n_boot: int, seed: int) -> dict:
    """``{figure: {"estimate", "ci95", "verdict", "n_identities"}}`` of SFM minus PCA (see :func:`sfm_vs_pca`)."""
    _, ident = np.unique(labels, return_inverse=True)
    pair_ids = (ident[pairs[0]], ident[pairs[1]])
    out = {}
    for figure, better in PAIRED_METRICS.items():
        a, b = (_identity_units(figure, details[name], ident, pair_ids, scores[figure])
                for name, scores in (("sfm", sfm), ("pca", pca)))
        res = paired_bootstrap(a, b, n_boot=n_boot, seed=seed)  # same identity resample for both models
        out[figure] = {"estimate": res.estimate, "ci95": [res.ci95[0], res.ci95[1]],
                       "verdict": verdict(res.ci95, better), "n_identities": res.n_subjects}
    return out


def sfm_vs_pca(
    train_shapes: torch.Tensor,
    train_labels: torch.Tensor,
    test_shapes: torch.Tensor,
    test_labels: torch.Tensor,
    K: int,
    config: SFMConfig | None = None,
    seed: int = 0,
    n_boot: int = N_BOOTSTRAP,
) -> dict:
    """Compare the SFM with PCA at equal dimension ``K`` (facelab's protocol).

    Both are fitted on the training shapes (PCA: mean + top-``K`` components; SFM:
    :func:`fit_sfm_stage1`, which starts from that PCA). On held-out identities:

    * ``rmse_mm``: mean over test shapes of the per-vertex RMSE (mm, all vertices, no
      alignment) between each shape and its least-squares projection onto the model;
    * ``nmi``: NMI between the true identities and k-means (``k`` = number of test
      identities, ``n_init=10``) of the L2-normalised parameters: ``u`` for the SFM, the
      standardised coefficients ``a = alpha / sigma`` for PCA;
    * ``verification_accuracy`` (and ``verification_auc``): cosine verification of the
      parameters with :func:`facelab.metrics.verification.verify` (10 contiguous folds) on all
      same-identity test pairs plus as many random different-identity pairs, shuffled.

    ``paired`` holds, per figure of :data:`PAIRED_METRICS`, the SFM-minus-PCA difference
    ``estimate`` (the difference of the two models' figures above), its 95 % interval ``ci95``
    from :func:`facelab.metrics.stats.paired_bootstrap` over the held-out identities (each
    replicate resamples identities with replacement, the same for both models) and the
    :func:`~facelab.metrics.stats.verdict` on "SFM beats PCA" (``rmse_mm`` lower, ``nmi`` and
    ``verification_accuracy`` higher). The bootstrap resamples per-identity units whose mean is
    the figure: ``rmse_mm``, the identity's share of the mean over shapes (mm); verification, each
    pair's correctness under the protocol's fold thresholds (weighted so the units average to the
    fold-mean accuracy), split half to each member's identity, so a same-identity pair counts for
    its identity and a different-identity pair half for each; ``nmi``, jackknife pseudo-values
    (NMI recomputed without each identity, the k-means clusters kept), centred on the NMI, so the
    interval's variance is the jackknife variance.

    Args:
        train_shapes: ``(N, V, 3)`` float, mm; train_labels: ``(N,)`` int identity labels.
        test_shapes: ``(M, V, 3)`` float, mm; test_labels: ``(M,)`` int (identities with >= 2 shapes).
        K: model dimension.
        config: stage-1 settings; seed: k-means, pair sampling and the bootstrap's resampling.
        n_boot: bootstrap replicates of the paired intervals (>= 100).

    Returns:
        ``{"K", "n_train", "n_test", "n_test_identities", "pca": {...}, "sfm": {...}, "sfm_stage1": {...},
        "paired": {...}}``: each model's dict holds ``rmse_mm`` (mm), ``nmi``, ``verification_accuracy``,
        ``verification_auc`` (fractions); ``paired`` maps ``rmse_mm``, ``nmi`` and
        ``verification_accuracy`` to ``{"estimate": float, "ci95": [low, high], "verdict": str,
        "n_identities": int}`` (SFM minus PCA, in the figure's unit).

    >>> g = torch.Generator().manual_seed(0)
    >>> ids = 8.0 * torch.randn(12, 5, 3, generator=g, dtype=torch.float64)
    >>> noisy = lambda idx: ids[idx] + torch.randn(len(idx), 5, 3, generator=g, dtype=torch.float64)
    >>> tr, te = torch.arange(8).repeat(4), torch.arange(8, 12).repeat(4)
    >>> out = sfm_vs_pca(noisy(tr), tr, noisy(te), te, K=4, config=SFMConfig(n_steps=20))
    >>> sorted(out["sfm"])
    ['nmi', 'rmse_mm', 'verification_accuracy', 'verification_auc']
    >>> sorted(out["paired"]["nmi"]), out["paired"]["nmi"]["n_identities"]
    (['ci95', 'estimate', 'n_identities', 'verdict'], 4)
    """
    check_labelled_shapes(train_shapes, train_labels, "train_shapes", "train_labels")
    check_labelled_shapes(test_shapes, test_labels, "test_shapes", "test_labels")
    if test_shapes.shape[1] != train_shapes.shape[1]:
        raise ValueError(f"test_shapes: {test_shapes.shape[1]} vertices, train_shapes have {train_shapes.shape[1]}")
    # before the fit, which takes the time: paired_bootstrap would only refuse it afterwards
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 100:
        raise ValueError(f"n_boot: need an integer >= 100 bootstrap replicates, got {n_boot!r}")
    labels = test_labels.cpu().numpy()
    pairs = _verification_pairs(labels, np.random.default_rng(seed))
    pca = fit_pca(train_shapes.to(torch.float64), K)
    sfm = fit_sfm_stage1(train_shapes.to(torch.float64), train_labels, K, config)
    test = test_shapes.to(torch.float64)
    out = {"K": K, "n_train": int(train_shapes.shape[0]), "n_test": int(test.shape[0]),
           "n_test_identities": int(np.unique(labels).shape[0])}
    details = {}
    for name, model in (("pca", pca), ("sfm", sfm)):
        with torch.no_grad():
            params = model.coefficients(test).cpu().numpy()
        rmse = _rmse_per_shape(model, test)
        scores, details[name] = _param_scores(params, labels, pairs, seed)
        details[name]["rmse_per_shape"] = rmse.cpu().numpy()
        out[name] = {"rmse_mm": float(rmse.mean()), **scores}
    out["sfm_stage1"] = {k: sfm.meta[k] for k in ("final_head_loss", "final_rec_rmse_mm", "pca_rec_rmse_mm", "subspace_dim")}
    out["paired"] = _paired(out["sfm"], out["pca"], details, labels, pairs, n_boot, seed)
    return out
