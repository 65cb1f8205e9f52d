"""TradingVecEnv: the batched env agrees with TradingEnv, resets itself SB3-style and works with SB3."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecMonitor

from envs import TradingEnv, TradingVecEnv
from features import DatasetConfig, build_market_data, synthetic_bars


@pytest.fixture(scope="module")
def market():
    bars = {"SYN": synthetic_bars(400, seed=0), "ALT": synthetic_bars(400, seed=1, start_price=50.0)}
    return build_market_data(bars, DatasetConfig(window=8))


@pytest.mark.parametrize(
    "settings",
    [
        {"reward": "log_return"},
        {"reward": "differential_sharpe", "action_mode": "continuous", "allow_short": True, "borrow_rate": 1e-4},
        {"reward": "drawdown_penalty", "allow_short": True, "fill_at": "close"},
    ],
)
def test_one_env_reproduces_trading_env(market, settings) -> None:
    """Same seed, same actions: same starts, observations, rewards and auto-resets, over 3 episodes."""
    vec = TradingVecEnv(1, data=market, seed=11, episode_length=40, **settings)
    env = TradingEnv(market, episode_length=40, **settings)
    vec_obs = vec.reset()
    obs, _ = env.reset(seed=11)
    np.testing.assert_array_equal(vec_obs[0], obs)
    env.action_space.seed(0)
    episodes = 0
    while episodes < 3:
        action = env.action_space.sample()
        obs, reward, terminated, truncated, info = env.step(action)
        vec_obs, vec_reward, vec_done, vec_infos = vec.step(np.array([action]))
        assert vec_reward.dtype == np.float32 and vec_reward[0] == np.float32(reward)
        assert vec_done[0] == (terminated or truncated)
        if vec_done[0]:
            episodes += 1
            final = vec_infos[0]
            np.testing.assert_array_equal(final["terminal_observation"], obs)
            assert final["TimeLimit.truncated"] == truncated
            assert final["equity"] == info["equity"] and final["trade_count"] == info["trade_count"]
            obs, _ = env.reset()  # the unseeded reset continues the same random stream
        np.testing.assert_array_equal(vec_obs[0], obs)


def test_summed_rewards_are_log_equity_growth(market) -> None:
    vec = TradingVecEnv(16, data=market, seed=3, action_mode="continuous", allow_short=True, borrow_rate=1e-4,
                        fixed_fee=1.0, episode_length=60)
    vec.reset()
    rng = np.random.default_rng(0)
    summed = np.zeros(16)
    finished = 0
    for _ in range(130):
        actions = rng.uniform(-1, 1, size=(16, 1)).astype(np.float32)
        _, rewards, dones, infos = vec.step(actions)
        summed += rewards
        for i in np.flatnonzero(dones):
            growth = np.log(infos[i]["equity"] / 100_000.0)
            assert infos[i]["episode_log_return"] == pytest.approx(growth, rel=1e-9, abs=1e-12)
            assert summed[i] == pytest.approx(growth, rel=1e-4, abs=1e-5)  # float32 rewards
            summed[i] = 0.0
            finished += 1
    assert finished == 32
    # still-running accounts: the summed log returns so far are the log growth of their equity
    np.testing.assert_allclose(vec.episode_returns, np.log(vec.core.sim.equity / 100_000.0), rtol=1e-9, atol=1e-12)


def test_auto_reset_gives_terminal_observation(market) -> None:
    vec = TradingVecEnv(4, data=market, seed=0, episode_length=5)
    vec.reset()
    for step in range(5):
        obs, _, dones, infos = vec.step(np.ones(4, dtype=np.int64))
        assert dones.all() == (step == 4)
    layout = vec.layout
    for i in range(4):
        final = infos[i]["terminal_observation"]
        assert final.shape == obs[i].shape and infos[i]["TimeLimit.truncated"] is True
        assert layout.state(final)[0] > 0.9  # long at the end of the episode
        np.testing.assert_array_equal(layout.state(obs[i]), [0.0, 0.0, 0.0, 1.0])  # flat, fresh episode
        assert infos[i]["trade_count"] == 1
    assert (vec.core.steps == 0).all()


def test_min_equity_terminates_without_truncation_flag(market) -> None:
    vec = TradingVecEnv(2, data=market, seed=0, min_equity=0.99, commission=0.005)
    vec.reset()
    for k in range(200):
        _, _, dones, infos = vec.step(np.full(2, k % 2))
        if dones.any():
            i = int(np.flatnonzero(dones)[0])
            assert infos[i]["TimeLimit.truncated"] is False and infos[i]["equity"] <= 99_000.0
            break
    else:
        pytest.fail("equity never reached min_equity")


def test_seed_makes_rollouts_repeat(market) -> None:
    def rollout(vec: TradingVecEnv) -> list[np.ndarray]:
        out = [vec.reset()]
        for k in range(50):
            out.append(vec.step(np.arange(8) % 2 if k % 3 else np.zeros(8, np.int64))[0])
        return out

    a = TradingVecEnv(8, data=market, episode_length=20)
    b = TradingVecEnv(8, data=market, seed=5, episode_length=20)
    a.seed(5)
    for x, y in zip(rollout(a), rollout(b)):
        np.testing.assert_array_equal(x, y)


def test_works_with_vec_monitor_and_ppo(market) -> None:
    vec = VecMonitor(TradingVecEnv(4, data=market, seed=0, episode_length=16))
    vec.reset()
    episodes = []
    for k in range(40):
        _, _, dones, infos = vec.step(np.full(4, k % 2))
        episodes += [info for info in infos if "episode" in info]
    assert len(episodes) == 8
    for info in episodes:
        assert info["episode"]["l"] == 16
        assert info["episode"]["r"] == pytest.approx(info["episode_log_return"], rel=1e-4, abs=1e-5)
    model = PPO("MlpPolicy", vec, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=128)
    action, _ = model.predict(vec.reset(), deterministic=True)
    assert action.shape == (4,)


def test_construction_is_quiet(market) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vec = TradingVecEnv(2, data=market, seed=0)
    assert vec.render_mode is None and vec.get_attr("render_mode") == [None, None]


def test_bad_input(market) -> None:
    with pytest.raises(ValueError, match="n_envs=0"):
        TradingVecEnv(0, data=market)
    with pytest.raises(TypeError, match="comission"):
        TradingVecEnv(2, data=market, comission=0.001)
    with pytest.raises(ValueError, match="reward='sharpe'"):
        TradingVecEnv(2, data=market, reward="sharpe")
    vec = TradingVecEnv(2, data=market, seed=0)
    vec.reset()
    with pytest.raises(ValueError, match=r"action=array\(\[0, 2\]\) is not valid .* 0 \(flat\), 1 \(long\)"):
        vec.step(np.array([0, 2]))
    continuous = TradingVecEnv(2, data=market, seed=0, action_mode="continuous")
    continuous.reset()
    with pytest.raises(ValueError, match="finite"):
        continuous.step(np.array([[0.5], [np.nan]]))
