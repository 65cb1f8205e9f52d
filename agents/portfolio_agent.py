"""RL allocation agents on ``PortfolioEnv``: a permutation-equivariant actor, PPO or SAC, checkpoints chosen
on validation against buy-and-hold and equal weight, and a saved agent that loads alone.

Policy (:class:`PortfolioPolicy`, SB3 ``ActorCriticPolicy``): ONE small MLP shared by every asset maps the
asset's [features (its window flattened, or its embedding), its current weight] to a score, the asset's
logit; the cash logit is a learned scalar plus a linear function of the pooled (mean over assets) asset
inputs; the critic is an MLP on the pooled inputs and the weights. The N + 1 logits are the action
(Gaussian in SB3; the env's ``action_transform="softmax"`` turns them into long-only weights). Permuting
the assets permutes the logits (the exploration noise too: one log std for the assets, one for cash).
With ``asset_embedding_dim > 0`` each asset's input also gets a learned vector of its own (its identity):
the actor then tells assets apart (a universe where only some assets carry an edge) and is equivariant only
when the vectors are permuted with the assets. The covariance part of the observation is not read.

With a supervised bundle the encoder runs once over the universe (:func:`agents.portfolio_encoder.embed_panel`)
and the agent observes embeddings (window 1); without one it observes the raw feature windows.

Checkpoints: every ``eval_freq`` steps the deterministic policy runs once through the validation split
(:func:`evaluate_allocation`: one account, from the split's first row, costs on); it qualifies when its log
return after costs beats both buy-and-hold and equal weight (rebalanced every 21 bars) by ``min_margin`` with
per-step excess returns over each at a t statistic of at least ``min_tstat``. The best qualifying checkpoint
is saved; if none qualifies the saved agent is the ``fallback`` (equal weight, rebalanced, or cash),
recorded in the run summary.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ProgressBarCallback
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, Actor, SACPolicy
from torch import nn

from configs.loader import CONFIG_DIR, config_to_dict, dataclass_from_dict, load_yaml_config
from envs.portfolio_core import PortfolioConfig, PortfolioCore, PortfolioLayout, resolve_panel
from envs.portfolio_env import PortfolioVecEnv
from features.atomic_io import write_directory_atomic
from features.market_data import MarketData
from features.panel import Panel
from sim.engine import Costs
from sim.settings import check_positive_int, check_range

from .config import PPOSettings
from .portfolio_baselines import DEFAULT_REBALANCE_EVERY
from .portfolio_encoder import embed_panel
from .training import ScaledReward, quiet_logger

PORTFOLIO_ALGORITHMS: tuple[str, ...] = ("ppo", "sac")
FALLBACKS: tuple[str, ...] = ("equal_weight", "cash")
AGENT_ZIP = "agent.zip"
AGENT_JSON = "portfolio_agent.json"
ENCODER_DIR = "encoder"
FORMAT_VERSION = 1
_FALLBACK_NAMES = {"equal_weight": "equal weight (rebalanced every 21 bars)", "cash": "cash"}


# ----------------------------------------------------------------------------------------------------
# Config


@dataclass
class PortfolioEnvSettings:
    """The training env's settings (PortfolioVecEnv on the train split, softmax actions, costs on).

    :param window: bars per raw feature window when the data is built here (the embedded universe); a
        built dataset keeps its own (None: the dataset's, 24 for the embedded universe).
    :param episode_length: steps per training episode (random starts in the train split).
    :param commission: fraction of traded notional per fill.
    :param slippage: bps per fill (fixed model).
    :param fill_at: ``"next_open"`` or ``"close"``.
    :param min_rebalance: change of an asset's target weight below which no order is sent.
    :param reward: the env's reward (``log_return``).
    """

    window: int | None = None
    episode_length: int = 256
    commission: float = 0.001
    slippage: float = 5.0
    fill_at: str = "next_open"
    min_rebalance: float = 0.0
    reward: str = "log_return"

    def __post_init__(self) -> None:
        self.env_config("train").validate()

    def env_config(self, split: str, **overrides: Any) -> PortfolioConfig:
        """The env's :class:`PortfolioConfig` for ``split`` (softmax actions unless overridden)."""
        settings = dict(split=split, action_transform="softmax", episode_length=self.episode_length,
                        commission=self.commission, slippage=self.slippage, fill_at=self.fill_at,
                        min_rebalance=self.min_rebalance, reward=self.reward)
        settings.update(overrides)
        return PortfolioConfig(**settings)

    def costs(self) -> Costs:
        return Costs(commission=self.commission, slippage=self.slippage)


@dataclass
class SACSettings:
    """stable-baselines3 SAC hyperparameters (continuous logits)."""

    learning_rate: float = 3e-4
    buffer_size: int = 200_000
    learning_starts: int = 2_000
    batch_size: int = 256
    gamma: float = 0.5
    tau: float = 0.01
    train_freq: int = 1
    gradient_steps: int = 1
    ent_coef: str = "auto"

    def __post_init__(self) -> None:
        for name in ("buffer_size", "batch_size", "train_freq"):
            setattr(self, name, check_positive_int(f"sac.{name}", getattr(self, name)))
        if self.gradient_steps != -1:
            self.gradient_steps = check_positive_int("sac.gradient_steps (or -1)", self.gradient_steps)
        self.learning_starts = int(check_range("sac.learning_starts", self.learning_starts, 0.0))
        self.learning_rate = check_range("sac.learning_rate", self.learning_rate, 0.0, None, low_open=True)
        self.gamma = check_range("sac.gamma", self.gamma, 0.0, 1.0, high_open=False)
        self.tau = check_range("sac.tau", self.tau, 0.0, 1.0, low_open=True, high_open=False)
        if self.ent_coef != "auto":
            try:
                value = float(self.ent_coef[5:] if self.ent_coef.startswith("auto_") else self.ent_coef)
            except ValueError:
                value = -1.0
            if not value > 0:
                raise ValueError(f"sac.ent_coef={self.ent_coef!r} must be 'auto', 'auto_<initial>' or a positive number")
        if self.buffer_size < self.batch_size:
            raise ValueError(f"sac.buffer_size={self.buffer_size} must be >= sac.batch_size={self.batch_size}")


@dataclass
class PortfolioAgentConfig:
    """Everything a portfolio RL run needs besides the data (``configs/portfolio.yaml``, section ``agent:``).

    :param algo: ``"ppo"`` or ``"sac"``.
    :param total_timesteps: environment steps to train for (over all envs).
    :param n_envs: parallel accounts (one PortfolioVecEnv).
    :param seed: seed of the env draws and the networks.
    :param torch_threads: torch CPU threads.
    :param actor_hidden: hidden layers of the per-asset scoring MLP (shared by all assets).
    :param critic_hidden: hidden layers of the critic MLP.
    :param asset_embedding_dim: a learned identity vector per asset appended to its input (0: none; the
        actor is then permutation-equivariant and runs on any universe of the same size).
    :param log_std_init: initial log std of the Gaussian over logits (PPO): wide (0.5) so that PPO's clipped
        updates can move the logits far enough to concentrate (measured on planted markets).
    :param eval_freq: environment steps between validation evaluations.
    :param eval_split: the split checkpoints are chosen on (never test).
    :param min_margin: log return a checkpoint must beat buy-and-hold and equal weight by.
    :param min_tstat: t statistic of its per-step excess return over each of them it needs.
    :param fallback: the saved agent when no checkpoint qualifies: ``"equal_weight"`` or ``"cash"``.
    :param reward_scale: training rewards are multiplied by this before the learner sees them.
    :param env: the training env's settings.
    :param ppo: PPO settings.
    :param sac: SAC settings.
    """

    algo: str = "ppo"
    total_timesteps: int = 200_000
    n_envs: int = 64
    seed: int = 0
    torch_threads: int = 1
    actor_hidden: tuple[int, ...] = (32, 32)
    critic_hidden: tuple[int, ...] = (64, 64)
    asset_embedding_dim: int = 8
    log_std_init: float = 0.5
    eval_freq: int = 20_000
    eval_split: str = "validation"
    min_margin: float = 0.0
    min_tstat: float = 2.0
    fallback: str = "equal_weight"
    reward_scale: float = 100.0
    env: PortfolioEnvSettings = field(default_factory=PortfolioEnvSettings)
    ppo: PPOSettings = field(default_factory=lambda: PPOSettings(
        learning_rate=1e-3, n_steps=32, batch_size=1024, n_epochs=4, gamma=0.5, ent_coef=0.0))
    sac: SACSettings = field(default_factory=SACSettings)

    def __post_init__(self) -> None:
        if self.algo not in PORTFOLIO_ALGORITHMS:
            raise ValueError(f"algo={self.algo!r} is not known; expected one of {list(PORTFOLIO_ALGORITHMS)}")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback={self.fallback!r} is not known; expected one of {list(FALLBACKS)}")
        if self.eval_split == "test":
            raise ValueError("eval_split='test' is not allowed: checkpoints are chosen on validation, never on test")
        if self.eval_split != "validation" and self.eval_split != "train":
            raise ValueError(f"eval_split={self.eval_split!r} is not known; expected 'validation' (or 'train')")
        for name in ("total_timesteps", "n_envs", "eval_freq", "torch_threads"):
            setattr(self, name, check_positive_int(name, getattr(self, name)))
        self.asset_embedding_dim = int(check_range("asset_embedding_dim", self.asset_embedding_dim, 0.0))
        for name in ("actor_hidden", "critic_hidden"):
            layers = tuple(getattr(self, name))
            if not layers:
                raise ValueError(f"{name}=[] must list at least one hidden layer width")
            setattr(self, name, tuple(check_positive_int(f"{name}[{i}]", v) for i, v in enumerate(layers)))
        self.log_std_init = check_range("log_std_init", self.log_std_init, -20.0, 2.0, high_open=False)
        self.min_margin = check_range("min_margin", self.min_margin, -1.0, None)
        self.min_tstat = check_range("min_tstat", self.min_tstat, -100.0, 100.0, high_open=False)
        self.reward_scale = check_range("reward_scale", self.reward_scale, 0.0, None, low_open=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "portfolio agent config") -> "PortfolioAgentConfig":
        return dataclass_from_dict(cls, dict(data or {}), where)

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, section: str | None = "agent") -> "PortfolioAgentConfig":
        """The ``agent:`` section of ``path`` (default ``configs/portfolio.yaml``)."""
        return load_yaml_config(cls, CONFIG_DIR / "portfolio.yaml" if path is None else path, section,
                                sections=("agent", "dataset"))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def package_defaults() -> PortfolioAgentConfig:
    """The package's portfolio agent settings (``configs/portfolio.yaml``): the benchmark's budgets go over them."""
    return PortfolioAgentConfig.from_yaml()


