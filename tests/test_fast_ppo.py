"""FastPPO trains exactly as stable-baselines3's PPO: same weights, optimiser state, rollout buffer, logged
values and episode statistics, bit for bit, from the same arguments and seed. The default agent, a frozen
pretrained encoder (precomputed features), a fine-tuned encoder (features per minibatch), unshared
extractors, value clipping with KL early stopping, a callback that stops training, and the settings that
fall back to SB3's own loop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

import agents.training as training
from agents.config import AgentConfig
from agents.fast_ppo import FastPPO
from features import DatasetConfig, build_market_data, synthetic_bars

# small rollouts on purpose: the last minibatch of an epoch is smaller than the others
pytestmark = pytest.mark.filterwarnings("ignore:You have specified a mini-batch size")

BUFFER_FIELDS = ("observations", "actions", "rewards", "episode_starts", "values", "log_probs", "advantages",
                 "returns")


@pytest.fixture(scope="module")
def data():
    bars = {"A": synthetic_bars(420, phi=-0.2, seed=0), "B": synthetic_bars(400, seed=1, start_price=30.0)}
    return build_market_data(bars, DatasetConfig(window=8))


class Recorder(BaseCallback):
    """The logger's values at the end of every rollout (the previous update's, before SB3 dumps them) and
    the number of steps at which to stop training, if any."""

    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__()
        self.logged: list[dict] = []
        self.stop_at = stop_at

    def _on_rollout_end(self) -> None:
        self.logged.append(dict(self.model.logger.name_to_value))

    def _on_step(self) -> bool:
        return self.stop_at is None or self.num_timesteps < self.stop_at


def small_config(**changes) -> AgentConfig:
    """Four envs, rollouts of 32 steps, episodes of 20 (so rollouts cross time limits), minibatches of 48
    (the last one of an epoch is smaller)."""
    config = AgentConfig(n_envs=4, seed=3)
    env = dataclasses.replace(config.env, episode_length=20)
    ppo = dataclasses.replace(config.ppo, n_steps=32, batch_size=48, n_epochs=3)
    return dataclasses.replace(config, env=env, ppo=ppo, **changes)


def train_both(config: AgentConfig, data, tmp_path, monkeypatch, steps: int = 3 * 128, stop_at: int | None = None):
    """The same config trained by SB3's PPO and by FastPPO, each built as agents.training builds agents."""
    models, records = [], []
    for name, algorithm in (("sb3", PPO), ("fast", FastPPO)):
        monkeypatch.setattr(training, "FastPPO", algorithm)
        setup = training.prepare_training(config, data, tmp_path / name)
        assert type(setup.model) is algorithm
        recorder = Recorder(stop_at)
        setup.model.learn(steps, callback=recorder)
        models.append(setup.model)
        records.append(recorder.logged)
    monkeypatch.undo()
    return models, records


def assert_same_training(reference: PPO, fast: PPO, records: list | None = None) -> None:
    assert fast.num_timesteps == reference.num_timesteps
    ref_state, fast_state = reference.policy.state_dict(), fast.policy.state_dict()
    assert ref_state.keys() == fast_state.keys()
    for key in ref_state:
        assert torch.equal(ref_state[key], fast_state[key]), key
    ref_optim, fast_optim = reference.policy.optimizer.state_dict(), fast.policy.optimizer.state_dict()
    for index, state in ref_optim["state"].items():
        for key, value in state.items():
            assert torch.equal(value, fast_optim["state"][index][key]), (index, key)
    for field in BUFFER_FIELDS:
        np.testing.assert_array_equal(getattr(fast.rollout_buffer, field), getattr(reference.rollout_buffer, field),
                                      err_msg=field)
    episodes = lambda model: [(e["r"], e["l"]) for e in model.ep_info_buffer]  # noqa: E731 ("t" is wall time)
    assert episodes(fast) == episodes(reference)
    np.testing.assert_array_equal(fast._last_obs, reference._last_obs)
    if records is not None:
        assert len(records[0]) > 1 and any("train/loss" in logged for logged in records[0])
        assert records[1] == records[0]


@pytest.mark.parametrize("case", ["default", "continuous"])
def test_fast_ppo_trains_the_default_agent_bit_for_bit_as_sb3(case, data, tmp_path, monkeypatch) -> None:
    config = small_config()
    if case == "continuous":  # a Gaussian policy: FastPPO runs SB3's own loop
        config = dataclasses.replace(config, env=dataclasses.replace(config.env, action_mode="continuous"))
    (reference, fast), records = train_both(config, data, tmp_path, monkeypatch)
    assert fast._lean_ok() is (case == "default")
    assert len(reference.ep_info_buffer) >= 8  # episodes ended inside rollouts (time limits bootstrapped)
    assert_same_training(reference, fast, records)


