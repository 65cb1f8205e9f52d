"""Thresholds, minimum holds and sizing chosen for money on validation (agents.threshold_choice), and the
threshold policy's min_holding and sizing options (agents.supervised_policy)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from agents.baselines import CashPolicy
from agents.supervised_policy import SupervisedThresholdPolicy
from agents.threshold_choice import (DEFAULT_ENTRY_QUANTILES, DEFAULT_GAP_SHARES, ThresholdChoice, ThresholdChoiceError,
                                     choose_thresholds_for_money, fit_calibrator, validation_probabilities)
from envs.backtest import backtest
from envs.layout import ObservationLayout
from features import DatasetConfig, build_market_data
from features.labels import LabelConfig
from features.preprocessing import Preprocessing
from features.splits import SplitConfig
from sim.engine import Costs
from supervised.evaluation import choose_threshold, threshold_sweep

N_BARS, WINDOW = 800, 5
COSTS = Costs(commission=0.002)  # 0.5% a round trip with the 5 bps slippage
LABEL = LabelConfig(profit=0.0015, stop=0.0015, horizon=1)
SPLIT = SplitConfig(validation_start="2021-07-01", test_start="2021-11-01")


def planted_bars(n: int = N_BARS, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Bars where the bar after an odd row rises 0.2% (less than a round trip's costs) and the bar after a
    planted row (every 30th from 60) rises 2%; the planted rows are returned."""
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0, 0.0005, n)
    returns[1:] += np.where(np.arange(n - 1) % 2 == 1, 0.002, -0.002)
    planted = np.zeros(n, dtype=bool)
    planted[np.arange(60, n - 1, 30)] = True
    returns[1:][planted[:-1]] = 0.02
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.r_[100.0, close[:-1]]
    index = pd.date_range("2020-01-01", periods=n, freq="D", tz="UTC", name="timestamp")
    bars = pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.001,
                         "low": np.minimum(open_, close) * 0.999, "close": close,
                         "volume": rng.uniform(1e5, 2e5, n)}, index=index)
    return bars, planted


def market(bars: pd.DataFrame):
    return build_market_data({"X": bars}, DatasetConfig(window=WINDOW, labels=LABEL, split=SPLIT))


class RowModel:
    """Planted probabilities by row: 0.65 on odd rows, 0.35 on even rows, 0.95 on planted rows; the row of a
    window is found from its last bar's features. Records the rows it was asked about."""

    def __init__(self, datasets, planted: np.ndarray, preprocessing=None) -> None:
        data = datasets[0]
        self.window, self.feature_names = data.window, list(data.feature_names)
        self.label, self.threshold = dict(data.label), 0.5
        self.preprocessing = preprocessing
        self.lookup = {d.features[r].tobytes(): r for d in datasets for r in range(len(d.features))}
        self.p = np.where(np.arange(len(planted)) % 2 == 1, 0.65, 0.35)
        self.p[planted] = 0.95
        self.rows: list[int] = []

    def predict_proba(self, windows: np.ndarray, asset_ids: np.ndarray) -> np.ndarray:
        rows = [self.lookup[np.ascontiguousarray(w[-1], dtype=np.float32).tobytes()] for w in windows]
        self.rows += rows
        return self.p[rows]


@pytest.fixture(scope="module")
def planted():
    bars, rows = planted_bars()
    data = market(bars)
    return bars, rows, data


class OldRulePolicy:
    """Today's rule, written out: enter at entry, exit below exit or at max_holding (event path only)."""

    def __init__(self, model, entry: float, exit: float, max_holding: int) -> None:
        self.model, self.entry, self.exit, self.max_holding = model, entry, exit, max_holding
        self.layout = ObservationLayout(model.window, len(model.feature_names))
        self.held = 0

    def reset(self) -> None:
        self.held = 0

    def act(self, observation: np.ndarray) -> int:
        p = float(self.model.predict_proba(self.layout.features(observation)[None], np.zeros(1, np.int64))[0])
        if self.layout.state(observation)[0] <= 0:
            self.held = 0
            return int(p >= self.entry)
        self.held += 1
        if p < self.exit or self.held >= self.max_holding:
            self.held = 0
            return 0
        return 1


class EventOnly:
    """A policy without the fast path (no act_path, no batch_actor): the backtester steps it bar by bar."""

    def __init__(self, policy) -> None:
        self.policy, self.preprocessing = policy, policy.preprocessing

    def reset(self) -> None:
        self.policy.reset()

    def act(self, observation):
        return self.policy.act(observation)


