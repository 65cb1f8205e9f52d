"""``TradingEnv-v0``: a Gymnasium skin over the simulator."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from .core import EnvConfig, TradingCore
from .kernel import POSITION


class TradingEnv(gym.Env):
    """Trade one asset at a time over a dataset split, paying commission and slippage on every fill.

    ## Description
    Each step the agent sets a target position in the asset; the order is filled by the market
    simulator (``sim.Simulator``) at the next bar's open (``fill_at="next_open"``, the default) or
    at this bar's close (``fill_at="close"``, optimistic), with commission and slippage charged.
    The backtester (``envs.backtest``) runs the very same code, so rewards and backtest equity agree.

    ## Action Space
    - ``action_mode="discrete"`` (default): ``Discrete(2)``: 0 = flat, 1 = long (all equity).
      With ``allow_short=True``: ``Discrete(3)``: 0 = short, 1 = flat, 2 = long.
    - ``action_mode="continuous"``: ``Box(-1, 1, (1,))``, the target exposure as a fraction of
      equity; without ``allow_short`` negative values mean flat.
    An order is sent only when the target changes (by more than ``min_rebalance``).

    ## Observation Space
    ``Box(-inf, inf, (window * n_features + 5,), float32)``: the last ``window`` rows of the scaled
    feature matrix (oldest first, flattened), then the position state: position (signed exposure),
    unrealised return of the open position, bars held / 100, cash / equity; then the asset id.
    See ``envs.layout.ObservationLayout``. Features at bar t use data up to bar t's close only.

    ## Rewards
    ``reward="log_return"`` (default): log of equity growth over the step, net of all costs (summed
    over an episode: the log of final over initial equity). ``"drawdown_penalty"``: the same minus
    ``drawdown_penalty`` times the increase in drawdown. ``"differential_sharpe"``: Moody & Saffell's
    differential Sharpe ratio (rate ``dsr_eta``).

    ## Starting State
    Flat with ``initial_cash`` at a bar of the split drawn from ``np_random`` (``random_start=True``)
    or at the first bar whose window fits (``random_start=False``); the symbol is ``symbol`` or, if
    None, drawn per episode from the dataset's symbols. ``reset(options={"start_row": r})`` fixes it.

    ## Episode End
    Truncated at the split's last bar or after ``episode_length`` steps; terminated when equity falls
    to ``min_equity`` times the initial equity or below. Stepping an ended episode (or before the first
    ``reset()``) raises ``RuntimeError``: the env never walks into the purge gap or the next symbol's
    bars. A NaN/inf reward or equity raises ``FloatingPointError`` naming the symbol and bar.

    ## Arguments
    ``data`` (None = embedded default dataset; a ``MarketData``, a dataset directory, a bars
    DataFrame or ``{symbol: DataFrame}``), ``symbol``, ``split`` ("train", "validation", "test"),
    ``window``, ``timeframe`` (None: inferred from the bars' spacing; one that contradicts the bars or the
    dataset is an error), ``action_mode``, ``allow_short``, ``reward``, ``commission`` (fraction, 0.001),
    ``fixed_fee``, ``slippage`` (bps or a model spec, 5.0), ``borrow_rate`` (per bar), ``fill_at``,
    ``initial_cash``, ``episode_length``, ``random_start``, ``min_equity``, ``min_rebalance``,
    ``drawdown_penalty``, ``dsr_eta``.

    ``info`` keys: ``timestamp`` (the bar just closed, a UTC-aware ``pandas.Timestamp``, comparable with
    the bars' index), ``fill_price`` (None when no
    order filled), ``equity``, ``position`` (signed exposure), ``units``, ``cost`` (paid this step),
    ``trade_count`` (orders filled this episode), ``costs_paid``, ``drawdown``, ``symbol``, ``row``.

    ## Version History
    - v0: first version.
    """

    metadata = {"render_modes": []}

    def __init__(self, data: Any = None, render_mode: str | None = None, **settings: Any) -> None:
        unknown = sorted(set(settings) - set(EnvConfig.__dataclass_fields__))
        if unknown:
            raise TypeError(f"TradingEnv got unknown argument(s) {unknown}; valid: {sorted(EnvConfig.__dataclass_fields__)}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported: TradingEnv draws nothing per step "
                             f"(render modes: {self.metadata['render_modes']}); plot a run with "
                             f"envs.backtest(...).save(folder) instead")
        self.config = EnvConfig(**settings)
        self.core = TradingCore(data, self.config, n=1)
        self.layout = self.core.layout
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(self.layout.size,), dtype=np.float32)
        if self.config.action_mode == "discrete":
            self.action_space = spaces.Discrete(len(self.core.levels))
        else:
            self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self._target = np.zeros(1)
        self._accounts = np.zeros(1, dtype=np.int64)
        # reads Python ints (the cache key of utc_timestamp) without copying the array
        self._stamps = memoryview(np.ascontiguousarray(self.core.data.timestamps, dtype=np.int64))
        self._sim_views = self.core.sim._v
        self._v_scalars = self.core._v_scalars
        self._levels = None if self.core.levels is None else self.core.levels.tolist()
        self._n_levels = 0 if self._levels is None else len(self._levels)
        self._step_observe = self.core.step_observe_one
        self._symbol = self.core.symbols[0]
        self._episode_over: str | None = "call reset() before the first step()"

    @property
    def data(self):
        return self.core.data

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"symbol", "start_row"})
        if unknown:
            raise ValueError(f"reset options {unknown} are not known; valid options: ['start_row', 'symbol']")
        symbol = options.get("symbol")
        symbol_index = None
        if symbol is not None:
            if symbol not in self.core.symbols:
                raise ValueError(f"options['symbol']={symbol!r} is not in this env's symbols {self.core.symbols}")
            symbol_index = self.core.symbols.index(symbol)
        start_row = options.get("start_row")
        if start_row is not None:
            if isinstance(start_row, (bool, np.bool_)) or not isinstance(start_row, (int, np.integer)):
                raise ValueError(
                    f"options['start_row']={start_row!r} must be an integer row of the dataset "
                    f"(got {type(start_row).__name__})"
                )
            start_row = int(start_row)
        self.core.start(self._accounts, self.np_random, symbol_index, start_row)
        self._episode_over = None
        self._symbol = self.core.symbols[int(self.core.account_symbol[0])]
        return self.core.observation_one(), self._info(filled=False)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._episode_over is not None:
            raise RuntimeError(f"TradingEnv.step(): {self._episode_over}")
        if (type(action) is int or isinstance(action, np.integer)) and 0 <= action < self._n_levels:
            target = self._levels[action]  # the common case: an integer action, no conversions
        else:
            target = self._action_to_target(action)
        obs, reward, terminated, truncated = self._step_observe(target)
        if terminated or truncated:
            core = self.core
            why = "terminated (equity fell to min_equity)" if terminated else "truncated (end of split or episode_length)"
            self._episode_over = (
                f"the episode is over ({why} at row {int(core.sim.row[0])} of "
                f"{core.symbols[int(core.account_symbol[0])]}); call reset() before stepping again"
            )
        return obs, reward, terminated, truncated, self._info(True)

    def _action_to_target(self, action: Any) -> float:
        if self.core.levels is not None:
            return float(self.core.targets_from_discrete(action)[0])
        value = np.asarray(action, dtype=np.float64).reshape(-1)
        if value.size != 1 or not np.isfinite(value[0]) or not -1.0 <= value[0] <= 1.0:
            raise ValueError(
                f"action={action!r} is not valid for action_mode='continuous'; expected one finite target "
                f"exposure in [-1, 1]"
            )
        return float(value[0])  # without shorts the simulator treats a negative target as flat

    def _info(self, filled: bool) -> dict:
        v = self._sim_views
        row, equity = v[0][0], v[4][0]
        filled = filled and v[11][0]
        return {
            "timestamp": utc_timestamp(self._stamps[row]),
            "fill_price": v[12][0] if filled else None,
            "equity": equity,
            "position": self._v_scalars[POSITION],
            "units": v[2][0],
            "cost": v[13][0] if filled else 0.0,
            "trade_count": v[8][0],
            "costs_paid": v[9][0],
            "drawdown": 1.0 - equity / v[5][0],
            "symbol": self._symbol,
            "row": row,
        }


@lru_cache(maxsize=1 << 16)
def utc_timestamp(nanoseconds: int) -> pd.Timestamp:
    """The UTC-aware ``pandas.Timestamp`` of an epoch-nanosecond stamp, cached: info's ``timestamp`` costs
    a dictionary look-up instead of building a Timestamp (~1.6 us) per step. Timestamps are immutable."""
    return pd.Timestamp(nanoseconds, tz="UTC")
