"""The fast paths give the numbers of the plain paths: the single env's scalar step and its observations
(to the dataset's last row), the backtester's path for policies that ignore the account, and the frozen
encoder's embedding cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from agents.baselines import make_baseline
from envs import TradingEnv, TradingVecEnv, backtest
from envs.core import EnvConfig, TradingCore
from features import DatasetConfig, build_market_data, synthetic_bars
from sim.engine import Costs


@pytest.fixture(scope="module")
def data():
    bars = {"A": synthetic_bars(420, phi=-0.2, seed=0), "B": synthetic_bars(400, seed=1, start_price=30.0)}
    return build_market_data(bars, DatasetConfig(window=8))


class EventPath:
    """A policy without ``act_windows``: the backtester asks it bar by bar."""

    def __init__(self, policy) -> None:
        self.policy, self.name = policy, policy.name

    def reset(self) -> None:
        self.policy.reset()

    def act(self, observation):
        return self.policy.act(observation)


def test_observations_reach_the_datasets_last_row_on_both_paths(data) -> None:
    """The last symbol's test split ends at the dataset's last row, whose window has no values after it."""
    config = EnvConfig(symbol=data.symbols[-1], split="test", random_start=False)
    one, batch = TradingCore(data, config, n=1), TradingCore(data, config, n=3)
    rng = np.random.default_rng(0)
    one.start(np.arange(1), rng)
    batch.start(np.arange(3), rng)
    last_row = len(data.timestamps) - 1
    while int(one.sim.row[0]) < last_row:
        one.step(np.array([1.0]))
        batch.step(np.full(3, 1.0))
        expected = one.observations()[0]
        row = int(one.sim.row[0])
        window = data.features[row - one.window + 1 : row + 1].reshape(-1)
        np.testing.assert_array_equal(expected[: one.layout.n_window_values], window)
        np.testing.assert_array_equal(batch.observations()[2], expected)
    assert int(one.sim.row[0]) == last_row


def test_single_env_returns_fresh_observations_and_documented_info(data) -> None:
    env = TradingEnv(data, symbol="A", split="train")
    first, info = env.reset(seed=0)
    second, _, _, _, info = env.step(1)
    second_copy = second.copy()
    env.step(0)
    np.testing.assert_array_equal(second, second_copy)  # not a view of a buffer the env writes again
    assert not np.shares_memory(second, env.core.data.features)
    stamp = info["timestamp"]
    assert isinstance(stamp, pd.Timestamp) and str(stamp.tz) == "UTC"
    assert stamp == pd.Timestamp(int(data.timestamps[info["row"]]), tz="UTC")
    assert isinstance(info["row"], int) and isinstance(info["trade_count"], int)
    assert isinstance(info["equity"], float) and info["symbol"] == "A"


@pytest.mark.parametrize("action", [np.int64(1), np.array(1), np.array([1]), 1.0, True])
def test_single_env_action_types_follow_the_same_rules(data, action) -> None:
    env = TradingEnv(data, symbol="A")
    env.reset(seed=0)
    if action is True:
        with pytest.raises(ValueError):
            env.step(action)
        return
    env.step(action)
    assert env.core.sim.target[0] == 1.0


@pytest.mark.parametrize("name", ["sma_crossover", "buy_and_hold", "cash"])
@pytest.mark.parametrize("settings", [{}, {"allow_short": True}, {"fill_at": "close"}])
@pytest.mark.parametrize("costs", [Costs(), Costs(0.002, fixed_fee=40.0, slippage=20.0, borrow_rate=0.0005),
                                   Costs(slippage={"model": "volume", "impact": 0.5})], ids=["default", "fee_borrow", "volume"])
def test_backtest_fast_path_equals_the_event_path_bit_for_bit(data, name, settings, costs) -> None:
    policy = make_baseline(name, data, allow_short=settings.get("allow_short", False))
    for symbol in data.symbols:
        fast = backtest(policy, data, "test", costs, symbol=symbol, **settings)
        event = backtest(EventPath(policy), data, "test", costs, symbol=symbol, **settings)
        for field in ("equity", "position", "rewards", "timestamps"):
            np.testing.assert_array_equal(getattr(fast, field), getattr(event, field), err_msg=field)
        for log in ("fills", "trades"):
            for key, values in getattr(event, log).items():
                np.testing.assert_array_equal(getattr(fast, log)[key], values, err_msg=f"{log}.{key}")
        assert fast.metrics.keys() == event.metrics.keys()
        for key, value in event.metrics.items():
            if isinstance(value, float) and np.isnan(value):
                assert np.isnan(fast.metrics[key]), key
            else:
                assert fast.metrics[key] == value, key


def test_backtest_fast_path_refuses_actions_outside_the_action_space(data) -> None:
    class Bad:
        name = "bad"

        def reset(self) -> None:
            pass

        def act(self, observation):
            return 1

        def act_windows(self, windows, asset_ids):
            return np.full(len(windows), 2)

    with pytest.raises(ValueError, match="outside 0..1"):
        backtest(Bad(), data, "test", symbol="A")


def test_frozen_encoder_cache_gives_the_encoders_embeddings_and_the_same_actions(data, tmp_path) -> None:
    from agents.extractor import EncoderExtractor
    from supervised.models import ModelConfig, build_encoder

    torch.manual_seed(0)
    encoder = build_encoder(ModelConfig(kind="lstm", window=8, n_features=data.n_features, n_assets=2,
                                        hidden_size=8, dropout=0.0))
    vec = TradingVecEnv(4, data, seed=0)
    batches = [vec.reset()]
    for actions in np.random.default_rng(0).integers(0, 2, size=(60, 4)):
        batches.append(vec.step(actions)[0])
    observations = torch.as_tensor(np.concatenate(batches))
    space = vec.observation_space
    cached = EncoderExtractor(space, encoder, 8, data.n_features, freeze=True)
    plain = EncoderExtractor(space, encoder, 8, data.n_features, freeze=True, cache_embeddings=False)
    head = torch.nn.Linear(cached.features_dim, 2)
    for part in (observations[:50], observations, observations[torch.randperm(len(observations))]):
        a, b = cached(part), plain(part)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        assert torch.equal(head(a).argmax(1), head(b).argmax(1))
    assert 0 < cached._stored <= len(observations)
    # new weights: the cache starts over and serves the new encoder's embeddings
    with torch.no_grad():
        for parameter in plain.encoder.parameters():
            parameter.mul_(0.5)
    cached.encoder.load_state_dict(plain.encoder.state_dict())
    torch.testing.assert_close(cached(observations), plain(observations), rtol=0, atol=1e-6)


@pytest.mark.parametrize("costs", [Costs(), Costs(0.002, fixed_fee=50.0, slippage={"model": "spread", "spread_bps": 8},
                                                   borrow_rate=0.0002), Costs.zero()], ids=["default", "fee_borrow", "zero"])
@pytest.mark.parametrize("fill_at", ["next_open", "close"])
@pytest.mark.parametrize("allow_short", [False, True])
def test_compiled_batched_step_equals_the_numpy_path(costs, fill_at, allow_short) -> None:
    """With numba installed the batched step runs sim.kernel; without it, numpy: the same numbers."""
    from sim.engine import Simulator
    from sim.kernel import step_kernel
    from sim.synthetic import generate_ohlcv

    if step_kernel is None:
        pytest.skip("numba is not installed (the numpy path is the only path)")
    prices = generate_ohlcv(300, phi=-0.2, seed=5)
    arrays = [prices[k] for k in ("open", "high", "low", "close", "volume")]
    compiled = Simulator(*arrays, costs, n_accounts=4, record_trades=True, fill_at=fill_at, allow_short=allow_short)
    numpy_path = Simulator(*arrays, costs, n_accounts=4, record_trades=True, fill_at=fill_at, allow_short=allow_short)
    numpy_path._kernel = None
    assert compiled._kernel is not None
    compiled.reset(np.array([0, 3, 7, 11]))
    numpy_path.reset(np.array([0, 3, 7, 11]))
    rng = np.random.default_rng(1)
    for _ in range(280):
        targets = np.round(rng.choice([-1.0, 0.0, 0.5, 0.9995, 1.0], 4), 4)
        a, b = compiled.step(targets), numpy_path.step(targets)
        for field in ("filled", "cost", "prev_equity", "equity", "fill_price"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
        for state in ("row", "cash", "units", "target", "peak", "entry_row", "entry_value", "n_orders", "costs_paid",
                      "traded_notional"):
            np.testing.assert_array_equal(getattr(compiled, state), getattr(numpy_path, state), err_msg=state)
    for account in range(4):
        for log in ("fill_log", "trade_log"):
            first, second = getattr(compiled, log)(account), getattr(numpy_path, log)(account)
            for key in first:
                np.testing.assert_array_equal(first[key], second[key], err_msg=f"{log}.{key}")
    assert compiled.n_orders.min() > 20


@pytest.mark.parametrize("settings", [
    {},
    {"allow_short": True, "action_mode": "continuous", "borrow_rate": 5e-4, "fixed_fee": 40.0, "slippage": 20.0},
    {"fill_at": "close", "min_rebalance": 0.1, "action_mode": "continuous", "episode_length": 40},
    {"symbol": "B", "split": "test", "random_start": False},  # the last symbol's test split: the dataset's last row
    {"min_equity": 0.98, "commission": 0.01},  # episodes end by termination
], ids=["default", "short_fee_borrow", "close_rebalance", "last_row", "terminates"])
def test_compiled_single_env_step_equals_the_python_path(data, settings, monkeypatch) -> None:
    """With numba the single env steps through envs.kernel; without it, through the simulator's Python step:
    the same observations, rewards, ends and info, bit for bit."""
    import envs.kernel

    if envs.kernel.env_step_kernel is None:
        pytest.skip("numba is not installed (the Python path is the only path)")
    compiled = TradingEnv(data, **settings)
    monkeypatch.setattr(envs.kernel, "env_step_kernel", None)
    plain = TradingEnv(data, **settings)
    assert compiled.core._env_kernel is not None and plain.core._env_kernel is None
    rng = np.random.default_rng(3)
    ends = set()
    for episode in range(6):
        obs_a, info_a = compiled.reset(seed=episode)
        obs_b, info_b = plain.reset(seed=episode)
        np.testing.assert_array_equal(obs_a, obs_b)
        assert info_a == info_b
        for _ in range(400):
            if compiled.action_space.shape:
                action = np.round(rng.uniform(-1, 1, size=1), 1).astype(np.float32)
            else:
                action = int(rng.integers(compiled.action_space.n))
            obs_a, reward_a, terminated_a, truncated_a, info_a = compiled.step(action)
            obs_b, reward_b, terminated_b, truncated_b, info_b = plain.step(action)
            np.testing.assert_array_equal(obs_a, obs_b)
            assert (reward_a, terminated_a, truncated_a) == (reward_b, terminated_b, truncated_b)
            assert type(reward_a) is float and info_a == info_b
            assert compiled.core.state_one == plain.core.state_one
            if terminated_a or truncated_a:
                ends.add("terminated" if terminated_a else "truncated")
                break
        assert (compiled.core.steps == plain.core.steps).all()
    for field in ("cash", "units", "target", "equity", "peak", "entry_row", "entry_value", "n_orders", "costs_paid",
                  "traded_notional"):
        np.testing.assert_array_equal(getattr(compiled.core.sim, field), getattr(plain.core.sim, field), err_msg=field)
    assert compiled.core.sim.n_orders[0] > 0
    if settings.get("min_equity"):
        assert "terminated" in ends
    if settings.get("split") == "test":
        assert "truncated" in ends and compiled.core.sim.row[0] == len(data.timestamps) - 1


@pytest.mark.parametrize("settings", [{}, {"allow_short": True, "action_mode": "continuous", "borrow_rate": 5e-4},
                                      {"slippage": {"model": "volume", "impact": 0.5}, "split": "test"}],
                         ids=["default", "short_borrow", "volume_test_split"])
def test_compiled_batched_observations_equal_the_numpy_path(data, settings, monkeypatch) -> None:
    """TradingVecEnv's observations (and the position state) through envs.kernel.observe_kernel equal numpy's,
    bit for bit, over steps, auto-resets and the dataset's last row."""
    import envs.kernel

    if envs.kernel.observe_kernel is None:
        pytest.skip("numba is not installed (the numpy path is the only path)")
    compiled = TradingVecEnv(6, data, seed=2, **settings)
    plain = TradingVecEnv(6, data, seed=2, **settings)
    np.testing.assert_array_equal(compiled.reset(), plain.reset())
    rng = np.random.default_rng(4)
    resets = last_rows = 0
    for _ in range(300):
        if settings.get("action_mode") == "continuous":
            actions = np.round(rng.uniform(-1, 1, size=(6, 1)), 1)
        else:
            actions = rng.integers(0, 2, size=6)
        obs_a, reward_a, done_a, infos_a = compiled.step(actions)
        with monkeypatch.context() as patch:
            patch.setattr(envs.kernel, "observe_kernel", None)
            obs_b, reward_b, done_b, infos_b = plain.step(actions)
            np.testing.assert_array_equal(plain.core.observations(np.array([4, 1])), obs_b[[4, 1]])
        np.testing.assert_array_equal(obs_a, obs_b)
        np.testing.assert_array_equal(reward_a, reward_b)
        np.testing.assert_array_equal(done_a, done_b)
        np.testing.assert_array_equal(compiled.core.state, plain.core.state)
        np.testing.assert_array_equal(compiled.core.observations(np.array([4, 1])), obs_a[[4, 1]])
        for info_a, info_b in zip(infos_a, infos_b):
            np.testing.assert_array_equal(info_a.get("terminal_observation"), info_b.get("terminal_observation"))
            last_rows += info_a.get("terminal_observation") is not None and bool(
                np.all(info_a["terminal_observation"][: compiled.core.layout.n_window_values]
                       == data.features[-compiled.core.window :].reshape(-1)))
        resets += int(done_a.sum())
    assert resets > 0
    if settings.get("split") == "test":
        assert last_rows > 0  # an episode ended on the dataset's last row
    assert (compiled.core.sim.n_orders > 0).all() or resets > 6