# ----------------------------------------------------------------------------------------------------
# Networks


def _mlp(sizes: list[int], activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers)


class PortfolioNetworks(nn.Module):
    """The actor's scores and the critic's latent from a flat portfolio observation.

    :param n_assets: N.
    :param asset_dim: values per asset in the observation (window x features).
    :param actor_hidden: the shared per-asset MLP's hidden layers.
    :param critic_hidden: the critic MLP's hidden layers.
    :param asset_embedding_dim: a learned vector per asset appended to its input (0: none).
    """

    def __init__(self, n_assets: int, asset_dim: int, actor_hidden: tuple[int, ...], critic_hidden: tuple[int, ...],
                 asset_embedding_dim: int = 0) -> None:
        super().__init__()
        self.n_assets, self.asset_dim = int(n_assets), int(asset_dim)
        self.n_window_values = self.n_assets * self.asset_dim
        per_asset = self.asset_dim + 1 + int(asset_embedding_dim)
        self.asset_embedding = (nn.Parameter(torch.zeros(self.n_assets, int(asset_embedding_dim)))
                                if asset_embedding_dim else None)
        self.scorer = _mlp([per_asset, *actor_hidden])
        self.score = nn.Linear(actor_hidden[-1], 1)
        self.cash_bias = nn.Parameter(torch.zeros(1))
        self.cash = nn.Linear(self.asset_dim + 1, 1)
        self.critic = _mlp([self.asset_dim + 1 + self.n_assets + 1, *critic_hidden])
        self.latent_dim_pi = self.n_assets + 1
        self.latent_dim_vf = int(critic_hidden[-1])

    def _inputs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-asset inputs (B, N, asset_dim + 1) and the weights (B, N + 1)."""
        n = self.n_assets
        features = obs[:, : self.n_window_values].reshape(-1, n, self.asset_dim)
        weights = obs[:, self.n_window_values : self.n_window_values + n + 1]
        return torch.cat([features, weights[:, :n, None]], dim=2), weights

    def forward_actor(self, obs: torch.Tensor) -> torch.Tensor:
        """The N + 1 logits (assets then cash)."""
        inputs, _ = self._inputs(obs)
        pooled = inputs.mean(dim=1)
        if self.asset_embedding is not None:
            inputs = torch.cat([inputs, self.asset_embedding.expand(len(obs), -1, -1)], dim=2)
        scores = self.score(self.scorer(inputs)).squeeze(2)
        cash = self.cash_bias + self.cash(pooled)
        return torch.cat([scores, cash], dim=1)

    def forward_critic(self, obs: torch.Tensor) -> torch.Tensor:
        inputs, weights = self._inputs(obs)
        return self.critic(torch.cat([inputs.mean(dim=1), weights], dim=1))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(obs), self.forward_critic(obs)


def _network_kwargs(layout: PortfolioLayout, config: PortfolioAgentConfig) -> dict[str, Any]:
    return {"n_assets": layout.n_assets, "asset_dim": layout.window * layout.n_features,
            "actor_hidden": tuple(config.actor_hidden), "critic_hidden": tuple(config.critic_hidden),
            "asset_embedding_dim": config.asset_embedding_dim}


class PortfolioPolicy(ActorCriticPolicy):
    """SB3 actor-critic whose actor is :class:`PortfolioNetworks` (the logits are its output, no extra layer)
    and whose Gaussian has one log std for the assets and one for cash.

    :param network: :class:`PortfolioNetworks`' keyword arguments.
    """

    def __init__(self, observation_space: gym.spaces.Space, action_space: gym.spaces.Box, lr_schedule: Any, *,
                 network: dict[str, Any], **kwargs: Any) -> None:
        self.network = dict(network)
        kwargs.setdefault("ortho_init", False)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["network"] = self.network
        return data

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = PortfolioNetworks(**self.network)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        if not isinstance(self.action_dist, DiagGaussianDistribution):
            raise ValueError("PortfolioPolicy needs a Box action space (the N + 1 logits)")
        self.action_net = nn.Identity()
        self.log_std = nn.Parameter(torch.full((2,), float(self.log_std_init)))  # assets, cash
        nn.init.orthogonal_(self.mlp_extractor.score.weight, gain=0.01)
        nn.init.zeros_(self.mlp_extractor.score.bias)
        nn.init.orthogonal_(self.mlp_extractor.cash.weight, gain=0.01)
        nn.init.zeros_(self.mlp_extractor.cash.bias)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_action_dist_from_latent(self, latent_pi: torch.Tensor) -> Any:
        n = latent_pi.shape[1] - 1
        log_std = torch.cat([self.log_std[:1].expand(n), self.log_std[1:]])
        return self.action_dist.proba_distribution(latent_pi, log_std)


class PortfolioActor(Actor):
    """SAC's actor with :class:`PortfolioNetworks` giving the pre-squash means (state-independent log std:
    one for the assets, one for cash)."""

    def __init__(self, *args: Any, network: dict[str, Any], log_std_init: float = -1.0, **kwargs: Any) -> None:
        kwargs["net_arch"] = []
        super().__init__(*args, **kwargs)
        self.networks = PortfolioNetworks(**network)
        nn.init.orthogonal_(self.networks.score.weight, gain=0.01)
        nn.init.orthogonal_(self.networks.cash.weight, gain=0.01)
        self.log_std_values = nn.Parameter(torch.full((2,), float(log_std_init)))
        self.mu = nn.Identity()
        self.log_std = nn.Identity()

    def get_action_dist_params(self, obs: Any) -> tuple[torch.Tensor, torch.Tensor, dict]:
        features = self.extract_features(obs, self.features_extractor)
        mean = self.networks.forward_actor(features)
        n = mean.shape[1] - 1
        log_std = torch.cat([self.log_std_values[:1].expand(n), self.log_std_values[1:]])
        log_std = torch.clamp(log_std, LOG_STD_MIN, LOG_STD_MAX).expand_as(mean)
        return mean, log_std, {}


class PortfolioSACPolicy(SACPolicy):
    """SB3's SAC policy with :class:`PortfolioActor` (the critics are SB3's MLPs on observation + action)."""

    def __init__(self, *args: Any, network: dict[str, Any], **kwargs: Any) -> None:
        self.network = dict(network)
        super().__init__(*args, **kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["network"] = self.network
        return data

    def make_actor(self, features_extractor: Any = None) -> Actor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return PortfolioActor(**actor_kwargs, network=self.network).to(self.device)


# ----------------------------------------------------------------------------------------------------
# Data


def prepare_panel(data: Any, bundle: str | Path | None = None, window: int | None = None) -> tuple[Panel, Any]:
    """The panel the agent observes, and the loaded bundle (or None).

    :param data: None (the embedded universe), a Panel, a MarketData, a dataset directory or ``{symbol: bars}``.
    :param bundle: a supervised bundle directory: its preprocessing is applied, then its encoder embeds
        every window (:func:`embed_panel`).
    :param window: the raw window when the data is built here.
    """
    if bundle is None:
        return resolve_panel(data, window=window), None
    from supervised.bundle import load_model

    loaded = load_model(bundle)
    if isinstance(data, Panel):
        symbols, market = data.symbols, data.data
    else:
        market = resolve_panel(data, window=window).data if not isinstance(data, MarketData) else data
        symbols = None
    prepared = loaded.prepare(market)
    panel = Panel.from_market_data(prepared, symbols)
    return embed_panel(panel, loaded.encoder), loaded


# ----------------------------------------------------------------------------------------------------
# Evaluation


def _excess_tstat(excess: np.ndarray) -> float:
    spread = excess.std(ddof=1) if len(excess) > 1 else 0.0
    return float(excess.mean() / spread * math.sqrt(len(excess))) if spread > 1e-15 else 0.0


def evaluate_allocation(policy: Any, panel: Panel, split: str, settings: PortfolioEnvSettings) -> dict[str, Any]:
    """One deterministic pass of ``policy`` through ``split`` (one account from the split's first row).

    :param policy: ``act(obs)`` (or ``act_at(row)``, the planted oracle), ``reset()``, ``action_transform``,
        ``rebalance_every``.
    :param panel: the panel the policy observes.
    :param split: the split.
    :param settings: the env settings (costs, fill time).
    :return: ``log_return`` (after costs), ``returns`` (per-step log returns), ``turnover`` (sum of traded
        notional / equity), ``costs_paid``, ``n_steps``, ``n_orders``.
    """
    # min_equity 0: the pass covers the whole split whatever the policy loses (as the backtester), so every policy's
    # per-step returns line up with the baselines' for the checkpoint rule's t statistics
    config = settings.env_config(split, action_transform=getattr(policy, "action_transform", "softmax"),
                                 episode_length=None, random_start=False, min_equity=0.0,
                                 rebalance_every=getattr(policy, "rebalance_every", None))
    core = PortfolioCore(panel, config, n=1)
    accounts = np.zeros(1, dtype=np.int64)
    core.start(accounts, np.random.default_rng(0))
    obs = core.observe(accounts, np.zeros((1, core.layout.size), dtype=np.float32))
    policy.reset()
    act_at = getattr(policy, "act_at", None)
    returns, turnover = [], 0.0
    sim = core.sim
    while True:
        row = int(sim.row[0])
        action = act_at(row) if act_at is not None else policy.act(obs[0])
        equity_before = float(sim.equity[0])
        core.actions[0] = np.asarray(action, dtype=np.float64).reshape(-1)
        obs, rewards, ends = core.step(core.actions)
        returns.append(float(core.log_returns[0]))
        turnover += float(sim.result.notional[0]) / equity_before if equity_before > 0 else 0.0
        if ends[0]:
            break
    returns_array = np.asarray(returns)
    return {"log_return": float(returns_array.sum()), "returns": returns_array, "turnover": turnover,
            "costs_paid": float(sim.costs_paid[0]), "n_steps": len(returns), "n_orders": int(sim.n_orders[0])}


class FixedWeights:
    """A constant target: equal weight rebalanced every 21 bars, buy-and-hold (sent once, never rebalanced),
    or cash.

    :param weights: N + 1 target weights (assets then cash).
    :param rebalance_every: steps between rebalances to the target; None: only the first step trades.
    :param name: label.
    """

    action_transform = "weights"

    def __init__(self, weights: np.ndarray, rebalance_every: int | None, name: str) -> None:
        self.weights = np.asarray(weights, dtype=np.float64)
        self.rebalance_every = rebalance_every
        self.name = name

    @classmethod
    def equal_weight(cls, n_assets: int) -> "FixedWeights":
        """Equal weight rebalanced on the allocations' schedule (every 21 bars: the benchmark's ``equal_weight``;
        rebalancing every step would pay ~3x its costs for nothing)."""
        return cls(np.append(np.full(n_assets, 1.0 / n_assets), 0.0), DEFAULT_REBALANCE_EVERY,
                   f"equal weight (rebalanced every {DEFAULT_REBALANCE_EVERY} bars)")

    @classmethod
    def buy_and_hold(cls, n_assets: int) -> "FixedWeights":
        return cls(np.append(np.full(n_assets, 1.0 / n_assets), 0.0), None, "buy and hold")

    @classmethod
    def cash(cls, n_assets: int) -> "FixedWeights":
        return cls(np.append(np.zeros(n_assets), 1.0), None, "cash")

    def reset(self) -> None:
        """Stateless."""

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self.weights


@dataclass(frozen=True)
class PortfolioCheckpointRule:
    """A checkpoint qualifies when its validation log return beats buy-and-hold's and equal weight's by
    ``min_margin`` and its per-step excess return over each has a t statistic >= ``min_tstat``; the kept
    one is the qualifying checkpoint with the highest validation log return."""

    min_margin: float = 0.0
    min_tstat: float = 2.0

    def describe(self) -> str:
        return (f"validation log return after costs > buy-and-hold's and equal weight's + {self.min_margin:g}, "
                f"t of per-step excess over each >= {self.min_tstat:g}; best log return kept")

    def judge(self, metrics: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Margins and t statistics of ``metrics`` over each baseline, and ``qualifies``."""
        out: dict[str, Any] = {}
        ok = True
        for name, base in baselines.items():
            margin = metrics["log_return"] - base["log_return"]
            tstat = _excess_tstat(metrics["returns"] - base["returns"])
            out[f"excess_{name}"] = margin
            out[f"tstat_{name}"] = tstat
            ok = ok and margin > self.min_margin and tstat >= self.min_tstat
        out["qualifies"] = bool(ok)
        return out


