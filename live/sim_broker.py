"""The simulator as a broker: historical bars replayed through the live loop (``--broker sim``).

Each symbol is its own account (a sleeve), a :class:`sim.Simulator` over the dataset's price arrays
started where the backtester starts it: the first bar of the split at which the policy's window fits
(``offset + min_bars - 1``). The replay clock walks the bars' timestamps in two phases per bar:

- *close* of bar ``r``: bars up to ``r`` are complete; the market is closed; the loop decides;
- *open* of bar ``r + 1``: the market is open; a market order fills at once at this bar's open with the
  simulator's slippage and commission: the broker calls ``Simulator.step(order.target)``, the very
  step the backtester takes, and reports the fill it logged. A symbol that got no order is stepped
  with its last target when its bar closes (the simulator sends nothing then, as in the backtest).

So a loop that sizes orders by the simulator's rule (:mod:`live.sizing`) and decides on the same
observations reproduces the backtest's fills and equity exactly; the broker checks that each order's
quantity is the one the simulator fills and says so when it is not.

The replay lives in the process; a run started again with the same name gets it back from its journal
(:meth:`SimBroker.restore`, called by the loop): the journal is the only record.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.bars import Timeframe
from features.calendars import asset_class_of
from features.market_data import MarketData
from sim.engine import Costs, Simulator

from .broker import BUY, Account, BrokerError, Clock, Order, OrderRejected, OrderRequest, Position, Session
from .journal import Journal, stamp

logger = logging.getLogger(__name__)


class JournalMismatch(ValueError):
    """A journal that does not describe a run of this replay (another dataset, split or costs)."""


@dataclass
class _Book:
    """One symbol's account and its place in the replay."""

    symbol: str
    sim: Simulator
    rows: np.ndarray  # global rows of this symbol, start .. end - 1
    times: np.ndarray  # int64 ns of those rows
    frame: pd.DataFrame  # every bar of the symbol (for bars())
    first_local: int  # index of the first replayed row in frame
    position: int = 0  # index into rows of the last complete bar (close phase) / the bar before the open
    stepped: bool = False  # stepped during the current open phase
    last_slice: tuple[int, int, pd.DataFrame] | None = None  # bars()'s last answer: (start, stop, frame)


