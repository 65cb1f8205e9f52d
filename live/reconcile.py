"""Reconciliation: the broker's positions, open orders and cash against the journal's, every cycle.

Each difference is a journal row and an alert. A position that differs while none of the symbol's orders is
still open (so no fill is on its way) is adopted from the broker when ``adopt`` is set: the broker is the
truth about what is held; the journal's cash is never changed, so a cash difference stays visible.
"""

from __future__ import annotations

import math
from typing import Callable

import pandas as pd

from .broker import Broker, Position
from .journal import Journal, iso


def reconcile(journal: Journal, broker: Broker, alert: Callable[..., bool], symbols: list[str],
              positions: dict[str, Position], now: pd.Timestamp, adopt: bool = True) -> None:
    """Compare and record; see the module docstring.

    :param journal: the run's journal.
    :param broker: the broker.
    :param alert: the run's alerter.
    :param symbols: the run's symbols (orders and positions of other symbols are not this run's business).
    :param positions: the broker's positions, fetched this cycle.
    :param now: the broker's clock.
    :param adopt: take the broker's position when it differs unexplained.
    """
    sleeves = journal.sleeves()
    pending = {row["symbol"] for row in journal.orders(pending_only=True)}
    for symbol, sleeve in sleeves.items():
        held = positions[symbol].qty if symbol in positions else 0.0
        if math.isclose(held, sleeve.units, rel_tol=1e-9, abs_tol=1e-9) or symbol in pending:
            continue  # an order still filling explains a difference; a later cycle books it
        action = "adopted the broker's" if adopt else "kept the journal's"
        alert(now, "reconciliation", f"{symbol}: the broker holds {held:.9g} shares, the journal {sleeve.units:.9g}; "
              f"{action}", symbol, key=f"units:{symbol}:{iso(now)}")
        if adopt:
            journal.adopt_units(symbol, held, now, "adopted broker position")
        else:
            journal.record_reconciliation(now, symbol, "units", sleeve.units, held, "alerted")
    for symbol in positions:
        if symbol in symbols and symbol not in sleeves:
            alert(now, "reconciliation", f"{symbol}: the broker holds a position the journal has no sleeve for",
                  symbol, key=f"nosleeve:{symbol}")
    for order in broker.open_orders():
        if order.symbol in symbols and journal.order(order.client_order_id) is None:
            journal.record_reconciliation(now, order.symbol, "foreign_order", None, order.qty,
                                          f"open order {order.client_order_id} not sent by this run")
            alert(now, "reconciliation", f"{order.symbol}: open order {order.client_order_id} was not sent by this run",
                  order.symbol, key=f"foreign:{order.client_order_id}")
    if not pending:
        cash = broker.account().cash
        expected = sum(s.cash for s in journal.sleeves().values()) + float(journal.meta("cash_offset", 0.0))
        if abs(cash - expected) > 0.01 + 1e-6 * abs(expected):
            journal.record_reconciliation(now, None, "cash", expected, cash, "alerted")
            alert(now, "reconciliation", f"broker cash {cash:,.2f} differs from the journal's {expected:,.2f} by "
                  f"{cash - expected:+,.2f} (fees, or trades outside this run)", key=f"cash:{broker.session_date(now)}")
