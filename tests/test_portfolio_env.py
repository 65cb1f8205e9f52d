"""Contract of ``PortfolioEnv-v0`` / :class:`envs.PortfolioVecEnv` (envs/portfolio_env.py, envs/portfolio_core.py,
envs/portfolio_kernel.py over sim/portfolio.py and features/panel.py).

Every expected number here is computed again from the bars (or the dataset's features) with numpy, not read
from the env's own arrays. Small universes (3 symbols x 400 daily bars, window 8) keep the file fast; the
embedded 20-stock default is built once (module fixture).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

import envs  # noqa: F401  (registers PortfolioEnv-v0)
from envs import PortfolioEnv, PortfolioLayout, PortfolioVecEnv
from features import DatasetConfig, build_market_data, synthetic_bars
from features.market_data import MarketData
from features.splits import SplitConfig

SYMBOLS = ["AAA", "BBB", "CCC"]
WINDOW = 8
N_BARS = 400
EQUAL = np.array([1.0, 1.0, 1.0, 0.0])  # equal weights over the 3 assets, no cash
NO_COSTS = {"commission": 0.0, "slippage": 0.0}


# ----- tiny universes -------------------------------------------------------------------------------------
def make_bars(n_bars: int = N_BARS) -> dict[str, pd.DataFrame]:
    """Three daily symbols with a UTC DatetimeIndex and open/high/low/close/volume columns.

    :param n_bars: bars per symbol.
    """
    return {s: synthetic_bars(n_bars, seed=7 + i, start_price=40.0 + 25.0 * i) for i, s in enumerate(SYMBOLS)}


HOLIDAY = slice(150, 155)  # BBB has no bar at these 5 rows of the timeline
LISTED = 120  # CCC's first bar is at this row of the timeline


def make_gap_bars() -> dict[str, pd.DataFrame]:
    """AAA complete; BBB with a 5-row holiday; CCC listed late (its first bar at row ``LISTED``)."""
    bars = make_bars()
    keep = np.ones(N_BARS, dtype=bool)
    keep[HOLIDAY] = False
    bars["BBB"] = bars["BBB"][keep]
    bars["CCC"] = bars["CCC"].iloc[LISTED:]
    return bars


@pytest.fixture(scope="module")
def bars() -> dict[str, pd.DataFrame]:
    return make_bars()


@pytest.fixture(scope="module")
def data(bars) -> MarketData:
    return build_market_data(bars, DatasetConfig(window=WINDOW))


@pytest.fixture(scope="module")
def gap_bars() -> dict[str, pd.DataFrame]:
    return make_gap_bars()


@pytest.fixture(scope="module")
def gap_data(gap_bars) -> MarketData:
    return build_market_data(gap_bars, DatasetConfig(window=WINDOW))


@pytest.fixture(scope="module")
def default_env():
    env = gym.make("PortfolioEnv-v0")
    yield env
    env.close()


def union_index(frames: dict[str, pd.DataFrame]) -> pd.DatetimeIndex:
    index = frames[SYMBOLS[0]].index
    for frame in frames.values():
        index = index.union(frame.index)
    return index


def closes_on_timeline(frames: dict[str, pd.DataFrame]) -> np.ndarray:
    """(T, N) closes on the union timeline: the latest known close, 0 before a symbol's first bar."""
    index = union_index(frames)
    return np.column_stack([frames[s]["close"].reindex(index).ffill().fillna(0.0).to_numpy() for s in SYMBOLS])


def row_of(frames: dict[str, pd.DataFrame], stamp: pd.Timestamp) -> int:
    return int(union_index(frames).get_loc(stamp))


def run(env: PortfolioEnv, actions, start_row: int | None = None, steps: int | None = None):
    """Reset at ``start_row`` and step ``actions`` (one per step, or one repeated ``steps`` times).

    :return: observations (reset's first), rewards, infos (reset's first).
    """
    obs, info = env.reset(seed=0, options=None if start_row is None else {"start_row": start_row})
    observations, rewards, infos = [obs], [], [info]
    sequence = [actions] * steps if steps is not None else actions
    for action in sequence:
        obs, reward, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float64))
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            break
    return observations, rewards, infos


# ----- registration, checkers, vectorisation ------------------------------------------------------------
def test_make_without_arguments_runs_on_the_embedded_20_stock_universe(default_env) -> None:
    env = default_env
    assert len(env.unwrapped.symbols) == 20
    assert env.action_space.shape == (21,)
    obs, info = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape == (env.unwrapped.layout.size,)
    assert env.unwrapped.layout.n_assets == 20
    obs, reward, terminated, truncated, info = env.step(np.full(21, 1.0 / 21))
    assert np.isfinite(obs).all() and math.isfinite(reward)
    assert info["weights"].shape == (21,)


def test_make_with_the_module_prefix_needs_no_import(data) -> None:
    env = gym.make("envs:PortfolioEnv-v0", data=data)
    assert isinstance(env.unwrapped, PortfolioEnv)
    env.reset(seed=0)
    env.step(env.action_space.sample())


