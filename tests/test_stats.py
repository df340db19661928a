"""facelab.metrics.stats: paired bootstrap, verdicts and term activity.

Checked against a closed form (the bootstrap SE of a mean is std/sqrt(n)), against
scipy's own bootstrap, and by simulation: nulls must come out ``within noise`` at the
nominal rate, real effects must come out ``holds``, and flipped ones ``reversed``.
"""

import numpy as np
import pytest
import scipy.stats

from facelab.metrics.stats import VERDICTS, claim, paired_bootstrap, term_active, verdict


def _sim(effect: float, n_subjects: int, n_seeds: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Scores of two rows: a large shared subject effect, seed noise, and ``effect`` on A."""
    subject = rng.normal(1.0, 0.5, size=n_subjects)  # cancels in the pairing
    b = subject + rng.normal(0, 0.1, size=(n_seeds, n_subjects))
    a = subject + effect + rng.normal(0, 0.1, size=(n_seeds, n_subjects))
    return a, b


def test_null_is_within_noise_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    words = [verdict(paired_bootstrap(*_sim(0.0, 30, 3, rng), n_boot=1000, seed=k).ci95, "lower") for k in range(200)]
    share = words.count("within noise") / len(words)
    assert 0.90 <= share <= 0.99, share  # nominal 0.95; binomial sd over 200 runs is 0.015
    assert words.count("holds") < 12 and words.count("reversed") < 12


def test_known_effects_hold_and_flipped_ones_reverse():
    rng = np.random.default_rng(1)
    # the paired difference has sd 0.1 * sqrt(2); an effect of one such sd over 30 x 3 is clear
    effect = 0.1 * np.sqrt(2)
    holds = [verdict(paired_bootstrap(*_sim(-effect, 30, 3, rng), n_boot=1000, seed=k).ci95, "lower") for k in range(50)]
    assert holds.count("holds") == 50
    flipped = [verdict(paired_bootstrap(*_sim(+effect, 30, 3, rng), n_boot=1000, seed=k).ci95, "lower") for k in range(20)]
    assert flipped.count("reversed") == 20


def test_interval_width_matches_closed_form_and_scipy():
    rng = np.random.default_rng(2)
    d = rng.normal(0.3, 1.0, size=400)
    out = paired_bootstrap(d, np.zeros_like(d), n_boot=8000, seed=3)
    half_width = 1.96 * d.std() / np.sqrt(d.size)
    assert out.estimate == pytest.approx(d.mean(), abs=1e-12)
    assert (out.ci95[1] - out.ci95[0]) / 2 == pytest.approx(half_width, rel=0.06)
    ref = scipy.stats.bootstrap((d,), np.mean, n_resamples=8000, method="percentile", random_state=4).confidence_interval
    assert out.ci95 == pytest.approx((ref.low, ref.high), abs=0.2 * half_width)


def test_seeds_widen_the_interval():
    rng = np.random.default_rng(5)
    seed_shift = rng.normal(0, 0.3, size=(4, 1))  # a whole training seed is better or worse
    a = 1 + seed_shift + rng.normal(0, 0.05, size=(4, 30))
    b = np.ones((4, 30))
    two_level = paired_bootstrap(a, b, seed=0)
    pooled = paired_bootstrap(a.reshape(1, -1), b.reshape(1, -1), seed=0)
    assert two_level.n_seeds == 4 and pooled.n_seeds == 1
    assert two_level.ci95[1] - two_level.ci95[0] > 3 * (pooled.ci95[1] - pooled.ci95[0])


def test_deterministic_given_seed():
    a, b = np.arange(10.0), np.arange(10.0)[::-1]
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)


@pytest.mark.parametrize("ci,better,word", [
    ((-2, -1), "lower", "holds"), ((1, 2), "lower", "reversed"), ((-1, 1), "lower", "within noise"),
    ((1, 2), "higher", "holds"), ((-2, -1), "higher", "reversed"), ((0.0, 1.0), "higher", "within noise"),
])
def test_verdict_table(ci, better, word):
    assert verdict(ci, better) == word
    assert verdict(ci, better, active=False) == "inactive"
    assert word in VERDICTS


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="a, b: paired scores need equal shapes"):
        paired_bootstrap(np.zeros(5), np.zeros(6))
    with pytest.raises(ValueError, match="a: expected"):
        paired_bootstrap(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="b: contains NaN"):
        paired_bootstrap(np.zeros(5), np.array([0, 1, np.nan, 2, 3]))
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap(np.zeros(5), np.zeros(5), n_boot=10)
    with pytest.raises(ValueError, match="better"):
        verdict((0, 1), "smaller")
    with pytest.raises(ValueError, match="ci95"):
        verdict((1, 0), "lower")
    with pytest.raises(ValueError, match="accuracy, chance"):
        term_active([0.5], accuracy=[0.5])
    with pytest.raises(ValueError, match="grad_share"):
        term_active([])


def test_term_active_rules():
    share = [0.3] * 8 + [0.01] * 2  # 80 % of steps above 10 %
    assert term_active(share)
    assert not term_active([0.3] * 7 + [0.01] * 3)
    chance = 1 / 150
    assert term_active(share, accuracy=[0.05] * 10, chance=chance)  # 7.5x chance
    assert not term_active(share, accuracy=[0.03] * 10, chance=chance)  # the quick Gao head: 4.5x


def test_claim_entry_has_every_field():
    rng = np.random.default_rng(6)
    a, b = _sim(-0.2, 30, 3, rng)
    c = claim("G1", "recognition lowers the error", ("full", "no_recog"), "micc_mm", a, b, "lower", active=False)
    assert set(c) == {"id", "text", "rows", "metric", "better", "estimate", "ci95", "n_subjects", "n_seeds", "active", "verdict"}
    assert c["verdict"] == "inactive" and c["n_subjects"] == 30 and c["n_seeds"] == 3
    assert c["ci95"][0] < c["estimate"] < c["ci95"][1] < 0


def test_plot_claims_draws_every_claim_and_the_zero_line():
    import matplotlib

    matplotlib.use("Agg")
    from facelab.viz import plot_claims

    rng = np.random.default_rng(7)
    claims = [claim(f"C{k}", "t", ("a", "b"), "m", *_sim(e, 30, 1, rng), better="lower") for k, e in enumerate((-0.3, 0.0, 0.3))]
    ax = plot_claims(claims)
    assert len(ax.containers) == 3 and len(ax.get_yticklabels()) == 3
    assert any(list(line.get_xdata()) == [0.0, 0.0] for line in ax.lines)
    with pytest.raises(ValueError, match="claims"):
        plot_claims([])
