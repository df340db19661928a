"""facelab.metrics.reconstruction and landmarks: hand-worked values and invariances."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from facelab.metrics.landmarks import landmark_nme, nme_by_yaw
from facelab.metrics.reconstruction import nme_interocular, rmse


def _shape(seed=0, v=200):
    return np.random.default_rng(seed).normal(size=(v, 3)) * [40.0, 50.0, 20.0]


def test_rmse_invariant_to_rigid_motion_only_when_aligned():
    gt = _shape()
    R = Rotation.from_rotvec([0.3, -0.2, 0.1]).as_matrix()
    moved = gt @ R.T + [5.0, -3.0, 2.0]
    assert rmse(moved, gt) == pytest.approx(0.0, abs=1e-9)
    assert rmse(moved, gt, align="none") > 1.0
    scaled = 1.1 * moved
    assert rmse(scaled, gt, align="rigid") > 0.5
    assert rmse(scaled, gt, align="similarity") == pytest.approx(0.0, abs=1e-9)


def test_rmse_hand_value_without_alignment():
    gt = np.zeros((4, 3))
    pred = np.array([[3.0, 4.0, 0.0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])  # one vertex 5 mm off
    assert rmse(pred, gt, align="none") == pytest.approx(np.sqrt(25 / 4))


def test_rmse_noise_level_and_mask():
    rng = np.random.default_rng(1)
    gt = _shape(v=4000)
    sigma = 0.5
    pred = gt + rng.normal(scale=sigma, size=gt.shape)
    # E|n|^2 = 3 sigma^2; alignment on 4000 vertices removes only a tiny part of it
    assert rmse(pred, gt) == pytest.approx(np.sqrt(3) * sigma, rel=0.03)
    mask = np.zeros(4000, dtype=bool)
    mask[:2000] = True
    wrecked = pred.copy()
    wrecked[~mask] += 100.0  # outside the mask: must not matter
    assert rmse(wrecked, gt, mask=mask) == pytest.approx(rmse(pred[:2000], gt[:2000]), abs=1e-12)
    assert rmse(wrecked, gt, mask=np.flatnonzero(mask)) == pytest.approx(rmse(pred[:2000], gt[:2000]), abs=1e-12)


def test_rmse_batched_and_tensors(device, dtype):
    gt = np.stack([_shape(0), _shape(1)])
    pred = gt + 0.5
    pred[1, 0] += 10.0
    out = rmse(torch.tensor(pred, dtype=dtype, device=device), torch.tensor(gt, dtype=dtype, device=device), align="none")
    assert out.shape == (2,)
    np.testing.assert_allclose(out, [np.sqrt(0.75), rmse(pred[1], gt[1], align="none")], rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gt=np.zeros((199, 3))), "gt: expected shape"),
        (dict(align="affine"), "align: unknown value"),
        (dict(mask=np.zeros(200, dtype=bool)), "mask: selects no vertices"),
        (dict(mask=np.zeros(10, dtype=bool)), "mask"),
        (dict(pred=np.full((200, 3), np.inf)), "pred: contains NaN or Inf"),
    ],
)
def test_rmse_bad_inputs(kwargs, match):
    args = dict(pred=_shape(), gt=_shape())
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        rmse(**args)


def test_nme_interocular_hand_example():
    gt = np.zeros((68, 3))
    gt[36] = [-40.0, 0, 0]
    gt[45] = [40.0, 0, 0]  # interocular distance 80
    pred = gt.copy()
    pred[0] += [0, 0, 68 * 0.8]  # one landmark off by 54.4 -> mean error 0.8
    assert nme_interocular(pred, gt) == pytest.approx(0.8 / 80)
    batched = nme_interocular(np.stack([pred, gt]), np.stack([gt, gt]))
    np.testing.assert_allclose(batched, [0.01, 0.0])
    with pytest.raises(ValueError, match="coincide"):
        nme_interocular(gt, np.zeros((68, 3)))
    with pytest.raises(ValueError, match="outer_eye_idx"):
        nme_interocular(gt, gt, outer_eye_idx=(36, 99))


def test_landmark_nme_hand_example():
    gt = np.array([[[0.0, 0.0], [8.0, 0.0], [8.0, 2.0], [0.0, 2.0]]])  # box 8 x 2 -> sqrt = 4
    pred = gt.copy()
    pred[0, 0] += [3.0, 4.0]  # errors 5, 0, 0, 0 -> mean 1.25
    np.testing.assert_allclose(landmark_nme(pred, gt), [1.25 / 4])
    np.testing.assert_allclose(landmark_nme(pred, gt, box=[[0.0, 0.0, 25.0, 1.0]]), [1.25 / 5])


def test_landmark_nme_bad_inputs():
    gt = np.zeros((2, 68, 2))
    with pytest.raises(ValueError, match="zero or negative box area"):
        landmark_nme(gt, gt)
    with pytest.raises(ValueError, match="pred: expected shape"):
        landmark_nme(np.zeros((2, 68, 3)), gt)
    with pytest.raises(ValueError, match="box: expected shape"):
        landmark_nme(gt, gt, box=np.zeros((3, 4)))


def test_nme_by_yaw_buckets_hand_example():
    nme = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    yaw = [0.0, -30.0, 30.0001, 60.0, -60.5, 89.0]
    out = nme_by_yaw(nme, yaw)
    assert out["[0,30]"] == pytest.approx(1.5)  # 0 and |-30|
    assert out["(30,60]"] == pytest.approx(3.5)  # 30.0001 and 60
    assert out[">60"] == pytest.approx(5.5)
    assert out["mean"] == pytest.approx((1.5 + 3.5 + 5.5) / 3)


def test_nme_by_yaw_empty_bucket_is_nan_and_excluded():
    out = nme_by_yaw([1.0, 3.0], [10.0, 80.0])
    assert np.isnan(out["(30,60]"])
    assert out["mean"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="yaw_deg"):
        nme_by_yaw([1.0, 3.0], [10.0])