def test_gymnasium_check_env_passes(data) -> None:
    from gymnasium.utils.env_checker import check_env

    check_env(PortfolioEnv(data), skip_render_check=True)
    check_env(PortfolioEnv(data, action_transform="softmax", covariance_window=5), skip_render_check=True)


def test_stable_baselines3_check_env_passes(data) -> None:
    from stable_baselines3.common.env_checker import check_env

    check_env(PortfolioEnv(data), warn=False)
    check_env(PortfolioEnv(data, allow_short=True, max_leverage=1.5), warn=False)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec_steps_in_sync_and_async_modes(bars, data, mode) -> None:
    vec = gym.make_vec("PortfolioEnv-v0", num_envs=2, vectorization_mode=mode, data=bars, window=WINDOW)
    try:
        obs, infos = vec.reset(seed=0)
        assert obs.shape == (2, PortfolioLayout(3, WINDOW, data.n_features).size)
        for _ in range(3):
            obs, rewards, terminated, truncated, infos = vec.step(np.tile(EQUAL, (2, 1)))
        assert obs.shape == (2, vec.single_observation_space.shape[0])
        assert np.isfinite(rewards).all()
        np.testing.assert_allclose(infos["weights"].sum(axis=1), 1.0, atol=1e-12)
    finally:
        vec.close()


# ----- observation layout ---------------------------------------------------------------------------------
def test_observation_size_is_windows_plus_weights_plus_covariance(data) -> None:
    n, f = 3, data.n_features
    assert PortfolioEnv(data).observation_space.shape == (n * WINDOW * f + n + 1,)
    assert PortfolioEnv(data, covariance_window=10).observation_space.shape == (n * WINDOW * f + n + 1 + n * n,)
    layout = PortfolioEnv(data, covariance_window=10).layout
    obs = np.arange(layout.size, dtype=np.float32)
    assert layout.features(obs).shape == (n, WINDOW, f)
    assert layout.weights(obs).shape == (n + 1,)
    assert layout.covariance_matrix(obs).shape == (n, n)
    np.testing.assert_array_equal(layout.features(obs).reshape(-1), obs[: n * WINDOW * f])
    np.testing.assert_array_equal(layout.weights(obs), obs[n * WINDOW * f: n * WINDOW * f + n + 1])
    np.testing.assert_array_equal(layout.covariance_matrix(obs).reshape(-1), obs[-n * n:])
    batch = np.stack([obs, obs + 1])
    assert layout.features(batch).shape == (2, n, WINDOW, f)
    with pytest.raises(ValueError, match="no covariance"):
        PortfolioEnv(data).layout.covariance_matrix(obs)


def expected_windows(data: MarketData, stamp: pd.Timestamp) -> np.ndarray:
    """(N, window, F): each symbol's scaled features of its `window` latest bars at or before ``stamp``
    (oldest first), zeros where a symbol has fewer bars (not listed yet)."""
    out = np.zeros((len(SYMBOLS), data.window, data.n_features), dtype=np.float32)
    for i, symbol in enumerate(SYMBOLS):
        block = data.symbol_rows(symbol)
        latest = int(np.searchsorted(data.timestamps[block], stamp.value, side="right")) - 1
        for w in range(data.window):
            local = latest - data.window + 1 + w
            if local >= 0:
                out[i, w] = data.features[block.start + local]
    return out


@pytest.mark.parametrize("which", ["plain", "gaps"])
def test_observed_features_are_the_datasets_scaled_windows(which, data, gap_data) -> None:
    market = data if which == "plain" else gap_data
    env = PortfolioEnv(market, random_start=False)
    observations, _, infos = run(env, EQUAL, steps=120)
    for obs, info in zip(observations, infos):
        np.testing.assert_array_equal(env.layout.features(obs), expected_windows(market, info["timestamp"]),
                                      err_msg=f"at {info['timestamp']}")


def test_observed_weights_sum_to_one_and_equal_info_weights(data) -> None:
    env = PortfolioEnv(data, random_start=False)
    rng = np.random.default_rng(3)
    observations, _, infos = run(env, [rng.uniform(0, 1, 4) for _ in range(60)])
    for obs, info in zip(observations, infos):
        weights = env.layout.weights(obs)
        assert weights.dtype == np.float32
        np.testing.assert_allclose(weights.sum(), 1.0, atol=1e-6)
        np.testing.assert_allclose(info["weights"].sum(), 1.0, atol=1e-12)
        np.testing.assert_allclose(weights, info["weights"], rtol=0, atol=1e-7)
    # and the weights are each asset's units x close / equity (recomputed from the bars)
    sim = env.core.sim
    close = closes_on_timeline(make_bars())[infos[-1]["row"]]
    equity = sim.cash[0] + float(sim.units[0] @ close)
    np.testing.assert_allclose(equity, infos[-1]["equity"], rtol=1e-12)
    np.testing.assert_allclose(infos[-1]["weights"][:-1], sim.units[0] * close / equity, rtol=1e-12)


