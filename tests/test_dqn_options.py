"""DQN options (double DQN, n-step returns, soft target updates) and the training reward scale."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBufferSamples

from agents.dqn import DoubleDQN
from agents.saved_agent import load_agent
from agents.training import ScaledReward, build_model, make_train_env, train_agent
from envs.backtest import backtest

from dqn_helpers import dqn_config, planted_market


@pytest.fixture(scope="module")
def data():
    return planted_market()



def test_scaled_reward_scales_what_the_learner_sees_but_not_the_logged_episodes(data):
    plain = make_train_env(dqn_config(reward_scale=1.0), data)
    scaled = make_train_env(dqn_config(), data)  # the default scale, 100
    assert not isinstance(plain, ScaledReward) and isinstance(scaled, ScaledReward)
    plain.reset(), scaled.reset()
    actions = np.random.default_rng(0).integers(0, 2, size=(80, 4))
    episodes_plain, episodes_scaled = [], []
    for row in actions:
        _, reward_plain, _, info_plain = plain.step(row)
        _, reward_scaled, _, info_scaled = scaled.step(row)
        np.testing.assert_allclose(reward_scaled, 100.0 * reward_plain, rtol=1e-12)
        episodes_plain += [i["episode"]["r"] for i in info_plain if "episode" in i]
        episodes_scaled += [i["episode"]["r"] for i in info_scaled if "episode" in i]
    assert episodes_plain and episodes_scaled == episodes_plain  # VecMonitor logs log returns, unscaled


def test_double_dqn_values_the_online_networks_choice_with_the_target_network(data):
    model = build_model(dqn_config(dqn={"double_q": True, "gamma": 0.9, "n_steps": 1}),
                        make_train_env(dqn_config(), data), data, None)
    assert isinstance(model, DoubleDQN)
    model.learn(300)  # fills the buffer and sets up the logger
    torch.manual_seed(1)
    with torch.no_grad():  # make the two networks disagree
        for p in model.q_net_target.parameters():
            p.add_(torch.randn_like(p))
    batch = model.replay_buffer.sample(64)
    batch = ReplayBufferSamples(batch.observations, batch.actions, batch.next_observations, batch.dones,
                                batch.rewards, None)
    model.replay_buffer.sample = lambda *a, **k: batch
    model.policy.optimizer.step = lambda *a, **k: None  # keep the weights: the loss is what is checked
    with torch.no_grad():
        online_next = model.q_net(batch.next_observations)
        target_next = model.q_net_target(batch.next_observations)
        current = torch.gather(model.q_net(batch.observations), 1, batch.actions.long())
        double = torch.gather(target_next, 1, online_next.argmax(1, keepdim=True))
        plain = target_next.max(1, keepdim=True).values
        expected = {
            name: float(torch.nn.functional.smooth_l1_loss(current, batch.rewards + (1 - batch.dones) * 0.9 * nxt))
            for name, nxt in (("double", double), ("plain", plain))
        }
    assert abs(expected["double"] - expected["plain"]) > 1e-6
    model.train(gradient_steps=1, batch_size=64)
    assert model.logger.name_to_value["train/loss"] == pytest.approx(expected["double"], rel=1e-6)


@pytest.mark.parametrize("dqn", [{"double_q": True}, {"n_steps": 3}, {"tau": 0.05, "target_update_interval": 4}],
                         ids=["double", "n-step", "soft-target"])
def test_dqn_options_train_save_and_reload(tmp_path, data, dqn):
    config = dqn_config(reward_scale=100.0, dqn=dqn)
    summary = train_agent(config, data, tmp_path / "run", progress=False)
    assert summary["fallback"] is None and 0.0 <= summary["eval_share"] < 1.0
    agent = load_agent(tmp_path / "run" / "best", data)
    assert isinstance(agent.model, DQN)
    meta = json.loads((tmp_path / "run" / "best" / "agent.json").read_text())
    assert meta["config"]["reward_scale"] == 100.0 and all(meta["config"]["dqn"][k] == v for k, v in dqn.items())
    first = backtest(agent, data, "test", **agent.env_settings)
    again = backtest(load_agent(tmp_path / "run" / "best", data), data, "test", **agent.env_settings)
    np.testing.assert_array_equal(first.equity, again.equity)


@pytest.mark.parametrize("overrides, message", [
    ({"reward_scale": 0.0}, "reward_scale=0.0"),
    ({"reward_scale": float("inf")}, "reward_scale=inf"),
    ({"dqn": {"n_steps": 0}}, "dqn.n_steps=0"),
    ({"dqn": {"tau": 1.5}}, "dqn.tau=1.5"),
])
def test_bad_dqn_options_are_named(overrides, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        dqn_config(**overrides)
