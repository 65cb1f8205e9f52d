"""The portfolio backtester: a portfolio policy driven through the portfolio env's core over one split.

``backtest_portfolio(policy, data, split, costs)`` builds one :class:`envs.portfolio_core.PortfolioCore`
(one account, fixed start at the split's first row, no equity floor, every fill recorded, the policy's
``action_transform``, costs on), calls ``policy.act(observation)`` at every row and steps the compiled
kernel - the same simulator as ``PortfolioEnv-v0`` - to the split's last row. The result holds the equity
curve (one value per row, the start included), the weights after each row, the fill log, the metrics of
:mod:`sim.metrics` and notes on how the data filled. ``universe_buy_and_hold`` is the benchmark drawn on
every saved plot: equal weights of the universe bought at the start, then held.

A policy answers :class:`agents.portfolio_baselines.PortfolioPolicy`: ``reset()``, ``act(observation)``
(N + 1 values, assets then cash), ``action_transform`` and ``rebalance_every``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from features.atomic_io import write_bytes_atomic, write_text_atomic
from features.calendars import annualisation, timeline_calendar
from features.panel import Panel
from sim.engine import FILL_AT, Costs
from sim.metrics import compute_metrics, drawdown_curve, format_metrics_table, metrics_to_json

from .portfolio_core import PortfolioConfig, PortfolioCore, resolve_panel

FROM_POLICY = "policy"
"""``rebalance_every``'s default: the policy's own schedule."""

CLOSE_ONLY_NOTE = "close-only data: orders fill at the next close"

# set by the backtester itself (a fixed start, no floor, fills recorded) or by its own arguments
_SET_BY_BACKTEST = ("split", "random_start", "episode_length", "min_equity", "record_fills", "action_transform",
                    "symbols", "initial_cash", "fill_at", "rebalance_every")
_COST_FIELDS = tuple(f.name for f in fields(Costs))
# round-trip statistics of a single-asset trade log: a portfolio's orders are not round trips
_ROUND_TRIP_KEYS = ("n_trades", "win_rate", "profit_factor", "avg_trade_pnl", "avg_trade_return", "avg_bars_held")
_FILE_NAMES = {"equity": "equity.csv", "weights": "weights.csv", "fills": "fills.csv", "metrics": "metrics.json",
               "plot": "equity.png"}


class PortfolioBacktestError(ValueError):
    """Bad input to, or a bad action during, a portfolio backtest (one line)."""


@dataclass
class PortfolioBacktestResult:
    """Equity, weights, fills and metrics of one portfolio backtest.

    ``equity[0]`` is the starting cash at the close of the split's first row; ``equity[i]`` the equity after
    step ``i``, marked at the close of ``timestamps[i]``; ``weights[i]`` the N asset weights then cash at
    that close. ``fills`` has one row per order filled (``step`` is the step that decided it).
    """

    policy: str
    description: str
    split: str
    costs: str
    symbols: list[str]
    timestamps: pd.DatetimeIndex
    equity: np.ndarray
    weights: np.ndarray
    fills: pd.DataFrame
    metrics: dict[str, Any]
    total_costs: float
    turnover: float | None
    n_orders: int
    rebalance_every: int | None
    fill_at: str
    notes: list[str] = field(default_factory=list)
    is_universe_buy_and_hold: bool = False
    # runs the universe's buy and hold on the same universe, split, costs and settings (not pickled: it holds
    # the universe; an unpickled result's save(plot=True) needs benchmark=)
    benchmark_of: Callable[[], "PortfolioBacktestResult"] | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["benchmark_of"] = None
        return state

    def equity_frame(self) -> pd.DataFrame:
        """Equity, drawdown and gross exposure (sum of |asset weights|) per row, indexed by UTC time."""
        return pd.DataFrame(
            {"equity": self.equity, "drawdown": drawdown_curve(self.equity),
             "gross_exposure": np.abs(self.weights[:, :-1]).sum(axis=1)},
            index=self.timestamps.rename("timestamp"))

    def weights_frame(self) -> pd.DataFrame:
        """The weights per row (one column per symbol, then ``cash``), indexed by UTC time."""
        return pd.DataFrame(self.weights, columns=[*self.symbols, "cash"], index=self.timestamps.rename("timestamp"))

    def table(self) -> str:
        """The metrics as a text table, titled with the policy, split and costs, then the notes."""
        title = f"{self.policy} on {len(self.symbols)} assets ({self.split}); costs: {self.costs}"
        text = format_metrics_table(self.metrics, title=title) + f"\npolicy: {self.description}"
        return text + "".join(f"\nnote: {note}" for note in self.notes)

    def save(self, directory: str | Path, plot: bool = True,
             benchmark: "PortfolioBacktestResult | None" = None) -> dict[str, Path]:
        """Write ``equity.csv``, ``weights.csv``, ``fills.csv``, ``metrics.json`` and ``equity.png`` under
        ``directory``, each through a temp file and a rename (nothing half-written is left).

        :param directory: the output folder (created if missing; other files in it are left alone).
        :param plot: write ``equity.png``, with the universe's buy and hold always drawn beside the policy.
        :param benchmark: the buy-and-hold backtest to draw; None runs :func:`universe_buy_and_hold` on the
            same universe, split, costs and settings.
        """
        directory = Path(directory)
        png = None
        if plot:
            if benchmark is None and self.is_universe_buy_and_hold:
                benchmark = self
            elif benchmark is None:
                if self.benchmark_of is None:
                    raise PortfolioBacktestError("this result carries no universe to run the buy-and-hold "
                                                 "benchmark on; pass benchmark=universe_buy_and_hold(...)")
                benchmark = self.benchmark_of()
            if not benchmark.timestamps.equals(self.timestamps):
                raise PortfolioBacktestError(
                    f"benchmark covers {len(benchmark.timestamps)} rows from {benchmark.timestamps[0]}; this backtest "
                    f"{len(self.timestamps)} rows from {self.timestamps[0]}: run it on the same universe and split")
            png = _plot_png(self, benchmark)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {key: directory / name for key, name in _FILE_NAMES.items() if key != "plot" or plot}
        write_text_atomic(paths["equity"], self.equity_frame().to_csv())
        write_text_atomic(paths["weights"], self.weights_frame().to_csv())
        write_text_atomic(paths["fills"], self.fills.to_csv(index=False))
        payload = {"policy": self.policy, "description": self.description, "split": self.split,
                   "symbols": self.symbols, "costs": self.costs, "fill_at": self.fill_at,
                   "rebalance_every": self.rebalance_every, "notes": self.notes,
                   "metrics": metrics_to_json(self.metrics)}
        write_text_atomic(paths["metrics"], json.dumps(payload, indent=2, allow_nan=False) + "\n")
        if png is not None:
            write_bytes_atomic(paths["plot"], png)
        return paths


class _UniverseBuyAndHold:
    """Equal weights 1/N of the universe, sent once (an asset without a bar at the start: when it first
    trades), then held."""

    action_transform = "weights"
    rebalance_every: int | None = None
    name = "buy_and_hold (universe)"

    def __init__(self, symbols: list[str]) -> None:
        self.symbols = list(symbols)
        self._action = np.append(np.full(len(symbols), 1.0 / len(symbols)), 0.0)

    def reset(self) -> None:
        """Nothing to reset."""

    def act(self, observation: np.ndarray) -> np.ndarray:
        """The constant action.

        :param observation: ignored.
        """
        return self._action

    def describe(self) -> str:
        return "buy and hold of the universe: equal weights 1/N bought at the start, then held"


def _costs(costs: Costs | Mapping[str, Any] | None) -> Costs:
    """The cost models from None (the defaults: 0.10% + 5 bps), a :class:`Costs` or a dict of its fields.

    :param costs: as given.
    """
    if costs is None:
        return Costs()
    if isinstance(costs, Costs):
        return costs
    if isinstance(costs, Mapping):
        unknown = sorted(set(costs) - set(_COST_FIELDS))
        if unknown:
            raise PortfolioBacktestError(f"costs has unknown key(s) {unknown}; expected some of {list(_COST_FIELDS)}")
        return Costs(**costs)
    raise PortfolioBacktestError(f"costs must be None, a Costs or a dict of {list(_COST_FIELDS)}; "
                                 f"got {type(costs).__name__}")


def _check_settings(settings: Mapping[str, Any]) -> None:
    """Refuse settings the backtester sets itself, costs given outside ``costs=`` and unknown names.

    :param settings: the extra keyword arguments (PortfolioConfig fields).
    """
    fixed = sorted(set(settings) & set(_SET_BY_BACKTEST))
    if fixed:
        raise PortfolioBacktestError(f"backtest_portfolio sets {fixed} itself (or by its own arguments); "
                                     f"do not pass them as settings")
    costs = sorted(set(settings) & set(_COST_FIELDS))
    if costs:
        raise PortfolioBacktestError(f"pass {costs} inside costs= (a Costs or a dict), not as settings")
    known = set(PortfolioConfig.__dataclass_fields__)
    unknown = sorted(set(settings) - known)
    if unknown:
        valid = sorted(known - set(_SET_BY_BACKTEST) - set(_COST_FIELDS))
        raise PortfolioBacktestError(f"backtest_portfolio got unknown setting(s) {unknown}; valid: {valid}")


def _policy_attributes(policy: Any, rebalance_every: Any) -> tuple[str, str, int | None]:
    """The policy's name, action transform and the schedule to run it with.

    :param policy: the policy.
    :param rebalance_every: :data:`FROM_POLICY`, None or an integer >= 1.
    """
    name = str(getattr(policy, "name", type(policy).__name__))
    for attribute in ("reset", "act"):
        if not callable(getattr(policy, attribute, None)):
            raise PortfolioBacktestError(f"policy {name} has no {attribute}() method; a portfolio policy needs "
                                         f"reset(), act(observation), action_transform and rebalance_every")
    missing = [a for a in ("action_transform", "rebalance_every") if not hasattr(policy, a)]
    if missing:
        raise PortfolioBacktestError(f"policy {name} has no attribute(s) {missing}; a portfolio policy says which "
                                     f"env action_transform its actions are for and its rebalance_every")
    if isinstance(rebalance_every, str):
        if rebalance_every != FROM_POLICY:
            raise PortfolioBacktestError(f"rebalance_every={rebalance_every!r}: expected {FROM_POLICY!r} (the "
                                         f"policy's), None or an integer >= 1")
        rebalance_every = policy.rebalance_every
    return name, str(policy.action_transform), rebalance_every


def _describe(policy: Any, name: str, schedule: int | None) -> str:
    """The policy's one-line description, with the schedule the backtest used when it is not the policy's.

    :param policy: the policy.
    :param name: its name.
    :param schedule: the backtest's ``rebalance_every``.
    """
    describe = getattr(policy, "describe", None)
    text = str(describe()) if callable(describe) else name
    if schedule != getattr(policy, "rebalance_every", None):
        how = "never rebalanced" if schedule is None else f"rebalanced every {schedule} bars"
        text += f" (this backtest: {how})"
    return text


def backtest_portfolio(
    policy: Any,
    data: Any = None,
    split: str = "test",
    costs: Costs | Mapping[str, Any] | None = None,
    *,
    symbols: Any = None,
    initial_cash: float = 100_000.0,
    fill_at: str = "next_open",
    rebalance_every: int | None | str = FROM_POLICY,
    **settings: Any,
) -> PortfolioBacktestResult:
    """Run ``policy`` over ``split`` of a universe through the portfolio env's core and simulator.

    :param policy: a :class:`agents.portfolio_baselines.PortfolioPolicy`; one with ``symbols`` must match
        the universe's symbols in order.
    :param data: the universe: None (embedded), a :class:`features.Panel`, a MarketData, a dataset directory
        or ``{symbol: bars}`` (see :func:`envs.portfolio_core.resolve_panel`).
    :param split: ``"train"``, ``"validation"`` or ``"test"``.
    :param costs: None (the defaults: 0.10% + 5 bps), a :class:`sim.Costs` or a dict of its fields.
    :param symbols: the universe's symbols; None: the policy's ``symbols`` if it has them, else all.
    :param initial_cash: starting equity.
    :param fill_at: ``"next_open"`` (default) or ``"close"``.
    :param rebalance_every: steps between scheduled rebalances; ``"policy"`` (default): the policy's own.
    :param settings: other PortfolioEnv settings (``allow_short``, ``max_leverage``, ``min_rebalance``,
        ``cash_rate``, ``window``, ``timeframe``, ``covariance_window``, ...).
    :return: the :class:`PortfolioBacktestResult`.
    """
    _check_settings(settings)
    name, transform, schedule = _policy_attributes(policy, rebalance_every)
    cost = _costs(costs)
    if fill_at not in FILL_AT:
        raise PortfolioBacktestError(f"fill_at={fill_at!r} is not known; expected one of {list(FILL_AT)}")
    if symbols is None:
        symbols = getattr(policy, "symbols", None)
    panel = resolve_panel(data, symbols, settings.get("window"), settings.get("timeframe"))
    prepare = getattr(policy, "prepare", None)
    if callable(prepare):  # a policy that observes its own view of the universe (an agent's encoder embeddings)
        panel = prepare(panel)
    config = PortfolioConfig(
        symbols=tuple(panel.symbols), split=split, action_transform=transform, commission=cost.commission,
        fixed_fee=cost.fixed_fee, slippage=cost.slippage, borrow_rate=cost.borrow_rate, fill_at=fill_at,
        initial_cash=initial_cash, episode_length=None, random_start=False, min_equity=0.0,
        rebalance_every=schedule, record_fills=True, **settings)
    core = PortfolioCore(panel, config, n=1)
    own = getattr(policy, "symbols", None)
    if own is not None and list(own) != core.symbols:
        raise PortfolioBacktestError(f"policy {name} is for symbols {list(own)}; the universe is {core.symbols} "
                                     f"(the same symbols in the same order are needed)")
    equity, weights, rows = _run(policy, name, core)
    result = _result(core, name, _describe(policy, name, config.rebalance_every), cost, equity, weights, rows)
    if isinstance(policy, _UniverseBuyAndHold):
        result.is_universe_buy_and_hold = True
    else:
        result.benchmark_of = partial(universe_buy_and_hold, panel, split, cost, initial_cash=initial_cash,
                                      fill_at=fill_at, **settings)
    return result


def universe_buy_and_hold(data: Any = None, split: str = "test", costs: Costs | Mapping[str, Any] | None = None,
                          *, symbols: Any = None, initial_cash: float = 100_000.0, fill_at: str = "next_open",
                          **settings: Any) -> PortfolioBacktestResult:
    """The backtest of buy and hold of the universe: equal weights 1/N bought at the split's start (an asset
    without a bar then: when it first trades), then held, never rebalanced.

    :param data: the universe (see :func:`backtest_portfolio`).
    :param split: the split.
    :param costs: the cost models (see :func:`backtest_portfolio`).
    :param symbols: the universe's symbols; None: all of the data's.
    :param initial_cash: starting equity.
    :param fill_at: ``"next_open"`` or ``"close"``.
    :param settings: other PortfolioEnv settings (see :func:`backtest_portfolio`).
    """
    _check_settings(settings)
    panel = resolve_panel(data, symbols, settings.get("window"), settings.get("timeframe"))
    return backtest_portfolio(_UniverseBuyAndHold(panel.symbols), panel, split, costs, initial_cash=initial_cash,
                              fill_at=fill_at, **settings)


def _run(policy: Any, name: str, core: PortfolioCore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step ``core`` from the split's first row to its last, asking ``policy`` for each action.

    :param policy: the policy.
    :param name: its name, for errors.
    :param core: a fresh core of one account.
    :return: equity (steps + 1,), weights (steps + 1, N + 1) and rows (steps + 1,) of each close.
    """
    accounts = np.zeros(1, dtype=np.int64)
    core.start(accounts, np.random.default_rng(0), core.start_row)
    sim = core.sim
    n_steps = int(core.episode_end[0]) - core.start_row
    equity = np.empty(n_steps + 1)
    weights = np.empty((n_steps + 1, core.action_size))
    rows = np.empty(n_steps + 1, dtype=np.int64)
    observations = core.observe(accounts, core.obs)
    equity[0], weights[0], rows[0] = sim.equity[0], core.weights[0], sim.row[0]
    actions, shape = core.actions, (core.action_size,)
    sim_equity, sim_row, core_weights = sim.equity, sim.row, core.weights
    policy.reset()
    act = policy.act
    k = 0
    while k < n_steps:
        action = act(observations[0].copy())
        try:
            if type(action) is np.ndarray and action.shape == shape:
                actions[0] = action
            else:
                actions[0] = core.check_action_shape(action)
            observations, _, ends = core.step(actions)
        except ValueError as exc:
            stamp = core.utc_timestamp(int(sim_row[0]))
            raise PortfolioBacktestError(f"policy {name}, step {k} (decision at {stamp}): {exc}") from None
        k += 1
        equity[k], rows[k] = sim_equity[0], sim_row[0]
        weights[k] = core_weights[0]
        if ends[0]:
            break  # the split's last row, or equity at 0 or below
    return equity[: k + 1], weights[: k + 1], rows[: k + 1]


