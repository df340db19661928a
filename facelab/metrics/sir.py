"""Discriminability of reconstructed geometry (the SIR metric).

Book chapter: ``book/07_evaluation.ipynb``. facelab's own definition (the SIR paper gives
only an abstract): the distance between two shapes in dense correspondence is their
per-vertex RMSE in mm after rigid (Umeyama) alignment. Two numbers are reported:

* :func:`sir_ratio`: mean intra-identity distance / mean inter-identity distance
  (lower is more identity-discriminative; about 1 when shape carries no identity);
* :func:`geometric_rank1`: rank-1 identification of probe shapes against one neutral
  reference shape per identity by that distance.

Alignment is batched in torch (float64, batched SVD) for speed.
"""

from __future__ import annotations

import numpy as np
import torch

from facelab.checks import check_choice, check_positive
from facelab.metrics._common import as_float_array, as_label_array, as_mask
from facelab.metrics.alignment import procrustes_batched

ALIGN_CHOICES = ("rigid", "similarity", "none")
DEFAULT_MAX_PAIRS = 20_000  # per kind (intra / inter); beyond this pairs are subsampled
PAIR_BATCH = 256  # shape pairs aligned per batched SVD call
_ENUMERATE_LIMIT = 5_000_000  # above this many pairs, inter pairs are sampled, not listed


def aligned_rmse(a: torch.Tensor, b: torch.Tensor, align: str = "rigid") -> torch.Tensor:
    """RMSE (mm) between shape pairs after aligning ``a`` onto ``b``.

    ``a, b: (B, V, 3)`` float tensors, mm -> ``(B,)``. ``align``: ``"rigid"``,
    ``"similarity"`` or ``"none"``. Differentiable.

    >>> a = torch.randn(2, 10, 3, dtype=torch.float64)
    >>> aligned_rmse(a + 3.0, a).abs().max().item() < 1e-12
    True
    """
    check_choice(align, "align", ALIGN_CHOICES)
    if align != "none":
        R, t, s = procrustes_batched(a, b, scale=align == "similarity")
        a = s[:, None, None] * a @ R.transpose(1, 2) + t[:, None, :]
    return ((a - b) ** 2).sum(dim=2).mean(dim=1).sqrt()


def _pair_rmse(shapes: torch.Tensor, i: np.ndarray, j: np.ndarray, align: str) -> np.ndarray:
    out = np.empty(i.shape[0])
    for lo in range(0, i.shape[0], PAIR_BATCH):
        ii = torch.as_tensor(i[lo : lo + PAIR_BATCH])
        jj = torch.as_tensor(j[lo : lo + PAIR_BATCH])
        out[lo : lo + PAIR_BATCH] = aligned_rmse(shapes[ii], shapes[jj], align).cpu().numpy()
    return out


def _subsample(i: np.ndarray, j: np.ndarray, max_pairs: int | None, rng) -> tuple[np.ndarray, np.ndarray]:
    if max_pairs is None or i.shape[0] <= max_pairs:
        return i, j
    keep = rng.choice(i.shape[0], size=max_pairs, replace=False)
    return i[keep], j[keep]


def _intra_pairs(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = []
    for c in np.unique(codes):
        members = np.flatnonzero(codes == c)
        a, b = np.triu_indices(members.shape[0], k=1)
        pairs.append(np.stack([members[a], members[b]], axis=1))
    both = np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)
    return both[:, 0], both[:, 1]


def _inter_pairs(codes: np.ndarray, max_pairs: int | None, rng) -> tuple[np.ndarray, np.ndarray]:
    n = codes.shape[0]
    counts = np.bincount(codes)
    n_inter = (n * n - int(np.sum(counts * counts))) // 2
    if n * (n - 1) // 2 <= _ENUMERATE_LIMIT or max_pairs is None or n_inter <= 4 * max_pairs:
        rows = [np.flatnonzero(codes[i + 1 :] != codes[i]) + i + 1 for i in range(n)]
        j = np.concatenate(rows)
        i = np.repeat(np.arange(n), [r.shape[0] for r in rows])
        return _subsample(i, j, max_pairs, rng)
    # Too many to list (and at least 4 * max_pairs exist): draw random pairs, keep the
    # distinct different-label ones.
    found: set[tuple[int, int]] = set()
    while len(found) < max_pairs:
        i, j = rng.integers(0, n, size=(2, 2 * max_pairs))
        ok = codes[i] != codes[j]
        found.update(zip(np.minimum(i, j)[ok].tolist(), np.maximum(i, j)[ok].tolist()))
    arr = np.array(sorted(found))[:max_pairs]
    return arr[:, 0], arr[:, 1]


