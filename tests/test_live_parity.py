"""Live equals backtest: ``--broker sim`` replays history through the live loop and reproduces the backtest.

The loop builds its observations from the latest bars with the policy's own preprocessing (never from the
dataset's feature matrix), sizes orders by the simulator's rule and sends them to the simulator broker;
``envs.backtest.backtest`` is called as it is, never re-implemented, so whatever the simulator does (its
sizing included) the two must agree: same fills (bar, units, price, commission), same equity, exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from agents.config import AgentConfig
from agents.training import train_agent
from envs.backtest import backtest
from features import DatasetConfig, LabelConfig, SplitConfig, build_market_data, synthetic_bars
from features.preprocessing import Preprocessing
from live import Journal, load_live_policy, settled_history_bars
from live.policy import position_state
from live.sizing import plan_order
from sim.engine import Costs, Simulator
from supervised.bundle import load_model, save_bundle
from supervised.models import ModelConfig
from supervised.trainer import TrainConfig, train_classifier

from experiments import paper_trade

pytestmark = pytest.mark.timeout(120)

LOOSE_RISK = {"risk": {"max_daily_loss": 0.99, "max_orders_per_day": 1000}, "alerts": {"daily_loss": 0.99}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    bars = {"SYN": synthetic_bars(800, phi=-0.3, seed=3), "SYN2": synthetic_bars(800, phi=-0.3, seed=4)}
    data = build_market_data(bars, DatasetConfig(window=8, labels=LabelConfig(profit=0.02, stop=0.02, horizon=4),
                                                 split=SplitConfig(train=0.76, validation=0.12, test=0.12)))
    path = tmp_path_factory.mktemp("dataset") / "dataset"
    data.save(path)
    return data, path


@pytest.fixture(scope="module")
def agent_path(tmp_path_factory, data):
    config = AgentConfig.from_dict({"total_timesteps": 512, "n_envs": 4, "eval_freq": 512, "min_tstat": -1e9,
                                    "min_improvement": -1e9, "ppo": {"n_steps": 64, "batch_size": 128},
                                    "env": {"episode_length": 64, "action_mode": "continuous"}})
    run = tmp_path_factory.mktemp("ppo") / "run"
    train_agent(config, data[0], run, progress=False)
    return run / "best"


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory, data):
    data = data[0]
    torch.manual_seed(0)
    result = train_classifier(data, ModelConfig(kind="mlp", hidden_size=16, dropout=0.0),
                              TrainConfig(epochs=2, batch_size=128, num_threads=1), progress=False)
    path = tmp_path_factory.mktemp("sup") / "model"
    save_bundle(path, result.classifier, result.model_config, preprocessing=Preprocessing.of(data), label=data.label,
                threshold=0.5, dataset_hashes=data.hashes)
    # enter at the median test-split probability, so the policy both enters and exits
    model = load_model(path)
    lo, hi = data.split_range("test", "SYN")
    windows = np.stack([data.features[r - data.window + 1: r + 1] for r in range(lo, hi)])
    median = float(np.median(model.predict_proba(windows, np.full(len(windows), data.asset_ids[0]))))
    save_bundle(path, result.classifier, result.model_config, preprocessing=Preprocessing.of(data), label=data.label,
                threshold=median, dataset_hashes=data.hashes)
    return path


def replay(tmp_path, policy_path, dataset_path, symbols, config=LOOSE_RISK, name="replay"):
    config_path = tmp_path / "paper.yaml"
    config_path.write_text(yaml.safe_dump(config))
    paper_trade.main(["--policy", str(policy_path), "--broker", "sim", "--dataset", str(dataset_path), "--no-progress",
                      "--symbols", *symbols, "--config", str(config_path), "--runs-dir", str(tmp_path / "runs"),
                      "--run-name", name])
    return Journal(tmp_path / "runs" / name / "journal.sqlite", durable=False)


def assert_same_as_backtest(journal, reference, symbol):
    fills = journal.fills(symbol)
    print(f"{symbol}: {len(fills)} fills, {len(reference.equity)} equity marks, final equity "
          f"{reference.equity[-1]!r} (backtest) vs {journal.equity(symbol)[-1]['equity']!r} (replay)")
    marks = journal.equity(symbol)
    stamps = pd.to_datetime(reference.row_timestamps[reference.fills["row"].astype(np.int64)], utc=True)
    assert len(fills) == len(reference.fills["row"]) > 5  # the policy does trade
    assert [pd.Timestamp(f["bar_time"]) for f in fills] == list(stamps)
    np.testing.assert_array_equal([f["units"] for f in fills], reference.fills["units"])
    np.testing.assert_array_equal([f["price"] for f in fills], reference.fills["fill_price"])
    np.testing.assert_array_equal([f["commission"] for f in fills], reference.fills["commission"])
    assert [pd.Timestamp(m["bar_time"]) for m in marks] == list(pd.to_datetime(reference.timestamps, utc=True))
    np.testing.assert_array_equal([m["equity"] for m in marks], reference.equity)  # exactly, not approximately
    np.testing.assert_array_equal([m["position"] for m in marks], reference.position)


def test_sim_replay_of_an_rl_agent_with_continuous_targets_equals_its_backtest(tmp_path, data, agent_path):
    journal = replay(tmp_path, agent_path, data[1], ["SYN"])
    policy = load_live_policy(agent_path)
    reference = backtest(policy.policy, data[0], "test", Costs(), symbol="SYN", **policy.env_settings)
    assert_same_as_backtest(journal, reference, "SYN")
    assert reference.metrics["n_orders"] == len(journal.orders())


def test_sim_replay_of_a_supervised_policy_on_two_symbols_equals_each_backtest(tmp_path, data, bundle_path):
    journal = replay(tmp_path, bundle_path, data[1], ["SYN", "SYN2"])
    for symbol in ("SYN", "SYN2"):
        reference = backtest(load_live_policy(bundle_path).policy, data[0], "test", Costs(), symbol=symbol)
        assert_same_as_backtest(journal, reference, symbol)
    assert not [a for a in journal.alerts() if a["kind"] in ("reconciliation", "stale_data")]


def test_live_features_equal_the_dataset_features_once_history_covers_the_warmup():
    """Every bar of a long stretch: the window computed from only the latest K bars equals the dataset's
    (built on the whole history) to 1e-9, K being what the loop fetches; with only the warm-up it does not."""
    from envs.core import default_market_data

    data = default_market_data()
    pre = Preprocessing.of(data)
    history = settled_history_bars(pre)
    assert pre.min_bars < history < 1000
    i = data.symbol_index("MSFT")
    offset = int(data.offsets[i])
    prices = data.prices[offset: int(data.offsets[i + 1])]
    frame = pd.DataFrame({"open": prices[:, 0], "high": prices[:, 1], "low": prices[:, 2], "close": prices[:, 3],
                          "volume": prices[:, 4], "vwap": data.vwap[offset: int(data.offsets[i + 1])]},
                         index=pd.DatetimeIndex(pd.to_datetime(data.timestamps[offset: int(data.offsets[i + 1])], utc=True)))
    worst, worst_short = 0.0, 0.0
    rows = range(history + 5, len(frame), 31)  # every 31st bar over the rest of the history (~8 years)
    for row in rows:
        window, asset = pre.latest_window(frame.iloc[row - history + 1: row + 1], "MSFT")
        expected = data.features[offset + row - pre.window + 1: offset + row + 1]
        worst = max(worst, float(np.max(np.abs(window.astype(np.float64) - expected))))
        assert asset == data.asset_ids[i]
    for row in list(rows)[:5]:
        short, _ = pre.latest_window(frame.iloc[row - pre.min_bars + 1: row + 1], "MSFT")
        worst_short = max(worst_short, float(np.max(np.abs(short - data.features[offset + row - pre.window + 1: offset + row + 1]))))
    assert len(rows) > 45
    assert worst <= 1e-9, worst
    assert worst_short > 1e-3  # why the loop fetches more than the warm-up: the EMAs remember their start


def test_position_state_is_the_simulators():
    close = np.array([10.0, 10.5, 11.0, 10.8, 11.3])
    sim = Simulator(close, close * 1.01, close * 0.99, close, np.full(5, 1e6), Costs(), n_accounts=1)
    sim.reset(0)
    sim.step(np.array([0.7]))
    sim.step(np.array([0.7]))
    expected = sim.position_state(np.zeros((1, 4)))[0].copy()
    expected[2] /= 100.0
    ours = position_state(float(sim.cash[0]), float(sim.units[0]), float(sim.close[sim.row[0]]),
                          float(sim.entry_value[0]), int(sim.row[0] - sim.entry_row[0]))
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize(("target", "last", "cash", "units"),
                         [(1.0, 0.0, 100_000.0, 0.0), (0.0, 1.0, 3.0, 950.0), (0.5, 1.0, 10.0, 900.0),
                          (1.0, 0.5, 50_000.0, 480.0), (0.5, 0.5, 50_000.0, 470.0)])
def test_orders_are_sized_by_the_simulators_rule(target, last, cash, units):
    bars = pd.DataFrame({"open": [100.0, 101.0], "high": [102.0, 103.0], "low": [99.0, 100.0], "close": [101.0, 102.0],
                         "volume": [1e6, 1e6]}, index=pd.date_range("2024-01-02", periods=2, tz="UTC"))
    costs = Costs(commission=0.001, slippage=5.0, fixed_fee=1.0)
    plan = plan_order(bars, 103.0, target=target, last_target=last, cash=cash, units=units, costs=costs,
                      allow_short=False)
    prices = np.array([100.0, 101.0, 103.0])
    sim = Simulator(prices, prices + 2, prices - 1, np.array([101.0, 102.0, 104.0]), np.full(3, 1e6), costs,
                    record_trades=True)
    sim.reset(1)
    sim.cash[0], sim.units[0], sim.target[0] = cash, units, last
    sim.step(np.array([target]))
    fills = sim.fill_log()
    assert plan.units == (fills["units"][0] if len(fills["units"]) else 0.0)
    assert plan.last_target == sim.target[0]


def test_a_restart_restores_a_stateful_policy_by_replaying_its_observations(tmp_path, data, bundle_path):
    """The threshold policy counts the bars it has held; a restarted loop replays the journalled observations
    into a fresh policy and gets the same count back (so it exits when the backtest would)."""
    from live import LiveLoop, PaperConfig, SimBroker

    policy = load_live_policy(bundle_path)
    broker = SimBroker(data[0], ["SYN"], "test", Costs(), min_bars=policy.preprocessing.min_bars)
    config = PaperConfig.from_dict(LOOSE_RISK)
    first = LiveLoop(policy, broker, Journal(tmp_path / "journal.sqlite", durable=False), ["SYN"], config,
                     run_name="restart", run_dir=tmp_path, write_monitor=False)
    first.start()
    for _ in range(200):
        first.cycle()
        if first.actors["SYN"].bars_held[0] >= 2:
            break
        broker.sleep(1.0)
    held = int(first.actors["SYN"].bars_held[0])
    assert held >= 2
    again = LiveLoop(load_live_policy(bundle_path), broker, Journal(tmp_path / "journal.sqlite", durable=False),
                     ["SYN"], config, run_name="restart", run_dir=tmp_path, write_monitor=False)
    again.start()
    assert int(again.actors["SYN"].bars_held[0]) == held


def test_remembered_features_serve_only_bars_equal_to_the_remembered_ones_nan_for_nan():
    """``remember_history`` then ``observation``'s lookup: bars that are a stretch of the remembered ones (a NaN vwap
    where the remembered bars have a NaN counts as equal) read the remembered window; a bar changed anywhere in the
    stretch, a NaN where a number was, or a number where a NaN was, does not (the window is then computed from the
    bars instead)."""
    from envs.core import default_market_data
    from live.policy import LivePolicy

    data = default_market_data()
    pre = Preprocessing.of(data)
    i = data.symbol_index("MSFT")
    rows = slice(int(data.offsets[i]), int(data.offsets[i + 1]))
    prices = data.prices[rows]
    vwap = prices[:, 3] * 1.001
    vwap[::7] = np.nan  # some unknown vwaps, as a feed without them has
    frame = pd.DataFrame({"open": prices[:, 0], "high": prices[:, 1], "low": prices[:, 2], "close": prices[:, 3],
                          "volume": prices[:, 4], "vwap": vwap},
                         index=pd.DatetimeIndex(pd.to_datetime(data.timestamps[rows], utc=True), name="timestamp"))
    live = LivePolicy.__new__(LivePolicy)  # only the feature memory (no saved policy needed)
    live.preprocessing, live._features = pre, {}
    live.remember_history(frame, "MSFT")
    n = settled_history_bars(pre)
    stretch = frame.iloc[900 - n: 900]
    window = live._known_window(stretch.copy(), "MSFT")
    assert window is not None
    np.testing.assert_array_equal(window, pre.transform_bars(frame, "MSFT")[900 - pre.window: 900])
    missing = int(np.flatnonzero(np.isnan(stretch["vwap"].to_numpy()))[3])
    known = missing + 1
    for row, column, value in ((5, "close", 1.0), (n - 1, "volume", 1.0), (missing, "vwap", 1.0),
                               (known, "vwap", np.nan)):
        changed = stretch.copy()
        old = changed[column].iloc[row]
        changed.iloc[row, changed.columns.get_loc(column)] = np.nan if np.isnan(value) else np.nan_to_num(old) + value
        assert live._known_window(changed, "MSFT") is None, (row, column)
    whole = frame.assign(vwap=prices[:, 3] * 1.001)  # remembered without any NaN: a NaN is a difference
    live.remember_history(whole, "MSFT")
    assert live._known_window(whole.iloc[900 - n: 900].copy(), "MSFT") is not None
    holed = whole.iloc[900 - n: 900].copy()
    holed.iloc[10, holed.columns.get_loc("vwap")] = np.nan
    assert live._known_window(holed, "MSFT") is None
