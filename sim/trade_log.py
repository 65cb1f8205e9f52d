"""The books: a fill log and a round-trip trade log, kept in growable preallocated numpy arrays.

A *trade* is the span during which an account's position keeps one nonzero sign. It opens with the
fill that leaves flat, closes with the fill that returns to flat (or flips sign: the flipping fill is
split into a closing part and an opening part, costs shared pro rata by units).

- ``gross_pnl``: sum over the trade's fills of ``-units * reference_price`` (price before slippage);
- ``costs``: commission + slippage + borrow charged during the trade;
- ``net_pnl = gross_pnl - costs`` equals the trade's contribution to equity.
"""

from __future__ import annotations

import numpy as np

FILL_FIELDS = ("row", "units", "reference_price", "fill_price", "commission", "slippage")
TRADE_FIELDS = (
    "entry_row", "exit_row", "entry_price", "exit_price", "size", "gross_pnl", "net_pnl", "costs", "bars_held",
)


class _Columns:
    """Named float64 columns that grow by doubling (no per-append allocation)."""

    def __init__(self, names: tuple[str, ...], capacity: int = 256) -> None:
        self.names = names
        self._data = np.zeros((len(names), capacity))
        self.size = 0

    def append(self, *values: float) -> None:
        if self.size == self._data.shape[1]:
            self._data = np.concatenate([self._data, np.zeros_like(self._data)], axis=1)
        self._data[:, self.size] = values
        self.size += 1

    def clear(self) -> None:
        self.size = 0

    def to_dict(self) -> dict[str, np.ndarray]:
        return {name: self._data[i, : self.size].copy() for i, name in enumerate(self.names)}

    def last(self) -> dict[str, float]:
        """The last record as Python floats by name (no copy of the columns).

        :raises IndexError: when there is none.
        """
        if self.size == 0:
            raise IndexError("no record yet")
        values = self._data[:, self.size - 1].tolist()
        return dict(zip(self.names, values))


class TradeLog:
    """Fill and trade records of one account."""

    def __init__(self) -> None:
        self.fills = _Columns(FILL_FIELDS)
        self.trades = _Columns(TRADE_FIELDS)
        self._reset_open()

    def _reset_open(self) -> None:
        self.open_units = 0.0
        self.open_entry_row = -1
        self.open_size = 0.0
        self.open_gross = 0.0
        self.open_costs = 0.0
        self.open_in_units = 0.0
        self.open_in_value = 0.0
        self.open_out_units = 0.0
        self.open_out_value = 0.0

    def clear(self) -> None:
        self.fills.clear()
        self.trades.clear()
        self._reset_open()

    def record_fill(self, row: int, units: float, reference_price: float, fill_price: float,
                    commission: float, slippage: float) -> None:
        """Book one fill of ``units`` (signed) and update the open trade."""
        self.fills.append(row, units, reference_price, fill_price, commission, slippage)
        before = self.open_units
        after = before + units
        cost = commission + slippage
        if before != 0.0 and (after == 0.0 or np.sign(after) != np.sign(before)):
            closing = -before
            share = abs(closing) / abs(units)
            self._add(closing, reference_price, fill_price, cost * share)
            self._close(row)
            units, cost = units - closing, cost * (1.0 - share)
            if after == 0.0:
                return
        if self.open_units == 0.0:
            self.open_entry_row = row
        self._add(units, reference_price, fill_price, cost)

    def _add(self, units: float, reference_price: float, fill_price: float, cost: float) -> None:
        increasing = self.open_units == 0.0 or np.sign(units) == np.sign(self.open_units)
        if increasing:
            self.open_in_units += abs(units)
            self.open_in_value += abs(units) * fill_price
        else:
            self.open_out_units += abs(units)
            self.open_out_value += abs(units) * fill_price
        self.open_units += units
        if abs(self.open_units) > abs(self.open_size):
            self.open_size = self.open_units
        self.open_gross -= units * reference_price
        self.open_costs += cost

    def charge(self, amount: float) -> None:
        """Add a holding cost (borrow) to the open trade."""
        self.open_costs += amount

    def _close(self, row: int) -> None:
        entry = self.open_in_value / self.open_in_units if self.open_in_units else np.nan
        exit_ = self.open_out_value / self.open_out_units if self.open_out_units else np.nan
        self.trades.append(
            self.open_entry_row, row, entry, exit_, self.open_size, self.open_gross,
            self.open_gross - self.open_costs, self.open_costs, row - self.open_entry_row,
        )
        self._reset_open()