# ----------------------------------------------------------------------------------------------------
# The saved agent


class PortfolioAgent:
    """A trained (or fallback) allocation agent: ``act(obs)``, ``reset()``, ``action_transform``,
    ``rebalance_every``, and :meth:`prepare` (the panel it observes, from any data of its universe).

    :param model: the SB3 model (None for a fallback without one).
    :param meta: the saved record (settings, fallback, validation).
    :param encoder_bundle: the copied supervised bundle directory (None: raw features).
    """

    def __init__(self, model: Any, meta: dict[str, Any], encoder_bundle: Path | None = None) -> None:
        self.model = model
        self.meta = meta
        self.fallback: str | None = meta.get("fallback")
        self.n_assets = int(meta["n_assets"])
        self.encoder_bundle = encoder_bundle
        self.name = meta.get("name", "portfolio agent")
        if self.fallback is not None:
            base = (FixedWeights.equal_weight(self.n_assets) if self.fallback == "equal_weight"
                    else FixedWeights.cash(self.n_assets))
            self._fixed: FixedWeights | None = base
            self.action_transform = "weights"
            self.rebalance_every = base.rebalance_every
            self.name = f"{self.name} ({_FALLBACK_NAMES[self.fallback]} fallback)"
        else:
            self._fixed = None
            self.action_transform = "softmax"
            self.rebalance_every = None
        self.action_size = self.n_assets + 1
        # an agent with a learned vector per asset runs on its own symbols only (the backtester checks them)
        self.symbols: list[str] | None = (list(meta["symbols"]) if meta.get("asset_embedding_dim") and
                                          self.fallback is None else None)

    def describe(self) -> str:
        """One line for reports."""
        return self.name

    def reset(self) -> None:
        """Stateless: nothing to clear."""

    def act(self, observation: np.ndarray) -> np.ndarray:
        """The N + 1 action values (logits, or the fallback's weights) for one observation."""
        if self._fixed is not None:
            return self._fixed.weights.copy()
        action, _ = self.model.predict(np.asarray(observation, dtype=np.float32), deterministic=True)
        return np.asarray(action, dtype=np.float64)

    def prepare(self, data: Any) -> Panel:
        """The panel this agent observes built from ``data`` (anything :func:`resolve_panel` takes): the raw
        features, checked against the agent's, or its encoder's embeddings.

        :param data: the universe's data.
        """
        panel, _ = prepare_panel(data, self.encoder_bundle, self.meta.get("raw_window"))
        self.check_panel(panel)
        return panel

    def check_panel(self, panel: Panel) -> None:
        """A one-line ValueError when ``panel`` is not what the agent was trained to observe."""
        meta = self.meta
        if panel.n_assets != self.n_assets:
            raise ValueError(f"agent {self.name} allocates over {self.n_assets} assets; the universe has "
                             f"{panel.n_assets} ({panel.symbols})")
        if meta.get("asset_embedding_dim") and list(panel.symbols) != list(meta["symbols"]):
            raise ValueError(f"agent {self.name} learned one vector per asset of {meta['symbols']}; the universe is "
                             f"{panel.symbols}")
        if panel.window != meta["window"] or list(panel.data.feature_names) != list(meta["feature_names"]):
            raise ValueError(f"agent {self.name} observes window {meta['window']} x {len(meta['feature_names'])} "
                             f"features; the panel has window {panel.window} x {panel.n_features}")


