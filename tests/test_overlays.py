"""Regime overlays: causal filters fitted on train only, a wrapper that equals the wrapped policy when risk
is always on and holds cash when it is always off, and a planted market where cutting risk pays."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from agents.baselines import BuyAndHoldPolicy, CashPolicy, RandomPolicy, SMACrossoverPolicy
from agents.overlays import (
    OverlayConfig,
    OverlayError,
    OverlayPolicy,
    RegimeOverlay,
    fit_hmm,
    fit_overlay,
    forward_probabilities,
    log_returns,
)
from agents.supervised_policy import SupervisedThresholdPolicy
from envs import TradingEnv, backtest
from envs.backtest import backtest_many
from features import DatasetConfig, build_market_data
from features.splits import SplitConfig
from sim import Costs

N_BARS, VALIDATION_AT, TEST_AT = 700, 400, 500
# truncation bars after the train rows (which never change): 418 (validation) and 613 (test) are storm edges,
# where a look-ahead decoder (smoothed posteriors, and even the Viterbi path) changes its mind about the past
CUTS = (418, 560, 613)
FILTERS = {
    "index_trend": OverlayConfig("index_trend", window=20, index_symbol="IDX"),
    "volatility": OverlayConfig("volatility", window=10, quantile=0.8),
    "hmm": OverlayConfig("hmm", seed=3),
}


def regime_returns(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Log returns of a market that is calm (up 0.1%/bar, 0.6% noise) except in storms (down 0.8%/bar,
    2.5% noise) of 15-30 bars every 50-100 bars; and the storm flags."""
    rng = np.random.default_rng(seed)
    storm = np.zeros(n, dtype=bool)
    t = 60
    while t < n:
        t += int(rng.integers(50, 100))
        length = int(rng.integers(15, 30))
        storm[t : t + length] = True
        t += length
    returns = np.where(storm, rng.normal(-0.008, 0.025, n), rng.normal(0.001, 0.006, n))
    return returns, storm


def bars_of(returns: np.ndarray, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 100)
    n = len(returns)
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.r_[100.0, close[:-1]]
    index = pd.bdate_range("2015-01-01", periods=n, tz="UTC", name="timestamp")
    return pd.DataFrame({
        "open": open_, "high": np.maximum(open_, close) * (1 + rng.uniform(0, 0.003, n)),
        "low": np.minimum(open_, close) * (1 - rng.uniform(0, 0.003, n)), "close": close,
        "volume": rng.uniform(1e5, 2e5, n)}, index=index)


def dataset(bars: dict[str, pd.DataFrame]):
    stamps = pd.bdate_range("2015-01-01", periods=N_BARS, tz="UTC")  # the split dates stay put when truncated
    split = SplitConfig(validation_start=str(stamps[VALIDATION_AT].date()), test_start=str(stamps[TEST_AT].date()))
    return build_market_data(bars, DatasetConfig(window=8, split=split))


@pytest.fixture(scope="module")
def planted():
    returns, storm = regime_returns(N_BARS, seed=0)
    bars = {"SYN": bars_of(returns, 0), "IDX": bars_of(regime_returns(N_BARS, seed=1)[0], 1)}
    return bars, storm


@pytest.fixture(scope="module")
def market(planted):
    return dataset(planted[0])


@pytest.fixture(scope="module")
def truncated(planted):
    return {t: dataset({s: frame.iloc[: t + 1] for s, frame in planted[0].items()}) for t in CUTS}


class EventOnly:
    """A policy without the fast path: the backtester asks it bar by bar (and counts the asks)."""

    def __init__(self, policy) -> None:
        self.policy, self.name, self.allow_short, self.asked = policy, policy.name, policy.allow_short, 0
        self.preprocessing = getattr(policy, "preprocessing", None)

    def reset(self) -> None:
        self.policy.reset()

    def act(self, observation: np.ndarray):
        self.asked += 1
        return self.policy.act(observation)


class WindowModel:
    """A stand-in classifier: P(up) a fixed function of the window (the supervised policy's model protocol)."""

    def __init__(self, data) -> None:
        self.window, self.feature_names = data.window, list(data.feature_names)
        self.label, self.threshold = data.label, 0.55

    def predict_proba(self, windows: np.ndarray, asset_ids: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.asarray(windows, dtype=np.float64)[:, -1, :5].sum(axis=1)))


def constant_overlay(data, risk_on: bool) -> RegimeOverlay:
    return RegimeOverlay(OverlayConfig("volatility"), data, np.full(len(data.timestamps), risk_on))


