"""TradingEnv-v0: the Gymnasium and SB3 contracts, registration, determinism, fills and bad input."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs import STATE_FIELDS, TradingEnv
from features import DatasetConfig, build_market_data, synthetic_bars

ROOT = Path(__file__).resolve().parents[1]
INFO_KEYS = {"timestamp", "fill_price", "equity", "position", "units", "cost", "trade_count", "costs_paid",
             "drawdown", "symbol", "row"}


@pytest.fixture(scope="module")
def market():
    """Two synthetic symbols, 400 business days each, window 8 (train rows 56..272)."""
    bars = {"SYN": synthetic_bars(400, seed=0), "ALT": synthetic_bars(400, seed=1, start_price=50.0)}
    return build_market_data(bars, DatasetConfig(window=8))


def rollout(env: gym.Env, seed: int, n_steps: int | None = None, action_seed: int = 0):
    """Observations, rewards and infos of one episode under seeded random actions."""
    env.action_space.seed(action_seed)
    obs, info = env.reset(seed=seed)
    observations, rewards, infos = [obs], [], [info]
    done, steps = False, 0
    while not done and (n_steps is None or steps < n_steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
        done = terminated or truncated
        steps += 1
    return np.array(observations), np.array(rewards), infos


# ----- API contracts ----------------------------------------------------------------------------
@pytest.mark.parametrize("allow_short", [False, True])
@pytest.mark.parametrize("reward", ["log_return", "drawdown_penalty", "differential_sharpe"])
@pytest.mark.parametrize("action_mode", ["discrete", "continuous"])
def test_check_env_passes(market, action_mode: str, reward: str, allow_short: bool) -> None:
    env = TradingEnv(market, action_mode=action_mode, reward=reward, allow_short=allow_short)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(infinity|render).*")
        gymnasium_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)
    expected = {("discrete", False): gym.spaces.Discrete(2), ("discrete", True): gym.spaces.Discrete(3)}
    if action_mode == "discrete":
        assert env.action_space == expected[(action_mode, allow_short)]
    else:
        assert env.action_space == gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    assert env.observation_space.shape == (8 * market.n_features + len(STATE_FIELDS) + 1,)


def test_make_with_module_prefix_in_a_fresh_process() -> None:
    code = (
        "import sys, gymnasium as gym\n"
        "assert 'envs' not in sys.modules\n"
        "env = gym.make('envs:TradingEnv-v0')\n"
        "obs, info = env.reset(seed=0)\n"
        "obs, reward, terminated, truncated, info = env.step(1)\n"
        "assert env.observation_space.contains(obs) and info['trade_count'] == 1\n"
        "print('ok', obs.shape[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok ")


def test_make_after_import(market) -> None:
    assert envs.ENV_ID == "TradingEnv-v0"
    env = gym.make("TradingEnv-v0")
    obs, _ = env.reset(seed=1)
    assert isinstance(env.unwrapped, TradingEnv)
    assert env.observation_space.contains(obs)
    # researchers bring their own data: a MarketData or a bars DataFrame
    env = gym.make("TradingEnv-v0", data=market, symbol="ALT", split="validation")
    assert env.reset(seed=0)[1]["symbol"] == "ALT"
    env = gym.make("TradingEnv-v0", data=synthetic_bars(300, seed=4), window=8)
    obs, info = env.reset(seed=0)
    assert info["symbol"] == "ASSET" and obs.shape == (8 * market.n_features + 5,)


# ----- determinism and fresh observations ---------------------------------------------------------
def test_reset_seed_reproduces_the_whole_episode() -> None:
    env = gym.make("TradingEnv-v0", episode_length=300)
    first = rollout(env, seed=7, action_seed=3)
    rollout(env, seed=99, action_seed=4)  # something else in between
    again = rollout(env, seed=7, action_seed=3)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert [(i["symbol"], i["row"], i["equity"]) for i in first[2]] == [
        (i["symbol"], i["row"], i["equity"]) for i in again[2]]
    assert len(first[1]) == 300

    starts = {(info["symbol"], info["row"]) for info in (env.reset(seed=s)[1] for s in range(8))}
    assert len(starts) >= 6, f"different seeds should draw different episodes; got {starts}"
    symbols = {symbol for symbol, _ in starts}
    assert len(symbols) >= 2, "the symbol is drawn per episode too"


def test_unseeded_resets_continue_the_seeded_stream(market) -> None:
    env = TradingEnv(market)
    env.reset(seed=3)
    following = [env.reset()[1]["row"] for _ in range(5)]
    env.reset(seed=3)
    assert [env.reset()[1]["row"] for _ in range(5)] == following


def test_observations_are_fresh_arrays(market) -> None:
    env = TradingEnv(market)
    features_before = market.features.copy()
    obs, _ = env.reset(seed=0)
    pristine = obs.copy()
    obs[:] = 1e6
    again, _ = env.reset(seed=0)
    np.testing.assert_array_equal(again, pristine)
    step_obs = env.step(1)[0]
    step_obs[:] = -1e6
    next_obs = env.step(1)[0]
    assert not np.shares_memory(step_obs, next_obs)
    assert np.abs(next_obs).max() < 1e5
    np.testing.assert_array_equal(market.features, features_before)
    assert env.core.sim.units[0] > 0  # the simulator's books were not touched either


# ----- observation layout and info ---------------------------------------------------------------
def test_position_state_after_buying(market) -> None:
    env = TradingEnv(market, symbol="SYN", random_start=False)
    obs, info = env.reset(seed=0)
    layout, data = env.layout, market
    r = info["row"]
    np.testing.assert_array_equal(layout.state(obs), np.array([0.0, 0.0, 0.0, 1.0], np.float32))
    np.testing.assert_array_equal(layout.features(obs), data.features[r - 7: r + 1])
    assert layout.asset_id(obs) == 0.0

    obs, reward, terminated, truncated, info = env.step(1)
    assert info["row"] == r + 1 and info["trade_count"] == 1
    open_, close = data.open[r + 1], data.close[r + 1]
    fill = open_ * 1.0005
    units = 100_000.0 / (fill * 1.001)  # sized so units x fill price + commission fit in equity
    commission = 0.001 * units * fill
    cash = 100_000.0 - units * fill - commission
    equity = cash + units * close
    assert info["fill_price"] == pytest.approx(fill, rel=1e-14)
    assert info["units"] == pytest.approx(units, rel=1e-14)
    assert info["equity"] == pytest.approx(equity, rel=1e-12)
    assert info["cost"] == pytest.approx(units * open_ * 5e-4 + commission, rel=1e-12)
    assert reward == pytest.approx(np.log(equity / 100_000.0), rel=1e-12)
    expected_state = [units * close / equity, close / fill - 1.0, 0.0, cash / equity]
    np.testing.assert_allclose(layout.state(obs), np.array(expected_state, np.float32), rtol=1e-6, atol=1e-12)
    assert info["position"] == pytest.approx(units * close / equity, rel=1e-12)
    np.testing.assert_array_equal(layout.features(obs), data.features[r - 6: r + 2])

    obs, *_ = env.step(1)  # hold: no order, one bar older
    state = layout.state(obs)
    assert state[2] == pytest.approx(1 / 100) and state[1] == pytest.approx(data.close[r + 2] / fill - 1, rel=1e-5)
    obs, *_, info = env.step(0)
    np.testing.assert_allclose(layout.state(obs), [0.0, 0.0, 0.0, 1.0])
    assert info["trade_count"] == 2


def test_info_keys(market) -> None:
    env = TradingEnv(market)
    _, info = env.reset(seed=0)
    assert INFO_KEYS <= set(info)
    assert info["fill_price"] is None and info["cost"] == 0.0 and info["trade_count"] == 0
    assert info["equity"] == 100_000.0 and info["position"] == 0.0
    assert isinstance(info["timestamp"], pd.Timestamp) and str(info["timestamp"].tz) == "UTC"
    *_, info = env.step(1)
    assert INFO_KEYS <= set(info)
    assert isinstance(info["fill_price"], float) and info["cost"] > 0
    *_, info = env.step(1)
    assert info["fill_price"] is None and info["cost"] == 0.0 and info["trade_count"] == 1


# ----- fill timing --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gapped():
    """Business-day bars with the test split's Friday-to-Monday gaps widened by a dropped Monday."""
    bars = synthetic_bars(420, seed=5, overnight_fraction=0.5)
    mondays = bars.index[(bars.index.day_of_week == 0)]
    holiday = mondays[len(mondays) - 5]
    return build_market_data({"GAP": bars.drop(index=holiday)}, DatasetConfig(window=8)), holiday


