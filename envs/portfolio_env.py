"""``PortfolioEnv-v0``: one account allocating across a universe, and its batched twin ``PortfolioVecEnv``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .portfolio_core import PortfolioConfig, PortfolioCore
from .trading_env import utc_timestamp
from .vec_env import BatchedVecEnv

_SOFTMAX_BOUND = 10.0  # logits in [-10, 10]: weight ratios up to e^20, enough for any allocation


def _action_space(core: PortfolioCore) -> spaces.Box:
    """Every valid action lies in the space: with ``weights`` and shorts the cash weight is ``1 - sum(w)``, in
    ``[1 - max_leverage, 1 + max_leverage]``."""
    size, config = core.action_size, core.config
    if config.action_transform == "softmax":
        return spaces.Box(-_SOFTMAX_BOUND, _SOFTMAX_BOUND, shape=(size,), dtype=np.float32)
    if not config.allow_short:
        return spaces.Box(0.0, 1.0, shape=(size,), dtype=np.float32)
    leverage = config.max_leverage
    low = np.full(size, -leverage, dtype=np.float32)
    high = np.full(size, leverage, dtype=np.float32)
    if config.action_transform == "weights":
        low[-1], high[-1] = 1.0 - leverage, 1.0 + leverage
    return spaces.Box(low, high, dtype=np.float32)


def _check_settings(settings: dict[str, Any], who: str) -> None:
    unknown = sorted(set(settings) - set(PortfolioConfig.__dataclass_fields__))
    if unknown:
        raise TypeError(f"{who} got unknown argument(s) {unknown}; valid: {sorted(PortfolioConfig.__dataclass_fields__)}")


class PortfolioEnv(gym.Env):
    """One account, N assets: the action is target weights, one per asset then cash.

    ``gym.make("PortfolioEnv-v0")`` runs on the embedded universe (skfolio's 20 S&P 500 stocks, daily closes
    1990-2022: close-only data, so orders fill at the next close); ``data=`` takes ``{symbol: bars}``, a built
    ``MarketData``, a dataset directory or a :class:`features.Panel`.

    ## Action
    ``Box`` of N + 1 values, read by ``action_transform``:

    - ``"normalize"`` (default): non-negative weights divided by their sum (all zero = all cash); with
      ``allow_short=True`` signed, the assets' targets are ``max_leverage * a_i / sum(|a|)`` (so the gross
      exposure never exceeds ``max_leverage``).
    - ``"softmax"`` (the agents' default): unbounded policy outputs (logits in [-10, 10]) to long-only weights.
    - ``"weights"``: the weights as given; they must sum to 1, be >= 0 without shorts and have a gross
      exposure at most 1 (``max_leverage`` with shorts).

    A NaN, a wrong length, a negative weight without shorts, or leverage above the limit is a one-line
    ``ValueError`` naming the asset. An asset's order is sent when its weight moved by more than
    ``min_rebalance`` (every ``rebalance_every`` steps: from its drifted weight).

    ## Observation
    ``Box`` float32 of ``N * window * n_features + N + 1 (+ N * N)`` values: each asset's causal feature
    window (asset-major, oldest bar first), the current weights (assets then cash), and with
    ``covariance_window > 0`` the rolling covariance of log returns (see :mod:`envs.portfolio_core`).

    ## Execution and costs
    The decision at the close of ``t`` fills at the open of ``t + 1`` (``fill_at="close"``: at ``t``'s close),
    sells before buys, buys sized so that fills and costs fit in equity; commission, every slippage model
    (incl. the square-root impact model ``{"model": "volume", "impact": ...}``), borrow on shorts
    (``borrow_rate``) and interest on cash (``cash_rate``), per asset, by the one simulator (:mod:`sim.portfolio`).
    An asset with no bar at a time holds its position and cannot trade.

    ## Reward, episode, info
    ``reward`` as for TradingEnv-v0 (``log_return`` by default, net of every cost). Episodes start at a random
    row of ``split`` (``random_start``), last ``episode_length`` steps or to the split's end (truncated) and
    terminate when equity falls to ``min_equity`` of the start. ``info``: ``timestamp`` (UTC), ``equity``,
    ``weights`` (N + 1, after the step), ``turnover`` (traded notional / equity before the step), ``costs``
    (paid this step), ``orders`` (this step), ``costs_paid``, ``trade_count``, ``row``.

    ## Version History
    - v0: first version.
    """

    metadata = {"render_modes": []}

    def __init__(self, data: Any = None, render_mode: str | None = None, **settings: Any) -> None:
        _check_settings(settings, "PortfolioEnv")
        if render_mode is not None:
            raise ValueError(f"render_mode={render_mode!r} is not supported: PortfolioEnv draws nothing per step; "
                             f"plot a run with envs.backtest_portfolio(...).save(folder) instead")
        self.config = PortfolioConfig(**settings)
        self.core = PortfolioCore(data, self.config, n=1)
        self.layout = self.core.layout
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(self.layout.size,), dtype=np.float32)
        self.action_space = _action_space(self.core)
        self._accounts = np.zeros(1, dtype=np.int64)
        self._actions = self.core.actions
        self._stamps = memoryview(np.ascontiguousarray(self.core.panel.timestamps, dtype=np.int64))
        self._action_shape = (self.core.action_size,)
        self._equity = memoryview(self.core.sim.equity)
        self._rows = memoryview(self.core.sim.row)
        self._result = self.core.sim.result
        sim = self.core.sim
        self._v = tuple(memoryview(x) for x in (sim.result.notional, sim.result.cost, sim.result.orders,
                                                 sim.costs_paid, sim.n_orders))
        self._episode_over: str | None = "call reset() before the first step()"

    @property
    def symbols(self) -> list[str]:
        return self.core.symbols

    @property
    def panel(self):
        return self.core.panel

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"start_row"})
        if unknown:
            raise ValueError(f"reset options {unknown} are not known; valid options: ['start_row']")
        start_row = options.get("start_row")
        if start_row is not None and (isinstance(start_row, (bool, np.bool_))
                                      or not isinstance(start_row, (int, np.integer))):
            raise ValueError(f"options['start_row']={start_row!r} must be an integer row of the universe's timeline")
        self.core.start(self._accounts, self.np_random, None if start_row is None else int(start_row))
        self._episode_over = None
        obs = self.core.observe(self._accounts, self.core.obs)[0].copy()
        return obs, self._info(0.0)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._episode_over is not None:
            raise RuntimeError(f"PortfolioEnv.step(): {self._episode_over}")
        core = self.core
        if type(action) is np.ndarray and action.shape == self._action_shape:
            self._actions[0] = action
        else:
            self._actions[0] = core.check_action_shape(action)
        equity_before = self._equity[0]
        try:
            obs, rewards, ends = core.step(self._actions)
        except FloatingPointError as error:  # a fill the cost model cannot price: nothing of the step was booked
            self._episode_over = f"the last step failed ({error}); call reset()"
            raise
        end = int(ends[0])
        terminated, truncated = end == 1, end == 2
        if terminated or truncated:
            why = "terminated (equity fell to min_equity)" if terminated else "truncated (end of split or episode_length)"
            self._episode_over = (f"the episode is over ({why} at row {int(core.sim.row[0])}); call reset() before "
                                  f"stepping again")
        return obs[0].copy(), float(rewards[0]), terminated, truncated, self._info(equity_before)

    def _info(self, equity_before: float) -> dict:
        row = self._rows[0]
        notional, cost, orders, costs_paid, n_orders = self._v
        return {
            "timestamp": utc_timestamp(self._stamps[row]),
            "equity": self._equity[0],
            "weights": self.core.weights[0].copy(),
            "turnover": notional[0] / equity_before if equity_before > 0 else 0.0,
            "costs": cost[0],
            "orders": orders[0],
            "costs_paid": costs_paid[0],
            "trade_count": n_orders[0],
            "row": row,
        }


class PortfolioVecEnv(BatchedVecEnv):
    """``n_envs`` PortfolioEnv-v0 episodes stepped as one batch (one simulator, one compiled call per step).

    Episodes, rewards and observations are PortfolioEnv's (the same :class:`PortfolioCore`); finished envs
    reset automatically, SB3-style, with the final observation in ``infos[i]["terminal_observation"]``.

    :param n_envs: parallel environments.
    :param data: as for :class:`PortfolioEnv`.
    :param seed: seed of the episode start draws.
    :param settings: PortfolioEnv's keyword arguments.
    """

    def __init__(self, n_envs: int = 8, data: Any = None, seed: int | None = None, **settings: Any) -> None:
        if isinstance(n_envs, bool) or int(n_envs) != n_envs or n_envs < 1:
            raise ValueError(f"n_envs={n_envs!r} must be a positive integer")
        _check_settings(settings, "PortfolioVecEnv")
        self.config = PortfolioConfig(**settings)
        self.core = PortfolioCore(data, self.config, n=int(n_envs))
        self.layout = self.core.layout
        observation_space = spaces.Box(-np.inf, np.inf, shape=(self.layout.size,), dtype=np.float32)
        self.render_mode = None
        super().__init__(int(n_envs), observation_space, _action_space(self.core))
        self._rng = np.random.default_rng(seed)
        self._all = np.arange(self.num_envs, dtype=np.int64)
        self._actions = self.core.actions
        self.episode_returns = np.zeros(self.num_envs)
        self._failed: str | None = None

    def reset(self) -> np.ndarray:
        self._failed = None
        if self._seeds[0] is not None:
            self._rng = np.random.default_rng(self._seeds[0])
        self._reset_seeds()
        self.core.start(self._all, self._rng)
        self.episode_returns[:] = 0.0
        return self.core.observe(self._all, self.core.obs).copy()

    def step_async(self, actions: np.ndarray) -> None:
        if self._failed is not None:
            raise RuntimeError(f"PortfolioVecEnv.step(): {self._failed}")
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != self._actions.shape:
            raise ValueError(f"actions have shape {actions.shape}; expected ({self.num_envs}, {self.core.action_size}): "
                             f"one row per env, one weight per asset then cash")
        self._actions[:] = actions

    def step_wait(self):
        core = self.core
        try:
            obs, reward, ends = core.step(self._actions)
        except FloatingPointError as error:  # envs before the failing one have stepped: the batch is out of step
            self._failed = f"a step failed ({error}); call reset()"
            raise
        self.episode_returns += reward
        done = ends != 0
        obs = obs.copy()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        finished = np.flatnonzero(done)
        if len(finished):
            sim = core.sim
            for i in finished:
                infos[i] = {
                    "terminal_observation": obs[i].copy(),
                    "TimeLimit.truncated": bool(ends[i] == 2),
                    "equity": float(sim.equity[i]),
                    "trade_count": int(sim.n_orders[i]),
                    "costs_paid": float(sim.costs_paid[i]),
                    "episode_log_return": float(self.episode_returns[i]),
                }
            core.start(finished, self._rng)
            self.episode_returns[finished] = 0.0
            obs[finished] = core.observe(finished, np.empty((len(finished), self.layout.size), np.float32))
        return obs, reward.astype(np.float32), done, infos


__all__ = ["PortfolioEnv", "PortfolioVecEnv"]