@pytest.mark.parametrize("which", ["plain", "gaps"])
def test_observed_covariance_is_numpys_cov_of_the_windows_log_returns(which, bars, gap_bars, data, gap_data) -> None:
    frames, market = (bars, data) if which == "plain" else (gap_bars, gap_data)
    cov_window = 10
    env = PortfolioEnv(market, random_start=False, covariance_window=cov_window)
    close = closes_on_timeline(frames)
    with np.errstate(divide="ignore", invalid="ignore"):
        logret = np.where((close[1:] > 0) & (close[:-1] > 0), np.log(close[1:] / close[:-1]), 0.0)
    logret = np.vstack([np.zeros((1, 3)), logret])
    observations, _, infos = run(env, EQUAL, steps=120)
    for obs, info in zip(observations, infos):
        r = row_of(frames, info["timestamp"])
        assert r == info["row"]
        expected = np.cov(logret[r - cov_window + 1: r + 1], rowvar=False)
        np.testing.assert_allclose(env.layout.covariance_matrix(obs), expected, rtol=2e-5, atol=1e-9,
                                   err_msg=f"row {r}")


# ----- no look-ahead --------------------------------------------------------------------------------------
def build_pair(frames: dict[str, pd.DataFrame], cut: int, test_start: int) -> tuple[MarketData, MarketData]:
    """The dataset of ``frames`` and of the same frames cut after timeline row ``cut`` (same scaler and asset
    ids; splits by date so that both fit the scaler on the same train rows and their test split starts at
    timeline row ``test_start``)."""
    index = union_index(frames)
    stamp = index[test_start].isoformat()
    config = DatasetConfig(window=WINDOW, split=SplitConfig(validation_start=stamp, test_start=stamp))
    full = build_market_data(frames, config)
    last = index[cut]
    cut_frames = {s: frame[frame.index <= last] for s, frame in frames.items()}
    part = build_market_data(cut_frames, config, scaler=full.scaler, asset_map=full.asset_map)
    return full, part


def rollout_pair(full: MarketData, part: MarketData, split: str, settings: dict, seed: int):
    rng = np.random.default_rng(seed)
    actions = [rng.uniform(0.0, 1.0, 4) for _ in range(N_BARS)]
    a = PortfolioEnv(full, split=split, random_start=False, min_equity=0.0, **settings)
    b = PortfolioEnv(part, split=split, random_start=False, min_equity=0.0, **settings)
    obs_b, _, infos_b = run(b, actions)
    obs_a, _, infos_a = run(a, actions[: len(obs_b) - 1])
    return obs_a, infos_a, obs_b, infos_b


@pytest.mark.parametrize("which", ["plain", "gaps"])
def test_cutting_the_bars_after_row_k_changes_no_observation_up_to_k(which) -> None:
    frames = make_bars() if which == "plain" else make_gap_bars()
    cut = 300
    full, part = build_pair(frames, cut, test_start=140)
    settings = {"covariance_window": 10}
    compared = 0
    for split in ("train", "test"):
        obs_a, infos_a, obs_b, infos_b = rollout_pair(full, part, split, settings, seed=5)
        assert len(obs_a) == len(obs_b) > 20
        for oa, ob, ia, ib in zip(obs_a, obs_b, infos_a, infos_b):
            assert ia["timestamp"] == ib["timestamp"] and ib["row"] <= cut
            np.testing.assert_array_equal(oa, ob, err_msg=f"{split} at row {ib['row']}")
            compared += 1
        if split == "test":
            assert infos_b[-1]["row"] == cut  # the cut build's last observation is at row k
    assert compared > 200


def test_volatility_slippage_of_a_late_listed_asset_does_not_look_ahead() -> None:
    frames = make_gap_bars()
    full, part = build_pair(frames, cut=300, test_start=LISTED - 5)
    settings = {"slippage": {"model": "volatility", "k": 0.5}}
    obs_a, infos_a, obs_b, infos_b = rollout_pair(full, part, "test", settings, seed=5)
    costs_a = [info["costs"] for info in infos_a]
    costs_b = [info["costs"] for info in infos_b]
    np.testing.assert_array_equal(costs_a, costs_b)
    for oa, ob in zip(obs_a, obs_b):
        np.testing.assert_array_equal(oa, ob)


# ----- actions --------------------------------------------------------------------------------------------
def test_normalize_divides_by_the_sum(data) -> None:
    env = PortfolioEnv(data, random_start=False, **NO_COSTS, fill_at="close")
    _, _, infos = run(env, np.array([2.0, 1.0, 0.0, 1.0]), steps=1)
    sim = env.core.sim
    r = infos[0]["row"]
    close = closes_on_timeline(make_bars())
    # with fill_at="close" and no costs the fill is at row r's close: value / equity there is the target
    np.testing.assert_allclose(sim.units[0] * close[r] / 100_000.0, [0.5, 0.25, 0.0], rtol=1e-12)
    np.testing.assert_allclose(sim.cash[0] / 100_000.0, 0.25, rtol=1e-12)


def test_all_zero_action_is_all_cash_no_order_and_constant_equity(data) -> None:
    env = PortfolioEnv(data, random_start=False)
    _, rewards, infos = run(env, np.zeros(4), steps=30)
    assert all(info["orders"] == 0 and info["costs"] == 0.0 and info["turnover"] == 0.0 for info in infos[1:])
    assert all(info["equity"] == 100_000.0 for info in infos)
    assert rewards == [0.0] * 30
    np.testing.assert_array_equal(infos[-1]["weights"], [0, 0, 0, 1])