@pytest.mark.parametrize("fill_at", ["next_open", "close"])
def test_fill_after_a_gap_uses_the_next_traded_bar(gapped, fill_at: str) -> None:
    data, holiday = gapped
    stamps = pd.to_datetime(data.timestamps, utc=True)
    friday = int(np.searchsorted(stamps, holiday)) - 1
    tuesday = friday + 1
    assert stamps[friday].day_of_week == 4 and stamps[tuesday] - stamps[friday] == pd.Timedelta(days=4)
    env = TradingEnv(data, split="test", fill_at=fill_at)
    obs, info = env.reset(seed=0, options={"start_row": friday})
    assert info["row"] == friday
    obs, reward, _, _, info = env.step(1)
    assert info["timestamp"] == stamps[tuesday]  # UTC-aware: compares with the bars' index
    reference = data.open[tuesday] if fill_at == "next_open" else data.close[friday]
    assert info["fill_price"] == pytest.approx(reference * 1.0005, rel=1e-15)
    assert data.open[tuesday] != data.close[friday]


def test_order_decided_at_t_fills_at_the_next_open(market) -> None:
    env = TradingEnv(market, symbol="ALT", random_start=False, commission=0.0)
    _, info = env.reset(seed=0)
    offset = int(market.offsets[1])
    for action in (1, 1, 0, 1, 0, 0, 1):
        row = info["row"]
        _, _, _, _, info = env.step(action)
        assert info["row"] == row + 1
        if info["fill_price"] is not None:
            side = 1 if action == 1 else -1
            assert info["fill_price"] == pytest.approx(market.open[row + 1] * (1 + side * 5e-4), rel=1e-15)
    assert info["trade_count"] == 5 and info["row"] >= offset


