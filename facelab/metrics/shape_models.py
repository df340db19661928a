"""Compare identity shape models: the Sphere Face Model against PCA at equal dimension.

Book chapter: ``book/10_sir.ipynb``. :func:`sfm_vs_pca` fits both models
(:mod:`facelab.morphable.sphere`) on labelled 3D shapes and scores them on held-out
identities: reconstruction RMSE, and how well their parameters separate identities.
"""

from __future__ import annotations

import numpy as np
import torch

from facelab.metrics.verification import l2_normalise, verify
from facelab.morphable.sphere import SFMConfig, SphereFaceModel, check_labelled_shapes, fit_pca, fit_sfm_stage1

VERIFY_NEG_PER_POS = 1  # different-identity verification pairs drawn per same-identity pair
VERIFY_FOLDS = 10


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


def _param_scores(params: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, float]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    z = l2_normalise(params)
    n_ids = int(np.unique(labels).shape[0])
    pred = KMeans(n_clusters=n_ids, n_init=10, random_state=seed).fit_predict(z)
    rng = np.random.default_rng(seed)
    i, j, same = _verification_pairs(labels, rng)
    n_folds = min(VERIFY_FOLDS, int(min(same.sum(), (~same).sum())))
    res = verify(z[i], z[j], same, n_folds=n_folds)
    return {"nmi": float(normalized_mutual_info_score(labels, pred)), "verification_accuracy": res.accuracy_mean,
            "verification_auc": res.auc}


def _rmse_per_shape(model: SphereFaceModel, shapes: torch.Tensor) -> float:
    with torch.no_grad():
        rec = model(shapes.to(model.basis.dtype))
        return float(((rec - shapes.to(rec.dtype)) ** 2).sum(-1).mean(-1).sqrt().mean())


def sfm_vs_pca(
    train_shapes: torch.Tensor,
    train_labels: torch.Tensor,
    test_shapes: torch.Tensor,
    test_labels: torch.Tensor,
    K: int,
    config: SFMConfig | None = None,
    seed: int = 0,
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

    Args:
        train_shapes: ``(N, V, 3)`` float, mm; train_labels: ``(N,)`` int identity labels.
        test_shapes: ``(M, V, 3)`` float, mm; test_labels: ``(M,)`` int (identities with >= 2 shapes).
        K: model dimension.
        config: stage-1 settings; seed: k-means and pair sampling.

    Returns:
        ``{"K", "n_train", "n_test", "n_test_identities", "pca": {...}, "sfm": {...}}``, each model's
        dict holding ``rmse_mm``, ``nmi``, ``verification_accuracy``, ``verification_auc``.

    >>> g = torch.Generator().manual_seed(0)
    >>> ids = 8.0 * torch.randn(12, 5, 3, generator=g, dtype=torch.float64)
    >>> noisy = lambda idx: ids[idx] + torch.randn(len(idx), 5, 3, generator=g, dtype=torch.float64)
    >>> tr, te = torch.arange(8).repeat(4), torch.arange(8, 12).repeat(4)
    >>> out = sfm_vs_pca(noisy(tr), tr, noisy(te), te, K=4, config=SFMConfig(n_steps=20))
    >>> sorted(out["sfm"])
    ['nmi', 'rmse_mm', 'verification_accuracy', 'verification_auc']
    """
    check_labelled_shapes(train_shapes, train_labels, "train_shapes", "train_labels")
    check_labelled_shapes(test_shapes, test_labels, "test_shapes", "test_labels")
    if test_shapes.shape[1] != train_shapes.shape[1]:
        raise ValueError(f"test_shapes: {test_shapes.shape[1]} vertices, train_shapes have {train_shapes.shape[1]}")
    pca = fit_pca(train_shapes.to(torch.float64), K)
    sfm = fit_sfm_stage1(train_shapes.to(torch.float64), train_labels, K, config)
    test = test_shapes.to(torch.float64)
    labels = test_labels.cpu().numpy()
    out = {"K": K, "n_train": int(train_shapes.shape[0]), "n_test": int(test.shape[0]),
           "n_test_identities": int(np.unique(labels).shape[0])}
    for name, model in (("pca", pca), ("sfm", sfm)):
        with torch.no_grad():
            params = model.coefficients(test).cpu().numpy()
        out[name] = {"rmse_mm": _rmse_per_shape(model, test), **_param_scores(params, labels, seed)}
    out["sfm_stage1"] = {k: sfm.meta[k] for k in ("final_head_loss", "final_rec_rmse_mm", "pca_rec_rmse_mm", "subspace_dim")}
    return out