def test_softmax_turns_logits_into_weights(data) -> None:
    env = PortfolioEnv(data, random_start=False, action_transform="softmax", **NO_COSTS, fill_at="close")
    logits = np.array([1.0, 0.0, -1.0, 0.5])
    _, _, infos = run(env, logits, steps=1)
    expected = np.exp(logits) / np.exp(logits).sum()
    close = closes_on_timeline(make_bars())[infos[0]["row"]]
    np.testing.assert_allclose(env.core.sim.units[0] * close / 100_000.0, expected[:3], rtol=1e-12)


def test_weights_transform_takes_weights_summing_to_one(data) -> None:
    env = PortfolioEnv(data, random_start=False, action_transform="weights", **NO_COSTS, fill_at="close")
    _, _, infos = run(env, np.array([0.2, 0.3, 0.1, 0.4]), steps=1)
    close = closes_on_timeline(make_bars())[infos[0]["row"]]
    np.testing.assert_allclose(env.core.sim.units[0] * close / 100_000.0, [0.2, 0.3, 0.1], rtol=1e-12)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"sum to 0\.9, not 1.*action_transform='weights'") as err:
        env.step(np.array([0.2, 0.3, 0.1, 0.3]))
    assert "\n" not in str(err.value)


BAD_ACTIONS = [
    ("nan", {}, np.array([0.2, np.nan, 0.3, 0.5]), r"action entry 1 \(BBB\) is .*nan.*finite"),
    ("inf cash", {}, np.array([0.2, 0.1, 0.3, np.inf]), r"action entry 3 \(cash\) is .*inf"),
    ("too short", {}, np.array([0.5, 0.5, 0.0]), r"action has 3 values; expected 4"),
    ("too long", {}, np.ones(5), r"action has 5 values; expected 4"),
    ("not numeric", {}, ["a", "b", "c", "d"], r"is not numeric; expected 4 weights"),
    ("negative", {}, np.array([0.5, -0.1, 0.3, 0.3]), r"action weight of BBB is .*-0\.1.*>= 0 when allow_short=False"),
    ("negative cash", {"action_transform": "weights"}, np.array([0.5, 0.3, 0.3, -0.1]),
     r"action weight of cash is .*-0\.1.*allow_short=False"),
    ("leverage", {"action_transform": "weights", "allow_short": True, "max_leverage": 1.5},
     np.array([1.0, -1.0, 1.0, 0.0]), r"gross exposure 3 .* above the limit 1\.5 \(max_leverage=1\.5"),
    ("leverage 2", {"action_transform": "weights", "allow_short": True, "max_leverage": 1.5},
     np.array([1.5, -0.5, 0.0, 0.0]), r"gross exposure 2 .* above the limit 1\.5 \(max_leverage=1\.5"),
]


@pytest.mark.parametrize("name,settings,action,message", BAD_ACTIONS, ids=[b[0] for b in BAD_ACTIONS])
def test_bad_action_is_a_one_line_error_naming_the_asset_or_parameter(data, name, settings, action, message) -> None:
    env = PortfolioEnv(data, random_start=False, **settings)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message) as err:
        env.step(action)
    assert "\n" not in str(err.value)
    assert env.core.sim.row[0] == env.core.start_row and env.core.sim.n_orders[0] == 0  # nothing happened
    env.step(np.array([0.0, 0.0, 0.0, 1.0]) if "weights" in settings.values() else np.zeros(4))  # still usable


@pytest.mark.parametrize("settings,message", [
    ({"action_transform": "softmax", "allow_short": True}, r"action_transform='softmax' is long-only"),
    ({"max_leverage": 1.5}, r"max_leverage=1\.5 needs allow_short=True"),
    ({"action_transform": "sigmoid"}, r"action_transform='sigmoid' is not known"),
    ({"covariance_window": 1}, r"covariance_window=.* must be 0 \(off\) or an integer >= 2"),
    ({"split": "holdout"}, r"split='holdout' is not known"),
])
def test_bad_setting_is_a_one_line_error_naming_the_parameter(data, settings, message) -> None:
    with pytest.raises(ValueError, match=message) as err:
        PortfolioEnv(data, **settings)
    assert "\n" not in str(err.value)


def test_unknown_setting_is_named(data) -> None:
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['leverage'\]"):
        PortfolioEnv(data, leverage=2)


def test_weights_action_space_contains_every_valid_weights_action(data) -> None:
    env = PortfolioEnv(data, random_start=False, action_transform="weights", allow_short=True, max_leverage=1.5)
    full_short = np.array([-1.5, 0.0, 0.0, 2.5])
    env.reset(seed=0)
    env.step(full_short)  # the env accepts it as valid ...
    assert env.action_space.contains(full_short.astype(np.float32))  # ... so its action space must contain it


