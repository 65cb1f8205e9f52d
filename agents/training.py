"""Train a PPO or DQN agent on TradingEnv's train split, choosing the checkpoint on validation."""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sb3_contrib import QRDQN
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.callbacks import CallbackList, ProgressBarCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor

from envs.vec_env import TradingVecEnv
from features.market_data import MarketData

from .callbacks import CheckpointRule, TradingEvalCallback
from .config import AgentConfig
from .dqn import DoubleDQN
from .extractor import EncoderExtractor
from .fast_ppo import FastPPO
from .saved_agent import agent_env_settings, save_agent


class ScaledReward(VecEnvWrapper):
    """Multiplies rewards by ``scale`` (the learner's view only: it sits outside ``VecMonitor``, so the
    logged episode returns stay log returns)."""

    def __init__(self, venv: VecEnv, scale: float) -> None:
        super().__init__(venv)
        self.scale = float(scale)

    def reset(self) -> Any:
        return self.venv.reset()

    def step_wait(self) -> Any:
        observations, rewards, dones, infos = self.venv.step_wait()
        return observations, rewards * self.scale, dones, infos


def make_train_env(config: AgentConfig, data: MarketData) -> VecEnv:
    """The batched training env (split forced to train), with episode statistics for SB3's logger and
    rewards scaled by ``config.reward_scale``."""
    settings = dataclasses.asdict(config.env)
    settings["split"] = "train"
    env = VecMonitor(TradingVecEnv(config.n_envs, data, seed=config.seed, **settings))
    return env if config.reward_scale == 1.0 else ScaledReward(env, config.reward_scale)


def policy_kwargs(config: AgentConfig, data: MarketData) -> dict[str, Any]:
    """Network architecture: SB3's flat MLP, or a supervised encoder (pretrained or fresh) as extractor."""
    arch = list(config.net_arch)
    kwargs: dict[str, Any] = {"net_arch": arch if config.algo == "dqn" else {"pi": arch, "vf": arch}}
    window = config.env.window or data.window
    if config.pretrained:
        from supervised.bundle import load_model

        loaded = load_model(config.pretrained)
        loaded.check_compatible(data.feature_names, window)
        encoder = loaded.encoder
        freeze = config.freeze_encoder
    elif config.extractor != "flat":
        from supervised.models import ModelConfig, build_encoder

        torch.manual_seed(config.seed)
        model_config = ModelConfig(kind=config.extractor, window=window, n_features=data.n_features,
                                   n_assets=data.n_assets, dropout=0.0)
        encoder = build_encoder(model_config)
        freeze = False
    else:
        return kwargs
    kwargs["features_extractor_class"] = EncoderExtractor
    kwargs["features_extractor_kwargs"] = {"encoder": encoder, "window": window, "n_features": data.n_features,
                                           "freeze": freeze}
    if config.algo == "ppo":
        kwargs["share_features_extractor"] = True
    return kwargs


def build_model(config: AgentConfig, env: Any, data: MarketData, tensorboard_log: str | None, *,
                ppo_class: type[PPO] | None = None) -> PPO | DQN | QRDQN:
    """A fresh SB3 model for ``config`` on ``env``; PPO agents are ``ppo_class``, by default :class:`FastPPO`
    (it trains as SB3's ``PPO``, bit for bit, in less time; ``benchmarks/bench_ppo.py`` times both); DQN agents
    are SB3's ``DQN``, :class:`DoubleDQN` (``dqn.double_q``) or sb3-contrib's ``QRDQN`` (``dqn.n_quantiles`` > 0)."""
    kwargs = policy_kwargs(config, data)
    encoder = kwargs.get("features_extractor_kwargs", {}).get("encoder")
    # SB3 re-initialises every module of the policy (orthogonal init), the extractor included:
    # keep the pretrained weights and put them back once the policy is built.
    pretrained_state = copy.deepcopy(encoder.state_dict()) if config.pretrained and encoder is not None else None
    common = dict(policy_kwargs=kwargs, seed=config.seed, device="cpu", tensorboard_log=tensorboard_log, verbose=0)
    if config.algo == "ppo":
        s = config.ppo
        n_steps = s.n_steps
        batch = min(s.batch_size, n_steps * config.n_envs)
        ppo_algorithm = ppo_class or FastPPO
        model = ppo_algorithm("MlpPolicy", env, learning_rate=s.learning_rate, n_steps=n_steps, batch_size=batch,
                              n_epochs=s.n_epochs, gamma=s.gamma, gae_lambda=s.gae_lambda, clip_range=s.clip_range,
                              ent_coef=s.ent_coef, vf_coef=s.vf_coef, max_grad_norm=s.max_grad_norm, **common)
    else:
        s = config.dqn
        algorithm: type[DQN] | type[QRDQN] = DoubleDQN if s.double_q else DQN
        extra: dict[str, Any] = {}
        if s.n_quantiles:  # QRDQN does not clip gradients unless told; DQN clips at norm 10: the same here
            algorithm, extra = QRDQN, {"max_grad_norm": 10.0}
            kwargs["n_quantiles"] = s.n_quantiles
        model = algorithm("MlpPolicy", env, learning_rate=s.learning_rate, buffer_size=s.buffer_size,
                          learning_starts=s.learning_starts, batch_size=s.batch_size, gamma=s.gamma,
                          train_freq=s.train_freq, gradient_steps=s.gradient_steps, n_steps=s.n_steps, tau=s.tau,
                          target_update_interval=s.target_update_interval,
                          exploration_fraction=s.exploration_fraction,
                          exploration_final_eps=s.exploration_final_eps, **extra, **common)
    if pretrained_state is not None:
        for module in model.policy.modules():
            if isinstance(module, EncoderExtractor):
                module.encoder.load_state_dict(pretrained_state)
    quiet_logger(model, tensorboard_log)
    _prefill_embeddings(model, env, config.total_timesteps)
    return model


