"""The portfolio core shared by :class:`PortfolioEnv`, :class:`PortfolioVecEnv` and the portfolio backtester.

It owns a :class:`sim.PortfolioSimulator` with ``n`` accounts over a :class:`features.Panel`, turns actions
into target weights, builds observations and rewards and decides when episodes end.

Observation (one flat float32 vector, :class:`PortfolioLayout`)::

    [ N x window x n_features scaled features (asset-major, oldest bar first) | N + 1 weights | N x N covariance ]

- the features are each asset's causal window (the dataset's pipeline and train-fit scaler), the latest bar
  at or before the decision time (zeros before an asset's first bar);
- the weights are each asset's value / equity at the last close, then cash / equity;
- the covariance (``covariance_window`` > 0 only) is of the assets' daily log returns over the last
  ``covariance_window`` rows, row-major, as of the decision time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from features.dataset import DatasetConfig, build_dataset, build_market_data
from features.embedded import SKFOLIO_SYMBOLS
from features.market_data import MarketData
from features.panel import Panel
from features.splits import SPLITS
from sim.engine import FILL_AT, Costs
from sim.portfolio import OK, PortfolioSimulator
from sim.settings import check_choice, check_setting

from . import portfolio_kernel as kernel
from .rewards import REWARDS, make_reward

TRANSFORMS = kernel.TRANSFORMS
DEFAULT_WINDOW = 24


@lru_cache(maxsize=2)
def default_universe(window: int = DEFAULT_WINDOW) -> MarketData:
    """The embedded default universe: skfolio's 20 S&P 500 stocks, daily closes 1990-2022 (built once per process).
    Close-only data: orders fill at the next close."""
    return build_dataset(DatasetConfig(source="skfolio", symbols=SKFOLIO_SYMBOLS, window=window))


def resolve_panel(data: Any, symbols: Any = None, window: int | None = None, timeframe: str | None = None) -> Panel:
    """A :class:`Panel` from None (the embedded universe), a Panel, a MarketData, a dataset directory or
    ``{symbol: bars}``.

    :param data: the universe's data.
    :param symbols: the universe's symbols (None: all of the data's).
    :param window: the observation window when building from bars (or the embedded universe).
    :param timeframe: the declared bar length when building from bars.
    """
    if isinstance(data, Panel):
        if symbols is not None and list(symbols) != data.symbols:
            raise ValueError(f"symbols={list(symbols)} differ from the given Panel's {data.symbols}")
        return data
    if data is None:
        market = default_universe(int(window or DEFAULT_WINDOW))
    elif isinstance(data, MarketData):
        market = data
    elif isinstance(data, (str, Path)):
        market = MarketData.load(data)
    elif isinstance(data, Mapping):
        market = build_market_data(dict(data), DatasetConfig(window=window or DEFAULT_WINDOW, timeframe=timeframe))
    elif isinstance(data, pd.DataFrame):
        raise ValueError("PortfolioEnv needs a universe: pass {symbol: bars DataFrame} for 2 or more symbols "
                         "(one asset is TradingEnv-v0)")
    else:
        raise TypeError(f"data must be None, a Panel, a MarketData, a dataset directory or {{symbol: bars}}; "
                        f"got {type(data).__name__}")
    if window is not None and int(window) != market.window:
        raise ValueError(f"window={window} differs from the dataset's window {market.window}; rebuild the dataset")
    return Panel.from_market_data(market, None if symbols is None else list(symbols))


@dataclass
class PortfolioConfig:
    """Settings of the portfolio environment (see :class:`envs.PortfolioEnv`)."""

    symbols: tuple[str, ...] | None = None
    split: str = "train"
    window: int | None = None
    timeframe: str | None = None
    action_transform: str = "normalize"
    allow_short: bool = False
    max_leverage: float = 1.0
    reward: str = "log_return"
    commission: float = 0.001
    fixed_fee: float = 0.0
    slippage: Any = 5.0
    borrow_rate: float = 0.0
    cash_rate: float = 0.0
    fill_at: str = "next_open"
    initial_cash: float = 100_000.0
    episode_length: int | None = None
    random_start: bool = True
    min_equity: float = 0.5
    min_rebalance: float = 0.0
    rebalance_every: int | None = None
    covariance_window: int = 0
    drawdown_penalty: float = 1.0
    dsr_eta: float = 0.01
    record_fills: bool = False

    def validate(self) -> None:
        check_choice("split", self.split, SPLITS)
        check_choice("action_transform", self.action_transform, TRANSFORMS)
        check_choice("reward", self.reward, REWARDS)
        check_choice("fill_at", self.fill_at, FILL_AT)
        for name in ("window", "episode_length", "rebalance_every"):
            if getattr(self, name) is not None:
                rule = "window" if name == "rebalance_every" else name
                setattr(self, name, check_setting(name, getattr(self, name), rule=rule))
        for name in ("allow_short", "random_start", "initial_cash", "min_equity", "min_rebalance",
                     "drawdown_penalty", "dsr_eta", "cash_rate", "max_leverage"):
            setattr(self, name, check_setting(name, getattr(self, name)))
        self.record_fills = check_setting("record_fills", self.record_fills, rule="record_trades")
        self.covariance_window = check_setting("covariance_window", self.covariance_window, rule="non_negative")
        if self.covariance_window != int(self.covariance_window) or self.covariance_window == 1:
            raise ValueError(f"covariance_window={self.covariance_window!r} must be 0 (off) or an integer >= 2")
        self.covariance_window = int(self.covariance_window)
        if self.action_transform == "softmax" and self.allow_short:
            raise ValueError("action_transform='softmax' is long-only; use 'normalize' or 'weights' with allow_short=True")
        if not self.allow_short and self.max_leverage != 1.0:
            raise ValueError(f"max_leverage={self.max_leverage!r} needs allow_short=True (long-only weights sum to 1)")
        if self.symbols is not None:
            self.symbols = (self.symbols,) if isinstance(self.symbols, str) else tuple(self.symbols)
        self.costs()

    def costs(self) -> Costs:
        return Costs(self.commission, self.fixed_fee, self.slippage, self.borrow_rate)


@dataclass(frozen=True)
class PortfolioLayout:
    """Where each part of a flat portfolio observation lives (see the module docstring)."""

    n_assets: int
    window: int
    n_features: int
    covariance: bool = False

    @property
    def n_window_values(self) -> int:
        return self.n_assets * self.window * self.n_features

    @property
    def weights_slice(self) -> slice:
        return slice(self.n_window_values, self.n_window_values + self.n_assets + 1)

    @property
    def size(self) -> int:
        return self.n_window_values + self.n_assets + 1 + (self.n_assets ** 2 if self.covariance else 0)

    def features(self, obs: Any) -> Any:
        """The windows, shape ``(..., N, window, n_features)`` (numpy or torch)."""
        return obs[..., : self.n_window_values].reshape(*obs.shape[:-1], self.n_assets, self.window, self.n_features)

    def weights(self, obs: Any) -> Any:
        """The weights, shape ``(..., N + 1)``: assets then cash."""
        return obs[..., self.weights_slice]

    def covariance_matrix(self, obs: Any) -> Any:
        """The covariance, shape ``(..., N, N)``."""
        if not self.covariance:
            raise ValueError("this layout has no covariance (covariance_window=0)")
        return obs[..., self.weights_slice.stop :].reshape(*obs.shape[:-1], self.n_assets, self.n_assets)


def rolling_covariance(panel: Panel, window: int) -> np.ndarray:
    """float32 (T, N * N): covariance of the assets' log returns over the ``window`` rows ending at each row
    (a return needs the asset's close at both rows; a row without a bar has return 0; zeros until ``window``
    returns exist)."""
    close = panel.close
    logret = np.zeros_like(close)
    valid = (close[1:] > 0) & (close[:-1] > 0)
    logret[1:][valid] = np.log(close[1:][valid] / close[:-1][valid])
    t_len, n = close.shape
    out = np.zeros((t_len, n * n), dtype=np.float32)
    if t_len <= window:
        return out
    csum = np.concatenate([np.zeros((1, n)), np.cumsum(logret, axis=0)])
    outer = np.einsum("ti,tj->tij", logret, logret).reshape(t_len, n * n)
    osum = np.concatenate([np.zeros((1, n * n)), np.cumsum(outer, axis=0)])
    rows = np.arange(window, t_len)  # a window of `window` returns: rows r - window + 1 .. r
    mean = (csum[rows + 1] - csum[rows + 1 - window]) / window
    second = (osum[rows + 1] - osum[rows + 1 - window]) / window
    cov = second - np.einsum("ti,tj->tij", mean, mean).reshape(len(rows), n * n)
    out[rows] = (cov * (window / (window - 1))).astype(np.float32)
    return out


class PortfolioCore:
    """Accounts, episodes, observations and rewards of the portfolio env(s).

    :param data: see :func:`resolve_panel`.
    :param config: the settings.
    :param n: accounts stepped together.
    """

    def __init__(self, data: Any, config: PortfolioConfig, n: int = 1) -> None:
        config.validate()
        self.config = config
        self.panel = resolve_panel(data, config.symbols, config.window, config.timeframe)
        panel = self.panel
        self.symbols = panel.symbols
        self.n = int(n)
        self.n_assets = panel.n_assets
        self.layout = PortfolioLayout(panel.n_assets, panel.window, panel.n_features, config.covariance_window > 0)
        self.start_row, self.end_row = panel.split_range(config.split)
        self.next_open = config.fill_at == "next_open"
        # the last row an account may stand on before a step: it fills at row + 1 (next open) and marks at row + 1
        self.last_decision_row = self.end_row - 2
        if self.last_decision_row < self.start_row:
            raise ValueError(f"split {config.split!r} of the universe has {self.end_row - self.start_row} rows; "
                             f"a portfolio episode needs at least 2")
        self.sim = PortfolioSimulator(
            panel.open, panel.high, panel.low, panel.close, panel.volume, panel.has_bar, config.costs(), n_accounts=n,
            initial_cash=config.initial_cash, fill_at=config.fill_at, allow_short=config.allow_short,
            min_rebalance=config.min_rebalance, cash_rate=config.cash_rate, record_fills=config.record_fills)
        self.reward = make_reward(config.reward, n, drawdown_penalty=config.drawdown_penalty, dsr_eta=config.dsr_eta)
        self.transform = TRANSFORMS.index(config.action_transform)
        self.covariance = (rolling_covariance(panel, config.covariance_window) if config.covariance_window
                           else np.zeros((0, 0), dtype=np.float32))
        self.min_equity_cash = config.min_equity * config.initial_cash
        self.env_ints = np.zeros((len(kernel.ENV_INT_FIELDS), n), dtype=np.int64)
        self.status, self.where, self.ends, self.episode_end = self.env_ints
        self.env_params = np.array([float(self.transform), float(config.allow_short), float(config.max_leverage),
                                    float(self.min_equity_cash), float(panel.window)])
        self.episode_start = np.zeros(n, dtype=np.int64)
        self.steps = np.zeros(n, dtype=np.int64)
        self.targets = np.zeros((n, self.n_assets))
        self.all_accounts = np.arange(n, dtype=np.int64)
        self.obs = np.zeros((n, self.layout.size), dtype=np.float32)
        self.rewards = np.zeros(n)
        self.padded = panel.padded_features
        self.window_start = panel.window_start
        self.actions = np.zeros((n, self.n_assets + 1))
        self.weights = np.zeros((n, self.n_assets + 1))  # after the last step or start (float64; the obs has float32)
        self.weights[:, -1] = 1.0
        self.log_returns = np.zeros(n)
        self.plain_log_return = config.reward == "log_return"
        self.rebalance_every = config.rebalance_every

    @property
    def action_size(self) -> int:
        return self.n_assets + 1

    def start(self, accounts: np.ndarray, rng: np.random.Generator, start_row: int | None = None) -> None:
        """Begin episodes of ``accounts`` in cash at a start row (random in the split, or the split's first)."""
        length = self.config.episode_length
        latest = self.last_decision_row if length is None else max(self.start_row, self.last_decision_row - length + 1)
        for a in np.atleast_1d(accounts):
            if start_row is not None:
                if not self.start_row <= start_row <= self.last_decision_row:
                    raise ValueError(f"start_row={start_row} is outside split {self.config.split!r}'s decision rows "
                                     f"[{self.start_row}, {self.last_decision_row}]")
                row = int(start_row)
            elif self.config.random_start and latest > self.start_row:
                row = int(rng.integers(self.start_row, latest + 1))
            else:
                row = self.start_row
            self.episode_start[a] = row
            self.episode_end[a] = self.end_row - 1 if length is None else min(self.end_row - 1, row + length)
        accounts = np.atleast_1d(accounts)
        self.sim.reset(self.episode_start[accounts], accounts)
        self.steps[accounts] = 0
        self.reward.reset(accounts)

    def observe(self, accounts: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Observations of ``accounts`` written to ``out`` (len(accounts), size)."""
        sim = self.sim
        kernel.observe_kernel(np.asarray(accounts, dtype=np.int64), sim.ints, sim.floats, sim.assets, sim.market,
                              self.window_start, self.padded, self.panel.window, self.covariance, out, self.weights)
        return out

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step every account with its action (n, N + 1): ``(observations, rewards, ends)`` (views, reused)."""
        sim = self.sim
        if self.rebalance_every is not None:
            sim.rebalance[:] = (self.steps % self.rebalance_every) == 0
        result = kernel.step_kernel(
            actions, self.targets, sim.rebalance, self.env_ints, self.env_params, sim.ints, sim.floats, sim.assets,
            sim.market, sim.params, self.window_start, self.padded, self.covariance, self.all_accounts, self.obs,
            self.weights, self.log_returns)
        if result != OK:
            self._raise(result, actions)
        self.steps += 1
        if sim.fills is not None:
            sim._record()
        if self.plain_log_return:
            return self.obs, self.log_returns, self.ends
        self.rewards[:] = self.reward(sim.result.prev_equity, sim.result.equity, sim.drawdown())
        return self.obs, self.rewards, self.ends

    def _raise(self, result: int, actions: np.ndarray) -> None:
        if result == -2:
            a = int(np.flatnonzero(self.status != kernel.ACTION_OK)[0])
            code, j = int(self.status[a]), int(self.where[a])
            raise ValueError(self.describe_bad_action(code, j, actions[a]))
        account, asset = divmod(int(result), self.n_assets)
        raise FloatingPointError(
            f"slippage model '{self.config.costs().slippage.describe()}' gives a slippage of 100% of the price or "
            f"more for {self.symbols[asset]} at row {int(self.sim.row[account]) + int(self.next_open)}: a fill at that "
            f"price is <= 0; lower the model's parameters")

    def describe_bad_action(self, code: int, j: int, action: np.ndarray) -> str:
        """The one-line error of a bad action (``code`` and entry ``j`` from the kernel)."""
        names = self.symbols + ["cash"]
        mode = self.config.action_transform
        if code == kernel.NOT_FINITE:
            return (f"action entry {j} ({names[j]}) is {action[j]!r}; the action must be {len(names)} finite numbers "
                    f"(one weight per asset, then cash)")
        if code == kernel.NEGATIVE:
            return (f"action weight of {names[j]} is {action[j]!r}; weights must be >= 0 when allow_short=False "
                    f"(action_transform={mode!r})")
        if code == kernel.NOT_SUM_ONE:
            return (f"action weights sum to {float(np.sum(action)):.9g}, not 1; with action_transform='weights' the "
                    f"{len(names)} weights (assets then cash) must sum to 1")
        gross = float(np.abs(action[:-1]).sum())
        limit = self.config.max_leverage if self.config.allow_short else 1.0
        return (f"action's gross exposure {gross:.6g} (sum of |asset weights|) is above the limit {limit:g}"
                f" (max_leverage={self.config.max_leverage:g}, allow_short={self.config.allow_short})")

    def check_action_shape(self, action: Any) -> np.ndarray:
        """The action as float64 (N + 1,); a wrong length or type is a one-line ValueError."""
        try:
            value = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"action={action!r} is not numeric; expected {self.action_size} weights "
                             f"(one per asset {self.symbols}, then cash)") from exc
        if value.ndim == 2 and value.shape[0] == 1:
            value = value[0]
        if value.ndim != 1 or value.size != self.action_size:
            got = f"{value.size} values" if value.ndim == 1 else f"shape {value.shape}"
            raise ValueError(f"action has {got}; expected {self.action_size} (a flat vector): one weight per asset "
                             f"({self.n_assets}: {', '.join(self.symbols[:5])}{', ...' if self.n_assets > 5 else ''}) "
                             f"then cash")
        return value

    def utc_timestamp(self, row: int) -> pd.Timestamp:
        return pd.Timestamp(int(self.panel.timestamps[row]), tz="UTC")


__all__ = ["PortfolioConfig", "PortfolioCore", "PortfolioLayout", "TRANSFORMS", "default_universe", "resolve_panel",
           "rolling_covariance"]