def test_universe_of_one_asset_is_a_one_line_error(bars, data) -> None:
    for build in (lambda: PortfolioEnv({"AAA": bars["AAA"]}, window=WINDOW),
                  lambda: PortfolioEnv(data, symbols=["AAA"]),
                  lambda: PortfolioEnv(data, symbols="AAA")):
        with pytest.raises(ValueError, match=r"at least 2 assets; got \['AAA'\]") as err:
            build()
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"needs a universe"):
        PortfolioEnv(bars["AAA"])


def test_symbol_not_in_the_data_is_a_one_line_error(data) -> None:
    with pytest.raises(ValueError, match=r"symbols \['ZZZ'\] are not in the dataset") as err:
        PortfolioEnv(data, symbols=["AAA", "ZZZ"])
    assert "\n" not in str(err.value)


def test_symbols_subset_picks_and_orders_the_assets(data) -> None:
    env = PortfolioEnv(data, symbols=["CCC", "AAA"])
    assert env.symbols == ["CCC", "AAA"] and env.action_space.shape == (3,)


def test_weekly_symbol_beside_daily_symbols_is_refused_naming_it(bars) -> None:
    weekly = synthetic_bars(200, seed=3, freq="W-FRI", start="2010-01-08")
    with pytest.raises(ValueError, match=r"WWW") as err:
        PortfolioEnv({"AAA": bars["AAA"], "WWW": weekly}, window=WINDOW)
    assert "\n" not in str(err.value)


def test_sparse_symbol_in_one_dataset_is_refused_by_the_panel_naming_it(gap_data) -> None:
    from features.panel import Panel, PanelError

    with pytest.raises(PanelError, match=r"BBB: has a bar at 9[0-9]% .* min_coverage=0\.999"):
        Panel.from_market_data(gap_data, min_coverage=0.999)


# ----- missing bars -------------------------------------------------------------------------------------------
def test_missing_bars_hold_units_and_are_not_traded(gap_bars, gap_data) -> None:
    """BBB's 5-row holiday and CCC before its listing: units never change, no fill, and CCC reads zeros."""
    env = PortfolioEnv(gap_data, random_start=False, record_fills=True, rebalance_every=1, min_rebalance=0.0)
    index = union_index(gap_bars)
    has_bar = np.column_stack([index.isin(gap_bars[s].index) for s in SYMBOLS])
    assert not has_bar[HOLIDAY, 1].any() and not has_bar[:LISTED, 2].any()
    obs, info = env.reset(seed=0)
    units = env.core.sim.units[0].copy()
    ccc_window_zero = 0
    for _ in range(150):
        row = info["row"]
        if row < LISTED:
            assert not env.layout.features(obs)[2].any(), f"CCC's window is not zeros at row {row}"
            ccc_window_zero += 1
        obs, _, _, truncated, info = env.step(EQUAL)
        fill_row = info["row"]  # next_open: the step's orders fill at the new row's open
        new_units = env.core.sim.units[0].copy()
        for i in range(3):
            if not has_bar[fill_row, i]:
                assert new_units[i] == units[i], f"{SYMBOLS[i]} traded at row {fill_row} without a bar"
        units = new_units
        assert not truncated
    log = env.core.sim.fill_log()
    for row, asset in zip(log["row"].astype(int), log["asset"].astype(int)):
        assert has_bar[row, asset], f"a fill of {SYMBOLS[asset]} at row {row}, where it has no bar"
    ccc_rows = log["row"][log["asset"] == 2]
    assert ccc_rows.min() == LISTED  # bought at its first bar
    bbb_rows = set(log["row"][log["asset"] == 1].astype(int))
    assert HOLIDAY.start - 1 in bbb_rows and HOLIDAY.stop in bbb_rows  # rebalanced around the holiday
    assert ccc_window_zero > 20


def test_before_listing_the_assets_weight_stays_in_cash(gap_data) -> None:
    env = PortfolioEnv(gap_data, random_start=False, **NO_COSTS)
    _, _, infos = run(env, EQUAL, steps=30)
    for info in infos[1:]:
        assert info["weights"][2] == 0.0
        np.testing.assert_allclose(info["weights"].sum(), 1.0, atol=1e-12)
    assert infos[-1]["weights"][3] > 0.3  # CCC's third is held in cash until it lists


# ----- costs ----------------------------------------------------------------------------------------------
def test_step_costs_equal_commission_plus_slippage_of_the_fill_log(bars, data) -> None:
    env = PortfolioEnv(data, random_start=False, record_fills=True, commission=0.002, slippage=7.0)
    opens = np.column_stack([bars[s]["open"].to_numpy() for s in SYMBOLS])
    rng = np.random.default_rng(11)
    env.reset(seed=0)
    seen = 0
    for _ in range(40):
        before = len(env.core.sim.fill_log()["row"])
        _, _, _, _, info = env.step(rng.uniform(0, 1, 4))
        log = {k: v[before:] for k, v in env.core.sim.fill_log().items()}
        assert len(log["row"]) == info["orders"]
        np.testing.assert_allclose(info["costs"], log["commission"].sum() + log["slippage"].sum(), rtol=1e-12)
        if info["orders"]:
            seen += 1
            rows, assets = log["row"].astype(int), log["asset"].astype(int)
            assert (rows == info["row"]).all()
            reference = opens[rows, assets]
            np.testing.assert_allclose(log["reference_price"], reference, rtol=1e-15)
            side = np.sign(log["units"])
            np.testing.assert_allclose(log["fill_price"], reference * (1 + side * 7e-4), rtol=1e-13)
            np.testing.assert_allclose(log["slippage"], np.abs(log["units"]) * reference * 7e-4, rtol=1e-12)
            np.testing.assert_allclose(log["commission"], 0.002 * np.abs(log["units"]) * log["fill_price"],
                                       rtol=1e-12)
    assert seen >= 30


