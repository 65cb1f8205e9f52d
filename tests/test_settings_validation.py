"""One validation of each setting (sim.settings): a bad cost, account or agent setting is one error naming
it, the same from the simulator, the env, the batched env, the backtester and the agent configs; never a
value that trains or backtests into a wrong number."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers TradingEnv-v0)
from agents.config import AgentConfig, DQNSettings, PPOSettings
from configs.loader import load_yaml_config
from envs.backtest import backtest
from envs.vec_env import TradingVecEnv
from evaluation.config import CostGrid
from features.dataset import DatasetConfig, build_market_data
from features.synthetic import synthetic_bars
from live.config import PaperConfig
from sim import Costs, Simulator
from sim.costs import SpreadSlippage, VolumeScaledSlippage, make_slippage
from sim.settings import SettingError, check_setting


@pytest.fixture(scope="module")
def market():
    bars = {"SYN": synthetic_bars(300, seed=0), "ALT": synthetic_bars(300, seed=1, start_price=50.0)}
    return build_market_data(bars, DatasetConfig(window=8))


def message(call) -> str:
    with pytest.raises(ValueError) as caught:
        call()
    return str(caught.value)


class Hold:
    def reset(self) -> None:
        pass

    def act(self, observation):
        return 1


# ----- costs: the same error from every place that takes them ---------------------------------------
def test_a_commission_of_5_is_one_error_everywhere_with_the_percent_hint(market) -> None:
    expected = message(lambda: check_setting("commission", 5))
    assert "commission=5 must be a fraction of traded notional in [0, 1)" in expected
    assert "did you mean 0.05?" in expected
    assert message(lambda: Costs(commission=5)) == expected
    assert message(lambda: gym.make("TradingEnv-v0", data=market, commission=5)) == expected
    assert message(lambda: TradingVecEnv(2, data=market, commission=5)) == expected
    assert message(lambda: backtest(Hold(), market, "train", Costs(commission=5))) == expected
    # config files read a commission as a float (5 -> 5.0); the words are the same
    from_config = message(lambda: check_setting("commission", 5.0))
    assert from_config == expected.replace("=5 ", "=5.0 ")
    assert message(lambda: AgentConfig.from_dict({"env": {"commission": 5}})) == from_config
    # the benchmark's cost grid and the paper-trading config say the same, after the key they come from
    assert message(lambda: CostGrid(commissions=(5.0,))).endswith(": " + from_config)
    assert message(lambda: PaperConfig.from_dict({"costs": {"commission": 5}})) == "paper config: costs." + from_config


@pytest.mark.parametrize("spec", [10_000, 10_000.0, 25_000, {"model": "fixed", "bps": 10_000}])
def test_slippage_of_100_percent_or_more_is_refused_before_any_fill(market, spec) -> None:
    text = message(lambda: make_slippage(spec))
    assert "must be in [0, 10000) basis points" in text and "price <= 0" in text
    assert message(lambda: Costs(slippage=spec)) == text
    assert message(lambda: gym.make("TradingEnv-v0", data=market, slippage=spec)) == text


def test_a_spread_of_20000_bps_or_more_is_refused_and_one_just_under_is_accepted() -> None:
    assert "spread_bps=20000 must be in [0, 20000)" in message(lambda: SpreadSlippage(20_000))
    assert SpreadSlippage(19_999).constant_fraction() < 1.0


def test_a_dynamic_slippage_fraction_of_100_percent_is_an_error_naming_the_bar_not_a_negative_price() -> None:
    n = 40
    close = np.full(n, 100.0)
    volume = np.full(n, 1.0)  # $100 a bar: any real order is most of the volume
    costs = Costs(commission=0.0, slippage=VolumeScaledSlippage(impact=0.5, window=5, base_bps=0.0))
    for accounts in (1, 2):  # the single-account path and the batched numpy path
        sim = Simulator(close, close + 1, close - 1, close, volume, costs, n_accounts=accounts)
        sim.reset(10)
        with pytest.raises(FloatingPointError, match=r"slippage of \d+\.\d% of the price .* at bar 11"):
            for _ in range(5):
                sim.step(np.ones(accounts))
                sim.step(np.zeros(accounts))
        assert np.all(np.isfinite(sim.equity)) and np.all(sim.cash >= 0.0)


@pytest.mark.parametrize("name, value", [("fixed_fee", -1.0), ("borrow_rate", 1.5), ("borrow_rate", math.nan),
                                         ("commission", "0.001"), ("commission", True)])
def test_bad_fee_and_borrow_values_name_the_setting(name, value) -> None:
    text = message(lambda: Costs(**{name: value}))
    assert text.startswith(f"{name}={value!r} must be")


# ----- account and episode settings ------------------------------------------------------------------
@pytest.mark.parametrize("settings, expected", [
    ({"allow_short": "no"}, "allow_short='no' must be true or false, got str"),
    ({"random_start": 0}, "random_start=0 must be true or false"),
    ({"episode_length": 2.5}, "episode_length=2.5 must be a whole number >= 1"),
    ({"episode_length": 0}, "episode_length=0 must be a whole number >= 1"),
    ({"window": 8.5}, "window=8.5 must be a whole number >= 1"),
    ({"initial_cash": math.inf}, "initial_cash=inf must be a finite number"),
    ({"initial_cash": 0.0}, "initial_cash=0.0 must be in (0, inf)"),
    ({"drawdown_penalty": math.nan}, "drawdown_penalty=nan must be a finite number"),
    ({"dsr_eta": 0.0}, "dsr_eta=0.0 must be in (0, 1)"),
    ({"min_rebalance": -0.1}, "min_rebalance=-0.1 must be in [0, 2)"),
])
def test_bad_env_settings_are_refused_before_the_data_is_touched(market, settings, expected) -> None:
    assert message(lambda: gym.make("TradingEnv-v0", data=market, **settings)).startswith(expected)
    assert message(lambda: TradingVecEnv(2, data=market, **settings)).startswith(expected)
    if not {"episode_length", "random_start"} & set(settings):  # the backtester sets these two itself
        assert message(lambda: backtest(Hold(), market, "train", **settings)).startswith(expected)


def test_the_simulator_applies_the_same_rules(market) -> None:
    prices = (market.open, market.high, market.low, market.close, market.volume)
    assert message(lambda: Simulator(*prices, allow_short="no")) == message(
        lambda: gym.make("TradingEnv-v0", data=market, allow_short="no"))
    assert message(lambda: Simulator(*prices, initial_cash=math.inf)).startswith("initial_cash=inf")


def test_the_batched_env_refuses_a_fractional_discrete_action_instead_of_truncating_it(market) -> None:
    vec = TradingVecEnv(2, data=market, seed=0)
    vec.reset()
    with pytest.raises(ValueError, match=r"action=array\(\[0.7, 1. \]\) is not valid for action_mode='discrete'"):
        vec.step(np.array([0.7, 1.0]))
    vec.step(np.array([1.0, 0.0]))  # integral floats are the actions they spell
    assert vec.core.sim.target.tolist() == [1.0, 0.0]
    single = gym.make("TradingEnv-v0", data=market)
    single.reset(seed=0)
    with pytest.raises(ValueError, match="action=0.7 is not valid for action_mode='discrete'"):
        single.step(0.7)


def test_render_mode_human_is_one_error_naming_it(market) -> None:
    text = message(lambda: gym.make("TradingEnv-v0", data=market, render_mode="human"))
    assert text.startswith("render_mode='human' is not supported") and "\n" not in text


# ----- agent hyperparameters -------------------------------------------------------------------------
@pytest.mark.parametrize("section, key, value, expected", [
    ("ppo", "gamma", 1.5, "ppo.gamma=1.5 must be in [0, 1]"),
    ("ppo", "learning_rate", 0.0, "ppo.learning_rate=0.0 must be in (0, inf)"),
    ("ppo", "clip_range", -0.2, "ppo.clip_range=-0.2 must be in (0, inf)"),
    ("ppo", "n_epochs", 0, "ppo.n_epochs=0 must be a whole number >= 1"),
    ("dqn", "gamma", 1.5, "dqn.gamma=1.5 must be in [0, 1]"),
    ("dqn", "buffer_size", 0, "dqn.buffer_size=0 must be a whole number >= 1"),
    ("dqn", "buffer_size", 100, "dqn.buffer_size=100 must be >= dqn.batch_size=256"),
    ("dqn", "exploration_final_eps", 2.0, "dqn.exploration_final_eps=2.0 must be in [0, 1]"),
    ("dqn", "gradient_steps", 0, "dqn.gradient_steps (or -1)=0 must be a whole number >= 1"),
])
def test_bad_agent_hyperparameters_do_not_train(tmp_path, section, key, value, expected) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(f"agent:\n  {section}:\n    {key}: {value}\n")
    assert message(lambda: load_yaml_config(AgentConfig, path, "agent")).startswith(f"{path}:agent: {expected}")
    settings = PPOSettings if section == "ppo" else DQNSettings
    assert message(lambda: settings(**{key: value})).startswith(expected)


def test_the_shipped_agent_configs_and_sb3_defaults_pass() -> None:
    AgentConfig()
    DQNSettings(gradient_steps=-1)
    PPOSettings(gamma=1.0, ent_coef=0.0)
    for name in ("ppo", "dqn", "ppo_hpo", "dqn_hpo"):
        try:
            AgentConfig.from_yaml(f"configs/{name}.yaml")
        except SettingError as error:  # pragma: no cover - the message is the failure
            pytest.fail(f"configs/{name}.yaml: {error}")
