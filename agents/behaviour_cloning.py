"""Start an RL agent as the supervised threshold policy: behaviour cloning before RL.

The supervised threshold policy is run through the train split of TradingEnv (so the position state in
its observations is the one its own trades produce), and the agent's policy (PPO's action distribution,
or DQN's Q-network read as logits) is fitted to its actions by cross-entropy. Whatever the encoder and
head, the agent then starts out acting like the classifier with its validated threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from envs.trading_env import TradingEnv
from features.market_data import MarketData

from .config import AgentConfig


def collect_demonstrations(policy: Any, data: MarketData, env_settings: dict[str, Any], max_samples: int,
                           split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(observations, actions) of ``policy`` run from the start of ``split`` of every symbol.

    :param policy: a backtester policy (``reset``, ``act``).
    :param data: the dataset.
    :param env_settings: TradingEnv settings (costs, window...), split and start are set here.
    :param max_samples: stop after this many samples in all.
    :param split: the split to run (never validation or test: they choose and score the agent).
    """
    observations, actions = [], []
    per_symbol = max(1, max_samples // len(data.symbols))
    for symbol in data.symbols:
        env = TradingEnv(data, symbol=symbol, split=split, random_start=False, episode_length=None,
                         min_equity=0.0, **env_settings)
        obs, _ = env.reset(seed=0)
        policy.reset()
        for _ in range(per_symbol):
            action = int(policy.act(obs))
            observations.append(obs)
            actions.append(action)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
    return np.stack(observations).astype(np.float32), np.asarray(actions, dtype=np.int64)


def fit_to_actions(model: Any, observations: np.ndarray, actions: np.ndarray, *, max_updates: int = 1000,
                   batch_size: int = 256, learning_rate: float = 1e-3, target_agreement: float = 0.95,
                   seed: int = 0) -> float:
    """Fit the SB3 model's policy to ``actions`` by cross-entropy; return the final agreement rate.

    :param model: an SB3 PPO or DQN model with a discrete action space.
    :param observations: float32 (n, obs_size).
    :param actions: int64 (n,).
    :param max_updates: gradient steps at most.
    :param batch_size: minibatch size.
    :param learning_rate: Adam step size.
    :param target_agreement: stop early once this share of the demonstrations is reproduced.
    :param seed: minibatch sampling seed.
    """
    policy = model.policy
    is_dqn = hasattr(policy, "q_net")
    net = policy.q_net if is_dqn else policy
    parameters = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    obs_t = torch.as_tensor(observations)
    act_t = torch.as_tensor(actions)
    rng = np.random.default_rng(seed)
    agreement = 0.0
    for update in range(max_updates):
        if update % 100 == 0:
            agreement = _agreement(policy, obs_t, act_t, is_dqn)
            if agreement >= target_agreement:
                break
        policy.set_training_mode(True)
        idx = torch.as_tensor(rng.integers(0, len(actions), size=min(batch_size, len(actions))))
        loss = F.cross_entropy(_logits(policy, obs_t[idx], is_dqn), act_t[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    policy.set_training_mode(False)
    if is_dqn:
        policy.q_net_target.load_state_dict(policy.q_net.state_dict())
    return _agreement(policy, obs_t, act_t, is_dqn)


def _agreement(policy: Any, observations: torch.Tensor, actions: torch.Tensor, is_dqn: bool) -> float:
    policy.set_training_mode(False)
    with torch.no_grad():
        predicted = _logits(policy, observations, is_dqn).argmax(dim=1)
    return float((predicted == actions).float().mean())


def _logits(policy: Any, observations: torch.Tensor, is_dqn: bool) -> torch.Tensor:
    if is_dqn:
        return policy.q_net(observations)
    distribution = policy.get_distribution(observations)
    return distribution.distribution.logits


def clone_supervised_policy(model: Any, config: AgentConfig, data: MarketData) -> float:
    """Make ``model`` start as the supervised threshold policy of ``config.pretrained``; returns agreement.

    :param model: the fresh SB3 model (discrete actions).
    :param config: the agent config (``pretrained``, ``bc_steps``, ``env``).
    :param data: the dataset.
    """
    from .supervised_policy import SupervisedThresholdPolicy

    if config.env.allow_short:
        raise ValueError("init_from_classifier clones a {flat, long} policy; set env.allow_short=False")
    teacher = SupervisedThresholdPolicy(config.pretrained)
    settings = {"window": config.env.window, "commission": config.env.commission, "slippage": config.env.slippage,
                "fixed_fee": config.env.fixed_fee, "fill_at": config.env.fill_at}
    observations, actions = collect_demonstrations(teacher, data, settings, config.bc_steps)
    return fit_to_actions(model, observations, actions, seed=config.seed)
