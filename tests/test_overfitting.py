"""The probability of backtest overfitting (CSCV, Bailey et al. 2017): known answers, invariances, bad input."""

from __future__ import annotations

import itertools
import json
import math
import statistics

import numpy as np
import pytest
from scipy import stats

from evaluation.overfitting import PBOError, per_bar_sharpe, probability_of_backtest_overfitting

# Strategy A of the hand-computed case: blocks of 2 bars with sums 3, -1, -2, 2 (S = 4).
HAND_A = [2.0, 1.0, 1.0, -2.0, -1.0, -1.0, 3.0, -1.0]


def _noise(seed: int, n_bars: int = 2000, n_strategies: int = 50) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.01, size=(n_bars, n_strategies))


def test_hand_computed_lambdas_of_one_strategy_against_cash() -> None:
    # N = 2: A and cash (all zeros, Sharpe 0). A's Sharpe on a half has the sign of its block sums
    # (3, -1, -2, 2), so each combination's winner and out-of-sample rank is read off by hand:
    #   IS {0,1} sum 2 -> A; OOS {2,3} sum 0 -> A ties cash, average rank 1.5, omega 1/2, lambda 0
    #   IS {0,2} sum 1 -> A; OOS {1,3} sum 1 -> A ranks 2, omega 2/3, lambda ln 2
    #   IS {0,3} sum 5 -> A; OOS {1,2} sum -3 -> A ranks 1, omega 1/3, lambda -ln 2
    #   IS {1,2} sum -3 -> cash; OOS {0,3}: A is 5 > 0 -> cash ranks 1, lambda -ln 2
    #   IS {1,3} sum 1 -> A; OOS {0,2} sum 1 -> lambda ln 2
    #   IS {2,3} sum 0 -> A and cash tie in sample: the pessimistic pick is cash (A is 2 > 0 out of
    #   sample), which ranks 1 -> lambda -ln 2
    returns = np.column_stack([HAND_A, np.zeros(8)])
    result = probability_of_backtest_overfitting(returns, n_splits=4)
    ln2 = math.log(2.0)
    assert result.lambdas.tolist() == pytest.approx([0.0, ln2, -ln2, -ln2, ln2, -ln2], abs=1e-15)
    assert result.lambdas[0] == 0.0
    assert result.in_sample_winner.tolist() == [0, 0, 0, 1, 0, 1]
    assert result.pbo == pytest.approx(4 / 6)
    assert result.n_combinations == 6 and result.n_strategies == 2 and result.n_bars == 8 and result.n_splits == 4
    # only IS {0,3} leaves the winner losing out of sample
    assert result.probability_of_loss == pytest.approx(1 / 6)


