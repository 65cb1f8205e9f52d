"""Parity of a paper run with the simulator, read from the run's journal after the fact.

For every fill the journal booked, the *model price* is the price the simulator would have given that order:
the order's journalled reference price (the price the loop sized it at: the fill bar's open in a
``--broker sim`` replay, the latest trade on Alpaca) moved against the order by the run's slippage model at
the fill's bar, exactly as :meth:`sim.engine.Simulator.step` prices a fill::

    model_price = reference * (1 + sign * f)        sign = +1 for a buy, -1 for a sell
    f = the model's fraction at the fill bar for the order's notional |filled qty| * reference
    model_commission = commission_rate * |units| * model_price (+ fixed_fee on an order's first fill)

Slippage in bps is measured against the same reference, positive when the fill is worse than the reference:
``live_bps = sign * (price / reference - 1) * 1e4`` and ``model_bps = f * 1e4``.

The *equity difference* is live minus simulator on the same decisions: the simulator replaying the run's fills
with the same quantities, at the model prices and commissions. Holdings are then the same at every moment, so the
two accounts differ only by cash::

    equity_difference = - sum over fills of (price - model_price) * units  - sum of (commission - model_commission)

(units signed: > 0 bought). It is negative when the live account paid more than the model. It leaves out that
other prices would have changed the simulator's later sizing (a second-order effect): the honest, simple
figure of "what the model's costs missed". A ``--broker sim`` replay gives exactly 0.

Slippage models that read bars (volatility, volume) are evaluated on the symbol's bars *before* the fill bar
plus a row at the reference price, as :func:`live.sizing.plan_order` does (causal: the fill bar's own prices are
never read); the volatility model then equals the simulator's bit for bit, the volume model to the rounding of
its cumulative sums.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from sim.engine import Costs

from .broker import BUY
from .journal import Journal, iso

BPS = 1e4


class ParityError(ValueError):
    """The journal (or the bars given) cannot be read as the parity needs: one line naming what and where."""


@dataclass(frozen=True)
class FillParity:
    """One fill against the simulator's price of it.

    :param fill_id: the journal's fill id.
    :param client_order_id: the order.
    :param symbol: the symbol.
    :param bar_time: the bar the fill happened in.
    :param units: signed units (> 0 bought).
    :param reference_price: the order's reference price (before slippage).
    :param price: the real fill price.
    :param model_price: the simulator's fill price.
    :param commission: the real commission.
    :param model_commission: the simulator's commission.
    :param live_bps: the real slippage against the reference, in bps (> 0: worse than the reference).
    :param model_bps: the model's slippage, in bps.
    :param difference: this fill's share of the equity difference (live minus simulator; < 0: live paid more).
    """

    fill_id: int
    client_order_id: str
    symbol: str
    bar_time: pd.Timestamp
    units: float
    reference_price: float
    price: float
    model_price: float
    commission: float
    model_commission: float
    live_bps: float
    model_bps: float
    difference: float


@dataclass(frozen=True)
class SymbolParity:
    """One symbol's fills summarised.

    :param symbol: the symbol.
    :param count: fills.
    :param mean_bps: mean live slippage (bps).
    :param median_bps: median live slippage.
    :param p90_bps: 90th percentile of live slippage.
    :param model_mean_bps: mean model slippage over the same fills.
    :param excess_bps: ``mean_bps - model_mean_bps`` (> 0: live fills worse than the model).
    :param difference: the equity difference of the symbol's fills (live minus simulator).
    """

    symbol: str
    count: int
    mean_bps: float
    median_bps: float
    p90_bps: float
    model_mean_bps: float
    excess_bps: float
    difference: float


@dataclass(frozen=True)
class ParityReport:
    """Every fill of a run (or a period) against the simulator.

    :param model: the slippage model, described.
    :param fills: per fill.
    :param symbols: per symbol (the symbols with fills).
    :param price_difference: ``- sum (price - model_price) * units``.
    :param commission_difference: ``- sum (commission - model_commission)``.
    :param equity_difference: their sum: live equity minus the simulator's on the same decisions.
    """

    model: str
    fills: list[FillParity]
    symbols: dict[str, SymbolParity]
    price_difference: float
    commission_difference: float
    equity_difference: float


def parity_report(journal: Journal, costs: Costs, bars: Mapping[str, pd.DataFrame] | None = None,
                  start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> ParityReport:
    """Each fill of ``journal`` (with bar in ``[start, end)``) against the price the simulator would have given.

    :param journal: the run's journal.
    :param costs: the run's cost model (its config's ``costs``).
    :param bars: per symbol, its bars (a bars frame, UTC index of bar starts): needed only by slippage models
        that read bars (volatility, volume).
    :param start: first bar included; None: from the first fill.
    :param end: bar excluded; None: to the last fill.
    :raises ParityError: a fill whose order is not journalled, or bars the model needs missing.
    """
    orders = {row["client_order_id"]: row for row in journal.orders()}
    seen: set[str] = set()
    fills = []
    for row in journal.fills():
        order = orders.get(row["client_order_id"])
        if order is None:
            raise ParityError(f"{journal.path}: fill {row['id']} belongs to order {row['client_order_id']}, which is "
                              f"not in the orders table; the journal is incomplete")
        first = row["client_order_id"] not in seen
        seen.add(row["client_order_id"])
        bar_time = pd.Timestamp(row["bar_time"])
        if (start is not None and bar_time < start) or (end is not None and bar_time >= end):
            continue
        fills.append(_fill_parity(row, order, costs, bars, first, journal))
    symbols = {symbol: _summary(symbol, [f for f in fills if f.symbol == symbol])
               for symbol in sorted({f.symbol for f in fills})}
    price = 0.0 - math.fsum((f.price - f.model_price) * f.units for f in fills)  # 0.0 - : never -0.0
    commission = 0.0 - math.fsum(f.commission - f.model_commission for f in fills)
    return ParityReport(costs.slippage.describe(), fills, symbols, price, commission, price + commission)


def drift_alerts(parity: ParityReport, threshold_bps: float) -> list[dict[str, Any]]:
    """Alerts for the symbols whose mean live slippage exceeds the model's by more than ``threshold_bps``.

    Each alert is ``{"kind": "slippage_drift", "symbol", "message", "key"}``: the arguments of
    :class:`live.alerts.Alerter` (the key names the symbol and the last fill's bar, one alert per condition).

    :param parity: a :func:`parity_report`.
    :param threshold_bps: the allowed excess, in bps (finite, >= 0).
    """
    if not (isinstance(threshold_bps, (int, float)) and math.isfinite(threshold_bps) and threshold_bps >= 0):
        raise ValueError(f"threshold_bps={threshold_bps!r} must be a finite number of bps >= 0")
    alerts = []
    for symbol, summary in parity.symbols.items():
        if summary.excess_bps > threshold_bps:
            last = max(f.bar_time for f in parity.fills if f.symbol == symbol)
            alerts.append({
                "kind": "slippage_drift", "symbol": symbol, "key": f"slippage_drift:{symbol}:{iso(last)}",
                "message": (f"{symbol}: mean slippage {summary.mean_bps:.2f} bps over {summary.count} fill(s) exceeds "
                            f"the model's {summary.model_mean_bps:.2f} bps by {summary.excess_bps:.2f} bps "
                            f"(threshold {threshold_bps:g} bps; model {parity.model})"),
            })
    return alerts


# ----- one fill ----------------------------------------------------------------------------------------------
def _fill_parity(row: Any, order: Any, costs: Costs, bars: Mapping[str, pd.DataFrame] | None, first: bool,
                 journal: Journal) -> FillParity:
    """The simulator's price and commission of one journalled fill (the module docstring's formulas).

    :param row: the fill's journal row.
    :param order: its order's journal row.
    :param costs: the cost model.
    :param bars: bars per symbol (models that read bars).
    :param first: the order's first fill (pays the fixed fee).
    :param journal: for error messages.
    """
    units = float(row["units"])
    reference = float(order["reference_price"])
    price = float(row["price"])
    if not (math.isfinite(reference) and reference > 0):
        raise ParityError(f"{journal.path}: order {order['client_order_id']} has reference_price {reference!r}; "
                          f"expected a positive price")
    sign = 1.0 if order["side"] == BUY else -1.0
    notional = abs(float(order["filled_qty"])) * reference
    fraction = costs.slippage.constant_fraction()
    if fraction is None:
        fraction = _bar_fraction(costs, bars, row["symbol"], pd.Timestamp(row["bar_time"]), reference, notional, journal)
    # the engine's expressions, in its order (so a replay agrees to the bit)
    model_price = reference * (1.0 + sign * fraction)
    model_commission = costs.commission * abs(units) * model_price
    if first and costs.fixed_fee > 0.0:
        model_commission += costs.fixed_fee
    commission = float(row["commission"])
    difference = -((price - model_price) * units) - (commission - model_commission)
    return FillParity(int(row["id"]), row["client_order_id"], row["symbol"], pd.Timestamp(row["bar_time"]), units,
                      reference, price, model_price, commission, model_commission,
                      sign * (price / reference - 1.0) * BPS, fraction * BPS, difference)


def _bar_fraction(costs: Costs, bars: Mapping[str, pd.DataFrame] | None, symbol: str, bar_time: pd.Timestamp,
                  reference: float, notional: float, journal: Journal) -> float:
    """A bar-reading model's fraction for a fill in ``bar_time``: prepared on the bars before it plus a row at the
    reference price (as :func:`live.sizing.plan_order`), read at that row.

    :param costs: the cost model.
    :param bars: bars per symbol.
    :param symbol: the fill's symbol.
    :param bar_time: the fill's bar.
    :param reference: the order's reference price.
    :param notional: the order's notional at the reference.
    :param journal: for error messages.
    """
    frame = None if bars is None else bars.get(symbol)
    if frame is None:
        raise ParityError(f"{journal.path}: slippage model '{costs.slippage.describe()}' reads bars, and none were "
                          f"given for {symbol}; pass the bars the run traded (a --dataset)")
    before = frame[frame.index < bar_time]
    if len(before) == 0:
        raise ParityError(f"{journal.path}: no bar of {symbol} before the fill bar {bar_time} in the bars given; "
                          f"the slippage model '{costs.slippage.describe()}' needs the bars before each fill")
    n = len(before)

    def column(name: str, last: float) -> np.ndarray:
        values = np.empty(n + 1)
        values[:n] = before[name].to_numpy(np.float64)
        values[n] = last
        return values

    model = copy.deepcopy(costs.slippage)
    model.prepare(column("open", reference), column("high", reference), column("low", reference),
                  column("close", reference), column("volume", float(before["volume"].iloc[-1])))
    return float(model.fraction_one(n, notional))


def _summary(symbol: str, fills: list[FillParity]) -> SymbolParity:
    """Mean, median and 90th percentile of a symbol's live slippage, beside the model's mean.

    :param symbol: the symbol.
    :param fills: its fills (at least one).
    """
    live = np.array([f.live_bps for f in fills])
    model = np.array([f.model_bps for f in fills])
    mean, model_mean = float(live.mean()), float(model.mean())
    return SymbolParity(symbol, len(fills), mean, float(np.median(live)), float(np.percentile(live, 90)),
                        model_mean, mean - model_mean, math.fsum(f.difference for f in fills))
