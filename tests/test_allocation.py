"""Allocation baselines (agents/allocation.py): skfolio weights fitted on the train closes only."""

from __future__ import annotations

import numpy as np
import pytest

from agents.allocation import ALLOCATIONS, AllocationError, describe_allocation, fit_allocation

SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
VOLS = np.array([0.02, 0.005, 0.01, 0.03])


def make_closes(rows: int = 300, seed: int = 7, drift: float = 0.0008) -> np.ndarray:
    """Closes of 4 assets with daily volatilities 2%, 0.5%, 1%, 3%, a common drift and some correlation."""
    rng = np.random.default_rng(seed)
    common = rng.normal(0.0, 1.0, (rows, 1))
    own = rng.normal(0.0, 1.0, (rows, len(VOLS)))
    returns = drift + VOLS * (0.3 * common + np.sqrt(1 - 0.09) * own)
    return 100.0 * np.cumprod(1.0 + returns, axis=0)


def train_returns(closes: np.ndarray) -> np.ndarray:
    return closes[1:] / closes[:-1] - 1.0


def portfolio_variance(weights: np.ndarray, returns: np.ndarray) -> float:
    return float(weights @ np.cov(returns, rowvar=False) @ weights)


@pytest.mark.parametrize("method", ALLOCATIONS)
def test_every_method_gives_long_only_weights_summing_to_one(method):
    weights = fit_allocation(method, make_closes(), SYMBOLS)
    assert weights.dtype == np.float64 and weights.shape == (4,)
    assert np.all(weights >= 0)
    assert abs(weights.sum() - 1.0) <= 1e-9


@pytest.mark.parametrize("method", ALLOCATIONS)
def test_every_method_has_a_one_line_description(method):
    text = describe_allocation(method)
    assert text and "\n" not in text and "skfolio" in text


def test_equal_weight_and_buy_and_hold_start_at_one_over_n():
    closes = make_closes()
    np.testing.assert_array_equal(fit_allocation("equal_weight", closes, SYMBOLS), np.full(4, 0.25))
    np.testing.assert_array_equal(fit_allocation("buy_and_hold", closes, SYMBOLS), np.full(4, 0.25))
    assert "never rebalanced" in describe_allocation("buy_and_hold")


def test_inverse_volatility_is_one_over_sigma_normalised_and_favours_the_calmest_asset():
    closes = make_closes()
    weights = fit_allocation("inverse_volatility", closes, SYMBOLS)
    inverse_sigma = 1.0 / train_returns(closes).std(axis=0)
    np.testing.assert_allclose(weights, inverse_sigma / inverse_sigma.sum(), rtol=0, atol=1e-6)
    assert int(np.argmax(weights)) == int(np.argmin(VOLS))


def test_minimum_variance_has_no_more_train_variance_than_equal_weight_or_inverse_volatility():
    closes = make_closes()
    returns = train_returns(closes)
    minimum = portfolio_variance(fit_allocation("minimum_variance", closes, SYMBOLS), returns)
    equal = portfolio_variance(fit_allocation("equal_weight", closes, SYMBOLS), returns)
    inverse = portfolio_variance(fit_allocation("inverse_volatility", closes, SYMBOLS), returns)
    assert minimum <= equal * (1 + 1e-6)
    assert minimum <= inverse * (1 + 1e-6)
    assert minimum < equal


def test_mean_risk_has_at_least_the_train_sharpe_of_equal_weight():
    closes = make_closes()
    returns = train_returns(closes)

    def sharpe(weights: np.ndarray) -> float:
        return float((returns @ weights).mean() / np.sqrt(portfolio_variance(weights, returns)))

    best = sharpe(fit_allocation("mean_risk", closes, SYMBOLS))
    assert best >= sharpe(fit_allocation("equal_weight", closes, SYMBOLS)) - 1e-6
    assert best >= sharpe(fit_allocation("minimum_variance", closes, SYMBOLS)) - 1e-6


@pytest.mark.parametrize("method", ALLOCATIONS)
def test_an_asset_listed_too_late_in_the_train_rows_gets_weight_zero(method):
    closes = make_closes()
    closes[:290, 2] = np.nan
    weights = fit_allocation(method, closes, SYMBOLS)
    assert weights[2] == 0.0
    assert abs(weights.sum() - 1.0) <= 1e-9
    others = fit_allocation(method, closes[:, [0, 1, 3]], ("AAA", "BBB", "DDD"))
    np.testing.assert_allclose(weights[[0, 1, 3]], others, rtol=0, atol=1e-7)


def test_assets_are_fitted_on_the_rows_where_all_of_them_have_returns():
    closes = make_closes()
    closes[100:103, 0] = np.nan  # a holiday for AAA only
    weights = fit_allocation("inverse_volatility", closes, SYMBOLS)
    returns = train_returns(closes)
    common = returns[np.all(np.isfinite(returns), axis=1)]
    assert len(common) == len(returns) - 4
    inverse_sigma = 1.0 / common.std(axis=0)
    np.testing.assert_allclose(weights, inverse_sigma / inverse_sigma.sum(), rtol=0, atol=1e-9)


def test_fit_uses_only_the_rows_it_is_given():
    closes = make_closes(rows=400)
    train = closes[:300].copy()
    first = fit_allocation("minimum_variance", train, SYMBOLS)
    np.testing.assert_array_equal(train, closes[:300])  # the input is not modified
    again = fit_allocation("minimum_variance", closes[:300], SYMBOLS)
    np.testing.assert_array_equal(first, again)
    with_future = fit_allocation("minimum_variance", closes, SYMBOLS)
    assert np.max(np.abs(with_future - first)) > 1e-3


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown allocation method 'risk_parity'.*equal_weight.*mean_risk"):
        fit_allocation("risk_parity", make_closes(), SYMBOLS)
    with pytest.raises(ValueError, match="risk_parity"):
        describe_allocation("risk_parity")


