"""Agent configs (dataclasses loaded from configs/ppo.yaml and configs/dqn.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from configs.loader import CONFIG_DIR, config_to_dict, dataclass_from_dict, load_yaml_config
from envs.core import EnvConfig
from sim.settings import check_positive_int, check_range

ALGORITHMS: tuple[str, ...] = ("ppo", "dqn")
EXTRACTORS: tuple[str, ...] = ("flat", "mlp", "lstm", "gru", "cnn_lstm")
SELECTION_RULES: tuple[str, ...] = ("cash", "cash_and_buy_and_hold", "cash_and_alpha")


# (name, low, high, open at low, open at high): the valid interval of each float hyperparameter
_PPO_RANGES = (("learning_rate", 0.0, None, True, True), ("gamma", 0.0, 1.0, False, False),
               ("gae_lambda", 0.0, 1.0, False, False), ("clip_range", 0.0, None, True, True),
               ("ent_coef", 0.0, None, False, True), ("vf_coef", 0.0, None, False, True),
               ("max_grad_norm", 0.0, None, True, True))
_DQN_RANGES = (("learning_rate", 0.0, None, True, True), ("gamma", 0.0, 1.0, False, False),
               ("exploration_fraction", 0.0, 1.0, False, False),
               ("exploration_final_eps", 0.0, 1.0, False, False), ("tau", 0.0, 1.0, True, False))


@dataclass
class PPOSettings:
    """stable-baselines3 PPO hyperparameters (defaults chosen for speed on 2 CPU cores, see README)."""

    learning_rate: float = 3e-4
    n_steps: int = 256
    batch_size: int = 1024
    n_epochs: int = 4
    gamma: float = 0.9
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5

    def __post_init__(self) -> None:
        for name in ("n_steps", "batch_size", "n_epochs"):
            setattr(self, name, check_positive_int(f"ppo.{name}", getattr(self, name)))
        for name, low, high, low_open, high_open in _PPO_RANGES:
            setattr(self, name, check_range(f"ppo.{name}", getattr(self, name), low, high, low_open=low_open,
                                            high_open=high_open))


@dataclass
class DQNSettings:
    """stable-baselines3 DQN hyperparameters; ``n_steps`` > 1 learns from n-step returns (SB3's n-step
    replay buffer), ``tau`` < 1 updates the target network softly, ``double_q`` picks the next action with
    the online network and values it with the target network (double DQN, van Hasselt et al. 2016);
    ``n_quantiles`` > 0 learns that many quantiles of each action's return instead of its mean (QR-DQN,
    Dabney et al. 2018, sb3-contrib's ``QRDQN``; it acts on their mean), 0 is plain DQN."""

    learning_rate: float = 1e-4
    buffer_size: int = 100_000
    learning_starts: int = 2_000
    batch_size: int = 256
    gamma: float = 0.9
    train_freq: int = 4
    gradient_steps: int = 1
    target_update_interval: int = 2_000
    exploration_fraction: float = 0.3
    exploration_final_eps: float = 0.02
    n_steps: int = 3
    tau: float = 1.0
    double_q: bool = False
    n_quantiles: int = 0

    def __post_init__(self) -> None:
        for name in ("buffer_size", "batch_size", "train_freq", "target_update_interval", "n_steps"):
            setattr(self, name, check_positive_int(f"dqn.{name}", getattr(self, name)))
        if self.gradient_steps != -1:  # -1: as many gradient steps as environment steps (SB3)
            self.gradient_steps = check_positive_int("dqn.gradient_steps (or -1)", self.gradient_steps)
        self.learning_starts = int(check_range("dqn.learning_starts", self.learning_starts, 0.0))
        for name, low, high, low_open, high_open in _DQN_RANGES:
            setattr(self, name, check_range(f"dqn.{name}", getattr(self, name), low, high, low_open=low_open,
                                            high_open=high_open))
        if self.buffer_size < self.batch_size:
            raise ValueError(f"dqn.buffer_size={self.buffer_size} must be >= dqn.batch_size={self.batch_size}")
        if not isinstance(self.double_q, bool):
            raise ValueError(f"dqn.double_q={self.double_q!r} must be true or false")
        if isinstance(self.n_quantiles, bool) or not isinstance(self.n_quantiles, int) or self.n_quantiles < 0:
            raise ValueError(f"dqn.n_quantiles={self.n_quantiles!r} must be an integer >= 0 (0: plain DQN)")
        if self.n_quantiles and self.double_q:
            raise ValueError("dqn.double_q=true and dqn.n_quantiles > 0 cannot be combined (QR-DQN has no double-Q target)")


