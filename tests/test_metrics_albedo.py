"""facelab.metrics.albedo: hand-worked values, the light's-scale invariance, scipy's correlation, bad input."""

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from facelab.metrics.albedo import albedo_agreement


def _albedos(n=8, v=50, seed=0):
    rng = np.random.default_rng(seed)
    tone = rng.uniform(0.3, 0.7, (n, 1, 1))              # each person's skin tone
    pattern = rng.uniform(-0.1, 0.1, (n, v, 3))          # brows, lips, stubble
    return np.clip(tone + pattern, 0, 1)


def test_right_up_to_the_lights_colour_scores_perfect_pattern():
    truth = _albedos()
    gains = np.array([0.5, 0.8, 1.2])                    # a coloured light absorbed into the albedo
    out = albedo_agreement(truth * gains, truth)
    assert out["rmse_gained"] == pytest.approx(0.0, abs=1e-12)
    assert out["rmse"] > 0.05 and out["tone_corr"] > 0.9
    assert out["mean_albedo_rmse_gained"] > 0.01  # the population mean misses each person's pattern


def test_the_same_albedo_for_everyone():
    truth = _albedos()
    same = np.repeat(truth.mean(0, keepdims=True), len(truth), axis=0)
    out = albedo_agreement(same, truth)
    assert out["spread"] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(out["tone_corr"])                   # a constant tone correlates with nothing
    assert out["rmse_gained"] == pytest.approx(out["mean_albedo_rmse_gained"], rel=1e-12)


def test_tone_is_pearson_of_the_face_mean_luminance():
    truth, pred = _albedos(seed=1), _albedos(seed=2)
    mask = np.zeros(50, dtype=bool)
    mask[10:30] = True
    out = albedo_agreement(torch.as_tensor(pred), torch.as_tensor(truth), mask=mask)
    expected = pearsonr(pred[:, mask].mean((1, 2)), truth[:, mask].mean((1, 2)))[0]
    assert out["tone_corr"] == pytest.approx(expected, rel=1e-12)
    assert out["n_photos"] == 8


def test_hand_value_of_the_plain_rmse():
    truth = np.full((3, 2, 3), 0.5)
    pred = truth.copy()
    pred[0, 0, 0] = 0.8                                   # one channel of one vertex 0.3 off, of 18 values
    assert albedo_agreement(pred, truth)["rmse"] == pytest.approx(np.sqrt(0.09 / 18))


@pytest.mark.parametrize("pred, truth, mask, match", [
    (np.zeros((2, 4, 3)), np.zeros((2, 4, 3)), None, "pred: need at least 3 photos"),
    (np.zeros((4, 4, 3)), np.zeros((4, 5, 3)), None, "truth"),
    (np.zeros((4, 4, 2)), np.zeros((4, 4, 2)), None, "pred"),
    (np.zeros((4, 4, 3)), np.zeros((4, 4, 3)), np.ones(3, dtype=bool), "mask"),
])
def test_bad_input_names_the_argument(pred, truth, mask, match):
    with pytest.raises(ValueError, match=match):
        albedo_agreement(pred, truth, mask=mask)