def test_sum_of_log_return_rewards_is_log_of_final_over_initial_equity(data) -> None:
    env = PortfolioEnv(data, random_start=False, min_equity=0.0)
    rng = np.random.default_rng(2)
    _, rewards, infos = run(env, [rng.uniform(0, 1, 4) for _ in range(N_BARS)])
    assert len(rewards) > 150
    np.testing.assert_allclose(sum(rewards), math.log(infos[-1]["equity"] / 100_000.0), rtol=1e-9, atol=1e-12)
    equities = np.array([info["equity"] for info in infos])
    np.testing.assert_allclose(rewards, np.log(equities[1:] / equities[:-1]), rtol=1e-12, atol=1e-15)


def test_holding_equal_weights_without_costs_is_the_plain_price_arithmetic(bars, data) -> None:
    env = PortfolioEnv(data, random_start=False, **NO_COSTS)
    _, _, infos = run(env, EQUAL, steps=100)
    opens = np.column_stack([bars[s]["open"].to_numpy() for s in SYMBOLS])
    closes = np.column_stack([bars[s]["close"].to_numpy() for s in SYMBOLS])
    start = infos[0]["row"]
    units = (100_000.0 / 3) / opens[start + 1]
    for info in infos[1:]:
        np.testing.assert_allclose(info["equity"], units @ closes[info["row"]], rtol=1e-12)
    assert [info["orders"] for info in infos[1:]] == [3] + [0] * 99


def test_turnover_is_traded_notional_over_equity_before_the_step(data) -> None:
    env = PortfolioEnv(data, random_start=False, record_fills=True)
    rng = np.random.default_rng(4)
    _, _, infos = run(env, [rng.uniform(0, 1, 4) for _ in range(30)])
    log = env.core.sim.fill_log()
    for before, after in zip(infos[:-1], infos[1:]):
        at = log["row"] == after["row"]
        notional = float(np.sum(np.abs(log["units"][at]) * log["reference_price"][at]))
        np.testing.assert_allclose(after["turnover"], notional / before["equity"], rtol=1e-12)
    assert infos[1]["turnover"] > 0.9  # from cash into the assets


# ----- episodes -------------------------------------------------------------------------------------------
def test_episode_length_truncates(data) -> None:
    env = PortfolioEnv(data, episode_length=7)
    env.reset(seed=1)
    ends = [env.step(EQUAL)[2:4] for _ in range(7)]
    assert ends == [(False, False)] * 6 + [(False, True)]


def test_split_end_truncates(data) -> None:
    env = PortfolioEnv(data, random_start=False)
    _, _, infos = run(env, EQUAL, steps=10_000)
    _, end = data.split_range("train", "AAA")
    assert infos[-1]["row"] == end - 1  # the last train row (all symbols share the calendar)


def test_min_equity_terminates(data) -> None:
    env = PortfolioEnv(data, random_start=False, min_equity=0.99, commission=0.05)
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(EQUAL)
    assert terminated and not truncated and info["equity"] <= 0.99 * 100_000


def test_stepping_after_the_end_raises_telling_to_reset(data) -> None:
    env = PortfolioEnv(data, episode_length=2)
    with pytest.raises(RuntimeError, match=r"call reset\(\) before the first step\(\)"):
        env.step(EQUAL)
    env.reset(seed=0)
    env.step(EQUAL)
    assert env.step(EQUAL)[3]
    with pytest.raises(RuntimeError, match=r"the episode is over \(truncated .*\); call reset\(\)"):
        env.step(EQUAL)
    env2 = PortfolioEnv(data, min_equity=0.99, commission=0.05)
    env2.reset(seed=0)
    assert env2.step(EQUAL)[2]
    with pytest.raises(RuntimeError, match=r"terminated \(equity fell to min_equity\).*call reset\(\)"):
        env2.step(EQUAL)
    env.reset(seed=0)
    env.step(EQUAL)  # usable again after reset


def test_reset_with_a_seed_is_reproducible(data) -> None:
    env = PortfolioEnv(data)
    rows = []
    for seed in (5, 5, 6):
        obs, info = env.reset(seed=seed)
        rows.append(info["row"])
        steps = [env.step(EQUAL) for _ in range(5)]
        rows.append((obs.tobytes(), [s[1] for s in steps]))
    assert rows[0] == rows[2] and rows[1] == rows[3]
    assert rows[0] != rows[4]  # another seed, another start (drawn from ~200 rows)