def _fills_frame(core: PortfolioCore) -> pd.DataFrame:
    """The simulator's fill log with times, the deciding step, symbol names, side and notional.

    :param core: the core after the run.
    """
    log = core.sim.fill_log()
    fill_rows = log["row"].astype(np.int64)
    units = log["units"]
    stamps = pd.to_datetime(core.panel.timestamps[fill_rows], utc=True)
    return pd.DataFrame({
        "timestamp": stamps,
        "step": fill_rows - core.start_row - int(core.next_open),
        "row": fill_rows,
        "symbol": np.asarray(core.symbols, dtype=object)[log["asset"].astype(np.int64)],
        "side": np.where(units > 0, "buy", "sell"),
        "units": units,
        "reference_price": log["reference_price"],
        "fill_price": log["fill_price"],
        "notional": np.abs(units) * log["reference_price"],
        "commission": log["commission"],
        "slippage": log["slippage"],
    })


def _notes(panel: Panel, fill_at: str) -> list[str]:
    """What a reader of the numbers must know about how the data filled.

    :param panel: the universe.
    :param fill_at: the fill time.
    """
    notes = []
    close_only = np.asarray(panel.close_only, dtype=bool)
    if close_only.any() and fill_at == "next_open":
        which = "" if close_only.all() else f" ({', '.join(s for s, c in zip(panel.symbols, close_only) if c)})"
        notes.append(CLOSE_ONLY_NOTE + which)
    return notes


