"""A trained agent on disk (SB3 zip + ``agent.json``) and as a backtester policy.

``agent.json`` records the agent's preprocessing (feature settings, timeframe, window, scaler, asset
map; see :mod:`features.preprocessing`). The backtester rebuilds any dataset with it before the agent
observes a bar, so an agent runs on another date range, a walk-forward fold or new bars exactly as it
was trained to see them; a symbol it never saw, or another timeframe, is an error.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from features.atomic_io import write_directory_atomic
from features.market_data import MarketData
from features.preprocessing import Preprocessing

AGENT_ZIP = "agent.zip"
AGENT_JSON = "agent.json"
AGENT_FORMAT_VERSION = 2


class AgentPolicy:
    """An SB3 model as a backtester policy: ``act(obs)`` is the model's deterministic action.

    With ``fallback="cash"`` (no checkpoint beat the cash baseline on validation) it stays flat.

    :param model: a stable-baselines3 model (PPO or DQN).
    :param env_settings: the env settings the model was trained with (action_mode, allow_short, window).
    :param fallback: None, or ``"cash"``.
    :param name: label in reports.
    :param preprocessing: the agent's own preprocessing; the backtester applies it to any data.
    """

    def __init__(self, model: Any, env_settings: dict[str, Any], fallback: str | None = None,
                 name: str = "agent", preprocessing: Preprocessing | None = None) -> None:
        self.model = model
        self.preprocessing = preprocessing
        self.env_settings = dict(env_settings)
        self.fallback = fallback
        self.name = name if fallback is None else f"{name} (cash fallback)"
        self._flat = 1 if env_settings.get("allow_short") else 0
        self._continuous = env_settings.get("action_mode") == "continuous"
        self._fast: _FastActor | None = None

    def reset(self) -> None:
        """Stateless: nothing to clear."""

    def act(self, observation: np.ndarray) -> Any:
        if self.fallback == "cash":
            return np.zeros(1, dtype=np.float32) if self._continuous else self._flat
        action = self._predict(observation)
        return action if self._continuous else int(action)

    def batch_actor(self, n: int) -> "_AgentBatch":
        """The batch protocol of :func:`envs.backtest.backtest_many`: the agent is stateless, so it acts
        on ``n`` observations at once (one forward pass)."""
        return _AgentBatch(self)

    def act_many(self, observations: np.ndarray) -> list[Any]:
        """Actions for a batch of observations (n, d)."""
        n = len(observations)
        if self.fallback == "cash":
            return [np.zeros(1, dtype=np.float32) if self._continuous else self._flat for _ in range(n)]
        actions = self._predict(observations)
        return [a for a in actions] if self._continuous else [int(a) for a in actions]

    def _predict(self, observation: np.ndarray) -> np.ndarray:
        """``model.predict(observation, deterministic=True)``'s actions. SB3's ``BasePolicy.predict`` sets every
        module to eval mode on each call, which costs more than a small network's forward pass when one bar is
        decided at a time (the backtester, the live loop): when the policy does not override ``predict`` and all its
        modules are in eval mode already, the same steps run without that switch (same tensors, same actions).
        A plain ``ActorCriticPolicy`` with a Gaussian action distribution (PPO's continuous actions) skips building
        the distribution: its deterministic action is its mean, the action net's output, exactly; with a plain MLP
        actor, as the torch functions its modules call (:func:`_actor_plan`).

        :param observation: one observation or a batch of them.
        """
        fast = self._fast
        policy = getattr(self.model, "policy", None)
        if fast is None or fast.policy is not policy:
            fast = self._fast = _FastActor(self.model)
        if not fast.usable():
            return self.model.predict(observation, deterministic=True)[0]  # it also leaves the modules in eval mode
        return fast.predict(observation)


class _FastActor:
    """What :meth:`AgentPolicy._predict` needs of a model, read once: whether SB3's own ``predict`` can be skipped
    (the model and policy do not override it), the policy's modules (their ``training`` flags are read on every call),
    the Gaussian actor's plan (:func:`_actor_plan`) and the action space's bounds.

    :param model: an SB3 model.
    """

    def __init__(self, model: Any) -> None:
        from gymnasium import spaces
        from stable_baselines3.common.base_class import BaseAlgorithm
        from stable_baselines3.common.policies import BasePolicy

        self.policy = policy = getattr(model, "policy", None)
        self.plain = (type(model).predict is BaseAlgorithm.predict  # DQN's explores (not when deterministic; kept)
                      and isinstance(policy, BasePolicy) and type(policy).predict is BasePolicy.predict)
        self.modules = list(policy.modules()) if self.plain else []
        self.gaussian = self.plain and _is_gaussian_actor_critic(policy)
        if self.plain:
            space = policy.action_space
            self.box = isinstance(space, spaces.Box)
            self.shape = space.shape
            self.squash = bool(getattr(policy, "squash_output", False))
            self.low, self.high = (space.low, space.high) if self.box else (None, None)

    def usable(self) -> bool:
        """The model's predict may be skipped: it is plain and every module is in eval mode."""
        return self.plain and not any(module.training for module in self.modules)

    def predict(self, observation: np.ndarray) -> np.ndarray:
        """The deterministic actions of one observation or a batch (see :meth:`AgentPolicy._predict`)."""
        import torch

        policy = self.policy
        obs_tensor, vectorized = _obs_to_tensor(policy, observation)
        with torch.inference_mode():
            actions = _gaussian_mean(policy, obs_tensor) if self.gaussian else None
            if actions is None:
                actions = policy._predict(obs_tensor, deterministic=True)
        actions = actions.cpu().numpy().reshape((-1, *self.shape))
        if self.box:
            if self.squash:
                actions = policy.unscale_action(actions)
            else:
                actions = np.clip(actions, self.low, self.high)
        return actions if vectorized else actions.squeeze(axis=0)


def _obs_to_tensor(policy: Any, observation: Any) -> tuple[Any, bool]:
    """``policy.obs_to_tensor(observation)``: for a flat ``Box`` space and a float32 array of one observation or a
    batch of them, the same steps without SB3's dispatch over dict and image spaces (a copy of the array as a tensor of
    shape ``(-1, *space.shape)`` on the policy's device, and whether it was a batch); anything else goes to SB3's own.

    :param policy: an SB3 policy.
    :param observation: one observation or a batch of them.
    """
    import torch
    from gymnasium import spaces

    space = policy.observation_space
    if (type(space) is spaces.Box and len(space.shape) == 1 and isinstance(observation, np.ndarray)
            and observation.dtype == np.float32 and observation.ndim in (1, 2) and observation.shape[-1:] == space.shape):
        array = np.array(observation).reshape((-1, *space.shape))
        return torch.as_tensor(array, device=policy.device), observation.ndim == 2
    return policy.obs_to_tensor(observation)


def _is_gaussian_actor_critic(policy: Any) -> bool:
    """A plain SB3 ``ActorCriticPolicy`` with a ``DiagGaussianDistribution`` (PPO's continuous actions)."""
    from stable_baselines3.common.distributions import DiagGaussianDistribution
    from stable_baselines3.common.policies import ActorCriticPolicy

    return type(policy) is ActorCriticPolicy and type(policy.action_dist) is DiagGaussianDistribution


def _gaussian_mean(policy: Any, obs_tensor: Any) -> Any:
    """The deterministic action of a plain SB3 ``ActorCriticPolicy`` with a ``DiagGaussianDistribution``: the
    distribution's mode is its mean, the action net's output (``get_distribution`` without building the Normal); None
    for any other policy or distribution (the caller runs the policy's own ``_predict``).

    :param policy: an SB3 policy in eval mode.
    :param obs_tensor: the observations as a tensor (``policy.obs_to_tensor``).
    """
    if not _is_gaussian_actor_critic(policy):
        return None
    plan = _actor_plan(policy)
    if plan is not None:  # the same torch functions the modules call, without their dispatch
        x = obs_tensor.float()  # ``preprocess_obs`` of a non-image Box; FlattenExtractor of (n, d) is the identity
        for function, weight, bias in plan:
            x = function(x, weight, bias) if weight is not None else function(x)
        return x
    from stable_baselines3.common.policies import BaseModel

    features = BaseModel.extract_features(policy, obs_tensor, policy.pi_features_extractor)
    return policy.action_net(policy.mlp_extractor.forward_actor(features))


_ACTOR_PLANS: "weakref.WeakKeyDictionary[Any, tuple[list[Any], list[tuple[Any, Any, Any]] | None]]" = \
    weakref.WeakKeyDictionary()


def _actor_plan(policy: Any) -> list[tuple[Any, Any, Any]] | None:
    """The actor of a plain MLP policy as the torch functions its modules call, in order: ``(F.linear, weight, bias)``
    for each ``nn.Linear`` and ``(torch.tanh | torch.relu, None, None)`` for each ``nn.Tanh`` / ``nn.ReLU`` of
    ``mlp_extractor.policy_net`` then ``action_net`` (each module's ``forward`` is exactly that call, so the outputs
    are the same tensors, bit for bit). None (the modules run themselves) unless the features extractor is a
    ``FlattenExtractor`` of a one-dimensional, non-image ``Box`` and every module is one of those types exactly.
    Kept per policy while it has the same modules holding the same parameter tensors (weights loaded in place keep
    them).

    :param policy: a plain SB3 ``ActorCriticPolicy`` in eval mode.
    """
    children = policy._modules  # (``policy.action_net`` and the like, without ``nn.Module.__getattr__``)
    extractor, action_net = children.get("pi_features_extractor"), children.get("action_net")
    net = getattr(children.get("mlp_extractor"), "_modules", {}).get("policy_net")
    cached = _ACTOR_PLANS.get(policy)
    if cached is not None and cached[0][0] is net and cached[0][1] is action_net and cached[0][2] is extractor:
        modules, plan = cached[1], cached[2]
        if plan is None:
            return None
        layers = net._modules
        if len(layers) + 1 == len(modules) and all(a is b for a, b in zip(layers.values(), modules)):
            for (_, weight, bias), module in zip(plan, modules):
                if weight is not None and (weight is not module._parameters["weight"]
                                           or bias is not module._parameters["bias"]):
                    break
            else:
                return plan
    import torch
    from gymnasium import spaces
    from stable_baselines3.common.preprocessing import is_image_space
    from stable_baselines3.common.torch_layers import FlattenExtractor

    modules = [*net, action_net] if type(net) is torch.nn.Sequential else []
    plan: list[tuple[Any, Any, Any]] | None = []
    space = policy.observation_space
    if (not modules or type(extractor) is not FlattenExtractor or type(space) is not spaces.Box
            or len(space.shape) != 1 or is_image_space(space)):
        plan = None
    else:
        for module in modules:
            if type(module) is torch.nn.Linear:
                plan.append((torch.nn.functional.linear, module.weight, module.bias))
            elif type(module) is torch.nn.Tanh:
                plan.append((torch.tanh, None, None))
            elif type(module) is torch.nn.ReLU and not module.inplace:
                plan.append((torch.relu, None, None))
            else:
                plan = None
                break
    _ACTOR_PLANS[policy] = ((net, action_net, extractor), modules, plan)
    return plan


class _AgentBatch:
    """``reset()`` / ``act(observations (n, d))`` over one stateless agent."""

    def __init__(self, policy: AgentPolicy) -> None:
        self.policy = policy

    def reset(self) -> None:
        self.policy.reset()

    def act(self, observations: np.ndarray) -> list[Any]:
        return self.policy.act_many(observations)


def agent_env_settings(env_config: Any, window: int) -> dict[str, Any]:
    """The env settings a saved agent needs to act: action mode, shorting, window, fill timing."""
    return {"action_mode": env_config.action_mode, "allow_short": env_config.allow_short,
            "window": window, "fill_at": env_config.fill_at}


def save_agent(path: str | Path, model: Any, *, algo: str, env_settings: dict[str, Any], data: MarketData,
               config: dict[str, Any], fallback: str | None = None, validation: dict[str, Any] | None = None,
               selection_rule: str | None = None) -> Path:
    """Write ``agent.zip`` and ``agent.json`` (dataset manifest it expects, env settings, scores) atomically.

    :param path: directory to write.
    :param model: the SB3 model.
    :param algo: ``"ppo"`` or ``"dqn"``.
    :param env_settings: from :func:`agent_env_settings`.
    :param data: the dataset the agent was trained on (its feature names, window and hashes are recorded).
    :param config: the agent config as a dict.
    :param fallback: ``"cash"`` when no checkpoint beat cash on validation.
    :param validation: validation metrics of this checkpoint.
    :param selection_rule: the checkpoint rule that picked this agent (recorded as ``selection_rule``).
    """
    preprocessing = Preprocessing.of(data)
    if int(env_settings.get("window") or data.window) != data.window:
        preprocessing = Preprocessing.from_dict({**preprocessing.to_dict(), "window": int(env_settings["window"])})
    meta = {
        "format_version": AGENT_FORMAT_VERSION,
        "algo": algo,
        "model_class": _model_class(model),
        "env_settings": env_settings,
        "fallback": fallback,
        "selection_rule": selection_rule,
        "preprocessing": preprocessing.to_dict(),
        "dataset": {"symbols": data.symbols, "hashes": data.hashes, "config": data.config},
        "config": config,
        "validation": validation or {},
    }

    def fill(directory: Path) -> None:
        model.save(directory / AGENT_ZIP)
        (directory / AGENT_JSON).write_text(json.dumps(meta, indent=2, default=str) + "\n")

    return write_directory_atomic(path, fill)


def load_agent(path: str | Path, data: MarketData | None = None) -> AgentPolicy:
    """Load a saved agent as a policy; with ``data``, check its preprocessing can be rebuilt on it.

    :param path: directory written by :func:`save_agent`.
    :param data: the dataset to run on: same timeframe, symbols the agent knows (its features, scaler,
        asset ids and window are rebuilt from the agent's own record by the backtester).
    """
    path = Path(path)
    meta_path = path / AGENT_JSON
    if not meta_path.exists():
        raise FileNotFoundError(f"{path} is not a saved agent: {meta_path} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{meta_path} is not valid JSON ({error}); the saved agent is damaged") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != AGENT_FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: format_version {version} is not supported (expected {AGENT_FORMAT_VERSION}); agents "
            f"saved before preprocessing was recorded must be retrained"
        )
    missing = [k for k in ("algo", "env_settings", "preprocessing") if k not in meta]
    if missing:
        raise ValueError(f"{meta_path} lacks {missing}; the saved agent is damaged")
    preprocessing = Preprocessing.from_dict(meta["preprocessing"], f"{meta_path}:preprocessing")
    if data is not None:
        try:
            preprocessing.check(data)
        except ValueError as error:
            raise ValueError(f"agent {path} cannot run on this data: {error}") from None
    zip_path = path / AGENT_ZIP
    if not zip_path.exists():
        raise FileNotFoundError(f"saved agent {path} is incomplete: {zip_path} is missing")
    algo = _loader_class(meta, meta_path)
    # DQN and QR-DQN: SB3 would rebuild the training replay buffer (and warn that an n-step buffer class it
    # saved itself is "custom"); a policy for inference needs neither
    custom = {"replay_buffer_class": None, "buffer_size": 1} if meta["algo"] == "dqn" else None
    model = algo.load(zip_path, device="cpu", custom_objects=custom)
    run = path.parent.name if path.name in ("best", "final") else ""
    name = f"{meta['algo']}:{run + '/' if run else ''}{path.name}"
    return AgentPolicy(model, meta["env_settings"], meta.get("fallback"), name=name, preprocessing=preprocessing)


