"""TradingEnv refuses what would give a silently wrong number (trust issue, item 8): stepping an ended
episode, malformed reset options and actions, commission given in percent; info["timestamp"] is UTC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from envs import TradingEnv
from features import DatasetConfig, build_market_data, synthetic_bars


@pytest.fixture(scope="module")
def data():
    bars = {"AAPL": synthetic_bars(400, seed=0), "IBM": synthetic_bars(400, seed=1, start_price=50.0)}
    return build_market_data(bars, DatasetConfig(window=8))


def test_stepping_after_truncation_is_an_error_not_the_next_symbol(data) -> None:
    env = TradingEnv(data, symbol="AAPL", split="train", random_start=False)
    env.reset(seed=0)
    truncated = False
    while not truncated:
        _, _, terminated, truncated, info = env.step(1)
        assert not terminated and info["symbol"] == "AAPL"
    last_row = info["row"]
    with pytest.raises(RuntimeError, match=rf"the episode is over \(truncated .* at row {last_row} of AAPL\); call reset\(\)"):
        env.step(1)
    env.reset(seed=0)
    env.step(0)  # a reset makes it usable again


def test_stepping_after_termination_is_an_error(data) -> None:
    env = TradingEnv(data, symbol="AAPL", random_start=False, min_equity=0.999999, commission=0.01)
    env.reset(seed=0)
    terminated = False
    for _ in range(20):
        _, _, terminated, truncated, _ = env.step(1)
        if terminated:
            break
    assert terminated
    with pytest.raises(RuntimeError, match=r"terminated \(equity fell to min_equity\)"):
        env.step(0)


def test_step_before_reset_is_an_error(data) -> None:
    with pytest.raises(RuntimeError, match=r"call reset\(\) before the first step\(\)"):
        TradingEnv(data).step(0)


@pytest.mark.parametrize("start_row", ["10", 10.0, True, np.float64(3.0)])
def test_start_row_must_be_an_integer(data, start_row) -> None:
    env = TradingEnv(data, symbol="AAPL")
    with pytest.raises(ValueError, match=r"options\['start_row'\]=.* must be an integer row"):
        env.reset(options={"start_row": start_row})


def test_unknown_reset_option_is_named(data) -> None:
    with pytest.raises(ValueError, match=r"reset options \['start'\] are not known"):
        TradingEnv(data).reset(options={"start": 10})


@pytest.mark.parametrize("action", [np.array([1, 0]), np.array([[1], [0]]), [0, 1], "1", 1.5, True, np.array([0.5])])
def test_discrete_action_of_several_values_or_wrong_type_is_named(data, action) -> None:
    env = TradingEnv(data)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"is not valid for action_mode='discrete'; allowed values: 0 \(flat\), 1 \(long\)"):
        env.step(action)


@pytest.mark.parametrize("action", [1, np.int64(1), np.array(1), np.array([1]), 1.0])
def test_single_valued_discrete_actions_are_accepted(data, action) -> None:
    env = TradingEnv(data)
    env.reset(seed=0)
    _, _, _, _, info = env.step(action)
    assert info["position"] > 0


@pytest.mark.parametrize("commission", [1, 1.0, 5, 10.0])
def test_commission_of_one_or_more_is_an_error(data, commission) -> None:
    with pytest.raises(ValueError, match=rf"commission={commission} must be a fraction of traded notional in \[0, 1\)"):
        TradingEnv(data, commission=commission)


def test_info_timestamp_is_utc_and_compares_with_the_bars_index(data) -> None:
    bars = synthetic_bars(400, seed=0)
    env = TradingEnv(data, symbol="AAPL", random_start=False)
    _, info = env.reset(seed=0)
    stamp = info["timestamp"]
    assert isinstance(stamp, pd.Timestamp) and str(stamp.tz) == "UTC"
    assert bars.index[info["row"]] == stamp
    assert (bars.index <= stamp).sum() == info["row"] + 1
    _, _, _, _, info = env.step(1)
    assert bars.index[info["row"]] == info["timestamp"]