def test_closes_that_are_not_two_dimensional_are_refused():
    with pytest.raises(AllocationError, match=r"closes has shape \(300,\): expected 2-D"):
        fit_allocation("equal_weight", make_closes()[:, 0], SYMBOLS)


def test_columns_that_do_not_match_the_symbols_are_refused():
    with pytest.raises(AllocationError, match="closes has 4 columns but symbols has 3"):
        fit_allocation("equal_weight", make_closes(), SYMBOLS[:3])


def test_a_universe_of_one_asset_is_refused():
    with pytest.raises(AllocationError, match="a universe needs at least 2 assets"):
        fit_allocation("equal_weight", make_closes()[:, :1], SYMBOLS[:1])


def test_a_universe_with_only_one_asset_with_enough_history_is_refused():
    closes = make_closes()[:, :2]
    closes[:295, 1] = np.nan
    with pytest.raises(AllocationError, match=r"only 1 of 2 assets.*BBB 4.*at least 2 assets"):
        fit_allocation("minimum_variance", closes, SYMBOLS[:2])


def test_duplicate_symbols_are_refused():
    with pytest.raises(AllocationError, match="symbols has duplicates AAA"):
        fit_allocation("equal_weight", make_closes(), ("AAA", "BBB", "AAA", "DDD"))


@pytest.mark.parametrize("price", [0.0, -5.0, np.inf, -np.inf])
def test_a_non_positive_or_infinite_price_names_the_symbol_and_row(price):
    closes = make_closes()
    closes[123, 2] = price
    with pytest.raises(AllocationError, match=r"closes row 123 for CCC is .*expected a positive finite price"):
        fit_allocation("inverse_volatility", closes, SYMBOLS)


def test_too_few_rows_are_refused():
    with pytest.raises(AllocationError, match=r"closes has 15 rows: at least min_rows \+ 1 = 21"):
        fit_allocation("equal_weight", make_closes()[:15], SYMBOLS)


def test_assets_without_enough_returns_in_common_are_refused():
    closes = make_closes(rows=60)
    closes[:30, 0] = np.nan
    closes[30:, 1] = np.nan
    expected = r"minimum_variance: the assets with enough history \(AAA, BBB, CCC, DDD\)"
    with pytest.raises(AllocationError, match=expected):
        fit_allocation("minimum_variance", closes, SYMBOLS)


def test_params_reach_the_estimator_and_unknown_ones_are_named():
    closes = make_closes()
    capped = fit_allocation("minimum_variance", closes, SYMBOLS, params={"max_weights": 0.3})
    assert capped.max() <= 0.3 + 1e-7
    assert fit_allocation("minimum_variance", closes, SYMBOLS).max() > 0.3
    expected = r"minimum_variance: unknown params max_weight, solverr for skfolio MeanRisk"
    with pytest.raises(AllocationError, match=expected):
        fit_allocation("minimum_variance", closes, SYMBOLS, params={"solverr": "X", "max_weight": 0.3})


def test_params_cannot_change_the_method_or_hide_a_failure():
    closes = make_closes()
    with pytest.raises(AllocationError, match="minimum_variance: params objective_function are fixed"):
        fit_allocation("minimum_variance", closes, SYMBOLS, params={"objective_function": None})
    with pytest.raises(AllocationError, match="inverse_volatility: params fallback are not allowed"):
        fit_allocation("inverse_volatility", closes, SYMBOLS, params={"fallback": "previous_weights"})


def test_a_solver_failure_names_the_method_and_what_skfolio_said():
    expected = r"minimum_variance: skfolio failed to fit \(.*Solver 'CLARABEL' failed"
    with pytest.raises(AllocationError, match=expected) as info:
        fit_allocation("minimum_variance", make_closes(), SYMBOLS, params={"min_return": 1.0})
    assert "\n" not in str(info.value)


def test_maximum_sharpe_with_only_losing_assets_fails_with_skfolio_reason():
    closes = make_closes(drift=-0.01)
    assert np.all(train_returns(closes).mean(axis=0) < 0)
    expected = r"mean_risk: skfolio failed to fit .*under-performing your risk-free rate"
    with pytest.raises(AllocationError, match=expected) as info:
        fit_allocation("mean_risk", closes, SYMBOLS)
    assert "\n" not in str(info.value)


def test_a_short_weight_from_skfolio_is_refused_not_clipped():
    closes = make_closes()
    with pytest.raises(AllocationError, match=r"mean_risk: skfolio gave DDD weight -0\.\d+: expected long-only"):
        fit_allocation("mean_risk", closes, SYMBOLS, params={"min_weights": -1.0, "max_weights": 2.0})


class _FixedWeights:
    """Stands in for a skfolio estimator whose weights carry solver noise."""

    def __init__(self) -> None:
        self.weights_ = np.array([0.5 + 3e-10, -5e-10, 0.25, 0.25])

    def fit(self, returns: np.ndarray) -> _FixedWeights:
        return self


def test_solver_noise_below_minus_1e9_is_clipped_and_the_weights_renormalised(monkeypatch):
    import agents.allocation as allocation

    monkeypatch.setitem(allocation._ESTIMATORS, "equal_weight", _FixedWeights)
    weights = fit_allocation("equal_weight", make_closes(), SYMBOLS)
    assert weights[1] == 0.0
    assert abs(weights.sum() - 1.0) <= 1e-12
    np.testing.assert_allclose(weights, [0.5, 0.0, 0.25, 0.25], rtol=0, atol=1e-9)