# ----- causality and fitting ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(FILTERS))
def test_each_filter_value_at_t_uses_closes_up_to_t_only(kind, market, truncated) -> None:
    full = fit_overlay(FILTERS[kind], market)
    for t, part_data in truncated.items():
        part = fit_overlay(FILTERS[kind], part_data)
        assert part.fitted == full.fitted, f"{kind} t={t}: fitted on other rows"
        for symbol in market.symbols:
            rows, part_rows = market.symbol_rows(symbol), part_data.symbol_rows(symbol)
            where = f"{kind} {symbol} t={t}"
            np.testing.assert_array_equal(part.value[part_rows], full.value[rows][: t + 1], err_msg=where)
            np.testing.assert_array_equal(part.risk_on[part_rows], full.risk_on[rows][: t + 1], err_msg=where)
        assert np.isfinite(full.value[market.symbol_rows("SYN")][100:]).all()


def test_the_truncation_check_catches_smoothed_hmm_posteriors(market) -> None:
    # what the causality test would see with predict_proba (forward-backward): past values move
    returns = log_returns(market.close[market.symbol_rows("SYN")])[1:]
    model, scale = fit_hmm(returns[:350], FILTERS["hmm"], "SYN")
    x = (returns / scale)[:, None]
    smoothed, filtered = model.predict_proba(x), forward_probabilities(model, x[:, 0])
    moved_smoothed = moved_filtered = 0.0
    for t in CUTS:
        moved_smoothed = max(moved_smoothed, np.abs(model.predict_proba(x[: t + 1]) - smoothed[: t + 1]).max())
        prefix = forward_probabilities(model, x[: t + 1, 0])
        moved_filtered = max(moved_filtered, np.abs(prefix - filtered[: t + 1]).max())
    assert moved_smoothed > 0.01
    assert moved_filtered == 0.0


def test_hmm_filtered_probability_is_the_posterior_of_the_last_bar_seen(market) -> None:
    returns = log_returns(market.close[market.symbol_rows("SYN")])[1:]
    model, scale = fit_hmm(returns[:350], FILTERS["hmm"], "SYN")
    x = returns / scale
    filtered = forward_probabilities(model, x)
    for t in (0, 1, 37, 200, 480, len(x) - 1):
        np.testing.assert_allclose(filtered[t], model.predict_proba(x[: t + 1, None])[-1], atol=1e-9)


def test_filters_are_fitted_on_train_rows_only(planted, market) -> None:
    bars, _ = planted
    rng = np.random.default_rng(5)
    shocked = {}
    for symbol, frame in bars.items():
        frame = frame.copy()
        factor = np.exp(np.cumsum(rng.normal(-0.01, 0.05, len(frame) - VALIDATION_AT)))
        frame.iloc[VALIDATION_AT:, :4] = frame.iloc[VALIDATION_AT:, :4].to_numpy() * factor[:, None]
        shocked[symbol] = frame
    other = dataset(shocked)
    for kind, config in FILTERS.items():
        before, after = fit_overlay(config, market), fit_overlay(config, other)
        assert after.fitted == before.fitted, kind
        train_end = market.split_range("train", "SYN")[1]
        np.testing.assert_array_equal(after.risk_on[:train_end], before.risk_on[:train_end], err_msg=kind)
        assert not np.array_equal(after.value, before.value, equal_nan=True), kind  # later bars did change
    assert fit_overlay(FILTERS["volatility"], market).fitted["SYN"]["threshold"] > 0.0


def test_hmm_risk_on_state_is_the_calm_one_and_finds_the_planted_storms(planted, market) -> None:
    overlay = fit_overlay(dataclasses.replace(FILTERS["hmm"], index_symbol="SYN"), market)
    fitted = overlay.fitted["SYN"]
    calm = fitted["calm_state"]
    assert fitted["variances"][calm] < fitted["variances"][1 - calm]
    lo, hi = market.split_range("test", "SYN")
    agreement = (overlay.risk_on[lo:hi] == ~planted[1][lo:hi]).mean()
    assert agreement > 0.85


