"""The trading core shared by :class:`TradingEnv`, :class:`TradingVecEnv` and the backtester.

It owns a :class:`sim.Simulator` with ``n`` accounts over a :class:`features.MarketData`, picks episode
starts, turns actions into target exposures, builds observations, computes rewards and decides when
episodes end. Gymnasium and SB3 specifics live in the thin classes that wrap it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from features.bars import Timeframe
from features.dataset import DatasetConfig, build_dataset, build_market_data
from features.market_data import MarketData
from features.splits import SPLITS
from sim.engine import FILL_AT, Costs, Simulator
from sim.settings import check_choice, check_setting

from . import kernel
from .layout import BARS_HELD_SCALE, ObservationLayout
from .rewards import REWARDS, Reward, make_reward

ACTION_MODES: tuple[str, ...] = ("discrete", "continuous")


@lru_cache(maxsize=1)
def default_market_data() -> MarketData:
    """The default dataset on the embedded data (built once per process)."""
    return build_dataset(DatasetConfig())


def resolve_data(data: Any, window: int | None = None, timeframe: str | None = None) -> MarketData:
    """MarketData from None (embedded default), a MarketData, a dataset directory, or bars frame(s).

    :param data: None, :class:`MarketData`, a path to a saved dataset, a bars DataFrame, or
        ``{symbol: DataFrame}``.
    :param window: observation window used when building from bars.
    :param timeframe: the declared bar length; None infers it from bars. A declared timeframe that
        contradicts the bars' spacing (or a dataset's timeframe) is an error.
    """
    if data is None:
        data = default_market_data() if window in (None, 24) else build_dataset(DatasetConfig(window=window))
        return _check_timeframe(data, timeframe)
    if isinstance(data, MarketData):
        return _check_timeframe(data, timeframe)
    if isinstance(data, (str, Path)):
        return _check_timeframe(MarketData.load(data), timeframe)
    config = DatasetConfig(window=window or 24, timeframe=timeframe)
    if isinstance(data, pd.DataFrame):
        return build_market_data({"ASSET": data}, config)
    if isinstance(data, Mapping):
        return build_market_data(dict(data), config)
    raise TypeError(
        f"data must be None, a MarketData, a dataset directory, a bars DataFrame or a dict of them; "
        f"got {type(data).__name__}"
    )


def _check_timeframe(data: MarketData, timeframe: str | None) -> MarketData:
    if timeframe is not None and Timeframe.parse(timeframe).seconds != Timeframe.parse(data.timeframe).seconds:
        raise ValueError(f"timeframe={timeframe!r} contradicts the dataset's timeframe {data.timeframe!r}")
    return data


@dataclass
class EnvConfig:
    """Settings of the trading environment (see :class:`envs.TradingEnv` for their meaning)."""

    symbol: str | None = None
    split: str = "train"
    window: int | None = None
    timeframe: str | None = None
    action_mode: str = "discrete"
    allow_short: bool = False
    reward: str = "log_return"
    commission: float = 0.001
    fixed_fee: float = 0.0
    slippage: Any = 5.0
    borrow_rate: float = 0.0
    fill_at: str = "next_open"
    initial_cash: float = 100_000.0
    episode_length: int | None = None
    random_start: bool = True
    min_equity: float = 0.5
    min_rebalance: float = 0.0
    drawdown_penalty: float = 1.0
    dsr_eta: float = 0.01
    record_trades: bool = False

    def validate(self) -> None:
        check_choice("split", self.split, SPLITS)
        check_choice("action_mode", self.action_mode, ACTION_MODES)
        check_choice("reward", self.reward, REWARDS)
        check_choice("fill_at", self.fill_at, FILL_AT)
        # one rule per setting, the same as the simulator's, the benchmark's and live's (sim.settings)
        for name in ("window", "episode_length"):
            if getattr(self, name) is not None:
                setattr(self, name, check_setting(name, getattr(self, name)))
        for name in ("allow_short", "random_start", "record_trades", "initial_cash", "min_equity",
                     "min_rebalance", "drawdown_penalty", "dsr_eta"):
            setattr(self, name, check_setting(name, getattr(self, name)))
        self.costs()  # commission, fixed_fee, slippage and borrow_rate by sim.Costs' rules
        if self.timeframe is not None:
            Timeframe.parse(self.timeframe)

    def costs(self) -> Costs:
        return Costs(self.commission, self.fixed_fee, self.slippage, self.borrow_rate)


class TradingCore:
    """``n`` trading accounts over one dataset split, stepped together.

    :param data: see :func:`resolve_data`.
    :param config: the environment settings.
    :param n: number of accounts (1 for TradingEnv and the backtester).
    """

    def __init__(self, data: Any, config: EnvConfig, n: int = 1) -> None:
        config.validate()
        self.config = config
        self.data = data = resolve_data(data, config.window, config.timeframe)
        self.window = int(config.window or data.window)
        self.layout = ObservationLayout(self.window, data.n_features)
        symbols = [config.symbol] if config.symbol is not None else list(data.symbols)
        warmup = data.warmup  # rows of each symbol whose features are undefined
        self.symbols: list[str] = []
        starts, ends, asset_ids = [], [], []
        for symbol in symbols:
            i = data.symbol_index(symbol)
            lo, hi = data.split_range(config.split, symbol)
            lo = max(lo, int(data.offsets[i] + warmup + self.window - 1))
            if hi - lo < 2:
                if config.symbol is not None or len(symbols) == 1:
                    raise ValueError(
                        f"window={self.window} needs at least {self.window + 1} bars in split '{config.split}' of "
                        f"{symbol}; it has {max(hi - lo + self.window - 1, 0)}"
                    )
                continue
            self.symbols.append(symbol)
            starts.append(lo)
            ends.append(hi)
            asset_ids.append(data.asset_ids[i])
        if not self.symbols:
            raise ValueError(f"no symbol has enough bars in split '{config.split}' for window={self.window}")
        self.sym_start = np.asarray(starts, dtype=np.int64)
        self.sym_end = np.asarray(ends, dtype=np.int64)  # exclusive
        self.sym_asset = np.asarray(asset_ids, dtype=np.float32)
        self.n = n
        self.sim = Simulator(
            data.open, data.high, data.low, data.close, data.volume, config.costs(),
            n_accounts=n, initial_cash=config.initial_cash, fill_at=config.fill_at,
            allow_short=config.allow_short, min_rebalance=config.min_rebalance, record_trades=config.record_trades,
            extra_floats=len(kernel.SCALARS) if n == 1 else 0,
        )
        self.reward_fn = make_reward(config.reward, n, drawdown_penalty=config.drawdown_penalty,
                                     dsr_eta=config.dsr_eta)
        self.account_symbol = np.zeros(n, dtype=np.int64)
        self.episode_end = np.zeros(n, dtype=np.int64)  # last row an episode may reach
        self.episode_start = np.zeros(n, dtype=np.int64)  # the row each account's episode started at
        self._offsets = np.arange(-self.window + 1, 1, dtype=np.int64)
        self.state = np.zeros((n, 4))  # position state of the last observation, bars held scaled as observed
        self._all_accounts = np.arange(n, dtype=np.int64)
        self._episode_end_one = 0
        self._v_row = memoryview(self.sim.row) if n == 1 else None  # the single account's row as a Python int
        self._plain_log_reward = type(self.reward_fn) is Reward
        self._min_equity_cash = config.min_equity * config.initial_cash
        # The window of feature row r is features.ravel()[(r - window + 1) * F : (r + 1) * F], contiguous.
        # Row s of this strided view (no copy) is the observation-sized slice that starts at feature row s:
        # the window of rows s .. s + window - 1, then the next 5 values (overwritten with the state), so
        # one slice copy (n == 1) or one gather of whole rows (n > 1) makes the observations.
        self._flat_features = flat = np.ascontiguousarray(data.features).reshape(-1)
        self._obs_size, self._n_window_values = self.layout.size, self.layout.n_window_values
        self._n_features, self._window_less_one = int(data.n_features), self.window - 1
        n_full = max((len(flat) - self._obs_size) // self._n_features + 1, 0)
        self._observation_rows = np.lib.stride_tricks.as_strided(
            flat, shape=(n_full, self._obs_size), strides=(flat.strides[0] * self._n_features, flat.strides[0]),
            writeable=False)
        if config.action_mode == "discrete":
            levels = [-1.0, 0.0, 1.0] if config.allow_short else [0.0, 1.0]
            self.levels = np.asarray(levels)
        else:
            self.levels = None
        if n == 1:
            self._single_account_scalars()

    def _single_account_scalars(self) -> None:
        """The single account's settings, episode and last observed state in the simulator's extra slots
        (:data:`envs.kernel.SCALARS`), and the compiled step when it applies: numba installed, the plain
        log-return reward, a constant slippage fraction and no trade log."""
        sim = self.sim
        self.scalars = scalars = sim.extra
        scalars[kernel.NEXT_OPEN], scalars[kernel.ALLOW_SHORT] = sim.next_open, sim.allow_short
        scalars[kernel.MIN_REBALANCE], scalars[kernel.COMMISSION] = sim.min_rebalance, sim.costs.commission
        scalars[kernel.FIXED_FEE], scalars[kernel.BORROW_RATE] = sim.costs.fixed_fee, sim.costs.borrow_rate
        scalars[kernel.SLIPPAGE] = np.nan if sim._slip_fraction is None else sim._slip_fraction
        scalars[kernel.MIN_EQUITY_CASH] = self._min_equity_cash
        scalars[kernel.WINDOW], scalars[kernel.N_FEATURES] = self.window, self._n_features
        scalars[kernel.BARS_HELD_SCALE] = BARS_HELD_SCALE
        scalars[kernel.CASH_FRACTION] = 1.0
        self._v_scalars = memoryview(scalars)
        self._observed_tail = scalars[kernel.POSITION :]  # the observation's last five values
        use_kernel = (kernel.env_step_kernel is not None and self._plain_log_reward
                      and sim._slip_fraction is not None and sim.logs is None)
        self._env_kernel = kernel.env_step_kernel if use_kernel else None
        if use_kernel:
            self.step_observe_one = self._compiled_step_observe_one()

    @property
    def steps(self) -> np.ndarray:
        """Steps taken in each account's current episode (each step advances one bar)."""
        return self.sim.row - self.episode_start

    @property
    def state_one(self) -> tuple[float, float, float, float]:
        """The single account's last observed position state (exposure, unrealised return, bars held / 100,
        cash fraction) as Python floats."""
        return tuple(self.scalars[kernel.POSITION : kernel.CASH_FRACTION + 1].tolist())

    # ----- episodes -----------------------------------------------------------------------
    def start(self, accounts: np.ndarray, rng: np.random.Generator, symbol_index: int | None = None,
              start_row: int | None = None) -> None:
        """Begin new episodes for ``accounts``: symbol and start bar drawn from ``rng`` unless given.

        :param accounts: account indices to restart.
        :param rng: the env's random generator (``np_random``).
        :param symbol_index: fixed symbol (index into ``self.symbols``), else random.
        :param start_row: fixed global start row, else random (or the split start).
        """
        accounts = np.asarray(accounts, dtype=np.int64)
        rows = np.empty(len(accounts), dtype=np.int64)
        length = self.config.episode_length
        for k, a in enumerate(accounts):
            s = symbol_index if symbol_index is not None else int(rng.integers(len(self.symbols)))
            lo, hi = int(self.sym_start[s]), int(self.sym_end[s])
            latest = hi - 2 if length is None else max(lo, hi - 1 - length)
            if start_row is not None:
                if not lo <= start_row <= hi - 2:
                    raise ValueError(f"start_row={start_row} must be in [{lo}, {hi - 2}] for {self.symbols[s]}")
                row = start_row
            elif self.config.random_start and latest > lo:
                row = int(rng.integers(lo, latest + 1))
            else:
                row = lo
            rows[k] = row
            self.account_symbol[a] = s
            self.episode_end[a] = hi - 1 if length is None else min(hi - 1, row + length)
        self.episode_start[accounts] = rows
        self.sim.reset(rows, accounts)
        self.reward_fn.reset(accounts)
        if self.n == 1:
            self._episode_end_one = int(self.episode_end[0])
            self.scalars[kernel.EPISODE_END] = self._episode_end_one
            self.scalars[kernel.ASSET] = self.sym_asset[int(self.account_symbol[0])]

    # ----- actions ------------------------------------------------------------------------
    def targets_from_discrete(self, actions: Any) -> np.ndarray:
        """Target exposures of discrete ``actions`` (one per account): integers, or floats with an integral
        value, in ``0 .. len(levels) - 1``; anything else (0.7, True, 5, NaN) is a ValueError naming the
        allowed values, never truncated or wrapped."""
        value = np.asarray(actions)
        index = np.full(self.n, -1, dtype=np.int64)
        if value.size == self.n and value.dtype.kind in "iuf":
            flat = value.reshape(self.n)
            integral = np.isfinite(flat) & (flat == np.round(flat)) if value.dtype.kind == "f" else True
            if np.all(integral):
                index = flat.astype(np.int64)
        if (index < 0).any() or (index >= len(self.levels)).any():
            names = ["short", "flat", "long"] if len(self.levels) == 3 else ["flat", "long"]
            allowed = ", ".join(f"{i} ({n})" for i, n in enumerate(names))
            raise ValueError(f"action={actions!r} is not valid for action_mode='discrete'; allowed values: {allowed}")
        return self.levels[index]

    def targets_from_continuous(self, actions: np.ndarray) -> np.ndarray:
        """Target exposures; without shorts the simulator treats negative targets as flat."""
        return np.asarray(actions, dtype=np.float64).reshape(self.n)

    # ----- stepping -----------------------------------------------------------------------
    def step(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step every account; returns (reward, terminated, truncated) arrays."""
        sim = self.sim
        result = sim.step(targets)
        reward = self.reward_fn(result.prev_equity, result.equity, sim.drawdown())
        if self.n == 1:
            if not (math.isfinite(reward[0]) and math.isfinite(result.equity[0])):
                self._non_finite(reward, result.equity)
        elif not (np.isfinite(reward).all() and np.isfinite(result.equity).all()):
            self._non_finite(reward, result.equity)
        terminated = result.equity <= self.config.min_equity * sim.initial_cash
        truncated = (sim.row >= self.episode_end) & ~terminated
        return reward, terminated, truncated

    def step_one(self, target: float) -> tuple[float, bool, bool]:
        """:meth:`step` of the single account (``n == 1``) in Python scalars: the simulator's
        single-account path and the same reward expressions (bit for bit, tested).

        :param target: the target exposure.
        :return: ``(reward, terminated, truncated)``.
        """
        sim = self.sim
        prev_equity, equity = sim.step_one(target)
        if self._plain_log_reward:
            # numpy's log, not math.log: they differ in the last bit for some inputs, and the batched
            # path uses numpy's
            reward = float(np.log((1e-12 if equity < 1e-12 else equity) / prev_equity))  # np.maximum: NaN stays
        else:
            reward = float(self.reward_fn(sim.result.prev_equity, sim.equity, sim.drawdown())[0])
        if not (math.isfinite(reward) and math.isfinite(equity)):
            self._non_finite(np.array([reward]), np.array([equity]))
        terminated = equity <= self._min_equity_cash
        truncated = not terminated and self._v_row[0] >= self._episode_end_one
        return reward, terminated, truncated

    def step_observe_one(self, target: float) -> tuple[np.ndarray, float, bool, bool]:
        """:meth:`step_one` then :meth:`observation_one`, in one compiled call where :mod:`envs.kernel`
        applies (the same numbers, tested).

        :param target: the target exposure (a Python float).
        :return: ``(observation, reward, terminated, truncated)``.
        """
        reward, terminated, truncated = self.step_one(target)
        return self.observation_one(), reward, terminated, truncated

    def _compiled_step_observe_one(self):
        """:meth:`step_observe_one` through :func:`envs.kernel.env_step_kernel`, as a closure: its arguments
        are local names, not attribute look-ups, on the env's hottest path."""
        step, log, empty, float32 = self._env_kernel, np.log, np.empty, np.float32
        state, open_, close, features = self.sim.state_buffer, self.sim.open, self.sim.close, self._flat_features
        size = self._obs_size

        def step_observe_one(target: float) -> tuple[np.ndarray, float, bool, bool]:
            obs = empty(size, float32)
            ratio, status = step(target, state, open_, close, features, obs)
            reward = float(log(ratio))  # numpy's log, as the other paths (see step_one)
            if status:  # the episode ended, or a wrong number
                if status == kernel.NOT_FINITE:
                    self._non_finite(np.array([reward]), self.sim.equity.copy())
                return obs, reward, status == kernel.TERMINATED, status == kernel.TRUNCATED
            return obs, reward, False, False

        return step_observe_one

    def observation_one(self) -> np.ndarray:
        """The fresh float32 observation of the single account (``n == 1``), shape ``(layout.size,)``;
        equal to ``observations()[0]``. Also sets :attr:`state_one`."""
        start = self._v_row[0] - self._window_less_one
        if start < len(self._observation_rows):
            out = self._observation_rows[start].copy()
        else:  # the window that ends at the dataset's last row has no room for the state after it
            out = np.empty(self._obs_size, dtype=np.float32)
            first = start * self._n_features
            out[: self._n_window_values] = self._flat_features[first : first + self._n_window_values]
        position, unrealised, bars_held, cash_fraction = self.sim.position_state_one()
        v = self._v_scalars
        v[kernel.POSITION], v[kernel.UNREALISED] = position, unrealised
        v[kernel.BARS_HELD], v[kernel.CASH_FRACTION] = bars_held / BARS_HELD_SCALE, cash_fraction
        out[self._n_window_values :] = self._observed_tail
        return out

    def window_observations(self, batch: int = 4096) -> Iterator[np.ndarray]:
        """Every window this core's episodes can observe (each symbol's rows of the split), as batches of
        float32 observations whose windows and asset ids are those the env returns (the position state is
        zero): what a frozen encoder's embedding cache is filled from (``agents.extractor``).

        :param batch: observations per batch.
        """
        nw = self._n_window_values
        for s in range(len(self.symbols)):
            lo, hi = int(self.sym_start[s]), int(self.sym_end[s])
            for first in range(lo, hi, batch):
                rows = np.arange(first, min(first + batch, hi))
                out = np.zeros((len(rows), self._obs_size), dtype=np.float32)
                out[:, :nw] = self.data.features[rows[:, None] + self._offsets].reshape(len(rows), nw)
                out[:, -1] = self.sym_asset[s]
                yield out

    def _non_finite(self, reward: np.ndarray, equity: np.ndarray) -> None:
        """A NaN/inf reward or equity is a wrong number: stop with the account, symbol and bar."""
        bad = ~(np.isfinite(reward) & np.isfinite(equity))
        a = int(np.flatnonzero(bad)[0])
        row = int(self.sim.row[a])
        symbol = self.symbols[int(self.account_symbol[a])]
        stamp = np.datetime64(int(self.data.timestamps[row]), "ns")
        raise FloatingPointError(
            f"non-finite reward {reward[a]} / equity {equity[a]} on {symbol} at row {row} ({stamp} UTC); "
            f"check the prices around that bar (open {self.data.open[row]}, close {self.data.close[row]})"
        )

    def observations(self, accounts: np.ndarray | None = None) -> np.ndarray:
        """Fresh float32 observations ``(len(accounts), layout.size)``; also refreshes ``self.state``
        (``state_one`` when ``n == 1``)."""
        if self.n == 1:
            return self.observation_one()[None]
        sim = self.sim
        if kernel.observe_kernel is not None:
            accounts = self._all_accounts if accounts is None else np.asarray(accounts, dtype=np.int64)
            out = np.empty((len(accounts), self._obs_size), dtype=np.float32)
            kernel.observe_kernel(accounts, sim.int_state, sim.float_state, sim.close, self._flat_features,
                                  self.window, self._n_features, BARS_HELD_SCALE, self.sym_asset, self.account_symbol,
                                  self.state, out)
            return out
        state = sim.position_state(self.state)
        state[:, 2] /= BARS_HELD_SCALE
        nw = self._n_window_values
        rows = sim.row if accounts is None else sim.row[accounts]
        idx = slice(None) if accounts is None else accounts
        starts = rows - self._window_less_one
        last = starts >= len(self._observation_rows)
        if last.any():  # the window that ends at the dataset's last row has no room for the state after it
            starts = np.where(last, 0, starts)
        out = self._observation_rows[starts]  # one gather of whole rows, a fresh array
        if last.any():
            out[last, :nw] = self.data.features[rows[last, None] + self._offsets].reshape(-1, nw)
        out[:, nw : nw + 4] = state[idx]
        out[:, nw + 4] = self.sym_asset[self.account_symbol[idx]]
        return out