def _shapes_tensor(shapes, name: str, mask) -> torch.Tensor:
    arr = as_float_array(shapes, name, ("N", "V", 3))
    if mask is not None:
        arr = arr[:, as_mask(mask, "mask", arr.shape[1])]
    if arr.shape[1] < 3:
        raise ValueError(f"{name}: need at least 3 vertices to align, got {arr.shape[1]}")
    return torch.from_numpy(np.ascontiguousarray(arr))


def sir_ratio(
    shapes, labels, align: str = "rigid", mask=None, max_pairs: int | None = DEFAULT_MAX_PAIRS, seed: int = 0,
    return_parts: bool = False,
) -> float | dict[str, float]:
    """Mean intra-identity over mean inter-identity shape distance (aligned RMSE, mm).

    Args:
        shapes: ``(N, V, 3)`` float reconstructed shapes, mm, in dense correspondence.
        labels: ``(N,)`` identity labels; at least one identity with two shapes and two
            distinct identities are needed.
        align: ``"rigid"`` (default), ``"similarity"`` or ``"none"``.
        mask: optional ``(V,)`` bool or vertex indices (e.g. the face region).
        max_pairs: if more intra (or inter) pairs exist, that many of each kind are drawn
            at random with ``seed``; ``None`` uses all pairs.
        return_parts: also return the numerator and the denominator.

    Returns:
        The unitless ratio (< 1: shapes of one identity are closer than across identities),
        or with ``return_parts`` ``{"ratio", "intra_mm", "inter_mm"}``.

    >>> rng = np.random.default_rng(0)
    >>> centres = rng.normal(size=(3, 20, 3)) * 10
    >>> shapes = np.repeat(centres, 4, axis=0) + rng.normal(size=(12, 20, 3))
    >>> sir_ratio(shapes, np.repeat([0, 1, 2], 4)) < 0.2
    True
    >>> sorted(sir_ratio(shapes, np.repeat([0, 1, 2], 4), return_parts=True))
    ['inter_mm', 'intra_mm', 'ratio']
    """
    check_choice(align, "align", ALIGN_CHOICES)
    x = _shapes_tensor(shapes, "shapes", mask)
    lab = as_label_array(labels, "labels", x.shape[0])
    _, codes = np.unique(lab, return_inverse=True)
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"max_pairs: must be >= 1 or None, got {max_pairs}")
    rng = np.random.default_rng(seed)
    ii, ij = _subsample(*_intra_pairs(codes), max_pairs, rng)
    if ii.shape[0] == 0:
        raise ValueError("labels: no identity has two shapes; the intra-identity distance is undefined")
    if np.unique(codes).shape[0] < 2:
        raise ValueError("labels: a single identity; the inter-identity distance is undefined")
    ei, ej = _inter_pairs(codes, max_pairs, rng)
    inter = float(_pair_rmse(x, ei, ej, align).mean())
    intra = float(_pair_rmse(x, ii, ij, align).mean())
    if return_parts:
        return {"ratio": intra / inter, "intra_mm": intra, "inter_mm": inter}
    return intra / inter


#: inter-identity pairs drawn per identity for its own SIR ratio
PER_IDENTITY_INTER_PAIRS = 200


