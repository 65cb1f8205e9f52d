"""Target exposure -> order quantity, by the simulator's own rule.

The live loop never re-implements the simulator's sizing: it builds a one-account
:class:`sim.Simulator` over the recent bars plus one row priced at the reference price (the price the
order is expected to fill near), puts the sleeve's cash, units and last target in it, and steps it
once. Whatever the simulator does with that target (its buy sizing so fill and costs fit in equity,
``min_rebalance``, fixed fees, clipping shorts) is therefore what the loop orders; a change to the
simulator changes live orders with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.engine import Costs, Simulator


@dataclass(frozen=True)
class OrderPlan:
    """What the simulator's rule sends for one sleeve.

    :param units: signed shares to trade (0: no order).
    :param last_target: the sleeve's last target after this order (the simulator keeps the old one when
        it sends nothing).
    :param fill_price: expected fill price (reference plus modelled slippage).
    :param commission: modelled commission.
    """

    units: float
    last_target: float
    fill_price: float
    commission: float


def plan_order(
    bars: pd.DataFrame,
    reference_price: float,
    *,
    target: float,
    last_target: float,
    cash: float,
    units: float,
    costs: Costs,
    allow_short: bool,
    min_rebalance: float = 0.0,
) -> OrderPlan:
    """The order the simulator would send to move a sleeve to ``target`` at ``reference_price``.

    :param bars: the sleeve's recent complete bars (oldest first); cost models that look back (volatility,
        volume) read them, causally.
    :param reference_price: the price before slippage (the next bar's open in the backtest).
    :param target: target exposure, fraction of the sleeve's equity.
    :param last_target: the sleeve's last sent target (the simulator's ``min_rebalance`` compares to it).
    :param cash: the sleeve's cash.
    :param units: shares held (signed).
    :param costs: the cost model.
    :param allow_short: whether negative targets are allowed (else treated as flat).
    :param min_rebalance: the simulator's no-trade band.
    """
    return OrderPlanner(costs, allow_short, min_rebalance).plan(bars, reference_price, target=target,
                                                                last_target=last_target, cash=cash, units=units)


class OrderPlanner:
    """:func:`plan_order` for one cost model and short rule, called once per order (the live loop holds one).

    With a constant slippage fraction the simulator reads only the last bar and the reference row, so one
    one-account simulator is built once and reused: each plan writes those two rows' prices into its arrays in
    place and resets its account (the same state a new simulator starts with), then steps it as
    :func:`plan_order` always did. A slippage that looks back gets a new simulator over the bars each time.

    :param costs: the cost model.
    :param allow_short: whether negative targets are allowed (else treated as flat).
    :param min_rebalance: the simulator's no-trade band.
    """

    def __init__(self, costs: Costs, allow_short: bool, min_rebalance: float = 0.0) -> None:
        self.costs = costs
        self.allow_short = allow_short
        self.min_rebalance = min_rebalance
        self._constant = costs.slippage.constant_fraction() is not None
        self._sim: Simulator | None = None

    def plan(self, bars: pd.DataFrame, reference_price: float, *, target: float, last_target: float, cash: float,
             units: float) -> OrderPlan:
        """The order the simulator would send (see :func:`plan_order` for the parameters)."""
        if not (np.isfinite(reference_price) and reference_price > 0):
            raise ValueError(f"reference_price={reference_price} must be a positive price")
        if len(bars) < 1:
            raise ValueError("plan_order needs at least the last complete bar")
        prices = float_columns(bars, ("open", "high", "low", "close", "volume"))
        if self._constant:  # a constant slippage reads no earlier bar: the simulator over the last one is the same
            prices = {name: values[-1:] for name, values in prices.items()}
        sim = self._simulator(prices, reference_price)
        sim.reset(len(prices["close"]) - 1)
        sim.cash[0], sim.units[0], sim.target[0] = cash, units, last_target
        sim.step(np.array([float(target)]))
        if sim.fill_count() == 0:  # reset empties the log: at most this step's fill
            return OrderPlan(0.0, float(sim.target[0]), reference_price, 0.0)
        fill = sim.last_fill()
        return OrderPlan(fill["units"], float(sim.target[0]), fill["fill_price"], fill["commission"])

    def _simulator(self, prices: dict[str, np.ndarray], reference_price: float) -> Simulator:
        """A one-account simulator over the bars' ``prices`` plus a row at ``reference_price`` (the reused one, its
        prices rewritten in place, when the slippage is constant)."""
        n = len(prices["close"])
        last = {"open": reference_price, "high": reference_price, "low": reference_price, "close": reference_price,
                "volume": float(prices["volume"][-1])}
        sim = self._sim
        if sim is not None:
            for name, values in (("open", sim.open), ("high", sim.high), ("low", sim.low), ("close", sim.close),
                                 ("volume", sim.volume)):
                values[0] = prices[name][-1]
                values[1] = last[name]
            return sim

        def column(name: str) -> np.ndarray:
            values = np.empty(n + 1)
            values[:n] = prices[name]
            values[n] = last[name]
            return values

        sim = Simulator(
            column("open"), column("high"), column("low"), column("close"), column("volume"), self.costs,
            n_accounts=1, initial_cash=1.0, fill_at="next_open", allow_short=self.allow_short,
            min_rebalance=self.min_rebalance, record_trades=True,
        )
        if self._constant:
            self._sim = sim
        return sim


def round_quantity(units: float, decimals: int | None) -> float:
    """``units`` rounded toward zero to ``decimals`` places (0: whole shares; None: untouched), so a
    rounded buy never costs more than the sized one."""
    if decimals is None:
        return units
    scale = 10.0 ** decimals
    return float(np.trunc(units * scale) / scale)


_COLUMN_LISTS: list[tuple[pd.Index, list[str]]] = []  # recent frames' columns and their lists (_column_list)


def _column_list(columns: pd.Index) -> list[str]:
    """``list(columns)``, kept for the few columns Indexes seen last: a frame sliced from another shares its columns
    (``Index.is_``: the same immutable labels through views), and listing arrow strings costs more than the rest.

    :param columns: a frame's columns.
    """
    for known, names in _COLUMN_LISTS:
        if columns.is_(known):
            return names
    names = list(columns)
    _COLUMN_LISTS.insert(0, (columns, names))
    del _COLUMN_LISTS[16:]
    return names


def float_columns(bars: pd.DataFrame, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Columns of a bars frame as float64 arrays by name: views of the frame's one block when it is all float64 (a
    validated bars frame), else each column converted.

    :param bars: a bars frame.
    :param names: the columns wanted.
    :raises KeyError: naming a column the frame does not have.
    """
    columns = _column_list(bars.columns)
    missing = [name for name in names if name not in columns]
    if missing:
        raise KeyError(f"bars have no column(s) {missing}; they have {columns}")
    values = bars.to_numpy()
    if values.dtype == np.float64:
        return {name: values[:, columns.index(name)] for name in names}
    return {name: bars[name].to_numpy(np.float64) for name in names}
