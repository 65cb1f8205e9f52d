"""Reconciliation: the broker's positions, open orders and cash against the journal's, every cycle.

Each difference is a journal row and an alert. A position that differs while none of the run's orders is still
open (so no fill is on its way and the broker's cash is final) changed outside the run - a user closed it in the
broker's dashboard, say. With ``adopt`` set, the broker is the truth, and about cash and positions together:
the sleeve takes the broker's position and the broker's unexplained cash difference (the position's proceeds,
or what buying it cost), so the run's equity stays cash + positions at market. Such a change is returned as an
:class:`OutsideChange` for the loop to take out of the day's profit and loss: money moved by someone else is
never a loss. Several sleeves changed at once share the cash difference in proportion to the market value of
their changes. A cash difference with no position difference (fees, deposits, withdrawals) is alerted and left
in the journal's view: it is not the run's money.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from .broker import Broker, Position
from .journal import Journal, iso


@dataclass(frozen=True)
class OutsideChange:
    """A sleeve's position changed outside the run and adopted from the broker.

    :param symbol: the sleeve.
    :param units_before: the journal's units before.
    :param units_after: the broker's units (now the journal's).
    :param cash: the broker's cash the sleeve took with it (proceeds > 0, a purchase < 0).
    """

    symbol: str
    units_before: float
    units_after: float
    cash: float

    def value(self, price: float) -> float:
        """What the change added to the sleeve's equity at ``price``: its cash plus the units' change at market."""
        return self.cash + (self.units_after - self.units_before) * price


def reconcile(journal: Journal, broker: Broker, alert: Callable[..., bool], symbols: list[str],
              positions: dict[str, Position], now: pd.Timestamp, adopt: bool = True,
              price: Callable[[str], float] | None = None) -> list[OutsideChange]:
    """Compare and record; see the module docstring.

    :param journal: the run's journal.
    :param broker: the broker.
    :param alert: the run's alerter.
    :param symbols: the run's symbols (orders and positions of other symbols are not this run's business).
    :param positions: the broker's positions, fetched this cycle.
    :param now: the broker's clock.
    :param adopt: take the broker's position and cash when a position differs unexplained.
    :param price: a symbol's price now (shares the cash between several changed sleeves); None: the broker's
        position's price, else 1.
    :return: the changes adopted (none when nothing changed outside the run, or ``adopt`` is off).
    """
    sleeves = journal.sleeves()
    pending = {row["symbol"] for row in journal.orders(pending_only=True)}
    differing: dict[str, float] = {}
    for symbol, sleeve in sleeves.items():
        held = positions[symbol].qty if symbol in positions else 0.0
        if math.isclose(held, sleeve.units, rel_tol=1e-9, abs_tol=1e-9) or symbol in pending:
            continue  # an order still filling explains a difference; a later cycle books it
        differing[symbol] = held
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
    if pending:
        return []  # fills may be on their way: cash and positions are compared once no order is open
    if differing and not adopt:
        for symbol, held in differing.items():
            alert(now, "reconciliation", f"{symbol}: the broker holds {held:.9g} shares, the journal "
                  f"{sleeves[symbol].units:.9g}; kept the journal's", symbol, key=f"units:{symbol}:{iso(now)}")
            journal.record_reconciliation(now, symbol, "units", sleeves[symbol].units, held, "alerted")
    changes = _adopt(journal, broker, alert, sleeves, differing, positions, now, price) if adopt and differing else []
    cash = broker.account().cash
    expected = _journal_cash(journal)
    if abs(cash - expected) > 0.01 + 1e-6 * abs(expected):
        journal.record_reconciliation(now, None, "cash", expected, cash, "alerted")
        alert(now, "reconciliation", f"broker cash {cash:,.2f} differs from the journal's {expected:,.2f} by "
              f"{cash - expected:+,.2f} (fees, or trades outside this run)", key=f"cash:{broker.session_date(now)}")
    return changes


def _journal_cash(journal: Journal) -> float:
    """The cash the broker should hold by the journal: the sleeves' plus the account's money outside the run."""
    return sum(s.cash for s in journal.sleeves().values()) + float(journal.meta("cash_offset", 0.0))


def _adopt(journal: Journal, broker: Broker, alert: Callable[..., bool], sleeves: dict, differing: dict[str, float],
           positions: dict[str, Position], now: pd.Timestamp,
           price: Callable[[str], float] | None) -> list[OutsideChange]:
    """Adopt the broker's positions of ``differing`` and its unexplained cash, shared by the changes' values."""
    gap = broker.account().cash - _journal_cash(journal)

    def price_of(symbol: str) -> float:
        if price is not None:
            return float(price(symbol))
        held = positions.get(symbol)
        return float(held.current_price) if held is not None and held.current_price else 1.0

    weights = {s: abs(held - sleeves[s].units) * price_of(s) for s, held in differing.items()}
    total = sum(weights.values())
    changes = []
    for symbol, held in differing.items():
        share = weights[symbol] / total if total > 0 else 1.0 / len(differing)
        change = OutsideChange(symbol, sleeves[symbol].units, held, gap * share)
        value = held * price_of(symbol)
        equity = sleeves[symbol].cash + change.cash + value
        journal.adopt_position(symbol, held, change.cash, now, "adopted the broker's position and cash (outside change)",
                               exposure=value / equity if equity > 0 else 0.0)
        alert(now, "reconciliation", f"{symbol}: the broker holds {held:.9g} shares, the journal {change.units_before:.9g} "
              f"(changed outside this run); adopted the broker's position with {change.cash:+,.2f} of cash - "
              f"not counted as profit or loss", symbol, key=f"units:{symbol}:{iso(now)}")
        changes.append(change)
    return changes