def save_portfolio_agent(path: str | Path, model: Any, *, panel: Panel, config: PortfolioAgentConfig,
                         fallback: str | None = None, validation: dict[str, Any] | None = None,
                         bundle: str | Path | None = None, raw_window: int | None = None,
                         rule: str | None = None) -> Path:
    """Write ``agent.zip``, ``portfolio_agent.json`` (and the encoder bundle's copy) atomically.

    :param path: the directory.
    :param model: the SB3 model.
    :param panel: the panel the agent observes.
    :param config: the agent config.
    :param fallback: None, ``"equal_weight"`` or ``"cash"``.
    :param validation: validation metrics (arrays dropped).
    :param bundle: the supervised bundle whose encoder made the panel (copied into ``encoder/``).
    :param raw_window: the raw window used when building the embedded universe.
    :param rule: the checkpoint rule's description.
    """
    meta = {
        "format_version": FORMAT_VERSION,
        "algo": config.algo,
        "fallback": fallback,
        "n_assets": panel.n_assets,
        "symbols": list(panel.symbols),
        "window": panel.window,
        "feature_names": list(panel.data.feature_names),
        "asset_embedding_dim": config.asset_embedding_dim,
        "encoder": ENCODER_DIR if bundle is not None else None,
        "raw_window": raw_window,
        "env": config_to_dict(config.env),
        "selection_rule": rule,
        "config": config.to_dict(),
        "validation": _json_metrics(validation or {}),
    }

    def fill(directory: Path) -> None:
        model.save(directory / AGENT_ZIP)
        if bundle is not None:
            shutil.copytree(bundle, directory / ENCODER_DIR)
        (directory / AGENT_JSON).write_text(json.dumps(meta, indent=2, default=str) + "\n")

    return write_directory_atomic(path, fill)


