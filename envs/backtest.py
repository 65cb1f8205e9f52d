"""The backtester: any policy, driven through the same env and simulator, over one split.

``backtest(policy, data, split, costs)`` runs the policy from the first bar whose window fits to the
split's last bar (fixed start, no equity floor, costs on) and returns the equity curve, the trade log
and the metrics of :mod:`sim.metrics`. Every policy answers one protocol: ``reset()`` and
``act(observation) -> action`` (an action of the env's action space).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from sim.engine import Costs
from features.calendars import annualisation
from sim.metrics import compute_metrics, drawdown_curve, format_metrics_table, metrics_to_json

from .core import resolve_data
from .trading_env import TradingEnv


class Policy(Protocol):
    """What the backtester runs: baselines, supervised threshold policies and RL agents alike."""

    def reset(self) -> None: ...

    def act(self, observation: np.ndarray) -> Any: ...


@dataclass
class BacktestResult:
    """Equity curve, positions, trade log and metrics of one backtest.

    ``equity[0]`` is the starting equity at the close of the first bar; ``equity[i]`` the equity
    after step i, marked at the close of ``timestamps[i]``.
    """

    symbol: str
    split: str
    policy: str
    costs: str
    timestamps: np.ndarray
    equity: np.ndarray
    position: np.ndarray
    trades: dict[str, np.ndarray]
    fills: dict[str, np.ndarray]
    metrics: dict[str, Any]
    rewards: np.ndarray = field(default_factory=lambda: np.zeros(0))
    row_timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="datetime64[ns]"))

    def trades_frame(self) -> pd.DataFrame:
        """The trade log as a DataFrame with entry/exit times."""
        frame = pd.DataFrame(self.trades)
        for side in ("entry", "exit"):
            rows = frame.pop(f"{side}_row").to_numpy(np.int64) if len(frame) else np.zeros(0, np.int64)
            frame.insert(0 if side == "entry" else 1, f"{side}_time",
                         pd.to_datetime(self._stamp_of_rows(rows), utc=True))
        return frame

    def equity_frame(self) -> pd.DataFrame:
        index = pd.to_datetime(self.timestamps, utc=True)
        return pd.DataFrame(
            {"equity": self.equity, "drawdown": drawdown_curve(self.equity), "position": self.position},
            index=pd.DatetimeIndex(index, name="timestamp"),
        )

    def _stamp_of_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.row_timestamps[rows] if len(rows) else np.zeros(0, dtype="datetime64[ns]")

    def table(self) -> str:
        return format_metrics_table(self.metrics, title=f"{self.policy} on {self.symbol} ({self.split}); costs: {self.costs}")

    def save(self, directory: str | Path, plot: bool = True,
             benchmark: "BacktestResult | None" = None) -> dict[str, Path]:
        """Write ``trades.csv``, ``equity.csv``, ``metrics.json`` and ``equity.png`` under ``directory``.

        :param directory: the output folder.
        :param plot: write ``equity.png``.
        :param benchmark: a buy-and-hold backtest of the same bars and costs, drawn on the plot.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"trades": directory / "trades.csv", "equity": directory / "equity.csv",
                 "metrics": directory / "metrics.json"}
        self.trades_frame().to_csv(paths["trades"], index=False)
        self.equity_frame().to_csv(paths["equity"])
        payload = {"symbol": self.symbol, "split": self.split, "policy": self.policy, "costs": self.costs,
                   "metrics": metrics_to_json(self.metrics)}
        paths["metrics"].write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        if plot:
            paths["plot"] = directory / "equity.png"
            _plot_equity(self, paths["plot"], benchmark)
        return paths


def backtest(
    policy: Policy,
    data: Any = None,
    split: str = "test",
    costs: Costs | None = None,
    *,
    symbol: str | None = None,
    **env_settings: Any,
) -> BacktestResult:
    """Run ``policy`` over ``split`` of one symbol through TradingEnv's simulator.

    :param policy: object with ``reset()`` and ``act(observation) -> action``; a policy with a
        ``preprocessing`` attribute (saved agents, supervised bundles) observes ``data`` rebuilt with it
        (its own features, scaler, asset ids and window; see :mod:`features.preprocessing`).
    :param data: None (embedded default), a MarketData, a dataset directory or bars.
    :param split: ``"train"``, ``"validation"`` or ``"test"``.
    :param costs: commission/slippage/borrow; None = the defaults (0.10% + 5 bps).
    :param symbol: the symbol; None takes the dataset's first symbol.
    :param env_settings: other TradingEnv arguments (action_mode, allow_short, fill_at, window...).
    """
    data = _policy_data(policy, data, env_settings)
    return backtest_many(policy, data, split, [costs or Costs()], [symbol or data.symbols[0]], **env_settings)[0]


