"""evaluation.statistics: the stationary bootstrap, its intervals, the deflated Sharpe ratio, reporting helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from evaluation.statistics import (
    Interval,
    beat_share,
    bootstrap_interval,
    break_even_cost,
    default_block_length,
    deflated_sharpe_ratio,
    excess_log_return_interval,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    sharpe_interval,
    sharpe_probability_from_moments,
    sharpe_ratio,
    stationary_bootstrap_indices,
    summarise_spread,
)


def _ar1(n: int, phi: float, seed: int, mean: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """An AR(1) series ``x_t = mean + phi (x_{t-1} - mean) + scale e_t`` started from its stationary law."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n) * scale
    x = np.empty(n)
    x[0] = e[0] / math.sqrt(1.0 - phi * phi)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x + mean


# ------------------------------------------------------------------------------------ stationary bootstrap


def test_indices_shape_range_and_determinism():
    a = stationary_bootstrap_indices(300, 5, 40, 7)
    assert a.shape == (40, 300)
    assert a.min() >= 0 and a.max() < 300
    np.testing.assert_array_equal(a, stationary_bootstrap_indices(300, 5, 40, np.random.default_rng(7)))
    assert not np.array_equal(a, stationary_bootstrap_indices(300, 5, 40, 8))


def test_block_lengths_have_the_requested_mean():
    n, mean_block = 5000, 10
    idx = stationary_bootstrap_indices(n, mean_block, 200, 0)
    continues = idx[:, 1:] == (idx[:, :-1] + 1) % n
    blocks = idx.shape[0] + int((~continues).sum())
    observed = idx.size / blocks
    assert observed == pytest.approx(mean_block, rel=0.10)
    # mean_block=1 is the iid bootstrap: a bar follows its predecessor only by chance (1/n)
    iid = stationary_bootstrap_indices(n, 1, 20, 0)
    assert np.mean(iid[:, 1:] == (iid[:, :-1] + 1) % n) < 0.01


def test_blocks_wrap_around_the_end():
    n = 50
    idx = stationary_bootstrap_indices(n, 1e12, 30, 3)  # one block per resample
    expected = (idx[:, :1] + np.arange(n)) % n
    np.testing.assert_array_equal(idx, expected)


def test_resampled_means_are_unbiased_for_an_iid_series():
    x = np.random.default_rng(11).standard_normal(400)
    idx = stationary_bootstrap_indices(x.size, 8, 4000, 12)
    means = x[idx].mean(axis=1)
    standard_error = means.std(ddof=1) / math.sqrt(means.size)
    assert abs(means.mean() - x.mean()) < 4 * standard_error


def test_bad_bootstrap_arguments_are_refused():
    with pytest.raises(ValueError, match="mean_block"):
        stationary_bootstrap_indices(10, 0.5, 5, 0)
    with pytest.raises(ValueError, match="n_resamples"):
        stationary_bootstrap_indices(10, 2, 0, 0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval(np.mean, np.arange(10.0), confidence=1.0)
    with pytest.raises(TypeError, match="rng"):
        stationary_bootstrap_indices(10, 2, 5, rng=1.5)  # type: ignore[arg-type]
    assert bootstrap_interval(np.mean, [1.0, 2.0, 3.0], n_resamples=20).point == 2.0  # a list is one series
    with pytest.raises(ValueError, match="equal lengths"):
        bootstrap_interval(lambda a, b: 0.0, [np.zeros(5), np.zeros(6)])


# ------------------------------------------------------------------------------------------ block length


def test_default_block_length_grows_with_persistence():
    iid = default_block_length(np.random.default_rng(0).standard_normal(5000))
    persistent = default_block_length(_ar1(5000, 0.5, 1))
    very_persistent = default_block_length(_ar1(5000, 0.8, 1))
    assert 1 <= iid <= 3
    assert 10 <= persistent <= 40
    assert very_persistent > persistent
    assert default_block_length(np.zeros(100)) == 1
    assert default_block_length(np.array([0.1, -0.2, 0.3])) == 1


def test_default_block_length_agrees_with_arch():
    arch_bootstrap = pytest.importorskip("arch.bootstrap")
    for phi, seed in ((0.3, 2), (0.5, 3), (0.8, 4)):
        x = _ar1(2000, phi, seed)
        reference = float(arch_bootstrap.optimal_block_length(x).iloc[0, 0])
        assert default_block_length(x) == pytest.approx(reference, rel=0.2, abs=1.0)


# ----------------------------------------------------------------------------------------------- Sharpe


def test_sharpe_ratio_by_hand_and_degenerate_cases():
    assert sharpe_ratio([0.01, 0.03], 4) == pytest.approx(0.02 / math.sqrt(2e-4) * 2)
    assert sharpe_ratio(np.full(50, 0.001), 252) == 0.0
    assert sharpe_ratio(np.zeros(50), 252) == 0.0
    assert sharpe_ratio([0.01], 252) == 0.0


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "inf")])
def test_sharpe_ratio_names_non_finite_input(bad, word):
    x = np.array([0.01, -0.02, bad, 0.03])
    with pytest.raises(ValueError, match=rf"returns contains non-finite values \(1 {word}; first at index 2\)"):
        sharpe_ratio(x, 252)