def load_portfolio_agent(path: str | Path) -> PortfolioAgent:
    """Load a saved portfolio agent (it needs nothing else: its encoder, if any, is inside).

    :param path: a directory written by :func:`save_portfolio_agent` (a run's ``best/`` or ``final/``).
    """
    path = Path(path)
    meta_path = path / AGENT_JSON
    if not meta_path.exists():
        raise FileNotFoundError(f"{path} is not a saved portfolio agent: {meta_path} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{meta_path} is not valid JSON ({error}); the saved agent is damaged") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise ValueError(f"{meta_path}: format_version {version} is not supported (expected {FORMAT_VERSION})")
    missing = [k for k in ("algo", "n_assets", "symbols", "window", "feature_names") if k not in meta]
    if missing:
        raise ValueError(f"{meta_path} lacks {missing}; the saved agent is damaged")
    algorithm = {"ppo": PPO, "sac": SAC}.get(meta["algo"])
    if algorithm is None:
        raise ValueError(f"{meta_path}: algo {meta['algo']!r} is not known (expected one of {list(PORTFOLIO_ALGORITHMS)})")
    zip_path = path / AGENT_ZIP
    if not zip_path.exists():
        raise FileNotFoundError(f"saved agent {path} is incomplete: {zip_path} is missing")
    custom = {"buffer_size": 1} if algorithm is SAC else None
    model = algorithm.load(zip_path, device="cpu", custom_objects=custom)
    encoder = path / meta["encoder"] if meta.get("encoder") else None
    if encoder is not None and not encoder.is_dir():
        raise FileNotFoundError(f"saved agent {path} is incomplete: its encoder bundle {encoder} is missing")
    run = path.parent.name if path.name in ("best", "final") else ""
    meta["name"] = f"{meta['algo']}:{run + '/' if run else ''}{path.name}"
    return PortfolioAgent(model, meta, encoder)


