"""facelab.metrics.sir: ratio and geometric rank-1 against a brute-force numpy loop."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from facelab.metrics.alignment import apply, procrustes
from facelab.metrics.sir import aligned_rmse, geometric_rank1, sir_ratio


def _clustered(n_id=5, per_id=4, v=60, spread=10.0, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_id, v, 3)) * spread
    shapes = np.repeat(centres, per_id, axis=0) + noise * rng.normal(size=(n_id * per_id, v, 3))
    return shapes, np.repeat(np.arange(n_id), per_id), centres


def _random_pose(shapes, seed):
    rots = Rotation.random(len(shapes), random_state=seed).as_matrix()
    shifts = np.random.default_rng(seed).normal(size=(len(shapes), 3)) * 20
    return np.einsum("nvc,ndc->nvd", shapes, rots) + shifts[:, None]


def _brute_ratio(shapes, labels):
    intra, inter = [], []
    for i in range(len(shapes)):
        for j in range(i + 1, len(shapes)):
            T = procrustes(shapes[i], shapes[j])
            d = np.sqrt(np.mean(np.sum((apply(T, shapes[i]) - shapes[j]) ** 2, axis=1)))
            (intra if labels[i] == labels[j] else inter).append(d)
    return np.mean(intra) / np.mean(inter)


def test_ratio_matches_brute_force_and_is_pose_invariant():
    shapes, labels, _ = _clustered()
    posed = _random_pose(shapes, 1)
    ref = _brute_ratio(posed, labels)
    assert sir_ratio(posed, labels) == pytest.approx(ref, rel=1e-10)
    assert sir_ratio(shapes, labels) == pytest.approx(ref, rel=1e-10)
    assert ref < 0.3


def test_ratio_about_one_for_random_labels():
    shapes, labels, _ = _clustered(n_id=10, per_id=6)
    shuffled = np.random.default_rng(0).permutation(labels)
    ratio = sir_ratio(shapes, shuffled)
    assert 0.85 < ratio < 1.15
    assert sir_ratio(shapes, labels) < 0.3


def test_subsampling_is_seeded_and_close():
    shapes, labels, _ = _clustered(n_id=8, per_id=5)
    full = sir_ratio(shapes, labels, max_pairs=None)
    a = sir_ratio(shapes, labels, max_pairs=30, seed=3)
    assert a == sir_ratio(shapes, labels, max_pairs=30, seed=3)
    assert a == pytest.approx(full, rel=0.2)


def test_mask_and_align_none():
    shapes, labels, _ = _clustered()
    mask = np.arange(30)
    assert sir_ratio(shapes, labels, mask=mask) == pytest.approx(_brute_ratio(shapes[:, :30], labels), rel=1e-10)
    posed = _random_pose(shapes, 2)
    assert sir_ratio(posed, labels, align="none") > sir_ratio(posed, labels, align="rigid")


def test_geometric_rank1_clean_example():
    shapes, labels, centres = _clustered(n_id=6, per_id=3, noise=0.5)
    posed = _random_pose(shapes, 4)
    assert geometric_rank1(posed, labels, centres, np.arange(6)) == 1.0
    # two probes carry the wrong label: exactly those miss
    wrong = labels.copy()
    wrong[[0, 5]] = (wrong[[0, 5]] + 1) % 6
    assert geometric_rank1(posed, wrong, centres, np.arange(6)) == pytest.approx(16 / 18)


def test_aligned_rmse_tensors_and_gradcheck(device, dtype):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 12, 3, generator=gen, dtype=torch.float64)
    R = torch.tensor(Rotation.from_rotvec([0.2, 0.1, -0.3]).as_matrix())
    out = aligned_rmse((a @ R.T + 2.0).to(device, dtype), a.to(device, dtype))
    assert out.shape == (3,)
    assert out.abs().max().item() < (1e-9 if dtype == torch.float64 else 1e-4)
    b = (a[:1, :5] + 0.3 * torch.randn(1, 5, 3, generator=gen, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: aligned_rmse(x, a[:1, :5]), (b,))


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.arange(20), "no identity has two shapes"),
        (np.zeros(20, dtype=int), "single identity"),
        (np.arange(19), "expected 20 labels"),
    ],
)
def test_ratio_bad_labels(labels, match):
    shapes, _, _ = _clustered()
    with pytest.raises(ValueError, match=match):
        sir_ratio(shapes, labels)


def test_rank1_bad_inputs():
    shapes, labels, centres = _clustered()
    with pytest.raises(ValueError, match="identities without a reference"):
        geometric_rank1(shapes, labels, centres[:3], np.arange(3))
    with pytest.raises(ValueError, match="reference_shapes: expected 60 vertices"):
        geometric_rank1(shapes, labels, centres[:, :50], np.arange(5))
    with pytest.raises(ValueError, match="probe_shapes: contains NaN"):
        geometric_rank1(np.full_like(shapes, np.nan), labels, centres, np.arange(5))