def test_money_choice_beats_the_f1_threshold_that_trades_too_often(planted) -> None:
    _, rows, data = planted
    model = RowModel([data], rows)
    p, labels = validation_probabilities(model, data)
    f1_threshold = choose_threshold(threshold_sweep(labels, p))["threshold"]
    choice = choose_thresholds_for_money(model, data, COSTS, max_holding=4, min_holds=(0, 2))
    at_f1 = [r for r in choice.table if r["entry_threshold"] == pytest.approx(f1_threshold) and r["exit_gap"] == 0.0
             and r["min_holding"] == 0]
    assert f1_threshold <= 0.65 and at_f1 and at_f1[0]["net_log_return"] < 0  # trades every other bar, loses to costs
    assert not choice.stay_in_cash and choice.entry_threshold > 0.65 and choice.value > 0.05
    assert choice.value == max(r["net_log_return"] for r in choice.table)
    result = backtest(choice.policy(model), data, "validation", COSTS)
    assert np.log(result.equity[-1] / result.equity[0]) == pytest.approx(choice.value, abs=1e-12)


def test_choice_reads_the_validation_split_only(planted) -> None:
    bars, rows, data = planted
    changed = bars.copy()
    test_rows = changed.index >= pd.Timestamp(SPLIT.test_start, tz="UTC")
    changed.loc[test_rows, ["open", "high", "low", "close"]] *= 1.3  # a different test market
    other = market(changed)
    model = RowModel([data, other], rows)
    first = choose_thresholds_for_money(model, data, COSTS, max_holding=4, min_holds=(0, 2))
    second = choose_thresholds_for_money(model, other, COSTS, max_holding=4, min_holds=(0, 2))
    assert first.to_dict() == second.to_dict()
    start, end = data.split_range("validation", "X")
    assert start <= min(model.rows) and max(model.rows) < end


def test_stays_in_cash_when_no_setting_beats_cash(planted) -> None:
    _, rows, data = planted
    choice = choose_thresholds_for_money(RowModel([data], rows), data, Costs(commission=0.05), max_holding=4)
    assert choice.stay_in_cash and choice.entry_threshold is None and choice.value == 0.0
    entries, gaps = {r["entry_threshold"] for r in choice.table}, {r["exit_gap"] for r in choice.table}
    assert all(r["net_log_return"] < 0 for r in choice.table) and len(choice.table) == len(entries) * len(gaps) * 3
    assert isinstance(choice.policy(RowModel([data], rows)), CashPolicy)
    assert choice.describe().startswith("stay in cash")


def test_default_entries_are_on_the_scale_of_the_models_validation_probabilities(planted) -> None:
    """A model whose scores never reach 0.5 still gets thresholds it can trade at: the quantiles of its own
    validation probabilities and its F1 threshold."""
    _, rows, data = planted
    model = RowModel([data], rows)
    p, _ = validation_probabilities(model, data)
    choice = choose_thresholds_for_money(model, data, COSTS, max_holding=4, min_holds=(0,))
    entries = sorted({r["entry_threshold"] for r in choice.table})
    expected = {round(float(q), 4) for q in np.quantile(p, DEFAULT_ENTRY_QUANTILES)} | {round(model.threshold, 4)}
    assert entries == sorted(expected)
    low, high = np.quantile(p, [0.1, 0.9])
    assert sorted({r["exit_gap"] for r in choice.table}) == sorted({round(float(k * (high - low)), 4)
                                                                    for k in DEFAULT_GAP_SHARES})


def test_ties_go_to_the_more_selective_setting(planted) -> None:
    _, rows, data = planted
    choice = choose_thresholds_for_money(RowModel([data], rows), data, COSTS, entries=(0.7, 0.8, 0.75),
                                         hysteresis=(0.0,), min_holds=(0,), max_holding=4)
    assert len({r["net_log_return"] for r in choice.table}) == 1  # all three trade the same planted rows
    assert choice.entry_threshold == 0.8


def test_t_stat_objective_is_mean_over_std_times_root_n(planted) -> None:
    _, rows, data = planted
    model = RowModel([data], rows)
    choice = choose_thresholds_for_money(model, data, COSTS, objective="t_stat", max_holding=4, min_holds=(0, 2))
    assert choice.value == max(r["t_stat"] for r in choice.table) > 0
    returns = np.diff(np.log(backtest(choice.policy(model), data, "validation", COSTS).equity))
    assert choice.value == pytest.approx(returns.mean() / returns.std(ddof=1) * np.sqrt(len(returns)), rel=1e-12)