def _json_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, np.ndarray):
            continue
        if isinstance(value, dict):
            out[key] = _json_metrics(value)
        elif isinstance(value, (np.floating, np.integer)):
            out[key] = value.item()
        else:
            out[key] = value
    return out


# ----------------------------------------------------------------------------------------------------
# Training


class _ModelPolicy:
    """The model being trained as a deterministic evaluation policy."""

    action_transform = "softmax"
    rebalance_every = None

    def __init__(self, model: Any) -> None:
        self.model = model

    def reset(self) -> None:
        """Stateless."""

    def act(self, observation: np.ndarray) -> np.ndarray:
        action, _ = self.model.predict(observation, deterministic=True)
        return action


class PortfolioEvalCallback(BaseCallback):
    """Every ``eval_freq`` env steps, run the deterministic policy through validation; keep the best
    qualifying checkpoint (:class:`PortfolioCheckpointRule`) in ``best_dir``. Logs ``eval/*`` to TensorBoard.

    :param panel: the panel the agent observes.
    :param split: the evaluation split.
    :param settings: the env settings.
    :param eval_freq: env steps between evaluations.
    :param rule: the checkpoint rule.
    :param save: ``save(path, model, **kwargs)``: writes an agent.
    :param best_dir: where the best agent goes.
    """

    def __init__(self, panel: Panel, split: str, settings: PortfolioEnvSettings, eval_freq: int,
                 rule: PortfolioCheckpointRule, save: Any, best_dir: Path, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.panel, self.split, self.settings = panel, split, settings
        self.eval_freq, self.rule, self.save, self.best_dir = eval_freq, rule, save, best_dir
        self.baselines = {
            "buy_and_hold": evaluate_allocation(FixedWeights.buy_and_hold(panel.n_assets), panel, split, settings),
            "equal_weight": evaluate_allocation(FixedWeights.equal_weight(panel.n_assets), panel, split, settings),
        }
        self.best_metrics: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.eval_seconds = 0.0
        self._next = eval_freq

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.eval_freq
            self.evaluate()
        return True

    def evaluate(self) -> dict[str, Any]:
        started = time.perf_counter()
        metrics = evaluate_allocation(_ModelPolicy(self.model), self.panel, self.split, self.settings)
        metrics.update(self.rule.judge(metrics, self.baselines))
        metrics["timesteps"] = int(self.num_timesteps)
        self.history.append(metrics)
        for key in ("log_return", "turnover", "costs_paid", "excess_buy_and_hold", "excess_equal_weight",
                    "tstat_buy_and_hold", "tstat_equal_weight"):
            self.logger.record(f"eval/{key}", metrics[key])
        best = self.best_metrics["log_return"] if self.best_metrics else -math.inf
        if metrics["qualifies"] and metrics["log_return"] > best:
            self.best_metrics = metrics
            self.save(self.best_dir, self.model, validation=metrics)
        self.logger.record("eval/qualifies", float(metrics["qualifies"]))
        self.logger.dump(self.num_timesteps)
        if self.verbose:
            print(f"[eval {self.num_timesteps}] validation log return {metrics['log_return']:+.4f} "
                  f"(buy and hold {self.baselines['buy_and_hold']['log_return']:+.4f}, equal weight "
                  f"{self.baselines['equal_weight']['log_return']:+.4f}), t {metrics['tstat_buy_and_hold']:+.2f} / "
                  f"{metrics['tstat_equal_weight']:+.2f}, turnover {metrics['turnover']:.1f}"
                  f"{', kept' if self.best_metrics is metrics else ''}")
        self.eval_seconds += time.perf_counter() - started
        return metrics

    def finish(self, fallback: str) -> None:
        """Evaluate the final model if it was not; without a qualifying checkpoint, save the fallback."""
        if not self.history or self.history[-1]["timesteps"] != self.num_timesteps:
            self.evaluate()
        if self.best_metrics is None:
            base = self.baselines["equal_weight"]["log_return"] if fallback == "equal_weight" else 0.0
            self.save(self.best_dir, self.model, fallback=fallback, validation={
                "log_return": float(base), "note": "no checkpoint met the selection rule on validation",
                "checkpoints": [float(h["log_return"]) for h in self.history]})


def make_portfolio_env(config: PortfolioAgentConfig, panel: Panel) -> VecEnv:
    """The training env: PortfolioVecEnv on the train split (random starts), episode statistics for SB3's
    logger, rewards scaled by ``reward_scale`` for the learner only."""
    settings = dataclass_fields(config.env.env_config("train"))
    env: VecEnv = VecMonitor(PortfolioVecEnv(config.n_envs, panel, seed=config.seed, **settings))
    return env if config.reward_scale == 1.0 else ScaledReward(env, config.reward_scale)


def dataclass_fields(config: PortfolioConfig) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(config, f.name) for f in fields(config)}