def backtest_many(
    policy: Policy,
    data: Any,
    split: str,
    costs: list[Costs],
    symbols: list[str],
    **env_settings: Any,
) -> list[BacktestResult]:
    """:func:`backtest` of one policy on every (symbol, costs) pair, all stepped together.

    Each pair is its own TradingEnv (the same simulator as :func:`backtest`); the policy is asked for all
    pairs' actions at once when it offers ``batch_actor(n)`` (one batched forward pass per bar instead of
    one per pair: how a trained policy is re-scored at many cost levels cheaply), else each pair gets
    its own copy of the policy. A policy whose actions depend only on the feature window and the asset id
    (not the account's position, nor its own history) may say so by offering
    ``act_windows(windows (T, window, n_features), asset_ids (T,)) -> actions (T,)``: then every action of
    the split is computed in one call and the simulator only steps the bars where the target changes
    (the same numbers, tested; requires the ``log_return`` reward, else the event path runs). A policy
    whose only state is its own past actions (the supervised threshold policy) may offer ``act_path(windows,
    asset_ids) -> actions``, computed taking the position to follow its actions: the same fast path, checked
    against the account afterwards (the event path runs where an order did not fill as assumed).
    Results are in the order ``[(s, c) for s in symbols for c in costs]``.

    :param policy: the policy (see :func:`backtest`).
    :param data: the data (see :func:`backtest`).
    :param split: the split.
    :param costs: the cost models to score at.
    :param symbols: the symbols to score.
    :param env_settings: other TradingEnv arguments.
    """
    for fixed in ("random_start", "episode_length", "min_equity", "record_trades", "split", "symbol"):
        if fixed in env_settings:
            raise ValueError(f"backtest sets {fixed!r} itself; do not pass it")
    data = _policy_data(policy, data, env_settings)
    pairs = [(symbol, cost) for symbol in symbols for cost in costs]
    envs = [
        TradingEnv(data, symbol=symbol, split=split, random_start=False, episode_length=None, min_equity=0.0,
                   record_trades=True, commission=cost.commission, fixed_fee=cost.fixed_fee,
                   slippage=cost.slippage, borrow_rate=cost.borrow_rate, **env_settings)
        for symbol, cost in pairs
    ]
    if all(env.core._plain_log_reward for env in envs):
        if callable(getattr(policy, "act_windows", None)):
            return _backtest_state_free(policy, envs, pairs, split)
        if callable(getattr(policy, "act_path", None)):
            results = _backtest_state_free(policy, envs, pairs, split, own_path=True)
            if all(result is not None for result in results):
                return results  # else an order did not fill as the policy assumed: the event path decides
    return _backtest_events(policy, envs, pairs, split)


def _backtest_events(policy: Policy, envs: list[TradingEnv], pairs: list[tuple[str, Costs]],
                     split: str) -> list[BacktestResult]:
    """The event path of :func:`backtest_many`: every pair stepped bar by bar, the policy asked for all
    pairs' actions at each bar (``batch_actor``, else a copy per pair)."""
    n = len(envs)
    actor = _batch_actor(policy, n)
    lengths = [int(env.core.sym_end[0] - env.core.sym_start[0] - 1) for env in envs]
    equity = [np.empty(k + 1) for k in lengths]
    position = [np.empty(k + 1) for k in lengths]
    rows = [np.empty(k + 1, dtype=np.int64) for k in lengths]
    rewards = [np.empty(k) for k in lengths]
    observations = []
    for i, env in enumerate(envs):
        obs, info = env.reset(seed=0)
        observations.append(obs)
        equity[i][0], position[i][0], rows[i][0] = info["equity"], info["position"], info["row"]
    actor.reset()
    steps = np.zeros(n, dtype=np.int64)
    active = np.ones(n, dtype=bool)
    matrix = np.stack(observations)
    while active.any():
        actions = actor.act(matrix)
        for i in np.flatnonzero(active):
            obs, reward, terminated, truncated, info = envs[i].step(actions[i])
            k = steps[i] = steps[i] + 1
            equity[i][k], position[i][k], rows[i][k] = info["equity"], info["position"], info["row"]
            rewards[i][k - 1] = reward
            matrix[i] = obs
            if terminated or truncated:
                active[i] = False
    return [
        _result(env, policy, split, cost, equity[i][: steps[i] + 1], position[i][: steps[i] + 1],
                rows[i][: steps[i] + 1], rewards[i][: steps[i]])
        for i, (env, (_, cost)) in enumerate(zip(envs, pairs))
    ]