def panel_periods_per_year(panel: Panel) -> float:
    """Bars per year of a universe's union timeline: round the clock (365 days, 8,760 hours) when any symbol is a
    crypto pair, the symbols' one calendar (XNYS) when they share it, else measured from the timeline
    (:func:`features.calendars.timeline_calendar`, :func:`features.calendars.annualisation`).

    :param panel: the universe's panel.
    """
    data = panel.data
    calendars = [data.calendars[data.symbol_index(symbol)] for symbol in panel.symbols]
    return annualisation(timeline_calendar(calendars), data.timeframe, panel.timestamps)[0]


def _result(core: PortfolioCore, name: str, description: str, cost: Costs, equity: np.ndarray,
            weights: np.ndarray, rows: np.ndarray) -> PortfolioBacktestResult:
    """Assemble the result and its metrics (annualised by the universe timeline's calendar: :func:`panel_periods_per_year`).

    :param core: the core after the run.
    :param name: the policy's name.
    :param description: its one-line description.
    :param cost: the cost models.
    :param equity: equity per row.
    :param weights: weights per row.
    :param rows: the panel rows.
    """
    sim, panel = core.sim, core.panel
    stamps = panel.timestamps[rows]
    fills = _fills_frame(core)
    metrics = compute_metrics(
        equity, stamps, None, periods_per_year=panel_periods_per_year(panel),
        position=np.abs(weights[:, :-1]).sum(axis=1), traded_notional=float(sim.traded_notional[0]),
        costs_paid=float(sim.costs_paid[0]))
    for key in _ROUND_TRIP_KEYS:
        metrics.pop(key, None)
    metrics["n_orders"] = int(len(fills))
    return PortfolioBacktestResult(
        policy=name, description=description, split=core.config.split, costs=cost.describe(),
        symbols=list(core.symbols), timestamps=pd.DatetimeIndex(pd.to_datetime(stamps, utc=True)),
        equity=equity, weights=weights, fills=fills, metrics=metrics, total_costs=float(sim.costs_paid[0]),
        turnover=metrics["turnover"], n_orders=int(len(fills)), rebalance_every=core.config.rebalance_every,
        fill_at=core.config.fill_at, notes=_notes(panel, core.config.fill_at))