def test_prefilled_embedding_cache_serves_every_rollout_window_without_the_encoder(data) -> None:
    """TradingCore.window_observations covers every window an episode can observe: after EncoderExtractor.prefill
    a rollout (resets included) never runs the encoder, and its embeddings are the encoder's."""
    from agents.extractor import EncoderExtractor
    from supervised.models import ModelConfig, build_encoder

    torch.manual_seed(0)
    encoder = build_encoder(ModelConfig(kind="lstm", window=8, n_features=data.n_features, n_assets=2,
                                        hidden_size=8, dropout=0.0))
    vec = TradingVecEnv(4, data, seed=0, split="test")
    cached = EncoderExtractor(vec.observation_space, encoder, 8, data.n_features, freeze=True)
    plain = EncoderExtractor(vec.observation_space, encoder, 8, data.n_features, freeze=True, cache_embeddings=False)
    rows = int((vec.core.sym_end - vec.core.sym_start).sum())
    assert cached.prefill(vec.core.window_observations(batch=16)) == rows
    calls = []
    cached.encoder.register_forward_hook(lambda module, inputs, output: calls.append(len(output)))
    batches = [vec.reset()]
    for actions in np.random.default_rng(0).integers(0, 2, size=(200, 4)):
        obs, _, dones, infos = vec.step(actions)
        batches.append(obs)
        batches += [info["terminal_observation"][None] for info in infos if "terminal_observation" in info]
    observations = torch.as_tensor(np.concatenate(batches))
    torch.testing.assert_close(cached(observations), plain(observations), rtol=0, atol=1e-6)
    assert calls == [] and cached._stored == rows