class JournalReplay:
    """What the replaying brokers (:class:`SimBroker`, ``live.portfolio.PortfolioSimBroker``) share: their clock and
    calendar (a session per replayed bar: open at its start, close just before the next one), their order book
    (orders fill at once) and resuming from a run's journal - the replay walks its clock to the journal's last
    moment and sends again, at each bar open, the orders the journal says reached the broker then, each checked to
    fill as journalled. The broker has ``ticks`` (each bar's start), ``stock_opens`` (per tick: a stock's bar opens
    there), ``bar_ns``, ``tick``, ``phase``, ``finished``, ``orders`` (client order id -> order), ``sleep(seconds)``,
    ``submit_order(request)`` and ``_opens_now(symbol)`` (a bar of the symbol opens at this tick).

    Stocks beside 24/7 crypto: the timeline is the union of the symbols' bars, so some ticks (a weekend, a night)
    open a crypto bar and no stock's. The clock is the equity market's, as Alpaca's is: open at a tick's open only
    when a stock's bar opens there (at every bar open when the universe has no stock), and :meth:`can_trade` says
    which symbols trade at a moment - those whose bar opens now, the simulator's rule (an asset without a bar holds
    and cannot trade)."""

    def open_orders(self) -> list[Order]:
        """Orders not final. A replay's order never changes once sent (it fills at once, or is canceled unfilled):
        the orders sent before a call that found none open are not looked at again."""
        settled = getattr(self, "_settled", 0)
        if settled > len(self.orders):  # the book was opened again (restore)
            settled = 0
        pending = [order for order in itertools.islice(self.orders.values(), settled, None) if not order.is_final]
        if not pending:
            self._settled = len(self.orders)
        return pending

    def order_by_client_id(self, client_order_id: str) -> Order | None:
        return self.orders.get(client_order_id)

    def cancel_order(self, order: Order) -> None:
        """Orders fill at once: nothing is ever open to cancel."""

    def _time(self, tick: int, phase: str) -> pd.Timestamp:
        """The clock at bar ``tick``'s open or close."""
        start = int(self.ticks[tick])
        if phase == "open":
            return pd.Timestamp(start, tz="UTC")
        end = start + self.bar_ns
        if tick + 1 < len(self.ticks):
            end = min(end, int(self.ticks[tick + 1]))
        return pd.Timestamp(end - 1, tz="UTC")  # before the next bar opens: the close belongs to this bar's day

    def clock(self) -> Clock:
        """The equity market's clock in the replay: open at a tick's open where a stock's bar opens."""
        now = self._time(self.tick, self.phase)
        is_open = self.phase == "open" and not self.finished and bool(self.stock_opens[self.tick])
        if is_open:
            return Clock(now, True, now, self._time(self.tick, "close"))
        later = np.flatnonzero(self.stock_opens[self.tick + 1:])
        nxt = self.tick + 1 + int(later[0]) if len(later) else min(self.tick + 1, len(self.ticks) - 1)
        return Clock(now, False, self._time(nxt, "open"), self._time(nxt, "close"))

    def can_trade(self, symbol: str) -> bool:
        """Whether an order of ``symbol`` fills now: at a tick's open where a bar of it opens.

        :param symbol: a replayed symbol.
        """
        return self.phase == "open" and not self.finished and self._opens_now(symbol)

    def calendar(self, start: dt.date, end: dt.date) -> list[Session]:
        sessions = []
        for tick in range(len(self.ticks)):
            opened = self._time(tick, "open")
            if start <= opened.date() <= end:
                sessions.append(Session(opened.date(), opened, self._time(tick, "close")))
        return sessions

    def session_date(self, moment: pd.Timestamp) -> dt.date:
        value = pd.Timestamp(moment).value
        memo = getattr(self, "_session_memo", None)  # a cycle asks about its moment several times
        if memo is not None and memo[0] == value:
            return memo[1]
        k = max(int(np.searchsorted(self.ticks, value, side="right")) - 1, 0)
        day = pd.Timestamp(int(self.ticks[k]), tz="UTC").date()
        self._session_memo = (value, day)
        return day

    def bar_time_of(self, moment: pd.Timestamp, timeframe: str) -> pd.Timestamp:
        k = max(int(np.searchsorted(self.ticks, pd.Timestamp(moment).value, side="right")) - 1, 0)
        return pd.Timestamp(int(self.ticks[k]), tz="UTC")


    def send_journal_again(self, journal: Journal) -> tuple[pd.Timestamp, int] | None:
        """Replay to ``journal``'s last moment, sending its orders again; ``(that moment, orders sent)``, or None for
        a journal with nothing in it.

        :raises JournalMismatch: an order sent at no bar open of this replay, or filled otherwise than journalled.
        """
        moment = journal.last_moment()
        if moment is None:
            return None
        sent = sorted((row for row in journal.orders() if row["broker_id"] is not None),
                      key=lambda row: _sequence(row["broker_id"], journal.path))
        waiting = [(stamp(row["created_at"]), row) for row in sent]
        until = self._phase_at(moment, journal.path)
        k = 0
        while True:
            if self.phase == "open":
                now = self._time(self.tick, "open")
                while k < len(waiting) and waiting[k][0] == now:
                    self._send_again(waiting[k][1], journal.path)
                    k += 1
            if (self.tick, self.phase) == until:
                break
            self.sleep(0.0)
        if k < len(waiting):
            row = waiting[k][1]
            raise JournalMismatch(f"{journal.path}: order {row['client_order_id']} was sent at {row['created_at']}, "
                                  f"which is not a bar open of this replay (in order) - resume it on the data, split "
                                  f"and costs it was started with, or start a new --run-name")
        return moment, len(waiting)

    def _phase_at(self, moment: pd.Timestamp, path: object) -> tuple[int, str]:
        """The replay's (tick, phase) whose clock reads ``moment``."""
        value = pd.Timestamp(moment).value
        tick = int(np.searchsorted(self.ticks, value, side="right")) - 1
        for phase in ("open", "close"):
            if tick >= 0 and self._time(tick, phase).value == value and (tick > 0 or phase == "close"):
                return tick, phase
        raise JournalMismatch(f"{path}: the journal's last moment {moment} is no bar open or close of this replay "
                              f"(ticks {pd.Timestamp(int(self.ticks[0]), tz='UTC')} .. "
                              f"{pd.Timestamp(int(self.ticks[-1]), tz='UTC')}) - resume it on the data and split it was "
                              f"started with, or start a new --run-name")

    def _send_again(self, row: object, path: object) -> None:
        """Send a journalled order again and check the simulator fills it as the journal booked it."""
        request = OrderRequest(row["symbol"], row["side"], float(row["qty"]), row["client_order_id"],
                               float(row["target"]), float(row["reference_price"]))
        order = self.submit_order(request)
        booked = (row["status"], row["broker_id"], float(row["filled_qty"]), row["filled_avg_price"], float(row["commission"]))
        again = (order.status, order.id, float(order.filled_qty), order.filled_avg_price, float(order.commission))
        if booked != again:
            raise JournalMismatch(f"{path}: order {row['client_order_id']} (status, id, filled qty, price, commission) "
                                  f"was journalled as {booked} but the replay fills it as {again} - resume it on the "
                                  f"data, split and costs it was started with, or start a new --run-name")