# ----- episode end --------------------------------------------------------------------------------
def test_episode_length_truncates(market) -> None:
    env = TradingEnv(market, episode_length=5)
    for seed in range(10):
        env.reset(seed=seed)
        flags = [env.step(seed % 2)[2:4] for _ in range(5)]
        assert flags == [(False, False)] * 4 + [(False, True)]


def test_split_end_truncates(market) -> None:
    env = TradingEnv(market, symbol="SYN", random_start=False)
    _, info = env.reset(seed=0)
    start = info["row"]
    lo, hi = market.split_range("train", "SYN")
    assert start == lo  # the first row whose window fits
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, info = env.step(0)
        done, steps = terminated or truncated, steps + 1
    assert truncated and not terminated
    assert steps == hi - 1 - start
    assert info["row"] == hi - 1


def test_min_equity_terminates(market) -> None:
    env = TradingEnv(market, min_equity=0.99, commission=0.005)
    env.reset(seed=0)
    equity = []
    for k in range(200):
        _, _, terminated, truncated, info = env.step(k % 2)
        equity.append(info["equity"])
        if terminated:
            break
    assert terminated and not truncated
    assert equity[-1] <= 99_000.0 < min(equity[:-1])


# ----- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("action", [2, -1, 1.5, "long", None])
def test_bad_discrete_action(market, action) -> None:
    env = TradingEnv(market)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action=.*allowed values: 0 \\(flat\\), 1 \\(long\\)"):
        env.step(action)


@pytest.mark.parametrize("action", [np.array([1.5], np.float32), np.array([-1.01]), np.array([np.nan]),
                                    np.array([0.1, 0.2]), float("inf")])
def test_bad_continuous_action(market, action) -> None:
    env = TradingEnv(market, action_mode="continuous", allow_short=True)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action=.*continuous.*\\[-1, 1\\]"):
        env.step(action)


@pytest.mark.parametrize(
    ("settings", "error", "pattern"),
    [
        ({"window": 300}, ValueError, "window=300 needs at least 301 bars in split 'train' of SYN; it has 223"),
        ({"commission": -0.001}, ValueError, "commission=-0.001"),
        ({"slippage": -5.0}, ValueError, "slippage=-5.0"),
        ({"reward": "sharpe"}, ValueError, "reward='sharpe' is not known"),
        ({"comission": 0.001}, TypeError, "unknown argument.*comission"),
        ({"split": "holdout"}, ValueError, "split='holdout' is not known"),
        ({"action_mode": "multi"}, ValueError, "action_mode='multi'"),
        ({"fill_at": "noon"}, ValueError, "fill_at='noon'"),
        ({"symbol": "NOPE"}, ValueError, "symbol 'NOPE'"),
        ({"episode_length": 0}, ValueError, "episode_length=0"),
        ({"min_equity": 1.0}, ValueError, "min_equity=1.0"),
    ],
)
def test_bad_settings_raise_naming_the_parameter(market, settings, error, pattern) -> None:
    data = market if "window" not in settings else build_market_data(
        {"SYN": synthetic_bars(400, seed=0)}, DatasetConfig(window=8))
    with pytest.raises(error, match=pattern):
        TradingEnv(data, **settings)


def test_bad_settings_through_gym_make() -> None:
    with pytest.raises(TypeError, match="comission"):
        gym.make("TradingEnv-v0", comission=0.001)
    with pytest.raises(TypeError, match="data must be"):
        gym.make("TradingEnv-v0", data=[1, 2, 3])


def test_bad_reset_options(market) -> None:
    env = TradingEnv(market, split="test")
    with pytest.raises(ValueError, match="symbol"):
        env.reset(seed=0, options={"symbol": "NOPE"})
    with pytest.raises(ValueError, match="start_row"):
        env.reset(seed=0, options={"symbol": "SYN", "start_row": 0})