def build_portfolio_model(config: PortfolioAgentConfig, env: VecEnv, layout: PortfolioLayout,
                          tensorboard_log: str | None) -> PPO | SAC:
    """A fresh PPO (:class:`PortfolioPolicy`) or SAC (:class:`PortfolioSACPolicy`) model on ``env``."""
    network = _network_kwargs(layout, config)
    common = dict(seed=config.seed, device="cpu", tensorboard_log=tensorboard_log, verbose=0)
    if config.algo == "ppo":
        s = config.ppo
        batch = min(s.batch_size, s.n_steps * config.n_envs)
        model = PPO(PortfolioPolicy, env, learning_rate=s.learning_rate, n_steps=s.n_steps, batch_size=batch,
                   n_epochs=s.n_epochs, gamma=s.gamma, gae_lambda=s.gae_lambda, clip_range=s.clip_range,
                   ent_coef=s.ent_coef, vf_coef=s.vf_coef, max_grad_norm=s.max_grad_norm,
                    policy_kwargs={"network": network, "log_std_init": config.log_std_init}, **common)
    else:
        s = config.sac
        model = SAC(PortfolioSACPolicy, env, learning_rate=s.learning_rate, buffer_size=s.buffer_size,
                    learning_starts=s.learning_starts, batch_size=s.batch_size, gamma=s.gamma, tau=s.tau,
                    train_freq=s.train_freq, gradient_steps=s.gradient_steps, ent_coef=s.ent_coef,
                    policy_kwargs={"network": network, "net_arch": list(config.critic_hidden)}, **common)
    quiet_logger(model, tensorboard_log)
    return model