def test_risk_on_follows_each_documented_rule(market) -> None:
    rows = market.symbol_rows("SYN")
    close, t = market.close[rows], 300
    trend = fit_overlay(dataclasses.replace(FILTERS["index_trend"], index_symbol=None), market)
    average = np.convolve(close, np.ones(20) / 20, mode="valid")  # the mean of closes t-19..t, at t >= 19
    np.testing.assert_array_equal(trend.risk_on[rows][19:], close[19:] > average)
    assert not trend.risk_on[rows][:19].any()  # fewer than 20 bars: undefined, risk off
    volatility = fit_overlay(FILTERS["volatility"], market)
    expected = np.std(np.diff(np.log(close[t - 10 : t + 1])), ddof=1)
    assert volatility.value[rows][t] == pytest.approx(expected, rel=1e-12)
    threshold = volatility.fitted["SYN"]["threshold"]
    below = np.nan_to_num(volatility.value[rows], nan=np.inf) < threshold
    np.testing.assert_array_equal(volatility.risk_on[rows], below)
    hmm = fit_overlay(FILTERS["hmm"], market)
    np.testing.assert_array_equal(hmm.risk_on, np.nan_to_num(hmm.value, nan=0.0) >= 0.5)
    assert 0.1 < hmm.risk_on.mean() < 0.95 and ((hmm.value > 0.1) & (hmm.value < 0.5)).any()


def test_index_filter_reads_the_index_bar_at_or_before_each_traded_bar(planted) -> None:
    bars = dict(planted[0])
    bars["IDX"] = bars["IDX"].iloc[30:]  # the index starts 30 bars later
    data = dataset(bars)
    overlay = fit_overlay(FILTERS["index_trend"], data)
    traded, index = data.symbol_rows("SYN"), data.symbol_rows("IDX")
    assert not overlay.risk_on[traded][:30].any() and np.isnan(overlay.value[traded][:30]).all()
    np.testing.assert_array_equal(overlay.value[traded][30:], overlay.value[index])


# ----- the wrapper -------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda data: BuyAndHoldPolicy(),
    lambda data: SMACrossoverPolicy(data, 10, 50),
    lambda data: EventOnly(SMACrossoverPolicy(data, 10, 50)),
    lambda data: RandomPolicy(seed=4),
    lambda data: SupervisedThresholdPolicy(WindowModel(data)),
], ids=["buy_and_hold", "sma_fast_path", "sma_event_path", "random", "supervised"])
def test_always_risk_on_equals_the_wrapped_policy_backtest(make, market) -> None:
    costs = [Costs(), Costs(commission=0.003)]
    plain = backtest_many(make(market), market, "test", costs, market.symbols)
    wrapped = backtest_many(OverlayPolicy(make(market), constant_overlay(market, True)), market, "test", costs,
                            market.symbols)
    for a, b in zip(plain, wrapped):
        np.testing.assert_array_equal(b.equity, a.equity)
        np.testing.assert_array_equal(b.position, a.position)
        assert b.metrics["n_orders"] == a.metrics["n_orders"]
    assert plain[0].metrics["n_orders"] > 0


def test_a_brake_that_never_trips_equals_the_wrapped_policy(market) -> None:
    overlay = fit_overlay(OverlayConfig("drawdown", window=20, brake_threshold=0.99), market)
    plain = backtest(RandomPolicy(seed=2), market, "test")
    wrapped = backtest(OverlayPolicy(RandomPolicy(seed=2), overlay), market, "test")
    np.testing.assert_array_equal(wrapped.equity, plain.equity)


@pytest.mark.parametrize("allow_short", [False, True])
@pytest.mark.parametrize("make", [BuyAndHoldPolicy, lambda allow_short: EventOnly(RandomPolicy(1, allow_short))],
                         ids=["fast_path", "event_path"])
def test_always_risk_off_places_no_order_and_keeps_cash(make, allow_short, market) -> None:
    inner = make(allow_short=allow_short)
    result = backtest(OverlayPolicy(inner, constant_overlay(market, False)), market, "test", allow_short=allow_short)
    assert result.metrics["n_orders"] == 0
    assert (result.equity == result.equity[0]).all() and (result.position == 0).all()
    if isinstance(inner, EventOnly):  # still asked at every bar: its own state moves as without the overlay
        assert inner.asked == len(result.equity) - 1


@pytest.mark.parametrize("kind", ["index_trend", "volatility", "hmm", "drawdown"])
def test_fast_path_equals_event_path(kind, market) -> None:
    config = FILTERS.get(kind) or OverlayConfig("drawdown", window=15, brake_threshold=0.05)
    overlay = fit_overlay(config, market)
    for make in (lambda: BuyAndHoldPolicy(), lambda: SMACrossoverPolicy(market, 10, 50)):
        fast = OverlayPolicy(make(), overlay)
        assert callable(fast.act_windows)
        slow = OverlayPolicy(EventOnly(make()), overlay)
        assert slow.act_windows is None
        for symbol in market.symbols:
            a, b = backtest(fast, market, "test", symbol=symbol), backtest(slow, market, "test", symbol=symbol)
            np.testing.assert_array_equal(a.equity, b.equity, err_msg=f"{kind} {symbol}")
            assert 0 < a.metrics["n_orders"]


