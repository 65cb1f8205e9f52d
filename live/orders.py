"""Orders at the broker, journalled so that none is ever doubled or lost.

:class:`OrderDesk` is the only place the loop talks orders with the broker:

- :meth:`OrderDesk.send` commits the order's *intent* (its ``client_order_id``) before sending it and books
  the broker's answer after, committed at once (the journal's open transaction, :meth:`live.journal.Journal.commit`:
  a killed process leaves the order as the broker has it); a refusal is journalled as ``rejected``; an unclear failure leaves the intent
  in place for :meth:`OrderDesk.sync` to resolve;
- :meth:`OrderDesk.sync` asks the broker about every journalled order that may still change, by
  ``client_order_id``: fills are booked once (the journal books the difference to what it already has),
  an intent the broker never received becomes ``not_sent`` (the loop may send it again, same id), an order
  the broker forgot is ``lost`` and alerted;
- :meth:`OrderDesk.cancel` cancels open orders (all, or a symbol's older ones) and books the outcome.

``crash`` is called with ``"after_intent"``, ``"after_submit"``, ``"after_book"`` and ``"after_cancel"``:
the moments a killed process could leave behind, which the restart tests visit.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import pandas as pd

from .broker import BUY, SELL, Broker, BrokerError, Order, OrderRejected, OrderRequest
from .journal import Journal

logger = logging.getLogger("live.orders")


class OrderDesk:
    """Sends, books, syncs and cancels orders for one run.

    :param broker: the broker.
    :param journal: the run's journal.
    :param alert: the run's :class:`live.alerts.Alerter`.
    :param timeframe: the bar length (a fill is booked in the bar that contains it).
    :param crash: fault injection (see the module docstring); None: nothing.
    """

    def __init__(self, broker: Broker, journal: Journal, alert: Callable[..., bool], timeframe: str,
                 crash: Callable[[str], None] | None = None) -> None:
        self.broker = broker
        self.journal = journal
        self.alert = alert
        self.timeframe = timeframe
        self.crash = crash or (lambda name: None)

    def book(self, order: Order, now: pd.Timestamp, fills: list[dict[str, Any]]) -> None:
        """Journal the broker's view of ``order``; a new fill is appended to ``fills``."""
        booked = self.journal.apply_order(order, now, self.broker.bar_time_of(order.filled_at or now, self.timeframe))
        if booked is not None:
            fills.append({"client_order_id": booked.client_order_id, "symbol": booked.symbol, "units": booked.units,
                          "price": booked.price, "commission": booked.commission})
        if order.status == "rejected":
            self.alert(now, "order_rejected", f"{order.side} {order.qty:.6g} {order.symbol} was rejected"
                       + (f": {order.reason}" if order.reason else ""), order.symbol,
                       key=f"rejected:{order.client_order_id}")

    def sync(self, now: pd.Timestamp, fills: list[dict[str, Any]]) -> None:
        """Ask the broker about every order that may still change, by its ``client_order_id``."""
        for row in self.journal.orders(pending_only=True):
            cid = row["client_order_id"]
            order = self.broker.order_by_client_id(cid)
            if order is not None:
                self.book(order, now, fills)
            elif row["status"] == "intent":
                self.journal.record_event(cid, now, "not_sent", "the broker has no order with this id: it never arrived "
                                          "(the process stopped or the send failed before)", status="not_sent")
            else:
                self.journal.record_event(cid, now, "lost", "the broker no longer knows this order", status="lost")
                self.alert(now, "reconciliation", f"order {cid} ({row['side']} {row['qty']:.6g} {row['symbol']}) is "
                           f"journalled as {row['status']} but unknown to the broker", row["symbol"], key=f"lost:{cid}")

    def send(self, *, cid: str, symbol: str, bar_time: pd.Timestamp, intent: str, units: float, target: float,
             reference: float, now: pd.Timestamp, trading_day: str, fills: list[dict[str, Any]]) -> Order | None:
        """Journal the intent, send the order, book the answer.

        :param units: signed shares (> 0 buys).
        :return: the broker's order, or None when the broker refused it (journalled and alerted).
        :raises BrokerError: when it is unclear whether the order arrived; the intent stays for :meth:`sync`.
        """
        side = BUY if units > 0 else SELL
        qty = abs(units)
        self.journal.record_intent(cid, symbol, bar_time, intent, side, qty, target, reference, trading_day, now)
        self.journal.commit()
        self.crash("after_intent")
        try:
            order = self.broker.submit_order(OrderRequest(symbol, side, qty, cid, target, reference))
        except OrderRejected as error:
            self.journal.record_event(cid, now, "rejected", str(error), status="rejected", reason=str(error))
            self.alert(now, "order_rejected", f"{side} {qty:.6g} {symbol} was refused: {error}", symbol,
                       key=f"rejected:{cid}")
            return None
        except BrokerError as error:
            self.journal.record_event(cid, now, "send_failed", str(error))
            raise
        self.crash("after_submit")
        self.book(order, now, fills)
        self.journal.commit()
        self.crash("after_book")
        logger.info("%s %s %.6g %s (target %.4g, ~%.6g): %s", cid, side, qty, symbol, target, reference, order.status)
        return order

    def cancel(self, now: pd.Timestamp, why: str, fills: list[dict[str, Any]], *, symbol: str | None = None,
               keep: str | None = None, wait_seconds: float = 0.0) -> bool:
        """Cancel this run's open orders (of ``symbol`` only, when given; never ``keep``) and book the outcome.

        :param wait_seconds: how long to wait, polling each second, for the cancels to settle.
        :return: True once none of them is open.
        """

        def open_rows() -> list[Any]:
            return [row for row in self.journal.orders(pending_only=True)
                    if (symbol is None or row["symbol"] == symbol) and row["client_order_id"] != keep]

        if not self.journal.orders(pending_only=True):
            return True  # nothing to cancel, nothing for sync to book

        for row in open_rows():
            order = self.broker.order_by_client_id(row["client_order_id"])
            if order is not None and not order.is_final:
                self.journal.commit()
                self.broker.cancel_order(order)
                self.journal.record_event(row["client_order_id"], now, "cancel_requested", why)
                self.journal.commit()
                self.crash("after_cancel")
        waited = 0.0
        while True:
            self.sync(now, fills)
            if not open_rows():
                return True
            if waited >= wait_seconds:
                return False
            self.broker.sleep(1.0)
            waited += 1.0

    def await_fills(self, now: pd.Timestamp, fills: list[dict[str, Any]], wait_seconds: float) -> bool:
        """Poll (each second, up to ``wait_seconds``) until no order of this run is open; True when none is."""
        waited = 0.0
        while True:
            self.sync(now, fills)
            if not self.journal.orders(pending_only=True):
                return True
            if waited >= wait_seconds:
                return False
            self.broker.sleep(1.0)
            waited += 1.0