def test_start_row_option_starts_there(data) -> None:
    env = PortfolioEnv(data)
    _, info = env.reset(options={"start_row": 100})
    assert info["row"] == 100
    assert env.step(EQUAL)[4]["row"] == 101


@pytest.mark.parametrize("start_row", [0, 10_000, -1])
def test_start_row_out_of_range_is_a_one_line_error(data, start_row) -> None:
    with pytest.raises(ValueError, match=rf"start_row={start_row} is outside split 'train'") as err:
        PortfolioEnv(data).reset(options={"start_row": start_row})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("start_row", ["100", 100.0, True])
def test_start_row_must_be_an_integer(data, start_row) -> None:
    with pytest.raises(ValueError, match=r"options\['start_row'\]=.* must be an integer row"):
        PortfolioEnv(data).reset(options={"start_row": start_row})


# ----- vectorised twin ------------------------------------------------------------------------------------
def test_vec_env_equals_four_single_envs_and_auto_resets(data) -> None:
    settings = {"random_start": False, "episode_length": 12, "covariance_window": 5}
    vec = PortfolioVecEnv(n_envs=4, data=data, seed=3, **settings)
    singles = [PortfolioEnv(data, **settings) for _ in range(4)]
    rng = np.random.default_rng(8)
    obs = vec.reset()
    single_obs = np.stack([env.reset(seed=0)[0] for env in singles])
    np.testing.assert_array_equal(obs, single_obs)
    first_obs = single_obs.copy()
    for step in range(12):
        actions = rng.uniform(0, 1, (4, 4))
        obs, rewards, dones, infos = vec.step(actions)
        results = [env.step(a) for env, a in zip(singles, actions)]
        expected_obs = np.stack([r[0] for r in results])
        np.testing.assert_allclose(rewards, [r[1] for r in results], rtol=1e-6)
        assert rewards.dtype == np.float32
        if step < 11:
            assert not dones.any()
            np.testing.assert_array_equal(obs, expected_obs)
        else:
            assert dones.all()
            for i, info in enumerate(infos):
                np.testing.assert_array_equal(info["terminal_observation"], expected_obs[i])
                assert info["TimeLimit.truncated"] is True
                assert info["equity"] == results[i][4]["equity"]
            np.testing.assert_array_equal(obs, first_obs)  # auto-reset at the same (fixed) start row


def test_vec_env_random_starts_are_seeded(data) -> None:
    a = PortfolioVecEnv(n_envs=4, data=data, seed=9).reset()
    b = PortfolioVecEnv(n_envs=4, data=data, seed=9).reset()
    np.testing.assert_array_equal(a, b)
    vec = PortfolioVecEnv(n_envs=4, data=data, seed=9)
    vec.reset()
    assert len(set(vec.core.sim.row.tolist())) > 1


def test_vec_env_refuses_transposed_actions(data) -> None:
    vec = PortfolioVecEnv(n_envs=2, data=data, seed=0)
    vec.reset()
    actions = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match=r"shape"):
        vec.step(actions.T)


# ----- rebalancing schedule -------------------------------------------------------------------------------
def test_rebalance_every_k_sends_orders_every_k_steps_and_restores_drifted_weights(bars, data) -> None:
    k = 4
    env = PortfolioEnv(data, random_start=False, rebalance_every=k, **NO_COSTS)
    opens = np.column_stack([bars[s]["open"].to_numpy() for s in SYMBOLS])
    env.reset(seed=0)
    for step in range(25):
        units_before = env.core.sim.units[0].copy()
        _, _, _, _, info = env.step(EQUAL)
        units = env.core.sim.units[0]
        if step % k == 0:
            assert info["orders"] > 0, f"no order at scheduled step {step}"
            value = units * opens[info["row"]]  # right after the fill (no costs: the equity at the open)
            np.testing.assert_allclose(value / value.sum(), [1 / 3] * 3, rtol=1e-12, err_msg=f"step {step}")
        else:
            assert info["orders"] == 0, f"an order at step {step}, between scheduled rebalances"
            np.testing.assert_array_equal(units, units_before)


def test_without_a_schedule_constant_targets_are_bought_once_and_held(data) -> None:
    env = PortfolioEnv(data, random_start=False)
    env.reset(seed=0)
    orders = []
    for _ in range(50):
        orders.append(env.step(EQUAL)[4]["orders"])
        if len(orders) == 1:
            held = env.core.sim.units[0].copy()
    assert orders == [3] + [0] * 49
    np.testing.assert_array_equal(env.core.sim.units[0], held)


def make_rising_gap_bars(growth: float = 0.01) -> dict[str, pd.DataFrame]:
    """The gap universe with AAA's and BBB's prices multiplied by ``exp(growth * bar)`` (a strong rise before
    CCC lists)."""
    frames = make_gap_bars()
    for symbol in ("AAA", "BBB"):
        frame = frames[symbol].copy()
        ramp = np.exp(growth * np.arange(len(frame)))
        for column in ("open", "high", "low", "close"):
            frame[column] = frame[column] * ramp
        frames[symbol] = frame
    return frames


