"""The live loop for a portfolio policy: one account allocating across the symbols (``paper_trade --portfolio``).

:class:`PortfolioLiveLoop` keeps every guarantee of :class:`live.loop.LiveLoop` (it is one): the kill switch,
the order desk (intent journalled before the send, ``client_order_id`` = run/symbol/bar/intent, a restart asks
the broker about every intent), reconciliation, the daily-loss halt, one JSON line per cycle, resume from the
journal alone. What differs is the decision and its orders. Per newest complete bar of the universe:

1. the observation is built as :class:`envs.portfolio_core.PortfolioCore` builds it, by its own kernel
   (:data:`envs.portfolio_kernel.observe_kernel`): each symbol's window of the policy's features from the bars
   the broker returned (the dataset's preprocessing and train-fit scaler), then the account's weights at the
   last closes;
2. ``policy.act`` gives the action; the env's transform (:data:`envs.portfolio_kernel.targets_kernel`) turns it
   into target weights, which the risk limits may cut; one decision row per symbol is journalled;
3. at the first open moment, the orders are **the simulator's rule**: :func:`plan_portfolio_orders` runs
   :data:`sim.portfolio.portfolio_step` on a one-account copy of the run's account (its cash, units and last
   targets, priced at the broker's reference prices) and reads the planned deltas (``FILL_DELTA``): sells first,
   buys sized together so that fills and costs fit, long-only cash never below 0. The whole plan is journalled
   (meta ``plan:<bar>``) before the first order is sent, so a restart sends what is left of that plan, never a
   second one; sells are sent before buys.

The account is the journal's sleeves taken together: each symbol's sleeve holds its units, the sleeves' cash sums
to the account's cash, and the exact account cash (the simulator's arithmetic, fill after fill) is replayed from
the journal's fills (:func:`account_cash`). Equity marks are written per symbol (sleeve cash + value), so the
monitor page and the daily-loss limit add them up to the account's equity.

:class:`PortfolioSimBroker` replays a dataset split with ONE account (the single-symbol
:class:`live.sim_broker.SimBroker` keeps one account per symbol): the backtest's timeline
(:class:`features.panel.Panel`), its start (the split's first row), and each order filled at once at the next
bar's open (the close for close-only data) with the simulator's per-fill slippage and commission
(:func:`sim.portfolio._fill`), fractional units. So ``--broker sim`` ends with the fills and equity of
:func:`envs.portfolio_backtest.backtest_portfolio` on the same data, split and costs.

Each asset follows its own calendar (:mod:`features.calendars`), as in the portfolio simulator, where an asset
without a bar holds its position and cannot trade. The decision is executed as soon as any symbol of the universe
trades: while the equity market is closed (a weekend, a night) a crypto pair (``BTC/USD``) still does, so the crypto
legs are rebalanced alone - a stock has no reference price then (it is masked as without a bar, valued at its last
close), holds its units, gets no order, and the buys are sized on the cash there is; its decision row is marked
``held: its market is closed``. The account is valued with a stock at its last close while its market is closed
and crypto at its latest trade (:meth:`live.loop.LiveLoop._price`); every symbol is marked at the universe's newest
bar at its last close (a stock's over a weekend is Friday's), so the marks of a bar add up to the account's equity on
the universe's timeline. Crypto quantities stay fractional when stocks trade whole shares; the next wake is the
earliest next bar close over the symbols (:meth:`live.loop.LiveLoop.next_wake`). The replay's clock is the equity
market's and the replay says which symbols trade at a tick (:class:`live.sim_broker.JournalReplay`), so
``--broker sim`` on stocks beside 24/7 crypto still equals the backtest.

Limits: long-only (no shorts, no leverage), no cash interest or borrow, no covariance in the observation, no
encoder bundle; such a policy is refused in one line. The rebalance schedule counts decided bars (a bar the
loop never decided on - a long outage live - does not count).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

import numpy as np
import pandas as pd

from envs import portfolio_kernel as kernel
from features.bars import Timeframe
from features.panel import Panel
from features.preprocessing import Preprocessing
from sim.engine import Costs
from sim.portfolio import (ASSET_FIELDS, CASH, EQUITY, FILL_COMMISSION, FILL_DELTA, FILL_PRICE, FLOAT_FIELDS,
                           HAS_BAR, INT_FIELDS, MARKET_FIELDS, OPEN, SEND, SLIP_BASE, ADV, TARGET, UNITS,
                           PortfolioSimulator, _fill)

from .broker import BUY, SELL, Account, Broker, BrokerError, Clock, Order, OrderRejected, OrderRequest, Position
from .config import PaperConfig
from .journal import Journal, client_order_id, iso, stamp
from .loop import CycleReport, LiveLoop, _plain
from .sim_broker import JournalMismatch, JournalReplay, _bars_frame, stock_opens
from .sizing import round_quantity

logger = logging.getLogger("live.portfolio")

INTENT = "rebalance"
PLAN_KEY = "plan:"


class PortfolioLiveError(ValueError):
    """A portfolio policy or setting the live loop cannot trade (one line)."""


# ----- the simulator's rule on a copy of the account ----------------------------------------------------------
def _aligned(bars: dict[str, pd.DataFrame], symbols: list[str]) -> tuple[np.ndarray, ...]:
    """The symbols' bars on the union of their times: open, high, low, volume (NaN / 0 where no bar), the
    latest known close (0 before the first bar) and has_bar, each (T, N).

    :param bars: symbol -> its latest complete bars (oldest first).
    :param symbols: the universe, in asset order.
    """
    times = np.unique(np.concatenate([bars[s].index.asi8 for s in symbols]))
    t_len, n = len(times), len(symbols)
    open_, high, low = (np.full((t_len, n), np.nan) for _ in range(3))
    close, volume = np.zeros((t_len, n)), np.zeros((t_len, n))
    has_bar = np.zeros((t_len, n), dtype=bool)
    for i, symbol in enumerate(symbols):
        frame = bars[symbol]
        at = np.searchsorted(times, frame.index.asi8)
        has_bar[at, i] = True
        open_[at, i] = frame["open"].to_numpy(np.float64)
        high[at, i] = frame["high"].to_numpy(np.float64)
        low[at, i] = frame["low"].to_numpy(np.float64)
        volume[at, i] = frame["volume"].to_numpy(np.float64)
        latest = np.searchsorted(frame.index.asi8, times, side="right") - 1
        listed = latest >= 0
        close[listed, i] = frame["close"].to_numpy(np.float64)[latest[listed]]
    return open_, high, low, close, volume, has_bar


def plan_portfolio_orders(bars: dict[str, pd.DataFrame], symbols: list[str], reference: dict[str, float | None], *,
                          targets: np.ndarray, last_targets: np.ndarray, cash: float, units: np.ndarray,
                          rebalance: bool, costs: Costs, min_rebalance: float = 0.0) -> np.ndarray:
    """The units the simulator's step sends for each asset to move the account to ``targets``.

    A one-account :class:`sim.portfolio.PortfolioSimulator` over the recent bars plus one fill row priced at the
    reference prices (an asset with none cannot trade there) is put in the account's state and stepped once;
    its ``FILL_DELTA`` is the answer. Nothing here sizes an order: the simulator does.

    :param bars: symbol -> its recent complete bars (cost models that look back read them).
    :param symbols: the universe, in asset order.
    :param reference: symbol -> the price a market order now fills near (None: it cannot trade now).
    :param targets: (N,) target weights.
    :param last_targets: (N,) the account's last sent targets.
    :param cash: the account's cash.
    :param units: (N,) units held.
    :param rebalance: a scheduled rebalance (targets compared with the current weights).
    :param costs: the cost models.
    :param min_rebalance: the simulator's no-trade band.
    :return: (N,) signed units (0: no order).
    """
    open_, high, low, close, volume, has_bar = _aligned(bars, symbols)
    t_len, n = has_bar.shape
    ref = np.array([np.nan if reference.get(s) is None else float(reference[s]) for s in symbols])
    tradable = np.isfinite(ref)
    if (tradable & ~(ref > 0)).any():
        bad = symbols[int(np.flatnonzero(tradable & ~(ref > 0))[0])]
        raise ValueError(f"{bad}: reference price {reference[bad]!r} must be a positive price")
    last_volume = np.array([float(bars[s]["volume"].iloc[-1]) for s in symbols])

    def extended(values: np.ndarray, last: np.ndarray) -> np.ndarray:
        return np.vstack([values, last[None]])

    fill_prices = np.where(tradable, ref, np.nan)
    sim = PortfolioSimulator(
        extended(open_, fill_prices), extended(high, fill_prices), extended(low, fill_prices),
        extended(close, np.where(tradable, ref, close[-1])), extended(volume, np.where(tradable, last_volume, 0.0)),
        extended(has_bar, tradable), costs, n_accounts=1, initial_cash=1.0, fill_at="next_open", allow_short=False,
        min_rebalance=min_rebalance)
    sim.reset(t_len - 1)
    sim.floats[CASH, 0] = float(cash)
    sim.assets[UNITS, 0] = np.asarray(units, dtype=np.float64)
    sim.assets[TARGET, 0] = np.asarray(last_targets, dtype=np.float64)
    sim.step(np.asarray(targets, dtype=np.float64)[None], rebalance=bool(rebalance))
    return sim.assets[FILL_DELTA, 0].copy()


def portfolio_observation(preprocessing: Preprocessing, bars: dict[str, pd.DataFrame], symbols: list[str], *,
                          cash: float, units: np.ndarray) -> np.ndarray:
    """The policy's observation, built by the env's own kernel: each symbol's window of the policy's features
    (from its latest bars), then the account's weights at the last closes (see
    :class:`envs.portfolio_core.PortfolioLayout`; no covariance).

    :param preprocessing: the dataset's preprocessing (features, window, scaler).
    :param bars: symbol -> its latest complete bars (at least ``preprocessing.min_bars``).
    :param symbols: the universe, in asset order.
    :param cash: the account's cash.
    :param units: (N,) units held.
    """
    n = len(symbols)
    windows = [preprocessing.latest_window(bars[s], s)[0] for s in symbols]
    window, n_features = windows[0].shape
    padded = np.ascontiguousarray(np.concatenate(windows), dtype=np.float32)
    window_start = (np.arange(n, dtype=np.int64) * window)[None]
    ints = np.zeros((len(INT_FIELDS), 1), dtype=np.int64)
    floats = np.zeros((len(FLOAT_FIELDS), 1))
    assets = np.zeros((len(ASSET_FIELDS), 1, n))
    market = np.zeros((len(MARKET_FIELDS), 1, n))
    closes = np.array([float(bars[s]["close"].iloc[-1]) for s in symbols])
    market[1] = closes  # CLOSE
    assets[UNITS, 0] = units
    equity = float(cash)
    for i in range(n):  # the simulator's marking, in its order
        equity += float(units[i]) * closes[i]
    floats[CASH, 0], floats[EQUITY, 0] = cash, equity
    out = np.zeros((1, n * window * n_features + n + 1), dtype=np.float32)
    weights = np.zeros((1, n + 1))
    kernel.observe_kernel(np.zeros(1, dtype=np.int64), ints, floats, assets, market, window_start, padded, window,
                          np.zeros((0, 0), dtype=np.float32), out, weights)
    return out[0]


def target_weights(action: Any, transform: str, n_assets: int, symbols: list[str]) -> np.ndarray:
    """The env's transform of an action (N + 1 values) into N target weights (long-only), by its kernel.

    :param action: the policy's action.
    :param transform: ``normalize``, ``softmax`` or ``weights``.
    :param n_assets: N.
    :param symbols: the asset names (for errors).
    """
    if transform not in kernel.TRANSFORMS:
        raise PortfolioLiveError(f"action_transform={transform!r} is not known; expected one of {list(kernel.TRANSFORMS)}")
    try:
        value = np.asarray(action, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise PortfolioLiveError(f"action {action!r} is not numeric; expected {n_assets + 1} values") from None
    if value.size != n_assets + 1:
        raise PortfolioLiveError(f"action has {value.size} values; expected {n_assets + 1} (one per asset, then cash)")
    targets = np.zeros((1, n_assets))
    status, where = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    kernel.targets_kernel(value[None].copy(), kernel.TRANSFORMS.index(transform), False, 1.0, targets, status, where)
    if status[0] != kernel.ACTION_OK:
        names = [*symbols, "cash"]
        what = {kernel.NOT_FINITE: "is not finite", kernel.NEGATIVE: "is negative (long-only)",
                kernel.NOT_SUM_ONE: "- the weights do not sum to 1", kernel.LEVERAGE: "- gross exposure above 1"}
        j = int(where[0])
        entry = f"{names[j]}={value[j]!r} " if j >= 0 else ""
        raise PortfolioLiveError(f"bad action {value.tolist()}: {entry}{what.get(int(status[0]), 'is refused')}")
    return targets[0]


def limit_weights(targets: np.ndarray, equity: float, config: Any) -> tuple[np.ndarray, str | None]:
    """Target weights within ``risk.max_position`` (and ``max_position_value`` over ``equity``) per asset and
    ``risk.max_gross_exposure`` in all (scaled down together), with a note when cut.

    :param targets: (N,) target weights.
    :param equity: the account's equity.
    :param config: the :class:`live.risk.RiskConfig`.
    """
    cap = config.max_position
    if config.max_position_value is not None and equity > 0:
        cap = min(cap, config.max_position_value / equity)
    out = np.clip(targets, -cap, cap)
    note = f"max position {cap:.4g}" if (out != targets).any() else None
    gross = float(np.abs(out).sum())
    if gross > config.max_gross_exposure * (1.0 + 1e-9):
        out = out * (config.max_gross_exposure / gross)
        note = f"max gross exposure {config.max_gross_exposure:g}"
    return out, note


def account_cash(journal: Journal, capital: float) -> float:
    """The account's cash by the simulator's arithmetic: the run's capital, less each fill's cost in the order they
    were booked (``cash - (units * price + commission)``), plus cash adopted with changes outside the run.

    :param journal: the run's journal.
    :param capital: the run's starting capital.
    """
    cash = float(capital)
    for fill in journal.fills():
        cash = cash - (float(fill["units"]) * float(fill["price"]) + float(fill["commission"]))
    for row in journal.reconciliations():
        if row["field"] == "sleeve_cash" and row["journal"] is not None and row["broker"] is not None:
            cash += float(row["broker"]) - float(row["journal"])
    return cash


# ----- the loop ------------------------------------------------------------------------------------------------
class PortfolioLiveLoop(LiveLoop):
    """Trade a portfolio ``policy`` (one account across ``symbols``) through ``broker``, journalled in ``journal``.

    :param policy: a portfolio policy: ``reset()``, ``act(observation)``, ``action_transform``,
        ``rebalance_every`` (:mod:`agents.portfolio_baselines`, :func:`agents.portfolio_agent.load_portfolio_agent`).
    :param preprocessing: the dataset's preprocessing: the observation's features, window and scaler.
    :param broker: :class:`PortfolioSimBroker` or :class:`live.alpaca_broker.AlpacaBroker`.
    :param journal: the run's journal.
    :param symbols: the universe, in the policy's asset order (2 or more).
    :param config: the paper config.
    :param run_name: the run's name (part of every ``client_order_id``).
    :param run_dir: the run folder.
    :param crash: fault injection (see :data:`live.loop.CRASH_POINTS`).
    :param clear_halt: resume a run halted by the daily-loss limit.
    :param write_monitor: regenerate ``monitor.html`` after each cycle.
    :param alert_post: the webhook's ``post`` (tests).
    :param policy_name: the name journalled in the run's identity (None: the policy's ``name``).
    """

    def __init__(self, policy: Any, preprocessing: Preprocessing, broker: Broker, journal: Journal, symbols: list[str],
                 config: PaperConfig, *, run_name: str, run_dir: Any, crash: Callable[[str], None] | None = None,
                 clear_halt: bool = False, write_monitor: bool = True, alert_post: Callable[..., Any] | None = None,
                 policy_name: str | None = None) -> None:
        if len(symbols) < 2:
            raise PortfolioLiveError(f"a portfolio needs at least 2 symbols; got {list(symbols)}")
        if len(set(symbols)) != len(symbols):
            raise PortfolioLiveError(f"symbols {list(symbols)} repeat a symbol")
        for attribute in ("reset", "act"):
            if not callable(getattr(policy, attribute, None)):
                raise PortfolioLiveError(f"policy {policy!r} has no {attribute}() method; a portfolio policy needs "
                                         f"reset(), act(observation), action_transform and rebalance_every")
        own = getattr(policy, "symbols", None)
        if own is not None and list(own) != list(symbols):
            raise PortfolioLiveError(f"policy is for symbols {list(own)}; the run trades {list(symbols)} (the same "
                                     f"symbols in the same order are needed)")
        n_assets = getattr(policy, "n_assets", len(symbols))
        if n_assets != len(symbols):
            raise PortfolioLiveError(f"policy allocates over {n_assets} assets; the run trades {len(symbols)}")
        self.policy = policy
        self.preprocessing = preprocessing
        self.transform = str(getattr(policy, "action_transform", "weights"))
        self.rebalance_every = getattr(policy, "rebalance_every", None)
        self.policy_name = str(policy_name or getattr(policy, "name", type(policy).__name__))
        self._open(preprocessing, broker, journal, symbols, config, run_name=run_name, run_dir=run_dir, crash=crash,
                   clear_halt=clear_halt, write_monitor=write_monitor, alert_post=alert_post)
        self.capital = 0.0

    # ----- start --------------------------------------------------------------------------------
    def start(self) -> None:
        """Open (or resume) the run: the same run, one account of ``capital`` across the symbols."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        identity = {"run": self.run_name, "policy": self.policy_name, "mode": "portfolio",
                    "preprocessing": self.preprocessing.digest(), "symbols": self.symbols, "timeframe": self.timeframe,
                    "broker": self.broker.name}
        known = self.journal.meta("identity")
        if known is None:
            clock = self.broker.clock()
            account = self.broker.account()
            capital = self.config.loop.capital or account.equity
            if not capital > 0:
                raise ValueError(f"capital {capital} must be > 0 (the account's equity is {account.equity})")
            self.journal.set_meta("identity", identity)
            self.journal.set_meta("capital", float(capital))
            self.journal.set_meta("started_at", iso(clock.timestamp))
            self.journal.set_meta("cash_offset", account.cash - capital)
            self.journal.open_sleeves({s: capital / len(self.symbols) for s in self.symbols}, clock.timestamp)
            logger.info("run %s: portfolio %s on %s, capital %.2f, broker %s", self.run_name, self.policy_name,
                        ", ".join(self.symbols), capital, self.broker.name)
        else:
            differs = [k for k in identity if known.get(k) != identity[k]]
            if differs:
                raise ValueError(f"run {self.run_name} was started with another {', '.join(differs)} "
                                 f"({ {k: known.get(k) for k in differs} }) - resume it with the same --policy/"
                                 f"--symbols/--broker/--portfolio, or start a new --run-name")
            restore = getattr(self.broker, "restore", None)
            if restore is not None:
                restore(self.journal)
            logger.info("run %s resumed from %s", self.run_name, self.journal.path)
        self.capital = float(self.journal.meta("capital"))
        if self.clear_halt and self.journal.meta("halted"):
            self.journal.set_meta("halted", None)
            self.journal.set_meta("day_start", None)
        self.journal.set_meta("status", "running")
        self.policy.reset()  # portfolio policies here are stateless

    # ----- the account ----------------------------------------------------------------------------
    def account_state(self) -> tuple[float, np.ndarray, np.ndarray]:
        """The account by the journal: exact cash (:func:`account_cash`), units (N,) and last targets (N,)."""
        sleeves = self.journal.sleeves()
        units = np.array([float(sleeves[s].units) for s in self.symbols])
        last = np.array([self.journal.last_target(s) for s in self.symbols])
        return account_cash(self.journal, self.capital), units, last

    # ----- the cycle --------------------------------------------------------------------------------
    def _trade(self, clock: Clock, bars: dict[str, pd.DataFrame | None], positions: dict[str, Position],
               report: CycleReport) -> None:
        """The cycle's decide and execute steps (:meth:`live.loop.LiveLoop.cycle`), for the universe at once: the
        decision is executed once any of its symbols trades (a crypto pair while the equity market is closed)."""
        self._decide_portfolio(clock.timestamp, bars, report)
        if any(self._tradable(symbol, clock) for symbol in self.symbols):
            self._execute_portfolio(clock, bars, report)

    def _mark(self, bars: dict[str, pd.DataFrame | None], report: CycleReport) -> None:
        """Mark each symbol at the universe's newest bar, at its last close (a stock over a weekend: Friday's; sleeve
        cash + value: the marks of a bar add up to the account's equity), its position the asset's weight in the
        account; the report's equity is the account's (exact cash). A symbol whose own newer bar should have
        closed but has not come yet is marked once it comes (a bar's first mark is kept)."""
        sleeves = self.journal.sleeves()
        bar_time = self._universe_bar(bars)
        if bar_time is None:
            return
        cash, units, _ = self.account_state()
        closes = {s: float(bars[s]["close"].iloc[-1]) for s in self.symbols}
        equity = cash
        for i, symbol in enumerate(self.symbols):
            equity += units[i] * closes[symbol]
        now = report.at
        for symbol in self.symbols:
            own = bars[symbol].index[-1]
            if own < bar_time and self.broker.expected_bar_times(symbol, self.timeframe, own, now):
                continue  # its bar of this time is late: its close is not known yet
            sleeve = sleeves[symbol]
            value = sleeve.units * closes[symbol]
            self.journal.record_equity(symbol, bar_time, closes[symbol], sleeve.cash, sleeve.units,
                                       sleeve.cash + value, value / equity if equity > 0 else 0.0)
        report.equity = equity

    def _universe_bar(self, bars: dict[str, pd.DataFrame | None]) -> pd.Timestamp | None:
        if any(bars[s] is None for s in self.symbols):
            return None
        return max(bars[s].index[-1] for s in self.symbols)

    def _decided(self, bar_time: pd.Timestamp) -> list[Any]:
        return [self.journal.decision(s, bar_time) for s in self.symbols]

    def _step_index(self, bar_time: pd.Timestamp) -> int:
        """Decided bars before ``bar_time``: the backtest's step count (its rebalance schedule)."""
        return sum(1 for row in self.journal.decisions(self.symbols[0]) if stamp(row["bar_time"]) < bar_time)

    def _decide_portfolio(self, now: pd.Timestamp, bars: dict[str, pd.DataFrame | None], report: CycleReport) -> None:
        """One decision on the universe's newest complete bar not decided yet (a row per symbol, all journalled
        before anything is sent; a decision cut short by a crash is completed with the same numbers)."""
        bar_time = self._universe_bar(bars)
        if bar_time is None:
            return
        rows = self._decided(bar_time)
        if all(row is not None for row in rows):
            return
        pre = self.preprocessing
        for symbol in self.symbols:
            frame = bars[symbol]
            if len(frame) < pre.min_bars:
                self.alert(now, "stale_data", f"{symbol}: {len(frame)} bars, the observation needs {pre.min_bars} "
                           f"({pre.warmup} warm-up + {pre.window} window); no decision", symbol,
                           key=f"short:{symbol}:{iso(bar_time)}")
                return
            behind = self.broker.expected_bar_times(symbol, self.timeframe, frame.index[-1], now)
            if len(behind) >= self.config.risk.stale_bars:
                report.waiting_for_bars = True
                first_seen = self.late_since.setdefault((symbol, behind[-1]), now)
                grace = pd.Timedelta(seconds=self.config.loop.bar_delay_seconds + 3 * self.config.loop.poll_seconds)
                if now - first_seen >= grace:
                    self.alert(now, "stale_data", f"{symbol}: the newest bar is {frame.index[-1]}, {len(behind)} newer "
                               f"bar(s) should have closed (last {behind[-1]}); no decision on stale data", symbol,
                               key=f"stale:{symbol}:{iso(behind[-1])}")
                return
        cash, units, _ = self.account_state()
        observation = portfolio_observation(pre, bars, self.symbols, cash=cash, units=units)
        action = self.policy.act(observation.copy())
        targets = target_weights(action, self.transform, len(self.symbols), self.symbols)
        equity = cash + float(np.dot(units, [float(bars[s]["close"].iloc[-1]) for s in self.symbols]))
        limited, note = limit_weights(targets, equity, self.config.risk)
        record = observation if self.config.loop.record_observations else None
        for i, symbol in enumerate(self.symbols):
            self.journal.record_decision(symbol, bar_time, now, _plain(np.asarray(action, dtype=np.float64)),
                                         float(targets[i]), float(limited[i]), note, record if i == 0 else None)
            self.journal.supersede(symbol, bar_time, now)
            report.decisions.append({"symbol": symbol, "bar": iso(bar_time), "target": float(targets[i]),
                                     "risk_target": float(limited[i]), "note": note})
        self._crash("after_decide")

    def _execute_portfolio(self, clock: Clock, bars: dict[str, pd.DataFrame | None], report: CycleReport) -> None:
        """Execute the decision on the newest bar once: plan it by the simulator's rule (journalled whole), then
        send what of the plan has not reached the broker, sells before buys."""
        now = clock.timestamp
        bar_time = self._universe_bar(bars)
        if bar_time is None:
            return
        rows = self._decided(bar_time)
        if any(row is None for row in rows) or all(row["executed_at"] is not None for row in rows):
            return
        key = PLAN_KEY + iso(bar_time)
        journalled = self.journal.meta(key)
        plan = None if journalled is None else journalled["orders"]
        day = str(self.broker.session_date(now))
        if plan is None:
            if not self.desk.cancel(now, "superseded by a newer decision", report.fills):
                return  # an older order is still open: cancel it, then plan against what filled
            plan = self._plan(bar_time, rows, bars, clock)
            sent_today = len([o for o in self.journal.orders(trading_day=day) if o["status"] != "not_sent"])
            if plan and sent_today + len(plan) > self.config.risk.max_orders_per_day:
                self.alert(now, "trades_per_day", f"{sent_today} orders today + {len(plan)} of this rebalance pass "
                           f"risk.max_orders_per_day={self.config.risk.max_orders_per_day}; no rebalance today",
                           key=f"maxorders:{day}")
                for symbol in self.symbols:
                    self.journal.mark_executed(symbol, bar_time, now, "blocked: max orders per day")
                return
            self.journal.set_meta(key, {"at": iso(now), "orders": plan})
        for order in plan:
            existing = self.journal.order(order["cid"])
            if existing is not None and existing["status"] != "not_sent":
                continue
            units = float(order["units"])
            sent = self.desk.send(cid=order["cid"], symbol=order["symbol"], bar_time=bar_time, intent=INTENT,
                                  units=units, target=float(order["target"]), reference=float(order["reference"]),
                                  now=now, trading_day=day, fills=report.fills)
            report.orders.append({"client_order_id": order["cid"], "symbol": order["symbol"],
                                  "side": BUY if units > 0 else SELL, "qty": abs(units), "target": order["target"],
                                  "reference_price": order["reference"],
                                  "status": "rejected" if sent is None else sent.status})
        outcome = f"{len(plan)} order(s) of the rebalance sent" if plan else "no order (targets reached)"
        planned = {order["symbol"] for order in plan}
        for symbol in self.symbols:
            held = symbol not in planned and not self._tradable(symbol, clock)
            self.journal.mark_executed(symbol, bar_time, now, "held: its market is closed" if held else outcome)
        sent = len([o for o in self.journal.orders(trading_day=day) if o["status"] != "not_sent"])
        if sent > self.config.alerts.max_trades_per_day:
            self.alert(now, "trades_per_day", f"{sent} orders today, above alerts.max_trades_per_day="
                       f"{self.config.alerts.max_trades_per_day}", key=f"trades:{day}")

    def _plan(self, bar_time: pd.Timestamp, rows: list[Any], bars: dict[str, pd.DataFrame | None],
              clock: Clock) -> list[dict]:
        """The orders of the decision on ``bar_time``: the simulator's step on a copy of the account at the
        broker's reference prices; sells first, then buys, each in asset order (the simulator's fill order).

        A symbol whose market does not trade now (a stock while the equity market is closed, an asset without a bar
        in a replay) has no reference price: it holds and cannot trade, valued at its last close, as an asset
        without a bar in the simulator, and the buys are sized on the cash there is.
        """
        reference: dict[str, float | None] = {}
        for symbol in self.symbols:
            if not self._tradable(symbol, clock):
                reference[symbol] = None
                continue
            try:
                reference[symbol] = float(self.broker.reference_price(symbol))
            except OrderRejected:  # no bar opens for it now: it holds and cannot trade (as in the simulator)
                reference[symbol] = None
        cash, units, last = self.account_state()
        targets = np.array([float(row["risk_target"]) for row in rows])
        rebalance = self.rebalance_every is not None and self._step_index(bar_time) % int(self.rebalance_every) == 0
        deltas = plan_portfolio_orders(bars, self.symbols, reference, targets=targets, last_targets=last, cash=cash,
                                       units=units, rebalance=rebalance, costs=self.costs,
                                       min_rebalance=self.config.loop.min_rebalance)
        orders = []
        for i, symbol in enumerate(self.symbols):
            units_i = round_quantity(float(deltas[i]), self._decimals(symbol))
            if units_i != 0.0:
                orders.append({"cid": client_order_id(self.run_name, symbol, bar_time, INTENT), "symbol": symbol,
                               "units": units_i, "target": float(targets[i]), "reference": reference[symbol]})
        return [o for o in orders if o["units"] < 0] + [o for o in orders if o["units"] > 0]