# --------------------------------------------------------------------------------------------- intervals


def test_block_bootstrap_widens_the_sharpe_interval_of_an_autocorrelated_series():
    x = _ar1(2000, 0.5, 5, mean=0.05)
    iid = sharpe_interval(x, 252, mean_block=1, n_resamples=300, rng=0)
    blocks = sharpe_interval(x, 252, mean_block=20, n_resamples=300, rng=0)
    assert iid.point == blocks.point == pytest.approx(sharpe_ratio(x, 252))
    # var of a mean of AR(1) is inflated by (1 + phi) / (1 - phi) = 3: about sqrt(3) wider
    assert (blocks.high - blocks.low) > 1.3 * (iid.high - iid.low)


def test_interval_of_the_mean_covers_the_truth():
    rng = np.random.default_rng(21)
    truth, hits, trials = 0.1, 0, 200
    for _ in range(trials):
        x = truth + rng.standard_normal(100)
        interval = bootstrap_interval(np.mean, x, n_resamples=200, confidence=0.90, rng=rng)
        hits += interval.low <= truth <= interval.high
    assert 0.80 <= hits / trials <= 0.98


def test_intervals_contain_their_point_estimates():
    rng = np.random.default_rng(4)
    for seed in range(10):
        x = rng.standard_t(3, size=250) * 0.01 + 0.0005
        for interval in (sharpe_interval(x, 252, n_resamples=200, rng=seed),
                         excess_log_return_interval(x, 0.5 * x, n_resamples=200, rng=seed),
                         bootstrap_interval(np.median, x, n_resamples=200, rng=seed)):
            assert isinstance(interval, Interval)
            assert interval.low <= interval.point <= interval.high


def test_interval_is_widened_to_a_point_the_percentiles_miss():
    x = np.arange(100.0)
    # resamples repeat bars, so they never have 100 distinct values: every percentile lies below the point
    interval = bootstrap_interval(lambda r: float(np.unique(r).size), x, mean_block=1, n_resamples=200, rng=0)
    assert interval.point == 100.0
    assert interval.high == 100.0
    assert interval.low < 80.0


def test_excess_over_cash_is_the_policy_total_log_return():
    policy = np.random.default_rng(9).normal(0.0005, 0.01, 500)
    over_cash = excess_log_return_interval(policy, np.zeros(500), n_resamples=300, rng=1)
    assert over_cash.point == pytest.approx(policy.sum())
    assert excess_log_return_interval(policy, None, n_resamples=300, rng=1) == over_cash
    assert bootstrap_interval(np.sum, policy, n_resamples=300, rng=1) == pytest.approx(over_cash)


def test_paired_series_are_resampled_with_the_same_bars():
    benchmark = np.random.default_rng(10).normal(0.0, 0.02, 400)
    policy = benchmark + 0.001  # beats the benchmark by exactly 0.1% on every bar
    interval = excess_log_return_interval(policy, benchmark, mean_block=5, n_resamples=200, rng=0)
    assert interval.point == pytest.approx(0.4)
    assert interval.low == pytest.approx(0.4) and interval.high == pytest.approx(0.4)
    with pytest.raises(ValueError, match="same bars"):
        excess_log_return_interval(policy, benchmark[:-1])
    with pytest.raises(ValueError, match="benchmark_returns contains non-finite"):
        excess_log_return_interval(policy, np.where(np.arange(400) == 3, np.nan, benchmark))


# ---------------------------------------------------------------------------------- deflated Sharpe ratio


def test_deflated_sharpe_reproduces_the_papers_numerical_example():
    # Bailey & Lopez de Prado (2014), section 5: annualised SR 2.5 best of N=100 trials whose annualised
    # Sharpes have variance 0.5, T=1250 daily bars, skewness -3, kurtosis 10 -> SR0 ~ 0.1132, DSR ~ 0.9004
    sr, variance = 2.5 / math.sqrt(250), 0.5 / 250
    sr0 = expected_max_sharpe(100, variance)
    assert sr0 == pytest.approx(0.1132, abs=5e-4)
    assert sharpe_probability_from_moments(sr, 1250, -3.0, 10.0, sr0) == pytest.approx(0.9004, abs=1e-3)


def test_probabilistic_sharpe_ratio_matches_its_formula():
    x = np.random.default_rng(13).normal(0.001, 0.01, 500)
    sr = x.mean() / x.std(ddof=1)
    g3, g4 = stats.skew(x), stats.kurtosis(x, fisher=False)
    expected = stats.norm.cdf(sr * math.sqrt(499) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr ** 2))
    assert probabilistic_sharpe_ratio(x) == pytest.approx(expected)
    assert probabilistic_sharpe_ratio(x, benchmark_sr=sr) == pytest.approx(0.5)