def test_long_only_account_never_borrows_when_a_late_asset_lists() -> None:
    """Held assets drifted above their targets when CCC lists: its buy is scaled so that cash ends at 0 (fixed in
    sim/portfolio.py by ffeb081; the env's numba cache may still hold the old step, see the slow test below)."""
    data = build_market_data(make_rising_gap_bars(), DatasetConfig(window=WINDOW))
    env = PortfolioEnv(data, random_start=False, **NO_COSTS)
    _, _, infos = run(env, np.array([0.45, 0.45, 0.1, 0.0]), steps=80)  # long targets sum to 1
    listed = next(info for info in infos if info["row"] == LISTED)
    assert listed["orders"] == 1  # CCC bought at its first bar
    cash_weights = np.array([info["weights"][-1] for info in infos])
    assert cash_weights.min() >= -1e-12, f"cash weight {cash_weights.min():.4f} < 0 in a long-only account"


def test_a_failed_fill_leaves_no_half_booked_step(data) -> None:
    env = PortfolioEnv(data, random_start=False, slippage={"model": "volume", "impact": 200.0})
    env.reset(seed=0)
    with pytest.raises(FloatingPointError, match=r"slippage of 100% of the price or more for BBB"):
        env.step(np.array([0.001, 0.999, 0.0, 0.0]))  # AAA's small buy fills, BBB's large one cannot
    try:
        _, _, _, _, info = env.step(np.zeros(4))
    except RuntimeError as err:  # refusing to go on until reset() is a fix too
        assert "reset" in str(err)
        return
    assert info["trade_count"] == 0 and info["equity"] == 100_000.0


def test_signed_normalize_keeps_gross_exposure_at_most_max_leverage(data) -> None:
    env = PortfolioEnv(data, random_start=False, allow_short=True, max_leverage=1.5, fill_at="close", **NO_COSTS)
    rng = np.random.default_rng(6)
    env.reset(seed=0)
    closes = closes_on_timeline(make_bars())
    for _ in range(20):
        action = rng.uniform(-1.5, 1.5, 4)
        row = int(env.core.sim.row[0])
        equity = float(env.core.sim.equity[0])
        env.step(action)
        # fill_at="close", no costs: the positions right after the fill are the targets exactly
        value = env.core.sim.units[0] * closes[row]
        np.testing.assert_allclose(value / equity, 1.5 * action[:3] / np.abs(action).sum(), rtol=1e-9, atol=1e-12)
        assert np.abs(value).sum() / equity <= 1.5 + 1e-9


STALE_CACHE_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import envs.portfolio_kernel as kernel
    from sim import portfolio as sp
    from sim.engine import Costs
    assert kernel.__file__.startswith(sys.argv[1]), kernel.__file__

    def account():
        prices = np.full((4, 2), 100.0)
        return sp.PortfolioSimulator(prices, prices, prices, prices, np.full((4, 2), 1e6), np.ones((4, 2), bool),
                                     Costs(commission=0.01, slippage=0.0))

    env_account, sim_account = account(), account()
    kernel.step_kernel(np.array([[0.5, 0.5, 0.0]]), np.zeros((1, 2)), env_account.rebalance,
                       np.array([[0], [0], [0], [3]], dtype=np.int64), np.array([0.0, 0.0, 1.0, 0.0, 1.0]),
                       env_account.ints, env_account.floats, env_account.assets, env_account.market,
                       env_account.params, np.zeros((4, 2), dtype=np.int64), np.zeros((2, 1), np.float32),
                       np.zeros((0, 0), np.float32), np.zeros(1, dtype=np.int64), np.zeros((1, 5), np.float32),
                       np.zeros((1, 3)), np.zeros(1))
    sim_account.step(np.array([[0.5, 0.5]]))
    print(env_account.result.cost[0], sim_account.result.cost[0])
""")


@pytest.mark.slow
def test_a_change_of_the_simulator_reaches_the_envs_compiled_step(tmp_path) -> None:
    """Copy the packages, compile once (cached), change the simulator's commission, run again: the env's step
    must pay what the simulator now charges."""
    pytest.importorskip("numba")
    root = Path(__file__).resolve().parents[1]
    for package in ("envs", "sim", "features", "configs"):
        shutil.copytree(root / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    script = tmp_path / "stale_cache_check.py"
    script.write_text(STALE_CACHE_SCRIPT)

    def costs() -> list[float]:
        done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                              timeout=300, env={k: v for k, v in os.environ.items()
                                                if k not in ("TRADING_RL_NO_NUMBA", "NUMBA_CACHE_DIR",
                                                             "NUMBA_DISABLE_JIT")})
        assert done.returncode == 0, done.stderr[-2000:]
        return [float(v) for v in done.stdout.split()]

    first = costs()
    assert first[0] == pytest.approx(first[1]) and first[1] > 0
    source = tmp_path / "sim" / "portfolio.py"
    text = source.read_text()
    old = "commission = rate * abs(delta) * fill_price"
    assert old in text
    source.write_text(text.replace(old, "commission = 2.0 * rate * abs(delta) * fill_price"))
    second = costs()
    assert second[1] == pytest.approx(2 * first[1])  # the simulator changed ...
    assert second[0] == pytest.approx(second[1])  # ... and the env's compiled step must follow