def _backtest_state_free(policy: Policy, envs: list[TradingEnv], pairs: list[tuple[str, Costs]],
                         split: str, own_path: bool = False) -> list[BacktestResult | None]:
    """The fast path of :func:`backtest_many` for a policy whose actions depend only on the feature window
    and asset id (``act_windows``): every action of the split in one call per symbol, then the simulator
    steps only the bars where the target changes (or borrow is due) and marks to market in between
    (:meth:`sim.Simulator.hold_one`): the event path's numbers, bit for bit (tested).

    ``own_path=True`` serves a policy whose state is its own past actions (``act_path``, e.g. the supervised
    threshold policy: long or flat, bars held): it computes the whole path taking the account's position to
    follow its actions, and a pair where the account did not (an order not filled) comes back None."""
    actions_of: dict[str, np.ndarray] = {}
    results: list[BacktestResult | None] = []
    for env, (symbol, cost) in zip(envs, pairs):
        core = env.core
        env.reset(seed=0)
        first, last = int(core.sim.row[0]), core._episode_end_one
        if symbol not in actions_of:
            windows, asset_ids = _windows(core, first, last - first)
            act = policy.act_path if own_path else policy.act_windows
            actions_of[symbol] = np.asarray(act(windows, asset_ids))
        targets = _targets(core, actions_of[symbol], last - first)
        equity, units, n_steps = _run_targets(env, targets)
        rows = np.arange(first, first + n_steps + 1)
        equity, units = equity[: n_steps + 1], units[: n_steps + 1]
        if own_path:
            # the position each later observation shows must be the one the policy assumed
            held = np.sign(units[1:]) * (equity[1:] > 0)
            if not np.array_equal(held, np.sign(targets[:n_steps])):
                results.append(None)
                continue
        value = units * core.sim.close[rows]
        position = np.divide(value, equity, out=np.zeros(len(rows)), where=equity > 0)
        rewards = np.log(np.maximum(equity[1:], 1e-12) / equity[:-1])
        results.append(_result(env, policy, split, cost, equity, position, rows, rewards))
    return results


