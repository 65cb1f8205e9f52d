"""``TradingVecEnv``: N trading accounts in one set of numpy arrays, as a stable-baselines3 ``VecEnv``.

Every env is an account of one :class:`sim.Simulator`, so a step of all N envs costs about as much as
a step of one. Episodes, rewards and observations are those of :class:`envs.TradingEnv` (the same
:class:`envs.core.TradingCore` code); finished envs reset automatically, SB3-style, with the final
observation in ``infos[i]["terminal_observation"]`` and ``infos[i]["TimeLimit.truncated"]`` set on
truncation.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from .core import EnvConfig, TradingCore


class BatchedVecEnv(VecEnv):
    """A VecEnv whose envs are accounts of one simulator in this process: attributes and methods are the batch's
    own (SB3 asks for them per env index)."""

    def close(self) -> None:
        pass

    def _indices(self, indices: Any) -> Iterable[int]:
        return list(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: Any = None, **method_kwargs) -> list[Any]:
        return [getattr(self, method_name)(*method_args, **method_kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False for _ in self._indices(indices)]


class TradingVecEnv(BatchedVecEnv):
    """``n_envs`` TradingEnv-v0 episodes stepped as one batch.

    :param n_envs: number of parallel environments.
    :param data: as for :class:`envs.TradingEnv`.
    :param seed: seed of the episode draws (symbol and start bar).
    :param settings: the keyword arguments of :class:`envs.TradingEnv` (split, window, reward, costs...).
    """

    def __init__(self, n_envs: int = 8, data: Any = None, seed: int | None = None, **settings: Any) -> None:
        if int(n_envs) != n_envs or n_envs < 1:
            raise ValueError(f"n_envs={n_envs} must be a positive integer")
        unknown = sorted(set(settings) - set(EnvConfig.__dataclass_fields__))
        if unknown:
            raise TypeError(f"TradingVecEnv got unknown argument(s) {unknown}")
        self.config = EnvConfig(**settings)
        self.core = TradingCore(data, self.config, n=int(n_envs))
        self.layout = self.core.layout
        observation_space = spaces.Box(-np.inf, np.inf, shape=(self.layout.size,), dtype=np.float32)
        if self.config.action_mode == "discrete":
            action_space = spaces.Discrete(len(self.core.levels))
        else:
            action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.render_mode = None  # read by VecEnv.__init__ (through get_attr); it warns when missing
        super().__init__(int(n_envs), observation_space, action_space)
        self._rng = np.random.default_rng(seed)
        self._all = np.arange(self.num_envs)
        self._actions = np.zeros(self.num_envs)
        self.episode_returns = np.zeros(self.num_envs)

    def reset(self) -> np.ndarray:
        if self._seeds[0] is not None:
            self._rng = np.random.default_rng(self._seeds[0])
        self._reset_seeds()
        self.core.start(self._all, self._rng)
        self.episode_returns[:] = 0.0
        return self.core.observations()

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions)
        if self.core.levels is not None:
            self._actions = self.core.targets_from_discrete(actions)
        else:
            values = actions.reshape(self.num_envs).astype(np.float64)
            if not np.isfinite(values).all():
                raise ValueError(f"actions must be finite, got {actions!r}")
            self._actions = self.core.targets_from_continuous(np.clip(values, -1.0, 1.0))

    def step_wait(self):
        reward, terminated, truncated = self.core.step(self._actions)
        rewards = reward.astype(np.float32)
        self.episode_returns += reward
        done = terminated | truncated
        obs = self.core.observations()
        sim = self.core.sim
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        finished = np.flatnonzero(done)
        if len(finished):
            for i in finished:
                infos[i] = {
                    "terminal_observation": obs[i].copy(),
                    "TimeLimit.truncated": bool(truncated[i]),
                    "equity": float(sim.equity[i]),
                    "trade_count": int(sim.n_orders[i]),
                    "costs_paid": float(sim.costs_paid[i]),
                    "episode_log_return": float(self.episode_returns[i]),
                }
            self.core.start(finished, self._rng)
            self.episode_returns[finished] = 0.0
            obs[finished] = self.core.observations(finished)
        return obs, rewards, done.copy(), infos