def test_hand_case_metrics_and_degradation_are_the_winners_sharpe_on_each_half() -> None:
    returns = np.column_stack([HAND_A, np.zeros(8)])
    result = probability_of_backtest_overfitting(returns, n_splits=4)
    blocks = [HAND_A[2 * s:2 * s + 2] for s in range(4)]
    expected_in, expected_out = [], []
    for combo, winner in zip(itertools.combinations(range(4), 2), result.in_sample_winner):
        rest = [s for s in range(4) if s not in combo]
        for target, half in ((expected_in, combo), (expected_out, rest)):
            values = [v for s in half for v in blocks[s]] if winner == 0 else [0.0] * 4
            sd = statistics.stdev(values) if winner == 0 else 1.0
            target.append(statistics.mean(values) / sd)
    np.testing.assert_allclose(result.in_sample_metric, expected_in, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(result.out_of_sample_metric, expected_out, rtol=1e-12, atol=1e-15)
    fit = stats.linregress(expected_in, expected_out)
    assert result.degradation_slope == pytest.approx(fit.slope, rel=1e-9)
    assert result.degradation_intercept == pytest.approx(fit.intercept, rel=1e-9, abs=1e-12)


def test_in_sample_ties_pick_the_worst_out_of_sample_whatever_the_column_order() -> None:
    forward = probability_of_backtest_overfitting(np.column_stack([HAND_A, np.zeros(8)]), n_splits=4)
    backward = probability_of_backtest_overfitting(np.column_stack([np.zeros(8), HAND_A]), n_splits=4)
    assert backward.lambdas.tolist() == forward.lambdas.tolist()
    assert backward.pbo == forward.pbo
    # the tied combination IS {2,3} picks cash (column 1 forward, column 0 backward)
    assert forward.in_sample_winner[-1] == 1 and backward.in_sample_winner[-1] == 0


def test_duplicated_columns_rank_as_average_ties() -> None:
    # two copies of A: they tie in every half, so the winner shares its out-of-sample rank with its copy
    returns = np.column_stack([HAND_A, HAND_A, np.zeros(8)])
    result = probability_of_backtest_overfitting(returns, n_splits=4)
    # IS {0,2}: an A copy wins, OOS sum 1 > 0: the copies rank (2+3)/2 = 2.5 of N+1 = 4 -> ln(2.5/1.5)
    assert result.lambdas[1] == pytest.approx(math.log(2.5 / 1.5), abs=1e-15)
    # IS {0,3}: OOS sum -3 < 0: copies rank 1.5 -> ln(1.5/2.5)
    assert result.lambdas[2] == pytest.approx(math.log(1.5 / 2.5), abs=1e-15)


def test_skill_less_noise_strategies_give_pbo_near_one_half() -> None:
    # For i.i.d. noise the in-sample best's out-of-sample rank is uniform on 1..N, so E[PBO] = 25/50 = 0.5
    # for N = 50 (2,000 seeds: mean 0.499). One sample's PBO spreads widely (sd 0.18 at S = 8, since all
    # combinations share the same data), so the band is on the mean of 30 seeds: 0.5 +- 3 sd/sqrt(30).
    pbos = [probability_of_backtest_overfitting(_noise(seed), n_splits=8).pbo for seed in range(30)]
    assert 0.40 <= float(np.mean(pbos)) <= 0.60


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_planted_winner_among_noise_gives_pbo_near_zero(seed: int) -> None:
    returns = _noise(seed)
    returns[:, 17] += 0.002  # per-bar Sharpe 0.2 against a standard error of ~0.03 per half
    result = probability_of_backtest_overfitting(returns, n_splits=16)
    assert result.pbo < 0.02
    assert np.mean(result.in_sample_winner == 17) > 0.95
    assert result.probability_of_loss < 0.02
    assert result.n_combinations == 12_870


def test_permuting_the_strategy_columns_does_not_change_pbo() -> None:
    returns = _noise(5, n_bars=400, n_strategies=12)
    returns[:, 3] = returns[:, 7]        # a duplicated configuration
    returns[:, 9] = 0.0                  # one that never trades
    order = np.random.default_rng(6).permutation(12)
    plain = probability_of_backtest_overfitting(returns, n_splits=8)
    permuted = probability_of_backtest_overfitting(returns[:, order], n_splits=8)
    assert permuted.lambdas.tolist() == plain.lambdas.tolist()
    assert permuted.pbo == plain.pbo
    assert order[permuted.in_sample_winner].tolist() in (plain.in_sample_winner.tolist(),
                                                         np.where(plain.in_sample_winner == 3, 7,
                                                                  plain.in_sample_winner).tolist(),
                                                         np.where(plain.in_sample_winner == 7, 3,
                                                                  plain.in_sample_winner).tolist())


def test_sharpe_from_block_statistics_matches_the_metric_on_copied_halves() -> None:
    # unequal blocks (1003 bars into 8), cash, columns flat on a half, a constant non-zero column and a
    # step with tiny noise: the fast default path must give what per_bar_sharpe gives on each half
    returns = np.random.default_rng(3).normal(0.001, 0.01, size=(1003, 8))
    returns[:, 2] = 0.0
    returns[:503, 3] = 0.0               # blocks 0-3 (126 + 126 + 126 + 125 bars): a flat half
    returns[:503, 6] = 0.1               # flat at a value whose mean does not round back exactly
    returns[:, 4] = 0.5
    returns[:, 5] = np.repeat([0.01, 0.0100001], [600, 403]) + returns[:, 5] * 1e-9
    fast = probability_of_backtest_overfitting(returns, n_splits=8)
    slow = probability_of_backtest_overfitting(returns, n_splits=8, metric=lambda m: per_bar_sharpe(m))
    np.testing.assert_allclose(fast.in_sample_metric, slow.in_sample_metric, rtol=1e-8)
    np.testing.assert_allclose(fast.out_of_sample_metric, slow.out_of_sample_metric, rtol=1e-8)
    assert fast.lambdas.tolist() == slow.lambdas.tolist()
    assert fast.metric_name == "per_bar_sharpe" and slow.metric_name == "<lambda>"


def test_a_custom_metric_changes_the_pick() -> None:
    # A: high mean, high volatility; B: lower mean, far lower volatility. Sharpe picks B, mean picks A.
    rng = np.random.default_rng(9)
    a = 0.010 + rng.normal(0.0, 0.05, 400)
    b = 0.002 + rng.normal(0.0, 0.001, 400)
    returns = np.column_stack([a, b])
    by_sharpe = probability_of_backtest_overfitting(returns, n_splits=4)
    by_mean = probability_of_backtest_overfitting(returns, n_splits=4, metric=lambda m: m.mean(axis=0))
    assert set(by_sharpe.in_sample_winner.tolist()) == {1}
    assert set(by_mean.in_sample_winner.tolist()) <= {0, 1} and 0 in by_mean.in_sample_winner


def test_report_dict_is_json_and_verdict_reads_the_pbo() -> None:
    overfit = probability_of_backtest_overfitting(np.column_stack([HAND_A, np.zeros(8)]), n_splits=4)
    summary = json.loads(json.dumps(overfit.to_dict(include_values=True)))
    assert summary["pbo"] == pytest.approx(4 / 6)
    assert summary["n_combinations"] == 6 and len(summary["lambdas"]) == 6
    assert summary["probability_of_loss"] == pytest.approx(1 / 6)
    assert "lambdas" not in overfit.to_dict()
    assert overfit.verdict() == ("PBO 0.67 over 2 configurations and 6 combinations: the in-sample best is "
                                 "at or below the median out of sample in 4 of the 6 splits - the selection "
                                 "overfits (no better than a random pick)")
    returns = _noise(1)
    returns[:, 17] += 0.002
    sound = probability_of_backtest_overfitting(returns, n_splits=16)
    assert sound.verdict().startswith("PBO 0.00 over 50 configurations and 12,870 combinations:")
    assert sound.verdict().endswith("no sign that the selection overfits")
    assert sound.to_dict()["most_picked"][0] == {"column": 17, "share": 1.0}


def test_flat_in_sample_metrics_give_no_degradation_slope() -> None:
    # the winner has the same Sharpe on every half (each block is 0.02, 0, 0.02, 0), so the regression of
    # its out-of-sample on its in-sample metric has no spread in x: no slope rather than a made-up one
    winner = np.tile([0.02, 0.0], 8)
    returns = np.column_stack([winner, np.zeros(16)])
    result = probability_of_backtest_overfitting(returns, n_splits=4)
    assert result.degradation_slope is None and result.degradation_intercept is None
    assert result.to_dict()["degradation_slope"] is None


@pytest.mark.parametrize("returns, kwargs, message", [
    (np.zeros((40, 1)), {}, "at least 2 strategy columns"),
    (np.zeros(40), {}, "(bars, strategies) matrix"),
    (np.zeros((40, 3)), {"n_splits": 5}, "n_splits must be an even integer >= 2, got 5"),
    (np.zeros((40, 3)), {"n_splits": 0}, "n_splits must be an even integer >= 2, got 0"),
    (np.zeros((40, 3)), {"n_splits": 4.0}, "n_splits must be an even integer >= 2, got 4.0"),
    (np.zeros((31, 3)), {"n_splits": 16}, "n_splits=16 needs at least 32 bars (2 per block); returns has 31"),
    (np.zeros((40, 3)), {"n_splits": 18}, "n_splits=18 gives 48,620 combinations, over max_combinations=20,000"),
    (np.zeros((40, 3)), {"n_splits": 4, "max_combinations": 5}, "gives 6 combinations, over max_combinations=5"),
    (np.zeros((40, 3)), {"max_combinations": 0}, "max_combinations must be a positive integer"),
    (np.zeros((40, 3)), {"labels": ["a", "b"]}, "labels has 2 names for 3 returns columns"),
])
def test_bad_input_is_refused_in_one_line(returns: np.ndarray, kwargs: dict, message: str) -> None:
    kwargs = {"n_splits": 4, **kwargs}
    with pytest.raises(PBOError) as caught:
        probability_of_backtest_overfitting(returns, **kwargs)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_non_finite_returns_name_the_column_and_row() -> None:
    returns = np.zeros((40, 3))
    returns[7, 2] = np.nan
    returns[9, 1] = np.inf
    # the earliest bad bar is reported, with the count of all of them
    with pytest.raises(PBOError, match=r"returns column 2 row 7 is nan; expected finite per-bar returns "
                                       r"\(2 non-finite value\(s\) in all\)"):
        probability_of_backtest_overfitting(returns, n_splits=4)
    returns[7, 2] = 0.0
    with pytest.raises(PBOError, match=r"returns column 1 \('ppo seed 2'\) row 9 is inf"):
        probability_of_backtest_overfitting(returns, n_splits=4, labels=["cash", "ppo seed 2", "dqn"])


def test_a_raised_cap_allows_more_combinations() -> None:
    result = probability_of_backtest_overfitting(_noise(0, n_bars=40, n_strategies=3), n_splits=18,
                                                 max_combinations=50_000)
    assert result.n_combinations == math.comb(18, 9) == result.lambdas.size


def test_a_custom_metric_with_bad_output_is_refused() -> None:
    returns = _noise(0, n_bars=40, n_strategies=3)
    with pytest.raises(PBOError, match=r"metric <lambda> returned shape \(2,\); expected \(3,\)"):
        probability_of_backtest_overfitting(returns, n_splits=4, metric=lambda m: m.mean(axis=0)[:2])
    with pytest.raises(PBOError, match=r"metric <lambda> gave nan for returns column 0 on blocks \[0, 1\]"):
        probability_of_backtest_overfitting(returns, n_splits=4, metric=lambda m: np.full(3, np.nan))