def _windows(core: Any, first_row: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only ``(n, window, n_features)`` view of the windows that end at rows ``first_row ..``, and the
    asset ids: what the observations of those rows carry, without copying."""
    features = np.ascontiguousarray(core.data.features)
    start = features[first_row - core.window + 1 :]
    windows = np.lib.stride_tricks.as_strided(
        start, shape=(n, core.window, features.shape[1]),
        strides=(features.strides[0], features.strides[0], features.strides[1]), writeable=False)
    return windows, np.full(n, int(round(float(core.sym_asset[0]))), dtype=np.int64)


def _targets(core: Any, actions: np.ndarray, n: int) -> np.ndarray:
    """Target exposures of ``n`` actions, refused as TradingEnv.step refuses them."""
    actions = np.asarray(actions).reshape(-1)
    if len(actions) != n:
        raise ValueError(f"act_windows returned {len(actions)} actions for {n} windows")
    if core.levels is not None:
        index = actions.astype(np.int64) if actions.dtype.kind in "iuf" else None
        if index is None or actions.dtype == bool or (index != actions).any() or \
                (index < 0).any() or (index >= len(core.levels)).any():
            raise ValueError(f"act_windows returned actions outside 0..{len(core.levels) - 1}")
        return core.levels[index]
    targets = actions.astype(np.float64)
    if not (np.isfinite(targets).all() and (np.abs(targets) <= 1.0).all()):
        raise ValueError("act_windows returned target exposures outside [-1, 1]")
    return targets


def _run_targets(env: TradingEnv, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Step ``env`` (just reset) through ``targets``; returns equity and units after each step (index 0:
    the start) and the number of steps taken (fewer when equity reaches the floor)."""
    core = env.core
    sim = core.sim
    n = len(targets)
    effective = targets if sim.allow_short else np.maximum(targets, 0.0)
    equity, units = np.empty(n + 1), np.empty(n + 1)
    equity[0], units[0] = sim.equity[0], sim.units[0]
    borrow = sim.costs.borrow_rate > 0.0
    # where the target series changes value: with min_rebalance 0 and the last target sent, the next order
    # is at the next change (else the remaining series is scanned)
    changes_at = np.flatnonzero(effective[1:] != effective[:-1]) + 1
    k = 0
    while k < n:
        held = float(sim.units[0])
        if sim.min_rebalance == 0.0 and sim.target[0] == effective[k]:
            at = np.searchsorted(changes_at, k, side="right")
            hold = (int(changes_at[at]) if at < len(changes_at) else n) - k
        else:
            changes = np.abs(effective[k:] - sim.target[0]) > sim.min_rebalance
            hold = int(np.argmax(changes)) if changes.any() else n - k
        if hold and not (borrow and held < 0.0):
            marked = sim.hold_one(hold, floor=core._min_equity_cash)
            equity[k + 1 : k + 1 + len(marked)] = marked
            units[k + 1 : k + 1 + len(marked)] = held
            k += len(marked)
            if len(marked) == hold:
                continue
            if len(marked) and marked[-1] <= core._min_equity_cash:
                break  # terminated, as the event path would be
        _, terminated, _ = core.step_one(float(targets[k]))  # an order (or a non-finite bar: it raises)
        k += 1
        equity[k], units[k] = sim.equity[0], sim.units[0]
        if terminated:
            break
    env._episode_over = "the backtest is over; call reset() before stepping again"
    return equity, units, k


class _CopiesActor:
    """Batch protocol for a policy without ``batch_actor``: one copy per pair (the policy itself for one)."""

    def __init__(self, policy: Policy, n: int) -> None:
        import copy

        self.policies = [policy] if n == 1 else [copy.deepcopy(policy) for _ in range(n)]

    def reset(self) -> None:
        for policy in self.policies:
            policy.reset()

    def act(self, observations: np.ndarray) -> list[Any]:
        return [policy.act(observations[i]) for i, policy in enumerate(self.policies)]


def _batch_actor(policy: Policy, n: int) -> Any:
    make = getattr(policy, "batch_actor", None)
    return make(n) if make is not None else _CopiesActor(policy, n)


def _policy_data(policy: Policy, data: Any, env_settings: dict[str, Any]) -> Any:
    """The data the policy observes: rebuilt with its own preprocessing when it carries one."""
    from features.market_data import MarketData

    preprocessing = getattr(policy, "preprocessing", None)
    if preprocessing is not None:
        window = env_settings.get("window")
        if window is not None and int(window) != preprocessing.window:
            raise ValueError(f"window={window} contradicts the policy's own window {preprocessing.window}")
        if isinstance(data, pd.DataFrame) or (isinstance(data, dict) and data):
            return preprocessing.market_data({"ASSET": data} if isinstance(data, pd.DataFrame) else data)
        return preprocessing.apply(resolve_data(data, preprocessing.window))
    if isinstance(data, MarketData):
        return data
    return resolve_data(data, env_settings.get("window"))


def _result(env: TradingEnv, policy: Policy, split: str, costs: Costs, equity: np.ndarray, position: np.ndarray,
            rows: np.ndarray, rewards: np.ndarray) -> BacktestResult:
    core = env.core
    sim = core.sim
    trades = sim.trade_log()
    stamps = core.data.timestamps
    data = core.data
    symbol = data.symbol_index(core.symbols[0])
    periods, _ = annualisation(data.calendars[symbol], data.timeframe, stamps[data.symbol_rows(core.symbols[0])])
    fills = sim.fill_log()
    metrics = compute_metrics(
        equity, stamps[rows], trades, periods_per_year=periods, position=position,
        traded_notional=float(sim.traded_notional[0]), costs_paid=float(sim.costs_paid[0]),
    )
    # buy-and-hold closes no round trip: say how many orders filled and what is still held
    metrics["n_orders"] = int(len(fills["row"]))
    metrics["open_position"] = float(position[-1])
    return BacktestResult(
        symbol=core.symbols[0], split=split, policy=getattr(policy, "name", type(policy).__name__),
        costs=costs.describe(), timestamps=stamps[rows].astype("datetime64[ns]"), equity=equity,
        position=position, trades=trades, fills=fills, metrics=metrics, rewards=rewards,
        row_timestamps=stamps.view("datetime64[ns]"),
    )


def _plot_equity(result: BacktestResult, path: Path, benchmark: BacktestResult | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = result.equity_frame()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=[3, 1])
    top.plot(frame.index, frame["equity"], lw=1.2, label=result.policy)
    if benchmark is not None:
        reference = benchmark.equity_frame()
        top.plot(reference.index, reference["equity"], lw=1.6, color="black", alpha=0.7, label="buy and hold")
        top.legend(fontsize=8, loc="upper left")
    top.set_title(f"{result.policy} on {result.symbol} ({result.split}) - costs: {result.costs}", fontsize=9)
    top.set_ylabel("equity")
    bottom.fill_between(frame.index, frame["drawdown"] * 100, 0, color="tab:red", alpha=0.4)
    bottom.set_ylabel("drawdown %")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