def test_fast_ppo_with_a_frozen_pretrained_encoder_equals_sb3(data, tmp_path, monkeypatch) -> None:
    """Frozen and cached: the update computes the rollout's features once (the cache's embeddings)."""
    from features.preprocessing import Preprocessing
    from supervised.bundle import save_bundle
    from supervised.models import ModelConfig, build_model

    torch.manual_seed(0)
    model_config = ModelConfig(kind="lstm", window=data.window, n_features=data.n_features, n_assets=data.n_assets,
                               hidden_size=8, dropout=0.0)
    bundle = tmp_path / "lstm"
    save_bundle(bundle, build_model(model_config), model_config, preprocessing=Preprocessing.of(data),
                label=data.label, threshold=0.5, dataset_hashes={})
    config = small_config(pretrained=str(bundle), freeze_encoder=True)
    (reference, fast), records = train_both(config, data, tmp_path, monkeypatch)
    extractor = fast.policy.features_extractor
    assert fast._lean_ok() and extractor.cache_embeddings and extractor._stored > 0
    assert_same_training(reference, fast, records)


def test_fast_ppo_with_a_trained_encoder_equals_sb3(data, tmp_path, monkeypatch) -> None:
    """A fresh LSTM trained with the policy: features are extracted per minibatch, as SB3 does."""
    config = small_config(extractor="lstm")
    (reference, fast), records = train_both(config, data, tmp_path, monkeypatch, steps=2 * 128)
    assert fast._lean_ok() and any(p.requires_grad for p in fast.policy.features_extractor.parameters())
    assert_same_training(reference, fast, records)


def test_fast_ppo_stops_where_a_callback_stops_it(data, tmp_path, monkeypatch) -> None:
    (reference, fast), _ = train_both(small_config(), data, tmp_path, monkeypatch, stop_at=128 + 40)
    assert fast.num_timesteps == 128 + 40
    assert_same_training(reference, fast)


@pytest.mark.parametrize("options", [
    {"policy_kwargs": {"share_features_extractor": False, "net_arch": [16, 16]}},
    {"clip_range_vf": 0.05, "target_kl": 1e-4, "normalize_advantage": False, "learning_rate": 3e-3,
     "policy_kwargs": {"net_arch": [16]}},
    {"learning_rate": 0.01, "clip_range": 0.05, "n_epochs": 8, "ent_coef": 0.1},
], ids=["unshared_extractors", "value_clipping_kl_stop", "ratios_clipped"])
def test_fast_ppo_options_equal_sb3(options, data) -> None:
    from envs import TradingVecEnv

    models, records = [], []
    for algorithm in (PPO, FastPPO):
        env = TradingVecEnv(4, data, seed=1, episode_length=20)
        settings = {"n_steps": 32, "batch_size": 32, "n_epochs": 4, "seed": 5, "device": "cpu", **options}
        model = algorithm("MlpPolicy", env, **settings)
        recorder = Recorder()
        model.learn(3 * 128, callback=recorder)
        models.append(model)
        records.append(recorder.logged)
    assert models[1]._lean_ok()
    if "target_kl" in options:  # the early stop was taken
        assert models[0]._n_updates < 3 * 4
    if "clip_range" in options:  # the clipped surrogate was active
        assert max(logged.get("train/clip_fraction", 0.0) for logged in records[0]) > 0.05
    assert_same_training(*models, records)


def test_saved_fast_ppo_loads_as_sb3_ppo(data, tmp_path) -> None:
    from envs import TradingVecEnv

    env = TradingVecEnv(2, data, seed=0)
    model = FastPPO("MlpPolicy", env, n_steps=16, batch_size=32, seed=0, device="cpu")
    model.learn(32)
    model.save(tmp_path / "agent")
    loaded = PPO.load(tmp_path / "agent", device="cpu")
    observations = env.reset()
    np.testing.assert_array_equal(loaded.predict(observations, deterministic=True)[0],
                                  model.predict(observations, deterministic=True)[0])


def test_a_policy_that_overrides_what_the_lean_paths_replace_runs_sb3s_code(data) -> None:
    from stable_baselines3.common.policies import ActorCriticPolicy

    from envs import TradingVecEnv

    calls = []

    class CountingPolicy(ActorCriticPolicy):
        def evaluate_actions(self, obs, actions):
            calls.append(len(obs))
            return super().evaluate_actions(obs, actions)

    model = FastPPO(CountingPolicy, TradingVecEnv(2, data, seed=0), n_steps=16, batch_size=16, n_epochs=1, seed=0,
                    device="cpu")
    assert not model._lean_ok()
    model.learn(32)
    assert calls == [16, 16]