# ----- the simulator broker with one account ------------------------------------------------------------------------
class PortfolioSimBroker(JournalReplay):
    """A dataset split replayed with ONE account across the symbols, answering :class:`live.broker.Broker`.

    The replay walks the backtest's timeline (the universe's :class:`features.panel.Panel`) from the split's first
    row, as :func:`envs.portfolio_backtest.backtest_portfolio` does: at the *close* of row ``r`` the market is
    closed and bars up to ``r`` are complete; at the *open* of ``r + 1`` a market order fills at once at that
    bar's open with the simulator's per-fill slippage and commission (:func:`sim.portfolio._fill`, on the
    account's own arrays), fractional units; an asset with no bar there cannot trade (:meth:`can_trade` says so, and
    the clock, the equity market's, is closed at a row where no stock has a bar: a weekend beside 24/7 crypto).
    Long-only: a buy the cash cannot pay is rejected.

    :param panel: the universe (its dataset is replayed).
    :param split: the split replayed.
    :param costs: the cost models.
    :param capital: the account's starting cash (the backtest's ``initial_cash``).
    """

    name = "sim"
    fast = True
    qty_decimals = None

    def __init__(self, panel: Panel, split: str = "test", costs: Costs | None = None, *,
                 capital: float = 100_000.0) -> None:
        self.panel = panel
        self.data = panel.data
        self.symbols = list(panel.symbols)
        self.split = split
        self.costs = costs or Costs()
        self.capital = float(capital)
        self.timeframe = panel.timeframe
        self.bar_ns = Timeframe.parse(self.timeframe).seconds * 1_000_000_000
        self.day_ns = 86_400 * 1_000_000_000
        self.daily = self.bar_ns == self.day_ns
        self.start_row, self.end_row = panel.split_range(split)
        if self.end_row - self.start_row < 2:
            raise ValueError(f"split {split!r} of the universe has {self.end_row - self.start_row} rows; the replay "
                             f"needs at least 2")
        self.frames = {s: _bars_frame(self.data, self.data.symbol_index(s)) for s in self.symbols}
        self.sim = PortfolioSimulator(panel.open, panel.high, panel.low, panel.close, panel.volume, panel.has_bar,
                                      self.costs, n_accounts=1, initial_cash=self.capital, fill_at="next_open")
        self.ticks = panel.timestamps[self.start_row: self.end_row].astype(np.int64)
        rows = slice(self.start_row, self.end_row)
        self.stock_opens = stock_opens(self.ticks, {s: self.ticks[panel.has_bar[rows, i]]
                                                    for i, s in enumerate(self.symbols)})
        self._open_account()

    def _open_account(self) -> None:
        """The account in cash at the close of the split's first row, no order: a new replay."""
        self.sim.reset(self.start_row)
        self.basis = np.zeros(len(self.symbols))
        self.tick = 0
        self.phase = "close"
        self.orders: dict[str, Order] = {}
        self._order_seq = 0
        self.finished = False

    # ----- time -----------------------------------------------------------------------------
    @property
    def row(self) -> int:
        """The panel row of the last complete bar."""
        return int(self.sim.ints[0, 0])

    def sleep(self, seconds: float, stop: object = None) -> None:
        """The replay's next event (close -> next bar's open -> its close), whatever ``seconds``."""
        if self.finished:
            return
        if self.phase == "close":
            if self.tick + 1 >= len(self.ticks):
                self.finished = True
                return
            self.tick += 1
            self.phase = "open"
            return
        self.sim.ints[0, 0] += 1  # the bar closes: the account is marked at its close (no interest, no borrow)
        self.phase = "close"
        if self.tick + 1 >= len(self.ticks):
            self.finished = True

    # ----- market data ----------------------------------------------------------------------
    def _complete(self, symbol: str) -> int:
        """How many of the symbol's bars are complete now."""
        frame = self._frame(symbol)
        # a daily row is a UTC date (features.Panel): the symbol's bar of that date is complete whatever hour it is
        # stamped at (Alpaca: a stock's day at midnight New York, 04:00/05:00 UTC)
        last = int(self.panel.timestamps[self.row]) + (self.day_ns - 1 if self.daily else 0)
        return int(np.searchsorted(frame.index.asi8, last, side="right"))

    def _frame(self, symbol: str) -> pd.DataFrame:
        try:
            return self.frames[symbol]
        except KeyError:
            raise BrokerError(f"{symbol} is not replayed by this simulator broker; it has {self.symbols}") from None

    def bars(self, symbol: str, timeframe: str, count: int) -> pd.DataFrame:
        end = self._complete(symbol)
        return self._frame(symbol).iloc[max(end - int(count), 0): end]

    def expected_bar_times(self, symbol: str, timeframe: str, after: pd.Timestamp,
                           until: pd.Timestamp) -> list[pd.Timestamp]:
        index = self._frame(symbol).index[: self._complete(symbol)]
        return list(index[index > after])

    def _fill_asset(self, symbol: str) -> int:
        """The asset index of ``symbol`` when a bar of it opens now (else the order is refused)."""
        if symbol not in self.symbols:
            raise OrderRejected(f"{symbol} is not replayed by this simulator broker; it has {self.symbols}")
        if self.phase != "open" or self.finished:
            raise BrokerError(f"{symbol}: the market is closed (the replay is at a bar's close)")
        if not self._opens_now(symbol):
            raise OrderRejected(f"{symbol}: no bar opens at {self._time(self.tick, 'open')}")
        return self.symbols.index(symbol)

    def _opens_now(self, symbol: str) -> bool:
        """Whether a bar of ``symbol`` opens at this tick (the simulator's fill row has a bar of it)."""
        self._frame(symbol)  # an unknown symbol is a one-line error
        return bool(self.sim.market[HAS_BAR, self.row + 1, self.symbols.index(symbol)])

    def reference_price(self, symbol: str) -> float:
        i = self._fill_asset(symbol)
        return float(self.sim.market[OPEN, self.row + 1, i])

    # ----- account ----------------------------------------------------------------------------
    def _mark(self, i: int) -> float:
        market = self.sim.market
        if self.phase == "open" and not self.finished and market[HAS_BAR, self.row + 1, i]:
            return float(market[OPEN, self.row + 1, i])
        return float(market[1, self.row, i])  # CLOSE: the latest known close

    def account(self) -> Account:
        cash = float(self.sim.floats[CASH, 0])
        equity = cash
        for i in range(len(self.symbols)):
            equity += float(self.sim.assets[UNITS, 0, i]) * self._mark(i)
        return Account(cash=cash, equity=equity, buying_power=max(cash, 0.0))

    def positions(self) -> dict[str, Position]:
        out = {}
        for i, symbol in enumerate(self.symbols):
            units = float(self.sim.assets[UNITS, 0, i])
            if units != 0.0:
                out[symbol] = Position(symbol, units, self.basis[i] / units, float(self.basis[i]), self._mark(i))
        return out

    # ----- orders -----------------------------------------------------------------------------
    def submit_order(self, request: OrderRequest) -> Order:
        """Fill ``request`` at once at this bar's open with the simulator's slippage and commission."""
        if request.client_order_id in self.orders:  # idempotent, as Alpaca's unique client_order_id
            return self.orders[request.client_order_id]
        i = self._fill_asset(request.symbol)
        if not (math.isfinite(request.qty) and request.qty > 0):
            raise OrderRejected(f"{request.symbol}: qty {request.qty!r} must be > 0")
        sim, f = self.sim, self.row + 1
        delta = float(request.qty) if request.side == BUY else -float(request.qty)
        price = float(sim.market[OPEN, f, i])
        impact = float(sim.params[7])  # P_IMPACT
        s = float(sim.market[SLIP_BASE, f, i]) + impact * math.sqrt(abs(delta) * price / float(sim.market[ADV, f, i]))
        if s >= 1.0:
            raise OrderRejected(f"{request.symbol}: the cost model slips 100% or more at this size")
        units_before, cash = float(sim.assets[UNITS, 0, i]), float(sim.floats[CASH, 0])
        if delta < 0 and units_before + delta < -1e-9 * max(abs(units_before), 1.0):
            raise OrderRejected(f"{request.symbol}: sell {request.qty:.9g} of {units_before:.9g} held - no shorts")
        saved = (sim.ints.copy(), sim.floats.copy(), sim.assets.copy())
        sim.assets[SEND, 0, i] = 1.0
        after = _fill(0, i, delta, price, s, float(self.costs.commission), float(self.costs.fixed_fee), cash,
                      sim.ints, sim.floats, sim.assets)
        self._order_seq += 1
        now = self._time(self.tick, "open")
        base = dict(id=f"sim-{self._order_seq:06d}", client_order_id=request.client_order_id, symbol=request.symbol,
                    side=request.side, qty=float(request.qty), submitted_at=now)
        if sim.assets[SEND, 0, i] == 0.0:
            order = Order(**base, status="canceled", reason="the fixed fee exceeds what the sell frees")
        elif after < -1e-9 * self.capital:
            sim.ints[:], sim.floats[:], sim.assets[:] = saved
            self._order_seq -= 1
            raise OrderRejected(f"{request.symbol}: buy of {request.qty:.9g} needs {cash - after:,.2f}, the cash is "
                                f"{cash:,.2f} (insufficient buying power)")
        else:
            sim.floats[CASH, 0] = after
            fill_price = float(sim.assets[FILL_PRICE, 0, i])
            if delta > 0:
                self.basis[i] += delta * fill_price
            elif units_before != 0.0:
                self.basis[i] *= (units_before + delta) / units_before
            sim.assets[TARGET, 0, i] = float(request.target)
            order = Order(**base, status="filled", filled_qty=float(request.qty), filled_avg_price=fill_price,
                          filled_at=now, commission=float(sim.assets[FILL_COMMISSION, 0, i]), extra={"row": f})
        self.orders[request.client_order_id] = order
        return order

    # ----- resuming a replay ------------------------------------------------------------------
    def restore(self, journal: Journal) -> None:
        """Put the replay back where ``journal``'s run left it: the clock at the journal's last moment, every order
        that reached this broker sent again at the moment it was sent (in the order it was sent) to a fresh
        replay, each checked to fill as the journal booked it (:class:`live.sim_broker.JournalReplay`); the
        account ends with the journal's units.

        :param journal: the run's journal.
        :raises JournalMismatch: the journal does not describe a run of this replay.
        """
        self._open_account()
        resent = self.send_journal_again(journal)
        if resent is None:
            return
        sleeves = journal.sleeves()
        for i, symbol in enumerate(self.symbols):
            ours = float(self.sim.assets[UNITS, 0, i])
            theirs = sleeves[symbol].units if symbol in sleeves else None
            if theirs is None or not math.isclose(ours, theirs, rel_tol=1e-12, abs_tol=1e-9):
                raise JournalMismatch(f"{journal.path}: {symbol} holds {theirs!r} units in the journal, the replayed "
                                      f"account {ours!r} - the journal was changed outside the run or written on other "
                                      f"data; start a new --run-name")
        logger.info("portfolio replay restored from %s at %s (%d orders sent again)", journal.path, *resent)


def check_portfolio_policy(policy: Any) -> None:
    """Refuse, in one line, a saved portfolio agent the live loop cannot trade exactly (shorts, leverage, an
    encoder bundle, a covariance in its observation).

    :param policy: the policy.
    """
    meta = getattr(policy, "meta", None)
    if not isinstance(meta, dict):
        return
    env = meta.get("env") or {}
    name = getattr(policy, "name", "the agent")
    if meta.get("encoder"):
        raise PortfolioLiveError(f"{name} observes a supervised encoder's embeddings; paper trading a portfolio "
                                 f"agent supports raw features only")
    if env.get("allow_short") or float(env.get("max_leverage", 1.0) or 1.0) != 1.0:
        raise PortfolioLiveError(f"{name} was trained with shorts or leverage; paper trading a portfolio is long-only")
    if int(env.get("covariance_window", 0) or 0) > 0:
        raise PortfolioLiveError(f"{name} observes a covariance (covariance_window > 0), not built live yet")


__all__ = ["PortfolioLiveError", "PortfolioLiveLoop", "PortfolioSimBroker", "account_cash", "check_portfolio_policy",
           "limit_weights", "plan_portfolio_orders", "portfolio_observation", "target_weights"]