def _plot_png(result: PortfolioBacktestResult, benchmark: PortfolioBacktestResult) -> bytes:
    """The equity (with the benchmark), drawdown and weights plot as PNG bytes.

    :param result: the backtest.
    :param benchmark: the universe's buy and hold over the same rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = result.equity_frame()
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(10, 8), sharex=True, height_ratios=[3, 1, 1.5])
    top.plot(frame.index, frame["equity"], lw=1.2, label=result.policy)
    if benchmark is not result:
        top.plot(benchmark.timestamps, benchmark.equity, lw=1.6, color="black", alpha=0.7,
                 label="buy and hold (universe)")
    top.legend(fontsize=8, loc="upper left")
    top.set_title(f"{result.policy} on {len(result.symbols)} assets ({result.split}) - costs: {result.costs}",
                  fontsize=9)
    top.set_ylabel("equity")
    middle.fill_between(frame.index, frame["drawdown"] * 100, 0, color="tab:red", alpha=0.4)
    middle.set_ylabel("drawdown %")
    assets = result.weights[:, :-1]
    if (assets >= -1e-12).all():
        bottom.stackplot(frame.index, np.clip(assets, 0.0, None).T, labels=result.symbols, lw=0)
        bottom.set_ylim(0.0, max(1.0, float(assets.sum(axis=1).max())))
        if len(result.symbols) <= 10:
            bottom.legend(fontsize=7, loc="upper left", ncol=len(result.symbols))
    else:
        bottom.plot(frame.index, assets, lw=0.8)
    bottom.set_ylabel("weights")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


__all__ = ["CLOSE_ONLY_NOTE", "FROM_POLICY", "PortfolioBacktestError", "PortfolioBacktestResult",
           "backtest_portfolio", "universe_buy_and_hold"]