def sir_ratio_per_identity(shapes, labels, align: str = "rigid", mask=None,
                           inter_pairs: int = PER_IDENTITY_INTER_PAIRS, seed: int = 0) -> np.ndarray:
    """Each identity's own SIR ratio: its mean intra-identity distance over the mean distance from
    its shapes to other identities' shapes (aligned RMSE, mm), in sorted label order.

    The per-subject units of a paired bootstrap of :func:`sir_ratio`; their mean is close to, not
    equal to, the pooled ratio (a mean of ratios, not a ratio of means).

    Args:
        shapes: ``(N, V, 3)`` float, mm; labels: ``(N,)``; every identity needs two shapes.
        inter_pairs: pairs (one own shape, one other identity's) drawn per identity, with ``seed``.

    >>> rng = np.random.default_rng(0)
    >>> centres = rng.normal(size=(3, 20, 3)) * 10
    >>> shapes = np.repeat(centres, 4, axis=0) + rng.normal(size=(12, 20, 3))
    >>> r = sir_ratio_per_identity(shapes, np.repeat([0, 1, 2], 4)); r.shape, bool((r < 0.2).all())
    ((3,), True)
    """
    check_choice(align, "align", ALIGN_CHOICES)
    check_positive(inter_pairs, "inter_pairs", integer=True)
    x = _shapes_tensor(shapes, "shapes", mask)
    lab = as_label_array(labels, "labels", x.shape[0])
    ids, codes = np.unique(lab, return_inverse=True)
    if ids.shape[0] < 2:
        raise ValueError("labels: a single identity; the inter-identity distance is undefined")
    rng = np.random.default_rng(seed)
    ratios = []
    for c in range(ids.shape[0]):
        own, other = np.flatnonzero(codes == c), np.flatnonzero(codes != c)
        if own.shape[0] < 2:
            raise ValueError(f"labels: identity {ids[c]} has one shape; its intra-identity distance is undefined")
        a, b = np.triu_indices(own.shape[0], k=1)
        intra = _pair_rmse(x, own[a], own[b], align).mean()
        pi = rng.choice(own, size=inter_pairs)
        pj = rng.choice(other, size=inter_pairs)
        ratios.append(float(intra / _pair_rmse(x, pi, pj, align).mean()))
    return np.asarray(ratios)


def geometric_rank1(
    probe_shapes, probe_labels, reference_shapes, reference_labels, align: str = "rigid", mask=None,
    return_hits: bool = False,
) -> float:
    """Rank-1 identification of probe shapes against reference shapes by aligned RMSE.

    Args:
        probe_shapes: ``(P, V, 3)`` float reconstructions, mm; probe_labels: ``(P,)``.
        reference_shapes: ``(G, V, 3)`` float, one neutral reference per identity, mm;
            reference_labels: ``(G,)``. Every probe identity must have a reference.
        align: ``"rigid"`` (default), ``"similarity"`` or ``"none"``; each probe is aligned
            onto each reference. mask: optional ``(V,)`` bool or vertex indices.

    Returns:
        Fraction of probes whose nearest reference has their label; with ``return_hits`` the
        ``(P,)`` bool array of which probes were identified instead.

    >>> refs = np.random.default_rng(1).normal(size=(3, 30, 3)) * 10
    >>> geometric_rank1(refs + 0.1, [0, 1, 2], refs, [0, 1, 2])
    1.0
    """
    check_choice(align, "align", ALIGN_CHOICES)
    probes = _shapes_tensor(probe_shapes, "probe_shapes", mask)
    refs = _shapes_tensor(reference_shapes, "reference_shapes", mask)
    if refs.shape[1] != probes.shape[1]:
        raise ValueError(
            f"reference_shapes: expected {probes.shape[1]} vertices like probe_shapes, got {refs.shape[1]}"
        )
    pl = as_label_array(probe_labels, "probe_labels", probes.shape[0])
    rl = as_label_array(reference_labels, "reference_labels", refs.shape[0])
    missing = sorted(set(pl.tolist()) - set(rl.tolist()))
    if missing:
        raise ValueError(f"probe_labels: identities without a reference shape: {missing[:10]}")
    n_p, n_g = probes.shape[0], refs.shape[0]
    pi, gi = np.repeat(np.arange(n_p), n_g), np.tile(np.arange(n_g), n_p)
    both = torch.cat([probes, refs])
    dist = _pair_rmse(both, pi, gi + n_p, align).reshape(n_p, n_g)
    hits = rl[np.argmin(dist, axis=1)] == pl
    return hits if return_hits else float(np.mean(hits))