@dataclass
class AgentConfig:
    """Everything an RL run needs besides the dataset.

    :param algo: ``"ppo"`` or ``"dqn"``.
    :param total_timesteps: environment steps to train for.
    :param n_envs: parallel environments (one native batched VecEnv).
    :param seed: seed of the env draws and the networks.
    :param torch_threads: torch CPU threads; 1 is steadier on a busy 2-core machine (benchmarks/bench_ppo.py).
    :param extractor: ``"flat"`` (SB3's MLP on the flat observation) or a supervised architecture
        (``mlp``, ``lstm``, ``gru``, ``cnn_lstm``) used as features extractor, fresh or from ``pretrained``.
    :param pretrained: a supervised bundle directory whose encoder becomes the features extractor.
    :param freeze_encoder: keep the pretrained encoder fixed.
    :param init_from_classifier: before RL, clone the supervised threshold policy into the agent (discrete only).
    :param bc_steps: behaviour-cloning samples used by ``init_from_classifier``.
    :param net_arch: hidden layers of the policy/value heads after the extractor.
    :param eval_freq: environment steps between validation evaluations.
    :param eval_split: split used to choose the checkpoint (never test).
    :param min_improvement: validation log return a checkpoint must beat the cash baseline (0) by.
    :param min_tstat: t statistic of validation per-bar returns against cash a checkpoint needs.
    :param selection_rule: ``"cash_and_buy_and_hold"`` (a checkpoint must also match buy-and-hold: the t
        statistic of its per-bar excess log return over buy-and-hold on validation >= ``min_excess_tstat``)
        or ``"cash_and_alpha"`` (its Jensen's alpha over buy-and-hold - the intercept of its per-bar returns
        regressed on buy-and-hold's - has a t statistic >= ``min_excess_tstat``: timing skill, not market
        exposure, whether or not it beats holding through a bull window), or ``"cash"`` (against cash only).
    :param min_excess_tstat: threshold of the excess-over-buy-and-hold (or alpha) t statistic; None: 0, or
        ``min_tstat`` where that is lower (so disabling the cash test disables this one too).
    :param turnover_penalty: log return charged per validation order when scoring a checkpoint (0.0015 = each
        order's costs counted twice), both against ``min_improvement`` and between checkpoints.
    :param reward_scale: training rewards (log returns, ~0.01 a bar) are multiplied by this before the
        learner sees them, so value targets are of order one; evaluation and checkpoint choice use the
        env's own rewards. Recorded with the agent; the saved policy does not depend on it.
    :param env: TradingEnv settings for training (split is forced to train).
    :param ppo: PPO settings.
    :param dqn: DQN settings.
    """

    algo: str = "ppo"
    total_timesteps: int = 200_000
    n_envs: int = 16
    seed: int = 0
    torch_threads: int = 1
    extractor: str = "flat"
    pretrained: str | None = None
    freeze_encoder: bool = True
    init_from_classifier: bool = False
    bc_steps: int = 20_000
    net_arch: tuple[int, ...] = (64, 64)
    eval_freq: int = 20_000
    eval_split: str = "validation"
    min_improvement: float = 0.0
    min_tstat: float = 1.0
    selection_rule: str = "cash_and_buy_and_hold"
    min_excess_tstat: float | None = None
    turnover_penalty: float = 0.0015
    reward_scale: float = 100.0
    env: EnvConfig = field(default_factory=lambda: EnvConfig(episode_length=256))
    ppo: PPOSettings = field(default_factory=PPOSettings)
    dqn: DQNSettings = field(default_factory=DQNSettings)

    def __post_init__(self) -> None:
        self.net_arch = tuple(int(v) for v in self.net_arch)
        self.env.validate()  # a bad env setting is refused before any training starts
        if self.algo not in ALGORITHMS:
            raise ValueError(f"algo={self.algo!r} is not known; expected one of {list(ALGORITHMS)}")
        if self.extractor not in EXTRACTORS:
            raise ValueError(f"extractor={self.extractor!r} is not known; expected one of {list(EXTRACTORS)}")
        if self.algo == "dqn" and self.env.action_mode != "discrete":
            raise ValueError("algo='dqn' needs env.action_mode='discrete' (DQN has no continuous actions)")
        if self.init_from_classifier and self.env.action_mode != "discrete":
            raise ValueError("init_from_classifier needs env.action_mode='discrete'")
        if self.init_from_classifier and not self.pretrained:
            raise ValueError("init_from_classifier needs a pretrained supervised bundle (pretrained=...)")
        if self.selection_rule not in SELECTION_RULES:
            raise ValueError(f"selection_rule={self.selection_rule!r} is not known; expected one of "
                             f"{list(SELECTION_RULES)}")
        if self.turnover_penalty < 0:
            raise ValueError(f"turnover_penalty={self.turnover_penalty} must be >= 0 (log return per order)")
        if not (self.reward_scale > 0 and self.reward_scale < float("inf")):
            raise ValueError(f"reward_scale={self.reward_scale} must be a positive finite number")
        if self.eval_split == "test":
            raise ValueError("eval_split='test' is not allowed: checkpoints are chosen on validation, never on test")
        for name in ("total_timesteps", "n_envs", "eval_freq", "torch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "agent config") -> "AgentConfig":
        return dataclass_from_dict(cls, dict(data or {}), where)

    @classmethod
    def from_yaml(cls, path: str | Path | None, section: str | None = "agent") -> "AgentConfig":
        return load_yaml_config(cls, path, section)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def package_defaults(algo: str) -> AgentConfig:
    """The package's default settings for ``algo``: the ``agent:`` section of ``configs/<algo>.yaml``, which
    ``train_ppo``/``train_dqn``, the benchmark and ``benchmarks/bench_learning.py`` all start from.

    :param algo: ``"ppo"`` or ``"dqn"``.
    """
    if algo not in ALGORITHMS:
        raise ValueError(f"algo={algo!r} is not known; expected one of {list(ALGORITHMS)}")
    return AgentConfig.from_yaml(CONFIG_DIR / f"{algo}.yaml")