def test_default_policy_reproduces_todays_backtest(planted) -> None:
    _, rows, data = planted
    model = RowModel([data], rows)
    reference = backtest(OldRulePolicy(model, 0.6, 0.5, 3), data, "validation", COSTS)
    for policy in (SupervisedThresholdPolicy(model, 0.6, 0.5, 3),
                   SupervisedThresholdPolicy(model, 0.6, 0.5, 3, min_holding=0, sizing="all_in")):
        result = backtest(policy, data, "validation", COSTS)
        assert np.array_equal(result.equity, reference.equity) and np.array_equal(result.position, reference.position)
        assert policy.act_path(data.windows(np.arange(100, 110)), np.zeros(10, np.int64)).dtype == np.int64


def test_min_holding_holds_through_a_fading_probability() -> None:
    class Constant:
        window, feature_names, label, threshold = 1, ["a"], {"profit": 0.03, "stop": 0.02, "horizon": 5}, 0.6

    policy = SupervisedThresholdPolicy(Constant(), 0.6, 0.5, min_holding=3)
    held, actions = 0, []
    for in_position, p in [(False, 0.7), (True, 0.1), (True, 0.1), (True, 0.1), (False, 0.1)]:
        action, held = policy.decide(in_position, held, p)
        actions.append(action)
    assert actions == [1, 1, 1, 0, 0]  # exits on the third bar held, not the first
    with pytest.raises(ValueError, match="min_holding=6 must be in 0..max_holding=5"):
        SupervisedThresholdPolicy(Constant(), min_holding=6)


def test_kelly_size_on_a_calibrated_constant_probability_is_the_hand_fraction(planted) -> None:
    _, rows, data = planted

    class Constant(RowModel):
        def predict_proba(self, windows, asset_ids):
            return np.full(len(windows), 0.7)

    calibrator = fit_calibrator(np.full(5, 0.7), np.array([1, 1, 1, 0, 0]))
    model = Constant([data], rows)
    model.label = {**model.label, "profit": 0.03, "stop": 0.02}
    policy = SupervisedThresholdPolicy(model, 0.6, 0.5, 4, sizing="kelly", kelly_fraction=0.5, calibrator=calibrator)
    b, q = 0.03 / 0.02, 0.6
    hand = 0.5 * (q * b - (1 - q)) / b  # = 1/6
    assert calibrator(np.array([0.7]))[0] == pytest.approx(q)
    assert policy.env_settings == {"action_mode": "continuous"}
    targets = policy.act_path(data.windows(np.arange(100, 110)), np.zeros(10, np.int64))
    assert targets[0] == pytest.approx(hand, rel=1e-12) and set(np.round(targets, 12)) <= {0.0, round(hand, 12)}
    result = backtest(policy, data, "validation", COSTS, **policy.env_settings)
    assert result.position[1] == pytest.approx(hand, rel=0.02)  # the exposure after the first fill


def test_kelly_needs_probabilities_and_a_calibrator(planted) -> None:
    _, rows, data = planted

    class NoProbabilities:
        window, feature_names, threshold = WINDOW, list(data.feature_names), 0.5
        label = {"profit": 0.03, "stop": 0.02, "horizon": 4}

    with pytest.raises(ValueError, match="sizing='kelly' needs probabilities: model NoProbabilities has no predict_proba"):
        SupervisedThresholdPolicy(NoProbabilities(), sizing="kelly", calibrator=lambda p: p)
    with pytest.raises(ValueError, match="sizing='kelly' needs probabilities: NoProbabilities"):
        choose_thresholds_for_money(NoProbabilities(), data, sizing="kelly")
    with pytest.raises(ValueError, match="needs a calibrator"):
        SupervisedThresholdPolicy(RowModel([data], rows), sizing="kelly")


def test_vol_target_size_is_causal_and_reads_the_raw_returns(planted) -> None:
    bars, rows, data = planted
    cut = 650  # inside validation
    short = market(bars.iloc[:cut])
    target, window = 0.001, 4
    sizes = {}
    for d in (data, short):
        model = RowModel([d], rows, preprocessing=Preprocessing.of(d))
        policy = SupervisedThresholdPolicy(model, sizing="vol_target", target_volatility=target,
                                           volatility_window=window, max_fraction=0.9)
        check = np.arange(600, cut)
        sizes[len(d.features)] = policy.sizes(np.full(len(check), 0.5), d.windows(check))
    assert np.array_equal(sizes[N_BARS], sizes[cut])  # bar t's size does not see bars after t
    log_returns = np.diff(np.log(bars["close"].to_numpy()))
    sigma = np.array([log_returns[t - window : t].std(ddof=1) for t in range(600, cut)])
    assert sizes[cut] == pytest.approx(np.minimum(0.9, target / sigma), rel=1e-4)