def test_deflated_sharpe_with_one_trial_is_the_psr():
    x = np.random.default_rng(14).normal(0.0005, 0.01, 750)
    result = deflated_sharpe_ratio(x, 1, 0.01)
    assert result["sr0"] == 0.0 and result["n_trials"] == 1
    assert result["dsr"] == pytest.approx(probabilistic_sharpe_ratio(x))
    assert result["sr"] == pytest.approx(sharpe_ratio(x, 1))


def test_deflated_sharpe_properties():
    x = np.random.default_rng(15).normal(0.001, 0.01, 1000)
    variance = 0.05 ** 2
    values = [deflated_sharpe_ratio(x, n, variance)["dsr"] for n in (1, 2, 10, 100, 1000)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a > b for a, b in zip(values, values[1:]))
    # a longer track record with the same moments (the series repeated): more confident
    by_length = [deflated_sharpe_ratio(np.tile(x, k), 10, variance)["dsr"] for k in (1, 2, 4)]
    assert by_length[0] < by_length[1] < by_length[2]
    by_bars = [sharpe_probability_from_moments(0.05, t, -0.5, 5.0, 0.02) for t in (100, 500, 2500)]
    assert by_bars[0] < by_bars[1] < by_bars[2]
    # an SR exactly at the expected maximum is a coin flip
    sr = sharpe_ratio(x, 1)
    at_sr0 = deflated_sharpe_ratio(x, 50, (sr / expected_max_sharpe(50, 1.0)) ** 2)
    assert at_sr0["sr0"] == pytest.approx(sr)
    assert at_sr0["dsr"] == pytest.approx(0.5)
    # the expected maximum grows with the number of trials and scales with the spread of their Sharpes
    assert 0 < expected_max_sharpe(10, 1.0) < expected_max_sharpe(100, 1.0)
    assert expected_max_sharpe(100, 4.0) == pytest.approx(2 * expected_max_sharpe(100, 1.0))


def test_deflated_sharpe_of_cash_and_bad_input():
    assert deflated_sharpe_ratio(np.zeros(100), 10, 0.01)["sr"] == 0.0
    assert deflated_sharpe_ratio(np.zeros(100), 10, 0.01)["dsr"] < 0.5
    with pytest.raises(ValueError, match="returns contains non-finite values"):
        deflated_sharpe_ratio(np.array([0.01, np.nan, 0.02]), 10, 0.01)
    with pytest.raises(ValueError, match="n_trials"):
        deflated_sharpe_ratio(np.ones(10), 0, 0.01)
    with pytest.raises(ValueError, match="trial_sharpes_variance"):
        deflated_sharpe_ratio(np.ones(10), 5, -1.0)


# --------------------------------------------------------------------------------------------- reporting


def test_break_even_cost_interpolates_the_crossing():
    assert break_even_cost([0.0, 1.0, 2.0], [2.0, 1.0, -1.0]) == pytest.approx(1.5)
    assert break_even_cost([2.0, 0.0, 1.0], [-1.0, 2.0, 1.0]) == pytest.approx(1.5)  # unsorted input
    assert break_even_cost([0.0, 1.0, 2.0], [3.0, 0.0, -1.0]) == 1.0
    assert break_even_cost([0.5, 1.0], [0.0, -1.0]) == 0.5


def test_break_even_cost_outside_the_tested_range():
    assert break_even_cost([0.0, 1.0, 2.0], [-0.1, -0.5, -1.0]) is None  # negative even at the lowest cost
    assert break_even_cost([0.0, 1.0, 2.0], [-0.1, 0.5, 1.0]) is None
    assert break_even_cost([0.0, 1.0, 2.0], [3.0, 2.0, 1.0]) == math.inf  # above the highest cost tested
    with pytest.raises(ValueError, match="distinct"):
        break_even_cost([1.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="excess_values contains non-finite"):
        break_even_cost([0.0, 1.0], [1.0, np.nan])


def test_beat_share_counts_strict_wins():
    assert beat_share([1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 5.0, 1.0]) == 0.5
    folds_by_seeds = np.array([[0.1, 0.2], [0.3, -0.1]])
    assert beat_share(folds_by_seeds, np.zeros((2, 2))) == 0.75
    with pytest.raises(ValueError, match="aligned"):
        beat_share([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="policy_values contains non-finite"):
        beat_share([np.nan, 1.0], [0.0, 0.0])


def test_summarise_spread():
    assert summarise_spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "mean": 4.0,
                                                      "n": 4}
    with pytest.raises(ValueError, match="values contains non-finite"):
        summarise_spread([1.0, np.inf])
    with pytest.raises(ValueError, match="at least 1"):
        summarise_spread([])