@pytest.mark.parametrize("kind", ["index_trend", "volatility", "hmm", "drawdown"])
def test_overlay_cuts_the_losses_of_a_market_that_crashes_in_high_volatility(kind, market) -> None:
    config = dataclasses.replace(FILTERS[kind], index_symbol=None) if kind in FILTERS else \
        OverlayConfig("drawdown", window=20, brake_threshold=0.05)
    plain = backtest(BuyAndHoldPolicy(), market, "test", symbol="SYN")
    wrapped = backtest(OverlayPolicy(BuyAndHoldPolicy(), fit_overlay(config, market)), market, "test", symbol="SYN")
    assert wrapped.equity[-1] > plain.equity[-1] * 1.2
    assert wrapped.metrics["max_drawdown"] < plain.metrics["max_drawdown"]


def brake_rule(close: np.ndarray, threshold: float, window: int) -> tuple[np.ndarray, list[str]]:
    """The documented brake over buy and hold, bar by bar: whether each bar is held in cash, and why each
    release happened ("high": the shadow curve's new high, "bars": ``window`` bars on)."""
    off, releases = [], []
    equity = shadow = peak = 1.0
    shadows, engaged_for, high = [1.0], None, math.nan
    for k in range(len(close)):
        if k:
            move = close[k] / close[k - 1] - 1.0
            equity *= 1.0 + (0.0 if off[-1] else 1.0) * move
            shadow *= 1.0 + move
            shadows.append(shadow)
        peak = max(peak, equity)
        if engaged_for is not None:
            engaged_for += 1
            if shadow > high or engaged_for >= window:
                releases.append("high" if shadow > high else "bars")
                engaged_for, peak = None, equity
        elif 1.0 - equity / peak > threshold:
            engaged_for, high = 0, max(shadows)
        off.append(engaged_for is not None)
    return np.array(off), releases


@pytest.mark.parametrize("window", [20, 40])
def test_brake_holds_cash_past_the_threshold_until_a_new_shadow_high_or_window_bars(window, market) -> None:
    threshold = 0.03
    policy = OverlayPolicy(BuyAndHoldPolicy(), fit_overlay(OverlayConfig("drawdown", window=window,
                                                                         brake_threshold=threshold), market))
    lo, hi = market.split_range("test", "SYN")
    rows = np.arange(lo, hi - 1)
    actions = policy.act_windows(market.windows(rows), np.zeros(len(rows), dtype=np.int64))
    off, releases = brake_rule(market.close[rows], threshold, window)
    np.testing.assert_array_equal(actions, np.where(off, 0, 1))
    assert {"high", "bars"} <= set(releases)  # both ways of re-arming happen here


def test_act_in_the_env_gives_the_fast_path_actions(market) -> None:
    policy = OverlayPolicy(BuyAndHoldPolicy(), fit_overlay(OverlayConfig("drawdown", window=20, brake_threshold=0.03),
                                                          market))
    env = TradingEnv(market, symbol="SYN", split="test", random_start=False)
    observation, info = env.reset(seed=0)
    policy.reset()
    rows, actions, done = [], [], False
    while not done:
        rows.append(info["row"])
        actions.append(policy.act(observation))
        observation, _, terminated, truncated, info = env.step(actions[-1])
        done = terminated or truncated
    expected = policy.act_windows(market.windows(np.array(rows)), np.zeros(len(rows), dtype=np.int64))
    assert actions == expected.tolist() and 0 in actions and 1 in actions


def test_act_asks_the_wrapped_policy_at_every_bar_even_in_cash(market) -> None:
    inner = EventOnly(RandomPolicy(seed=1))
    policy = OverlayPolicy(inner, constant_overlay(market, False))
    env = TradingEnv(market, symbol="SYN", split="test", random_start=False)
    observation, _ = env.reset(seed=0)
    policy.reset()
    for step in range(1, 31):
        assert policy.act(observation) == 0
        observation, *_ = env.step(0)
        assert inner.asked == step


def test_an_observation_seen_again_keeps_its_action_and_a_skipped_bar_is_an_error(market) -> None:
    policy = OverlayPolicy(BuyAndHoldPolicy(), fit_overlay(FILTERS["volatility"], market))
    lo, _ = market.split_range("test", "SYN")
    observations = [np.concatenate([market.windows(np.array([row]))[0].ravel(), np.zeros(4), [0.0]]).astype(np.float32)
                    for row in (lo, lo + 1, lo + 3)]
    first = policy.act(observations[0])
    assert policy.act(observations[0]) == first
    policy.act(observations[1])
    with pytest.raises(OverlayError, match=f"jumped from row {lo + 1} to {lo + 3}; call reset"):
        policy.act(observations[2])
    policy.reset()
    assert policy.act(observations[2]) in (0, 1)