@pytest.mark.parametrize("sizing", ["kelly", "vol_target"])
def test_sized_fast_path_equals_the_event_path(planted, sizing: str, monkeypatch) -> None:
    import importlib

    module = importlib.import_module("envs.backtest")  # the package exports a function of the same name
    events = []
    event_path = module._backtest_events
    monkeypatch.setattr(module, "_backtest_events", lambda policy, *a: events.append(policy) or event_path(policy, *a))
    _, rows, data = planted
    model = RowModel([data], rows, preprocessing=Preprocessing.of(data))
    calibrator = fit_calibrator(*validation_probabilities(model, data))
    policy = SupervisedThresholdPolicy(model, 0.6, 0.5, 3, min_holding=2, sizing=sizing, calibrator=calibrator,
                                       target_volatility=0.002, max_fraction=0.8)
    fast = backtest(policy, data, "validation", COSTS, **policy.env_settings)
    event = backtest(EventOnly(policy), data, "validation", COSTS, **policy.env_settings)
    assert [type(p).__name__ for p in events] == ["EventOnly"]  # the sized policy ran on its fast path
    assert np.array_equal(fast.equity, event.equity)
    assert 0.0 < fast.position.max() <= 0.81  # sized below all-in, held (drifting with the price) to the exit


def test_a_choice_round_trips_through_json(planted) -> None:
    _, rows, data = planted
    model = RowModel([data], rows)
    choice = choose_thresholds_for_money(model, data, COSTS, entries=(0.6, 0.9), hysteresis=(0.1,), min_holds=(0, 1),
                                         max_holding=3, sizing="kelly", sizing_options={"kelly_fraction": 0.25})
    again = ThresholdChoice.from_dict(json.loads(json.dumps(choice.to_dict(), allow_nan=False)))
    assert again.to_dict() == choice.to_dict() and again.calibrator is not None
    windows = data.windows(np.arange(560, 640))
    ids = np.zeros(len(windows), np.int64)
    assert np.array_equal(again.policy(model).act_path(windows, ids), choice.policy(model).act_path(windows, ids))


def test_bad_grids_are_named(planted) -> None:
    _, rows, data = planted
    model = RowModel([data], rows)
    with pytest.raises(ThresholdChoiceError, match="objective='sharpe' is not known"):
        choose_thresholds_for_money(model, data, objective="sharpe")
    with pytest.raises(ThresholdChoiceError, match=r"min_holds=\[0, 2\] exceed max_holding=1 bars \(the label horizon\)"):
        choose_thresholds_for_money(model, data, min_holds=(0, 2))
    with pytest.raises(ThresholdChoiceError, match="entries: 1.5 is not a probability"):
        choose_thresholds_for_money(model, data, entries=(1.5,), min_holds=(0,))
    with pytest.raises(ThresholdChoiceError, match="field 'objective'"):
        ThresholdChoice.from_dict({**ThresholdChoice(True, None, None, None, 4, "t_stat", 0.0).to_dict(),
                                   "objective": "f1"})


def test_vol_target_gives_no_position_when_a_return_hit_the_scaler_clip(planted) -> None:
    _, rows, data = planted
    preprocessing = Preprocessing.of(data)
    policy = SupervisedThresholdPolicy(RowModel([data], rows, preprocessing=preprocessing), sizing="vol_target",
                                       target_volatility=0.001)
    windows = data.windows(np.arange(600, 603)).copy()
    windows[0, -1, list(data.feature_names).index("logret_1")] = preprocessing.scaler.clip  # an unknown return
    sizes = policy.sizes(np.full(3, 0.5), windows)
    assert sizes[0] == 0.0 and (sizes[1:] > 0).all()


def test_calibrators_reproduce_scikit_learn() -> None:
    from scipy.special import logit
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, 300)
    y = (rng.uniform(size=300) < p ** 2).astype(float)
    grid = np.linspace(0.0, 1.0, 41)
    isotonic = fit_calibrator(p, y, "isotonic")
    assert isotonic(grid) == pytest.approx(IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
                                           .predict(grid), abs=1e-12)
    platt = fit_calibrator(p, y, "platt")
    fitted = LogisticRegression(C=np.inf).fit(logit(p)[:, None], y)
    inner = grid[1:-1]
    assert platt(inner) == pytest.approx(fitted.predict_proba(logit(inner)[:, None])[:, 1], rel=1e-9)