def train_portfolio_agent(config: PortfolioAgentConfig, data: Any, run_dir: str | Path, *,
                          bundle: str | Path | None = None, progress: bool = True,
                          verbose: int = 0) -> dict[str, Any]:
    """Train on the train split, choose the checkpoint on validation, save ``best/`` and ``final/``.

    Writes ``run_dir/best`` (the chosen checkpoint, or the fallback), ``run_dir/final`` and TensorBoard
    logs under ``run_dir/tb``.

    :param config: the agent config.
    :param data: the universe (see :func:`prepare_panel`).
    :param run_dir: output directory.
    :param bundle: a supervised bundle whose frozen encoder embeds every window (None: raw features).
    :param progress: show a progress bar.
    :param verbose: print each evaluation.
    :return: the summary (fallback, validation of the kept checkpoint and the baselines, speed).
    """
    run_dir = Path(run_dir)
    torch.set_num_threads(config.torch_threads)
    panel, _ = prepare_panel(data, bundle, config.env.window)
    env = make_portfolio_env(config, panel)
    layout = PortfolioLayout(panel.n_assets, panel.window, panel.n_features)
    model = build_portfolio_model(config, env, layout, str(run_dir / "tb"))
    rule = PortfolioCheckpointRule(config.min_margin, config.min_tstat)
    save = partial(save_portfolio_agent, panel=panel, config=config, bundle=bundle, raw_window=config.env.window,
                   rule=rule.describe())
    evaluator = PortfolioEvalCallback(panel, config.eval_split, config.env,
                                      min(config.eval_freq, config.total_timesteps), rule, save, run_dir / "best",
                                      verbose=verbose)
    callbacks: list[BaseCallback] = [evaluator] + ([ProgressBarCallback()] if progress else [])
    started = time.perf_counter()
    model.learn(total_timesteps=config.total_timesteps, callback=CallbackList(callbacks), tb_log_name=config.algo)
    elapsed = time.perf_counter() - started
    eval_seconds = evaluator.eval_seconds
    evaluator.finish(config.fallback)
    save(run_dir / "final", model, validation=evaluator.history[-1])
    best = evaluator.best_metrics
    return {
        "algo": config.algo,
        "symbols": list(panel.symbols),
        "observation": {"n_assets": panel.n_assets, "window": panel.window, "n_features": panel.n_features,
                        "encoder": str(bundle) if bundle is not None else None},
        "timesteps": int(model.num_timesteps),
        "train_seconds": elapsed,
        "steps_per_second": model.num_timesteps / elapsed if elapsed > 0 else float("nan"),
        "eval_seconds": eval_seconds,
        "best_dir": str(run_dir / "best"),
        "fallback": None if best is not None else config.fallback,
        "selection_rule": rule.describe(),
        "baselines": {k: _json_metrics(v) for k, v in evaluator.baselines.items()},
        "best_validation": _json_metrics(best) if best else None,
        "validation_history": [_json_metrics(h) for h in evaluator.history],
    }


__all__ = ["FALLBACKS", "FixedWeights", "PORTFOLIO_ALGORITHMS", "PortfolioAgent", "PortfolioAgentConfig",
           "PortfolioCheckpointRule", "PortfolioEnvSettings", "PortfolioEvalCallback", "PortfolioNetworks",
           "PortfolioPolicy", "PortfolioSACPolicy", "SACSettings", "build_portfolio_model", "evaluate_allocation",
           "load_portfolio_agent", "make_portfolio_env", "prepare_panel", "save_portfolio_agent",
           "train_portfolio_agent"]