def _model_class(model: Any) -> str:
    """The SB3 class a saved model loads with: ``PPO`` (``FastPPO`` saves as PPO), ``DQN`` (``DoubleDQN`` too:
    the same networks), or ``QRDQN`` (sb3-contrib).

    :param model: the model being saved.
    """
    from sb3_contrib import QRDQN
    from stable_baselines3 import DQN, PPO

    for cls in (QRDQN, DQN, PPO):
        if isinstance(model, cls):
            return cls.__name__
    return type(model).__name__


def _loader_class(meta: dict[str, Any], meta_path: Path) -> Any:
    """The class that loads the agent's zip: from ``model_class`` where recorded, else from ``algo`` (agents
    saved before it was recorded are PPO or DQN).

    :param meta: the parsed ``agent.json``.
    :param meta_path: its path, for errors.
    """
    from sb3_contrib import QRDQN
    from stable_baselines3 import DQN, PPO

    classes = {"ppo": {"PPO": PPO}, "dqn": {"DQN": DQN, "QRDQN": QRDQN}}.get(meta["algo"])
    if classes is None:
        raise ValueError(f"{meta_path}: algo {meta['algo']!r} is not known (expected ppo or dqn)")
    name = meta.get("model_class") or next(iter(classes))
    if name not in classes:
        raise ValueError(f"{meta_path}: model_class {name!r} is not known for algo {meta['algo']!r} "
                         f"(expected one of {sorted(classes)})")
    return classes[name]
