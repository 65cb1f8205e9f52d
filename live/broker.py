"""The one small interface the live loop trades through, and the records it exchanges.

Two implementations: :class:`live.alpaca_broker.AlpacaBroker` (Alpaca's paper API through alpaca-py)
and :class:`live.sim_broker.SimBroker` (the simulator replaying historical bars). The loop in
:mod:`live.loop` is the same for both, which is what makes ``--broker sim`` equal the backtest.

Times are UTC ``pandas.Timestamp``; quantities are shares (fractional allowed), signed where a field
says so. A broker answers for time too: :meth:`Broker.clock` is the market's clock (Alpaca's server
clock, or the replay's position), and the loop waits by calling the ``sleep`` its broker gives it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Callable, Protocol

import pandas as pd

BUY, SELL = "buy", "sell"

#: Order states after which nothing more will fill (Alpaca's names).
FINAL_STATUSES: frozenset[str] = frozenset({"filled", "canceled", "expired", "rejected", "replaced", "done_for_day",
                                            "stopped", "suspended"})


class BrokerError(RuntimeError):
    """A broker call that failed; the message never holds keys.

    :ivar status_code: the HTTP status, or None (no answer, or not an HTTP broker).
    """

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class OrderRejected(BrokerError):
    """The broker refused an order (insufficient buying power, invalid quantity, ...): not retried."""


@dataclass(frozen=True)
class Clock:
    """The market clock: ``timestamp`` is "now" for the loop.

    :param timestamp: the current time.
    :param is_open: whether the regular session is open.
    :param next_open: the next session open (after ``timestamp``).
    :param next_close: the next session close.
    """

    timestamp: pd.Timestamp
    is_open: bool
    next_open: pd.Timestamp
    next_close: pd.Timestamp


@dataclass(frozen=True)
class Session:
    """One trading session of the calendar (UTC open and close)."""

    date: dt.date
    open: pd.Timestamp
    close: pd.Timestamp


@dataclass(frozen=True)
class Account:
    """Account figures as the broker reports them."""

    cash: float
    equity: float
    buying_power: float
    status: str = "ACTIVE"
    trading_blocked: bool = False


@dataclass(frozen=True)
class Position:
    """An open position.

    :param qty: signed shares (negative when short).
    :param cost_basis: signed cost of the open shares, fill prices included (``qty * avg_entry_price``).
    :param current_price: the broker's last price, if it reports one.
    """

    symbol: str
    qty: float
    avg_entry_price: float
    cost_basis: float
    current_price: float | None = None


@dataclass(frozen=True)
class OrderRequest:
    """A market order the loop wants sent.

    :param symbol: the symbol.
    :param side: ``"buy"`` or ``"sell"``.
    :param qty: shares, > 0.
    :param client_order_id: the loop's idempotency key (see :func:`live.journal.client_order_id`).
    :param target: the target exposure the order moves the symbol's sleeve to; the simulator broker
        fills to it (and checks the quantity agrees), a real broker ignores it.
    :param reference_price: the price it was sized at.
    """

    symbol: str
    side: str
    qty: float
    client_order_id: str
    target: float
    reference_price: float


@dataclass(frozen=True)
class Order:
    """An order as the broker knows it; ``filled_qty`` and ``filled_avg_price`` are cumulative.

    :param commission: cumulative commission charged on the fills (0 at Alpaca for stocks).
    :param reason: why it was rejected or canceled, when known.
    """

    id: str
    client_order_id: str
    symbol: str
    side: str
    qty: float
    status: str
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    submitted_at: pd.Timestamp | None = None
    filled_at: pd.Timestamp | None = None
    commission: float = 0.0
    reason: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def sign(self) -> float:
        return 1.0 if self.side == BUY else -1.0


class Broker(Protocol):
    """What the loop needs from a broker. Every call may raise :class:`BrokerError`.

    A broker whose account lives in the process (the simulator's replay) also has ``restore(journal)``: the loop
    calls it when a run resumes, to rebuild the account from the run's journal.
    """

    name: str

    def clock(self) -> Clock: ...

    def calendar(self, start: dt.date, end: dt.date) -> list[Session]: ...

    def account(self) -> Account: ...

    def positions(self) -> dict[str, Position]: ...

    def open_orders(self) -> list[Order]: ...

    def order_by_client_id(self, client_order_id: str) -> Order | None: ...

    def submit_order(self, request: OrderRequest) -> Order:
        """Send a market order; idempotent on ``client_order_id`` (a retry returns the order already there)."""

    def cancel_order(self, order: Order) -> None: ...

    def bars(self, symbol: str, timeframe: str, count: int) -> pd.DataFrame:
        """Up to ``count`` of the latest *complete* bars of ``symbol`` (validated frame, oldest first)."""

    def expected_bar_times(self, symbol: str, timeframe: str, after: pd.Timestamp, until: pd.Timestamp) -> list[pd.Timestamp]:
        """Start times of the bars that should have closed in ``(after, until]``: how far behind data is."""

    def reference_price(self, symbol: str) -> float:
        """The price a market order sent now is expected to fill near (before slippage)."""

    def bar_time_of(self, moment: pd.Timestamp, timeframe: str) -> pd.Timestamp:
        """Start time of the bar that contains ``moment`` (a fill's bar)."""

    def session_date(self, moment: pd.Timestamp) -> dt.date:
        """The trading day ``moment`` belongs to (for per-day limits)."""

    def sleep(self, seconds: float, stop: Callable[[], bool] | None = None) -> None:
        """Let ``seconds`` of market time pass (real time for Alpaca, returning early once ``stop()`` is true;
        the replay's next event for the simulator)."""


__all__ = ["Account", "BUY", "Broker", "BrokerError", "Clock", "FINAL_STATUSES", "Order", "OrderRejected",
           "OrderRequest", "Position", "SELL", "Session"]