@pytest.mark.parametrize("window,n_features", [(8, 5), (3, 3), (24, 31)], ids=["even", "odd", "default"])
def test_compiled_window_hashes_equal_the_torch_hashes(window, n_features) -> None:
    """The embedding cache's keys: numba's one-pass hash gives torch's numbers (odd windows padded with a zero),
    equal windows and asset ids get equal keys, and a one-bit change of a window or another asset id does not."""
    import gymnasium as gym

    from agents import extractor as extractor_module
    from agents.extractor import EncoderExtractor
    from supervised.models import ModelConfig, build_encoder

    if extractor_module.window_hashes_kernel is None:
        pytest.skip("numba is not installed")
    size = window * n_features + 5
    encoder = build_encoder(ModelConfig(kind="mlp", window=window, n_features=n_features, n_assets=4, dropout=0.0))
    space = gym.spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float32)
    cached = EncoderExtractor(space, encoder, window, n_features, freeze=True)
    generator = torch.Generator().manual_seed(0)
    observations = torch.randn(40, size, generator=generator)
    observations[:, -1] = torch.randint(0, 4, (40,), generator=generator).float()
    observations[1] = observations[0]
    observations[2] = observations[0]
    observations[2, window * n_features] += 1.0  # the position state is not part of the key
    observations[3] = observations[0]
    observations[3, -1] = (observations[0, -1] + 1) % 4  # another asset
    observations[4] = observations[0]
    observations[4, window * n_features - 1] = torch.nextafter(observations[0, window * n_features - 1],
                                                              torch.tensor(np.inf))  # one bit of the last value
    compiled, plain = cached._hashes(observations), cached._hashes_torch(observations)
    assert torch.equal(compiled[0], plain[0]) and torch.equal(compiled[1], plain[1])
    first = compiled[0].tolist()
    assert first[1] == first[0] and first[2] == first[0]
    assert first[3] != first[0] and first[4] != first[0]
    assert len(set(first[4:])) == len(first) - 4