class SimBroker(JournalReplay):
    """Historical bars replayed through the simulator, answering the :class:`live.broker.Broker` protocol.

    :param data: the dataset whose bars are replayed (raw prices; the loop builds its own features).
    :param symbols: the symbols to trade.
    :param split: the split replayed (as the backtest's ``split``).
    :param costs: the simulator's cost model.
    :param min_bars: the policy's ``preprocessing.min_bars``: the replay starts at the first bar of the split
        with that many bars of history, as the backtester does.
    :param capital_per_symbol: each sleeve's starting cash (the backtest's ``initial_cash``).
    :param allow_short: the simulator's shorting flag.
    :param min_rebalance: the simulator's no-trade band.
    """

    name = "sim"
    fast = True  # a replay: the monitor page is written once at the end, not every cycle

    def __init__(self, data: MarketData, symbols: list[str], split: str = "test", costs: Costs | None = None, *,
                 min_bars: int = 1, capital_per_symbol: float = 100_000.0, allow_short: bool = False,
                 min_rebalance: float = 0.0) -> None:
        self.data = data
        self.timeframe = data.timeframe
        self.costs = costs or Costs()
        self.symbols = list(symbols)
        self.split = split
        self.min_bars = int(min_bars)
        self.capital_per_symbol = float(capital_per_symbol)
        self.allow_short = bool(allow_short)
        self.min_rebalance = float(min_rebalance)
        self.bar_ns = Timeframe.parse(self.timeframe).seconds * 1_000_000_000
        self._open_books()

    def _open_books(self) -> None:
        """Every account flat with its starting cash, the replay at the first bar's close, no order: the state
        of a new replay (built again by :meth:`restore`)."""
        data = self.data
        self.books: dict[str, _Book] = {}
        for symbol in self.symbols:
            i = data.symbol_index(symbol)
            lo, hi = data.split_range(self.split, symbol)
            offset = int(data.offsets[i])
            start = max(int(lo), offset + self.min_bars - 1)
            if hi - start < 2:
                raise ValueError(f"{symbol}: split '{self.split}' has {max(hi - start, 0)} bars after the policy's "
                                 f"{self.min_bars}-bar warm-up; the replay needs at least 2")
            sim = Simulator(data.open, data.high, data.low, data.close, data.volume, self.costs, n_accounts=1,
                            initial_cash=self.capital_per_symbol, fill_at="next_open", allow_short=self.allow_short,
                            min_rebalance=self.min_rebalance, record_trades=True)
            sim.reset(start)
            rows = np.arange(start, int(hi), dtype=np.int64)
            self.books[symbol] = _Book(symbol, sim, rows, data.timestamps[rows].astype(np.int64),
                                       _bars_frame(data, i), start - offset)
        ticks = np.unique(np.concatenate([book.times for book in self.books.values()]))
        self.ticks = ticks
        self.stock_opens = stock_opens(ticks, {s: book.times for s, book in self.books.items()})
        self.tick = 0
        self.phase = "close"
        self.orders: dict[str, Order] = {}
        self._order_seq = 0
        self.finished = False
        # a symbol whose first replayed bar comes after the first tick joins when its bar closes
        for book in self.books.values():
            book.position = 0 if book.times[0] == ticks[0] else -1

    # ----- time -----------------------------------------------------------------------------
    def sleep(self, seconds: float, stop: object = None) -> None:
        """Move to the next event of the replay (close -> next bar's open -> its close ...), whatever ``seconds``."""
        if self.finished:
            return
        if self.phase == "close":
            if self.tick + 1 >= len(self.ticks):
                self.finished = True
                return
            self.tick += 1
            self.phase = "open"
            for book in self.books.values():
                book.stepped = False
            return
        tick_ns = int(self.ticks[self.tick])
        for book in self.books.values():
            k = book.position + 1
            if k < len(book.times) and book.times[k] == tick_ns:
                if book.position >= 0 and not book.stepped:  # no order this bar: step with the last target (the simulator sends nothing)
                    book.sim.step(np.array([float(book.sim.target[0])]))
                book.position = k
        self.phase = "close"
        if self.tick + 1 >= len(self.ticks):
            self.finished = True

    # ----- resuming a replay ------------------------------------------------------------------
    def restore(self, journal: Journal) -> None:
        """Put the replay back where ``journal``'s run left it: the replay's clock at the journal's last moment and
        every order the journal says reached this broker sent again, at the moment it was sent, to a fresh replay.

        The simulator is deterministic, so this rebuilds the accounts exactly (cash, positions, cost basis,
        entry bar, last target, fills, the order ids): nothing but the journal is kept. An order journalled only
        as an intent (the process died before the broker's answer was booked) died with the process's broker;
        the loop finds it unknown and sends it again. Each order sent again must fill as the journal booked it,
        and each sleeve end with the journal's cash and units, or the run was journalled on other data.

        :param journal: the run's journal.
        :raises JournalMismatch: the journal does not describe a run of this replay (its data, split or costs).
        """
        self._open_books()
        resent = self.send_journal_again(journal)
        if resent is None:
            return
        self._check_sleeves(journal)
        logger.info("replay restored from %s at %s (%d orders sent again)", journal.path, *resent)

    def _check_sleeves(self, journal: Journal) -> None:
        """Each account's cash and units are the journal's sleeve's (to 1e-9)."""
        sleeves = journal.sleeves()
        for symbol, book in self.books.items():
            sleeve = sleeves.get(symbol)
            if sleeve is None:
                raise JournalMismatch(f"{journal.path}: no sleeve for {symbol}; the run was started on other symbols")
            cash, units = float(book.sim.cash[0]), float(book.sim.units[0])
            for name, ours, theirs in (("cash", cash, sleeve.cash), ("units", units, sleeve.units)):
                if not math.isclose(ours, theirs, rel_tol=1e-12, abs_tol=1e-9):
                    raise JournalMismatch(f"{journal.path}: sleeve {symbol} has {name} {theirs!r} in the journal, the "
                                          f"replayed account {ours!r} - the journal was changed outside the run or "
                                          f"written on other data; start a new --run-name")

    # ----- market data ----------------------------------------------------------------------
    def _complete(self, book: _Book) -> int:
        """Index into the symbol's frame of its last complete bar (-1: none in the replay yet)."""
        if book.position < 0:
            return book.first_local - 1
        return book.first_local + book.position

    def bars(self, symbol: str, timeframe: str, count: int) -> pd.DataFrame:
        book = self._book(symbol)
        last = self._complete(book)
        start, stop = max(last - int(count) + 1, 0), last + 1
        cached = book.last_slice
        if cached is not None and cached[0] == start and cached[1] == stop:  # the same bars as the last call
            return cached[2]
        frame = book.frame.iloc[start:stop]
        book.last_slice = (start, stop, frame)
        return frame

    def history(self, symbol: str) -> pd.DataFrame:
        """Every bar of ``symbol`` in the replay's data (what :meth:`bars` slices), for the loop to compute the policy's
        causal features once (:meth:`live.loop.LiveLoop.start`); the bars of a cycle are still :meth:`bars`.

        :param symbol: a replayed symbol.
        """
        return self._book(symbol).frame

    def expected_bar_times(self, symbol: str, timeframe: str, after: pd.Timestamp, until: pd.Timestamp) -> list[pd.Timestamp]:
        book = self._book(symbol)
        end = self._complete(book) + 1
        stamps = book.frame.index.asi8
        first = int(np.searchsorted(stamps[:end], pd.Timestamp(after).value, side="right"))
        return [pd.Timestamp(int(value), tz="UTC") for value in stamps[first:end]]

    def reference_price(self, symbol: str) -> float:
        book = self._book(symbol)
        row = self._fill_row(book)
        return float(self.data.open[book.rows[row]])

    def _fill_row(self, book: _Book) -> int:
        if self.phase != "open" or self.finished:
            raise BrokerError(f"{book.symbol}: the market is closed (the replay is at a bar's close)")
        if not self._opens_now(book.symbol):
            raise OrderRejected(f"{book.symbol}: no bar opens at {self._time(self.tick, 'open')}")
        return book.position + 1

    def _opens_now(self, symbol: str) -> bool:
        """Whether the symbol's next bar starts at this tick (and it has a complete bar before it)."""
        book = self._book(symbol)
        k = book.position + 1
        return book.position >= 0 and k < len(book.times) and book.times[k] == self.ticks[self.tick]

    # ----- account ----------------------------------------------------------------------------
    def _mark(self, book: _Book) -> float:
        sim = book.sim
        if self.phase == "open" and book.stepped:
            return float(self.data.open[book.rows[book.position + 1]])
        return float(sim.close[sim.row[0]])

    def account(self) -> Account:
        cash = sum(float(book.sim.cash[0]) for book in self.books.values())
        equity = sum(float(book.sim.cash[0]) + float(book.sim.units[0]) * self._mark(book) for book in self.books.values())
        return Account(cash=cash, equity=equity, buying_power=cash)

    def positions(self) -> dict[str, Position]:
        out = {}
        for symbol, book in self.books.items():
            units = float(book.sim.units[0])
            if units != 0.0:
                basis = float(book.sim.entry_value[0])
                out[symbol] = Position(symbol, units, basis / units, basis, self._mark(book))
        return out

    # ----- orders -----------------------------------------------------------------------------
    def submit_order(self, request: OrderRequest) -> Order:
        if request.client_order_id in self.orders:  # idempotent, as Alpaca's unique client_order_id
            return self.orders[request.client_order_id]
        book = self._book(request.symbol)
        row = self._fill_row(book)
        if book.stepped:
            raise OrderRejected(f"{request.symbol}: a second order in one bar; the simulator fills one per bar")
        sim = book.sim
        before = sim.fill_count()
        sim.step(np.array([float(request.target)]))
        book.stepped = True
        self._order_seq += 1
        now = self._time(self.tick, "open")
        base = dict(id=f"sim-{self._order_seq:06d}", client_order_id=request.client_order_id, symbol=request.symbol,
                    side=request.side, qty=float(request.qty), submitted_at=now)
        if sim.fill_count() == before:
            order = Order(**base, status="canceled", reason="the simulator sent no order for this target")
        else:
            fill = sim.last_fill()
            units = fill["units"]
            requested = request.qty if request.side == BUY else -request.qty
            if units != requested:
                logger.warning("%s: the simulator filled %.17g units for an order of %.17g (sizing differs)",
                               request.symbol, units, requested)
            order = Order(**base, status="filled", filled_qty=abs(units), filled_avg_price=fill["fill_price"],
                          filled_at=now, commission=fill["commission"],
                          extra={"row": int(book.rows[row]), "sized_units": requested})
        self.orders[request.client_order_id] = order
        return order

    def _book(self, symbol: str) -> _Book:
        try:
            return self.books[symbol]
        except KeyError:
            raise BrokerError(f"{symbol} is not replayed by this simulator broker; it has {sorted(self.books)}") from None


