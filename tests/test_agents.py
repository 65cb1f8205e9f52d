"""Agents: pretrained encoders as SB3 extractors, start-as-classifier, save/load as a policy, clear errors."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from agents.behaviour_cloning import collect_demonstrations
from agents.config import AgentConfig
from agents.extractor import EncoderExtractor
from agents.policy_loader import load_policy
from agents.saved_agent import load_agent
from agents.supervised_policy import SupervisedThresholdPolicy
from agents.training import build_model, make_train_env, train_agent
from envs.backtest import backtest
from features import DatasetConfig, LabelConfig, build_market_data, synthetic_bars
from features.preprocessing import Preprocessing
from supervised.bundle import load_model, save_bundle
from supervised.models import ModelConfig
from supervised.trainer import TrainConfig, train_classifier


def _data(seed_offset: int = 0):
    bars = {"SYN": synthetic_bars(700, phi=-0.2, seed=0 + seed_offset),
            "SYN2": synthetic_bars(700, phi=-0.2, seed=1 + seed_offset)}
    return build_market_data(bars, DatasetConfig(window=8, labels=LabelConfig(profit=0.02, stop=0.02, horizon=4)))


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, data):
    torch.manual_seed(0)
    result = train_classifier(data, ModelConfig(kind="lstm", hidden_size=16, dropout=0.0),
                              TrainConfig(epochs=2, batch_size=128, num_threads=1), progress=False)
    path = tmp_path_factory.mktemp("sup") / "model"
    save_bundle(path, result.classifier, result.model_config, preprocessing=Preprocessing.of(data),
                label=data.label, threshold=0.3, dataset_hashes=data.hashes)
    return path


def _config(**overrides) -> AgentConfig:
    base = {"total_timesteps": 512, "n_envs": 4, "eval_freq": 512, "ppo": {"n_steps": 64, "batch_size": 128},
            "env": {"episode_length": 64}}
    base.update(overrides)
    return AgentConfig.from_dict(base)


@pytest.mark.parametrize("kind", ["mlp", "lstm", "gru", "cnn_lstm"])
def test_fresh_encoder_extractor_trains_end_to_end(tmp_path, data, kind):
    summary = train_agent(_config(extractor=kind), data, tmp_path / kind, progress=False)
    assert summary["timesteps"] >= 512
    assert (tmp_path / kind / "best" / "agent.json").exists()
    assert list((tmp_path / kind / "tb").rglob("events.out.tfevents*"))


def test_frozen_pretrained_encoder_is_not_changed_by_rl(data, bundle):
    config = _config(pretrained=str(bundle), freeze_encoder=True)
    env = make_train_env(config, data)
    model = build_model(config, env, data, None)
    extractor = model.policy.features_extractor
    assert isinstance(extractor, EncoderExtractor)
    before = {k: v.clone() for k, v in extractor.encoder.state_dict().items()}
    reference = load_model(bundle).encoder.state_dict()
    for key, value in before.items():
        torch.testing.assert_close(value, reference[key])
    model.learn(512)
    for key, value in extractor.encoder.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_fine_tuned_pretrained_encoder_changes(data, bundle):
    config = _config(pretrained=str(bundle), freeze_encoder=False)
    model = build_model(config, make_train_env(config, data), data, None)
    before = [p.clone() for p in model.policy.features_extractor.encoder.parameters()]
    model.learn(512)
    after = list(model.policy.features_extractor.encoder.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_init_from_classifier_starts_as_the_threshold_policy(data, bundle, algo):
    config = _config(algo=algo, pretrained=str(bundle), init_from_classifier=True, bc_steps=600,
                     dqn={"learning_starts": 100, "buffer_size": 1000})
    from agents.behaviour_cloning import clone_supervised_policy

    model = build_model(config, make_train_env(config, data), data, None)
    agreement = clone_supervised_policy(model, config, data)
    assert agreement >= 0.9
    # on the teacher's own trajectory the agent picks the same actions
    teacher = SupervisedThresholdPolicy(load_model(bundle))
    observations, actions = collect_demonstrations(teacher, data, {}, 600)
    predicted, _ = model.predict(observations, deterministic=True)
    assert np.mean(predicted == actions) >= 0.9
    assert 0 < actions.mean() < 1  # the teacher does trade, so agreement is not all-flat


def test_saved_agent_reloads_to_identical_actions_and_backtests(tmp_path, data):
    train_agent(_config(min_tstat=-1e9, min_improvement=-1e9), data, tmp_path / "run", progress=False)
    agent = load_agent(tmp_path / "run" / "best", data)
    assert agent.fallback is None
    again = load_policy(str(tmp_path / "run" / "best"), data)
    first = backtest(agent, data, "test", symbol="SYN", **agent.env_settings)
    second = backtest(again, data, "test", symbol="SYN", **again.env_settings)
    np.testing.assert_array_equal(first.equity, second.equity)
    meta = json.loads((tmp_path / "run" / "best" / "agent.json").read_text())
    assert meta["preprocessing"]["feature_names"] == data.feature_names


def test_cash_fallback_when_nothing_beats_cash(tmp_path, data):
    summary = train_agent(_config(min_tstat=1e9), data, tmp_path / "run", progress=False)
    assert summary["fallback"] == "cash"
    agent = load_agent(tmp_path / "run" / "best", data)
    result = backtest(agent, data, "test", symbol="SYN", **agent.env_settings)
    assert len(result.fills["row"]) == 0 and result.equity[-1] == result.equity[0]


def test_mismatched_checkpoint_and_bad_options_are_named(tmp_path, data, bundle):
    train_agent(_config(), data, tmp_path / "run", progress=False)
    other = build_market_data({"SYN": synthetic_bars(700, seed=3)},
                              DatasetConfig(window=8, features={"sma_windows": [5, 10, 20]}))
    unknown = build_market_data({"NEW": synthetic_bars(700, seed=3)}, DatasetConfig(window=8))
    with pytest.raises(ValueError, match="symbol 'NEW' was not in this model's training data"):
        load_agent(tmp_path / "run" / "best", unknown)
    with pytest.raises(ValueError, match="feature|window"):
        config = _config(pretrained=str(bundle))
        build_model(config, make_train_env(config, other), other, None)
    with pytest.raises(ValueError, match="unknown key"):
        AgentConfig.from_dict({"ppo": {"n_stepz": 3}})
    with pytest.raises(ValueError, match="algo"):
        AgentConfig.from_dict({"algo": "a2c"})
    with pytest.raises(ValueError, match="continuous"):
        AgentConfig.from_dict({"algo": "dqn", "env": {"action_mode": "continuous"}})
    with pytest.raises(FileNotFoundError, match="agent.json"):
        load_agent(tmp_path / "nothing", data)
    with pytest.raises(FileNotFoundError, match="neither a baseline"):
        load_policy("no_such_policy", data)


def test_train_ppo_entry_point_writes_a_run(tmp_path, data):
    from experiments import train_ppo

    data.save(tmp_path / "ds")
    summary = train_ppo.main(["--dataset", str(tmp_path / "ds"), "--timesteps", "512", "--n-envs", "4",
                              "--eval-freq", "256", "--runs-dir", str(tmp_path), "--run-name", "r", "--no-progress",
                              "--seed", "3"])
    assert summary["timesteps"] >= 512
    assert (tmp_path / "r" / "summary.json").exists()
    assert (tmp_path / "r" / "best" / "agent.zip").exists()


@pytest.mark.parametrize("action_mode,policy_kwargs", [
    ("discrete", None), ("continuous", None),
    ("continuous", {"net_arch": [32, 16, 8], "activation_fn": torch.nn.ReLU}),
    ("continuous", {"net_arch": {"pi": [24], "vf": [8]}, "activation_fn": torch.nn.LeakyReLU}),
])
def test_the_agents_fast_predict_gives_sb3s_deterministic_actions_bit_for_bit(action_mode, policy_kwargs):
    """AgentPolicy's own predict path (no mode switch; the Gaussian mean taken from the action net, as the torch
    functions its Linear/Tanh/ReLU modules call; other activations through the modules) equals
    ``model.predict(deterministic=True)`` on single observations and on a batch, also after new weights are
    loaded and after a layer is replaced."""
    import gymnasium as gym
    from stable_baselines3 import PPO

    from agents.saved_agent import AgentPolicy

    class Box(gym.Env):
        observation_space = gym.spaces.Box(-5.0, 5.0, (12,), np.float32)
        action_space = (gym.spaces.Box(-1.0, 1.0, (1,), np.float32) if action_mode == "continuous"
                        else gym.spaces.Discrete(2))

    model = PPO("MlpPolicy", Box(), seed=0, device="cpu", policy_kwargs=policy_kwargs)
    model.policy.set_training_mode(False)
    agent = AgentPolicy(model, {"action_mode": action_mode})
    observations = np.random.default_rng(0).normal(0.0, 2.0, (300, 12)).astype(np.float32)

    def check() -> None:
        expected = model.predict(observations, deterministic=True)[0]
        np.testing.assert_array_equal(agent._predict(observations), expected)
        for row, want in zip(observations[:50], expected[:50]):
            np.testing.assert_array_equal(agent._predict(row), model.predict(row, deterministic=True)[0])
            assert np.asarray(agent._predict(row)).shape == np.asarray(want).shape

    check()
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in model.policy.state_dict().items()}
    model.policy.load_state_dict(state)  # in place: the same parameter tensors, new values
    check()
    old = model.policy.action_net
    model.policy.action_net = torch.nn.Linear(old.in_features, old.out_features)  # a new layer, new tensors
    model.policy.action_net.eval()
    check()
    first = model.policy.mlp_extractor.policy_net[0]
    first.weight = torch.nn.Parameter(first.weight.detach() * 1.5)  # a parameter replaced, not written in place
    check()
    twin = copy.deepcopy(agent)  # as the backtester copies a policy per account: it acts as the original
    np.testing.assert_array_equal(twin._predict(observations), agent._predict(observations))
    assert twin._fast is None or twin._fast.policy is twin.model.policy