def test_wrapped_policy_with_preprocessing_is_backtested_on_its_own_data(market) -> None:
    class Preprocessed(BuyAndHoldPolicy):
        def __init__(self, preprocessing) -> None:
            super().__init__()
            self.preprocessing = preprocessing

    from features.preprocessing import Preprocessing

    prep = Preprocessing.from_dict({**Preprocessing.of(market).to_dict(), "window": 5})
    overlay = fit_overlay(FILTERS["volatility"], market)
    policy = OverlayPolicy(EventOnly(Preprocessed(prep)), overlay)
    assert policy.preprocessing is prep
    result = backtest(policy, market, "test", symbol="SYN")
    reference = backtest(OverlayPolicy(Preprocessed(prep), overlay), market, "test", symbol="SYN")
    np.testing.assert_array_equal(result.equity, reference.equity)
    assert 0 < result.metrics["n_orders"]


# ----- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, message", [
    ({"kind": "momentum"}, "OverlayConfig.kind='momentum' is not an overlay"),
    ({"kind": "volatility", "window": 1}, "OverlayConfig.window=1 must be an integer >= 2"),
    ({"kind": "index_trend", "window": 2.5}, "OverlayConfig.window=2.5 must be an integer >= 2"),
    ({"kind": "volatility", "quantile": 0.0}, r"OverlayConfig.quantile=0.0 must be in \(0, 1\)"),
    ({"kind": "volatility", "quantile": 1.0}, r"OverlayConfig.quantile=1.0 must be in \(0, 1\)"),
    ({"kind": "drawdown", "brake_threshold": 1.5}, r"OverlayConfig.brake_threshold=1.5 must be a drawdown in \(0, 1\)"),
    ({"kind": "hmm", "hmm_iterations": 0}, "OverlayConfig.hmm_iterations=0 must be an integer >= 1"),
    ({"kind": "volatility", "quantile": "high"}, r"OverlayConfig.quantile='high' must be in \(0, 1\)"),
    ({"kind": "hmm", "seed": 1.5}, "OverlayConfig.seed=1.5 must be an integer"),
])
def test_bad_settings_are_one_line_errors(settings, message) -> None:
    with pytest.raises(OverlayError, match=message) as error:
        OverlayConfig(**settings)
    assert "\n" not in str(error.value)


def test_an_index_symbol_not_in_the_data_names_it_and_the_symbols(market) -> None:
    with pytest.raises(OverlayError, match=r"index_symbol='SPY' is not a symbol of the data; it has \['SYN', 'IDX'\]"):
        fit_overlay(OverlayConfig("index_trend", index_symbol="SPY"), market)


def test_an_hmm_that_does_not_converge_names_the_symbol(market) -> None:
    with pytest.raises(OverlayError, match="HMM of SYN's train log returns did not converge in 1 EM iterations"):
        fit_overlay(OverlayConfig("hmm", hmm_iterations=1), market)


def test_an_observation_of_other_data_is_an_error(planted, market) -> None:
    other = dataset({"SYN": bars_of(regime_returns(N_BARS, seed=9)[0], 9)})
    policy = OverlayPolicy(BuyAndHoldPolicy(), fit_overlay(FILTERS["volatility"], market))
    with pytest.raises(OverlayError, match="shows a bar that is not in the overlay's data"):
        backtest(policy, other, "test")
    with pytest.raises(OverlayError, match="shows a bar that is not in the overlay's data"):
        backtest(OverlayPolicy(EventOnly(BuyAndHoldPolicy()), policy.overlay), other, "test")


def test_a_policy_whose_flat_action_is_unknown_must_say_its_action_space(market) -> None:
    class Bare:
        def reset(self) -> None: ...

        def act(self, observation):
            return 1

    overlay = constant_overlay(market, False)
    with pytest.raises(OverlayError, match="cannot tell the flat action of Bare; pass allow_short="):
        OverlayPolicy(Bare(), overlay)
    result = backtest(OverlayPolicy(Bare(), overlay, allow_short=True), market, "test", allow_short=True)
    assert result.metrics["n_orders"] == 0  # flat is action 1 with shorts: nothing traded


def test_cash_policy_wrapped_is_still_cash(market) -> None:
    result = backtest(OverlayPolicy(CashPolicy(), fit_overlay(FILTERS["hmm"], market)), market, "test")
    assert result.metrics["n_orders"] == 0