def stock_opens(ticks: np.ndarray, times: dict[str, np.ndarray]) -> np.ndarray:
    """Per tick of a replay, whether a stock's bar starts there: when the equity market's clock is open (every tick
    when no symbol is a stock: no equity calendar to follow).

    :param ticks: int64 (T,) the replay's bar starts (the union of the symbols' bar times).
    :param times: symbol -> int64 its bar starts.
    """
    stocks = [t for s, t in times.items() if asset_class_of(s) != "crypto"]
    if not stocks:
        return np.ones(len(ticks), dtype=bool)
    return np.isin(ticks, np.concatenate(stocks))


def _sequence(broker_id: str, path: object) -> int:
    """The number of a simulator order id (``sim-000042`` -> 42): the order it was sent in."""
    head, _, number = str(broker_id).partition("-")
    if head != "sim" or not number.isdigit():
        raise JournalMismatch(f"{path}: order id {broker_id!r} is not the simulator broker's (sim-NNNNNN); "
                              f"this journal was not written by a --broker sim run")
    return int(number)


def _bars_frame(data: MarketData, i: int) -> pd.DataFrame:
    """Symbol ``i``'s bars as a validated bars frame (what the dataset's features were built from)."""
    rows = slice(int(data.offsets[i]), int(data.offsets[i + 1]))
    prices = data.prices[rows]
    frame = pd.DataFrame(
        {"open": prices[:, 0], "high": prices[:, 1], "low": prices[:, 2], "close": prices[:, 3], "volume": prices[:, 4],
         "vwap": data.vwap[rows]},
        index=pd.DatetimeIndex(pd.to_datetime(data.timestamps[rows], utc=True), name="timestamp"),
    )
    return frame