def quiet_logger(model: Any, tensorboard_log: str | None) -> None:
    """Without TensorBoard, give ``model`` a logger with no outputs: SB3's default makes a new ``SB3-<time>``
    folder in the system temp folder on every ``learn`` (one per benchmark job and test), never removed."""
    if tensorboard_log is None:
        from stable_baselines3.common.logger import Logger

        model.set_logger(Logger(folder=None, output_formats=[]))


def _prefill_embeddings(model: PPO | DQN, env: Any, total_timesteps: int) -> None:
    """Fill a frozen encoder's embedding cache with every window of the training split before training, in
    batched forward passes: the rollouts then never wait on the encoder. Skipped when the split has more
    rows than training takes steps (most would never be seen) or the env is not a ``TradingVecEnv``."""
    extractors = [m for m in model.policy.modules() if isinstance(m, EncoderExtractor) and m.cache_embeddings]
    core = getattr(getattr(env, "unwrapped", env), "core", None)
    if not extractors or core is None:
        return
    if int((core.sym_end - core.sym_start).sum()) > total_timesteps:
        return
    for extractor in extractors:
        extractor.prefill(core.window_observations())


@dataclass
class TrainingSetup:
    """What a training run starts from (:func:`prepare_training`): the data as the agent sees it, the env,
    the fresh model, the agent's env settings, the keyword arguments of its saves, and the
    behaviour-cloning agreement (``init_from_classifier``; None otherwise)."""

    data: MarketData
    env: VecEnv
    model: PPO | DQN
    env_settings: dict[str, Any]
    save_kwargs: dict[str, Any]
    agreement: Any = None


def prepare_training(config: AgentConfig, data: MarketData, run_dir: Path) -> TrainingSetup:
    """The set-up shared by :func:`train_agent` and the agent HPO trials: torch threads; with a pretrained
    bundle, the data rebuilt with its preprocessing (the encoder sees inputs as it was trained to: the
    bundle's features, scaler, asset ids, window); the training env; the model (TensorBoard under
    ``run_dir/tb``); and, with ``init_from_classifier``, the classifier cloned into it."""
    torch.set_num_threads(config.torch_threads)
    if config.pretrained:
        from supervised.bundle import load_model

        data = load_model(config.pretrained).prepare(data)
    env = make_train_env(config, data)
    model = build_model(config, env, data, str(run_dir / "tb"))
    env_settings = agent_env_settings(config.env, config.env.window or data.window)
    save_kwargs = {"algo": config.algo, "env_settings": env_settings, "data": data, "config": config.to_dict()}
    agreement = None
    if config.init_from_classifier:
        from .behaviour_cloning import clone_supervised_policy

        agreement = clone_supervised_policy(model, config, data)
    return TrainingSetup(data, env, model, env_settings, save_kwargs, agreement)


def train_agent(config: AgentConfig, data: MarketData, run_dir: str | Path, *, progress: bool = True,
                verbose: int = 0) -> dict[str, Any]:
    """Train, evaluate on validation every ``eval_freq`` steps, and save the best and final agents.

    Writes ``run_dir/best`` (the checkpoint chosen on validation, or the cash fallback), ``run_dir/final``
    and TensorBoard logs under ``run_dir/tb``.

    :param config: the agent config.
    :param data: the dataset (train split for learning, ``config.eval_split`` for checkpoint choice); with
        a pretrained bundle it is first rebuilt with the bundle's own preprocessing.
    :param run_dir: output directory.
    :param progress: show a progress bar.
    :param verbose: print each evaluation.
    :return: summary with the best validation metrics, the rule that chose them (``selection_rule``) and the
        training speed.
    """
    run_dir = Path(run_dir)
    setup = prepare_training(config, data, run_dir)
    data, model, env_settings, save_kwargs = setup.data, setup.model, setup.env_settings, setup.save_kwargs
    rule = CheckpointRule.of(config)
    evaluator = TradingEvalCallback(data, config.eval_split, config.env.costs(), env_settings,
                                    min(config.eval_freq, config.total_timesteps), run_dir / "best", save_kwargs,
                                    verbose=verbose, rule=rule)
    callbacks = [evaluator] + ([ProgressBarCallback()] if progress else [])
    started = time.perf_counter()
    model.learn(total_timesteps=config.total_timesteps, callback=CallbackList(callbacks), tb_log_name=config.algo)
    elapsed = time.perf_counter() - started
    eval_seconds = evaluator.eval_seconds  # inside learn(); finish() evaluates once more, outside it
    evaluator.finish()
    save_agent(run_dir / "final", model, validation=evaluator.history[-1], **save_kwargs)
    best = evaluator.best_metrics
    return {
        "algo": config.algo,
        "timesteps": int(model.num_timesteps),
        "train_seconds": elapsed,
        "steps_per_second": model.num_timesteps / elapsed if elapsed > 0 else float("nan"),
        "eval_seconds": eval_seconds,  # validation scoring during training, and its share of the training time
        "eval_share": eval_seconds / elapsed if elapsed > 0 else float("nan"),
        "best_dir": str(run_dir / "best"),
        "fallback": None if best is not None else "cash",
        "selection_rule": rule.describe(),
        "init_agreement": setup.agreement,
        "best_validation": _strip(best) if best else None,
        "validation_history": [_strip(h) for h in evaluator.history],
    }


def _strip(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "per_symbol"}


__all__ = ["TrainingSetup", "build_model", "make_train_env", "policy_kwargs", "prepare_training", "train_agent"]
