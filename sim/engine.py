"""The execution engine: target exposure in, fills, costs, positions and equity out (numpy only).

One :class:`Simulator` serves a batch of accounts (1 for the env and the backtester, N for the
vectorised env); every account walks its own row pointer over shared price arrays. Per step and
account, with ``t`` the last closed bar:

1. the target exposure (fraction of equity, signed) decided at the close of ``t`` fills at the open of
   ``t + 1`` (default) or at the close of ``t`` (``fill_at="close"``, optimistic: the decision
   could not have been sent before that close);
2. an order is sent only when the target differs from the account's last target by more than
   ``min_rebalance``; it is sized as below (see *Sizing*);
3. slippage moves the fill price against the order, commission is charged on the filled notional
   plus a fixed fee per order, and cash pays for it all;
4. the account moves to bar ``t + 1``, pays borrow on any short at that close, and is marked to market:
   ``equity = cash + units * close``.

Rows are traded bars only, so a next-open fill after a weekend is priced at Monday's open.

Sizing
------
With ``E = cash + u0 * ref`` the equity at the reference price ``ref`` (the fill bar's open, or the
decision bar's close), ``u0`` the units held and ``t`` the target:

- **Buys toward a positive target** (``t > 0`` and ``t * E / ref > u0``: from flat, adding to a long,
  or flipping a short to a long) are sized so that the fill and its costs fit in equity, as in
  backtesting.py and vectorbt: the post-trade units ``u1`` are worth, at ``ref``, ``t`` times the equity
  left after this order's costs, ``u1 * ref = t * (E - cost)``, ``cost`` being the slippage, commission
  and fixed fee of this order. With slippage fraction ``s`` and commission rate ``c``, buying
  ``u1 - u0`` units costs ``(u1 - u0) * ref * k + fee`` with ``k = s + c * (1 + s)``, so::

      u1 = t * (E + u0 * ref * k - fee) / (ref * (1 + t * k))

  After the fill ``cash = (1 - t) * (E - cost) >= 0`` and the exposure at ``ref`` is ``t``: a target of
  1.0 leaves cash at 0. The engine divides by ``FIT + t * k`` with ``FIT = 1 + 1e-14``: ``u1`` is ~1e-14
  short, so that rounding in the cash arithmetic never leaves cash a few ulps below 0 (nor the exposure
  a few ulps above 1).

  ``s`` is the model's fraction at the *naive* notional ``t * E - u0 * ref``; the fill is then priced
  at the fraction of the notional actually traded. For the fixed, spread and volatility models the two
  are equal and the rule is exact. A model whose fraction grows with notional (``volume``) is sized on
  an upper bound of its fraction (the sized order is smaller than the naive one), so cash stays >= 0
  and the exposure ends slightly under the target (by ``(1 + c) * (s - s_fill)`` of the order).

  Without a fixed fee ``u1 > u0`` whenever the naive order buys (orders under ~1e-14 of equity aside).
  When the fee leaves ``u1 <= u0`` no order is sent, and the account keeps its last target (the next
  step tries again).
- **Every other order** (sells, shorts, covers, buys toward a target <= 0) trades the naive
  ``t * E / ref - u0`` units. These cannot take cash below 0, except a sell whose fixed fee exceeds
  what it frees: a sell that leaves ``u1 >= 0`` and would take cash below 0 (and below what it was) is
  not sent either.

So with targets in [0, 1] cash never goes below 0; targets above 1 are leverage by definition.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .costs import SlippageModel, make_slippage
from .kernel import FILL_DELTA, FILL_ROW, position_state, state_views, step_kernel
from .settings import check_setting
from .trade_log import TradeLog

FILL_AT: tuple[str, ...] = ("next_open", "close")
# buys divide by FIT + t * k instead of 1 + t * k: ~1e-14 relative short of the exact rule, so that rounding
# in the cash arithmetic never leaves a target-1.0 account a few ulps below zero cash (or above exposure 1)
FIT = 1.0 + 1e-14


@dataclass
class Costs:
    """Trading costs; always on by default (0.10% commission, 5 bps slippage, as the original backtests).

    :param commission: fraction of traded notional per fill (0.001 = 0.10%).
    :param fixed_fee: currency per order.
    :param slippage: bps (fixed model), a model name, ``{"model": ..., **params}`` or a model object.
    :param borrow_rate: fraction of short notional charged per bar held short.
    """

    commission: float = 0.001
    fixed_fee: float = 0.0
    slippage: Any = 5.0
    borrow_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("commission", "fixed_fee", "borrow_rate"):
            setattr(self, name, check_setting(name, getattr(self, name)))
        self.slippage = make_slippage(self.slippage)

    @classmethod
    def zero(cls) -> "Costs":
        """No commission, no slippage, no borrow: only for tests and ablations."""
        return cls(commission=0.0, fixed_fee=0.0, slippage=0.0, borrow_rate=0.0)

    def describe(self) -> str:
        text = f"commission {self.commission:.4%} + {self.fixed_fee:g} per order, slippage {self.slippage.describe()}"
        return text + (f", borrow {self.borrow_rate:.4%}/bar" if self.borrow_rate else "")


@dataclass
class StepResult:
    """Per-account outputs of the last :meth:`Simulator.step` (views of preallocated arrays)."""

    filled: np.ndarray
    fill_price: np.ndarray
    cost: np.ndarray
    prev_equity: np.ndarray
    equity: np.ndarray


class Simulator:
    """Cash, positions and equity of ``n_accounts`` accounts over shared price arrays.

    :param open_: open prices (float64), one row per traded bar.
    :param high: high prices.
    :param low: low prices.
    :param close: close prices.
    :param volume: volumes.
    :param costs: the cost models.
    :param n_accounts: number of independent accounts stepped together.
    :param initial_cash: starting equity of each account.
    :param fill_at: ``"next_open"`` (default) or ``"close"`` (optimistic).
    :param allow_short: whether negative targets are allowed; without it they are clipped to 0 (flat).
    :param min_rebalance: skip orders whose target differs from the last target by this much or less.
    :param record_trades: keep a fill and trade log per account (the backtester turns it on).
    :param extra_floats: float64 slots (``extra``) after the accounts' state in ``state_buffer``, for a caller
        that steps the simulator in compiled code together with its own numbers (``envs.kernel``): one
        buffer is one argument to unbox per call.
    """

    def __init__(
        self,
        open_: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
        costs: Costs | None = None,
        *,
        n_accounts: int = 1,
        initial_cash: float = 100_000.0,
        fill_at: str = "next_open",
        allow_short: bool = False,
        min_rebalance: float = 0.0,
        record_trades: bool = False,
        extra_floats: int = 0,
    ) -> None:
        if fill_at not in FILL_AT:
            raise ValueError(f"fill_at={fill_at!r} is not known; expected one of {list(FILL_AT)}")
        initial_cash = check_setting("initial_cash", initial_cash)
        min_rebalance = check_setting("min_rebalance", min_rebalance)
        allow_short = check_setting("allow_short", allow_short)
        record_trades = check_setting("record_trades", record_trades)
        self.open = np.ascontiguousarray(open_, dtype=np.float64)
        self.high = np.ascontiguousarray(high, dtype=np.float64)
        self.low = np.ascontiguousarray(low, dtype=np.float64)
        self.close = np.ascontiguousarray(close, dtype=np.float64)
        self.volume = np.ascontiguousarray(volume, dtype=np.float64)
        self.costs = costs or Costs()
        # prepare() stores per-series arrays on the model: a model shared with another Simulator would
        # price this one's fills on the other's market
        self.slippage: SlippageModel = copy.deepcopy(self.costs.slippage)
        self.slippage.prepare(self.open, self.high, self.low, self.close, self.volume)
        # a fraction fixed for every bar and order (fixed, spread) is a scalar in the batched step
        self._slip_fraction = self.slippage.constant_fraction()
        self.n = int(n_accounts)
        self.initial_cash = float(initial_cash)
        self.next_open = fill_at == "next_open"
        self.allow_short = bool(allow_short)
        self.min_rebalance = float(min_rebalance)
        n = self.n
        # The accounts' state lives in one byte buffer (sim.kernel.state_layout), so that a compiled step takes
        # it as one argument; every state attribute is a view of one row of int_state or float_state.
        self.state_buffer, self.int_state, self.float_state, self.extra, filled = state_views(n, int(extra_floats))
        self.row, self.entry_row, self.n_orders = self.int_state[:FILL_ROW]
        (self.cash, self.units, self.target, self.equity, self.peak, self.entry_value, self.costs_paid,
         self.traded_notional, fill_price, cost, prev_equity) = self.float_state[:FILL_DELTA]
        self.cash[:] = self.equity[:] = self.peak[:] = prev_equity[:] = self.initial_cash
        self.entry_row[:] = -1
        fill_price[:] = np.nan
        self.logs = [TradeLog() for _ in range(n)] if record_trades else None
        self.result = StepResult(
            filled=filled, fill_price=fill_price, cost=cost, prev_equity=prev_equity, equity=self.equity,
        )
        if n == 1:
            self._scalar_views()
        # the compiled batched step (sim.kernel) when numba is installed and the slippage fraction is constant
        self._kernel = step_kernel if n > 1 and self._slip_fraction is not None else None

    def _slippage_too_large(self, fraction: float, row: int, notional: float) -> None:
        """Refuse a fill whose slippage is 100% of the price or more (a sell would fill at a price <= 0)."""
        raise FloatingPointError(
            f"slippage model '{self.slippage.describe()}' gives a slippage of {fraction:.1%} of the price for an "
            f"order of notional {notional:,.2f} at bar {row}: a fill at 100% slippage or more has a price <= 0; "
            f"lower the model's parameters")

    def reset(self, rows: np.ndarray | int, accounts: np.ndarray | None = None) -> None:
        """Start accounts flat with ``initial_cash`` at the close of bar ``rows``.

        :param rows: start bar of each reset account (scalar or array).
        :param accounts: which accounts to reset; None resets all.
        """
        idx = slice(None) if accounts is None else accounts
        self.row[idx] = rows
        self.cash[idx] = self.initial_cash
        self.units[idx] = 0.0
        self.target[idx] = 0.0
        self.equity[idx] = self.initial_cash
        self.peak[idx] = self.initial_cash
        self.entry_row[idx] = -1
        self.entry_value[idx] = 0.0
        self.n_orders[idx] = 0
        self.costs_paid[idx] = 0.0
        self.traded_notional[idx] = 0.0
        if self.logs is not None:
            for i in np.arange(self.n)[idx]:
                self.logs[i].clear()

    def step(self, target: np.ndarray) -> StepResult:
        """Send each account's target exposure, fill, advance one bar and mark to market.

        :param target: float64 (n,) target exposure per account, in [-1, 1] (or [0, 1] without shorts).
        """
        if self.n == 1:
            return self._step_one(float(target[0]))
        if self._kernel is not None:
            return self._step_compiled(target)
        res = self.result
        row = self.row
        if not self.allow_short:
            target = np.maximum(target, 0.0)
        fill_row = row + 1 if self.next_open else row.copy()  # row moves on in place below
        reference = self.open[fill_row] if self.next_open else self.close[row]
        held = self.units * reference
        equity_at_fill = self.cash + held
        send = np.abs(target - self.target) > self.min_rebalance
        send &= equity_at_fill > 0
        units_to_hold = target * equity_at_fill / reference
        rate, fee = self.costs.commission, self.costs.fixed_fee
        buy = send & (units_to_hold > self.units)
        if self.allow_short:  # (long only, units >= 0: a buy has a positive target)
            buy &= target > 0.0
        if np.count_nonzero(buy):  # buys sized so that the fill and its costs fit in equity (module docstring)
            s = self._slip_fraction
            if s is None:
                s = self.slippage.fraction(fill_row, (units_to_hold - self.units) * reference)
            k = s * (1.0 + rate) + rate
            paid_from = equity_at_fill + held * k
            if fee > 0.0:
                paid_from = paid_from - fee
            sized = target * paid_from / (reference * (FIT + target * k))
            fits = buy & (sized > self.units)
            send ^= buy ^ fits  # a buy the fee leaves no room for is not sent
            np.copyto(units_to_hold, sized, where=fits)
        target_units = np.where(send, units_to_hold, self.units)
        delta = target_units - self.units
        traded = delta != 0.0
        size = np.abs(delta)
        notional = size * reference
        slip_fraction = self._slip_fraction
        if slip_fraction is None:
            slip_fraction = self.slippage.fraction(fill_row, notional)
            too_large = traded & (slip_fraction >= 1.0)
            if np.count_nonzero(too_large):
                first = int(np.flatnonzero(too_large)[0])
                self._slippage_too_large(float(slip_fraction[first]), int(fill_row[first]), float(notional[first]))
        fill_price = reference * (1.0 + np.sign(delta) * slip_fraction)
        slippage = notional * slip_fraction
        commission = rate * size * fill_price
        if fee > 0.0:
            commission += fee * traded
        cash = self.cash - (delta * fill_price + commission)
        if fee > 0.0 and np.count_nonzero(cash < 0.0):  # a sell whose fee exceeds what it frees: not sent
            stuck = (cash < 0.0) & (cash < self.cash) & (delta < 0.0) & (self.units + delta >= 0.0)
            if np.count_nonzero(stuck):
                delta = np.where(stuck, 0.0, delta)
                traded &= ~stuck
                send &= ~stuck
                notional = np.where(stuck, 0.0, notional)
                slippage = np.where(stuck, 0.0, slippage)
                commission = np.where(stuck, 0.0, commission)
                cash = np.where(stuck, self.cash, cash)
        self.cash[:] = cash  # in place, as every state field: the views of float_state / int_state stay valid
        was_flat = self.units == 0.0
        self.units += delta
        np.copyto(self.target, target, where=send)
        self.n_orders += traded
        self.traded_notional += notional
        if np.count_nonzero(traded):  # entry row and cost basis change only with a fill
            opened = traded & (was_flat | (np.sign(self.units) != np.sign(self.units - delta)))
            self.entry_row[:] = np.where(self.units == 0.0, -1, np.where(opened, fill_row, self.entry_row))
            # entry_value is the cost basis of the open units: adding pays fill_price, reducing keeps the average
            added = traded & ~opened & (np.sign(delta) == np.sign(self.units))
            kept = np.divide(self.units, self.units - delta, out=np.ones(self.n), where=~opened & (self.units != 0.0))
            self.entry_value[:] = np.where(
                self.units == 0.0, 0.0,
                np.where(opened, self.units * fill_price,
                         np.where(added, self.entry_value + delta * fill_price, self.entry_value * kept)))

        row += 1
        close = self.close[row]
        borrow = 0.0
        if self.costs.borrow_rate > 0.0:
            borrow = self.costs.borrow_rate * np.maximum(-self.units, 0.0) * close
            self.cash -= borrow
        res.prev_equity[:] = self.equity
        self.equity[:] = self.cash + self.units * close
        np.maximum(self.peak, self.equity, out=self.peak)
        step_cost = slippage + commission + borrow
        self.costs_paid += step_cost
        res.filled[:] = traded
        res.fill_price[:] = np.where(traded, fill_price, np.nan)
        res.cost[:] = step_cost
        if self.logs is not None:
            borrow = np.broadcast_to(borrow, (self.n,))
            for i in np.flatnonzero(traded | (borrow > 0)):
                log = self.logs[i]
                if traded[i]:
                    log.record_fill(int(fill_row[i]), float(delta[i]), float(reference[i]),
                                    float(fill_price[i]), float(commission[i]), float(slippage[i]))
                if borrow[i] > 0:
                    log.charge(float(borrow[i]))
        return res

    def _step_compiled(self, target: np.ndarray) -> StepResult:
        """:meth:`step` through the compiled kernel of :mod:`sim.kernel` (the same numbers, tested)."""
        res = self.result
        self._kernel(
            np.ascontiguousarray(target, dtype=np.float64), self.int_state, self.float_state, res.filled, self.open,
            self.close, self.next_open, self.allow_short, self.min_rebalance, float(self.costs.commission),
            float(self.costs.fixed_fee), float(self._slip_fraction), float(self.costs.borrow_rate))
        fill_rows = self.int_state[FILL_ROW]
        delta, reference, commission, slippage, borrow = self.float_state[FILL_DELTA:]
        if self.logs is not None:
            for i in np.flatnonzero(res.filled | (borrow > 0)):
                log = self.logs[i]
                if res.filled[i]:
                    log.record_fill(int(fill_rows[i]), float(delta[i]), float(reference[i]),
                                    float(res.fill_price[i]), float(commission[i]), float(slippage[i]))
                if borrow[i] > 0:
                    log.charge(float(borrow[i]))
        return res

    def _step_one(self, target: float) -> StepResult:
        """:meth:`step` for a single account (see :meth:`step_one`)."""
        self.step_one(target)
        return self.result

    def _scalar_views(self) -> None:
        """Memoryviews of the one account's state and of the prices: ``view[i]`` reads and writes Python
        floats in the arrays themselves (~3x cheaper than numpy scalar indexing). The arrays are only
        ever written in place when ``n == 1``, so the views stay valid."""
        res = self.result
        self._v = tuple(memoryview(a) for a in (
            self.row, self.cash, self.units, self.target, self.equity, self.peak, self.entry_row,
            self.entry_value, self.n_orders, self.costs_paid, self.traded_notional,
            res.filled, res.fill_price, res.cost, res.prev_equity))
        self._v_open, self._v_close = memoryview(self.open), memoryview(self.close)

    def step_one(self, target: float) -> tuple[float, float]:
        """:meth:`step` for a single account in Python floats: the same expressions in the same order
        (so the same IEEE results, tested to agree exactly), without numpy's per-call overhead.

        :param target: the target exposure.
        :return: ``(prev_equity, equity)`` of the step, as Python floats.
        """
        (v_row, v_cash, v_units, v_target, v_equity, v_peak, v_entry_row, v_entry_value, v_orders, v_costs,
         v_notional, v_filled, v_fill_price, v_cost, v_prev) = self._v
        row = v_row[0]
        if not self.allow_short and target < 0.0:
            target = 0.0
        if self.next_open:
            fill_row = row + 1
            reference = self._v_open[fill_row]
        else:
            fill_row = row
            reference = self._v_close[row]
        cash, units = v_cash[0], v_units[0]
        held = units * reference
        equity_at_fill = cash + held
        send = abs(target - v_target[0]) > self.min_rebalance and equity_at_fill > 0
        target_units = target * equity_at_fill / reference if send else units
        slippage = commission = 0.0
        fill_price = reference
        traded = False
        notional = 0.0
        if target_units != units:
            rate, fee = self.costs.commission, self.costs.fixed_fee
            constant = self._slip_fraction
            if target_units > units and target > 0.0:  # a buy: sized to fit in equity
                s = constant if constant is not None else self.slippage.fraction_one(
                    fill_row, (target_units - units) * reference)
                k = s * (1.0 + rate) + rate
                sized = target * (equity_at_fill + held * k - fee) / (reference * (FIT + target * k))
                if sized > units:
                    target_units = sized
                else:
                    target_units, send = units, False
            delta = target_units - units
            if delta != 0.0:
                notional = abs(delta) * reference
                slip_fraction = constant if constant is not None else self.slippage.fraction_one(fill_row, notional)
                if slip_fraction >= 1.0:
                    self._slippage_too_large(slip_fraction, fill_row, notional)
                fill_price = reference * (1.0 + (1.0 if delta > 0 else -1.0) * slip_fraction)
                slippage = notional * slip_fraction
                commission = rate * abs(delta) * fill_price
                if fee > 0.0:
                    commission += fee
                after = cash - (delta * fill_price + commission)
                if fee > 0.0 and delta < 0.0 and units + delta >= 0.0 and after < 0.0 and after < cash:
                    # a sell whose fee exceeds what it frees: not sent
                    notional, slippage, commission, send = 0.0, 0.0, 0.0, False
                    fill_price = reference
                else:
                    traded = True
            if traded:
                cash = after
                new_units = units + delta
                before = new_units - delta  # as the batched path computes it (not always == units)
                opened = units == 0.0 or (new_units > 0.0) - (new_units < 0.0) != (before > 0.0) - (before < 0.0)
                if new_units == 0.0:
                    v_entry_row[0], v_entry_value[0] = -1, 0.0
                elif opened:
                    v_entry_row[0], v_entry_value[0] = fill_row, new_units * fill_price
                elif (delta > 0) == (new_units > 0):
                    v_entry_value[0] = v_entry_value[0] + delta * fill_price
                else:
                    v_entry_value[0] = v_entry_value[0] * (new_units / (new_units - delta))
                units = new_units
                v_orders[0] += 1
                v_notional[0] += notional
        if send:
            v_target[0] = target
        row += 1
        v_row[0] = row
        close = self._v_close[row]
        borrow = 0.0
        if units < 0.0 and self.costs.borrow_rate > 0.0:
            borrow = self.costs.borrow_rate * -units * close
            cash -= borrow
        equity = cash + units * close
        v_cash[0], v_units[0] = cash, units
        prev_equity = v_prev[0] = v_equity[0]
        v_equity[0] = equity
        if equity > v_peak[0]:
            v_peak[0] = equity
        step_cost = slippage + commission + borrow
        if step_cost != 0.0:
            v_costs[0] += step_cost
        v_filled[0] = traded
        v_fill_price[0] = fill_price if traded else math.nan
        v_cost[0] = step_cost
        if self.logs is not None:
            if traded:
                self.logs[0].record_fill(fill_row, delta, reference, fill_price, commission, slippage)
            if borrow > 0:
                self.logs[0].charge(borrow)
        return prev_equity, equity

    def hold_one(self, n_bars: int, floor: float = -math.inf) -> np.ndarray:
        """Advance the single account ``n_bars`` bars sending no order: what :meth:`step_one` does with
        an unchanged target (cash fixed, ``equity = cash + units * close``), vectorised. The caller
        guarantees that no order would be sent and that no borrow is due (``units >= 0`` or
        ``borrow_rate == 0``); the backtester's fast path uses it between orders.

        Stops early after the first bar whose equity is ``<= floor`` (the episode's end), and before the
        first bar whose equity is not finite (stepping that bar raises as usual).

        :param n_bars: bars to advance at most.
        :param floor: the equity at or below which the account stops.
        :return: the equity after each bar advanced (float64, length <= ``n_bars``).
        """
        v = self._v
        row, cash, units = v[0][0], v[1][0], v[2][0]
        equity = cash + units * self.close[row + 1 : row + 1 + n_bars]
        bad = ~np.isfinite(equity)
        if floor > -math.inf:
            bad |= equity <= floor
        if bad.any():
            first = int(np.argmax(bad))
            equity = equity[: first + (1 if np.isfinite(equity[first]) else 0)]
        if len(equity) == 0:
            return equity
        v[0][0] = row + len(equity)
        v[14][0] = equity[-2] if len(equity) > 1 else v[4][0]
        v[4][0] = float(equity[-1])
        top = float(equity.max())
        if top > v[5][0]:
            v[5][0] = top
        v[11][0], v[12][0], v[13][0] = False, math.nan, 0.0
        return equity

    # ----- position state, as the env observes it ---------------------------------------------
    def exposure(self) -> np.ndarray:
        """Signed fraction of equity held in the asset at the last close."""
        value = self.units * self.close[self.row]
        return np.divide(value, self.equity, out=np.zeros(self.n), where=self.equity > 0)

    def unrealised_return(self) -> np.ndarray:
        """Return of the open position since entry (0 when flat), before exit costs."""
        value = self.units * self.close[self.row]
        return np.divide(value - self.entry_value, np.abs(self.entry_value), out=np.zeros(self.n),
                         where=self.entry_value != 0)

    def bars_held(self) -> np.ndarray:
        """Bars since the current position was opened (0 when flat)."""
        return np.where(self.entry_row >= 0, self.row - self.entry_row, 0)

    def cash_fraction(self) -> np.ndarray:
        return np.divide(self.cash, self.equity, out=np.ones(self.n), where=self.equity > 0)

    def position_state_one(self) -> tuple[float, float, int, float]:
        """The single account's exposure, unrealised return, bars held and cash fraction as Python
        numbers (the same values as :meth:`position_state`)."""
        v = self._v
        row = v[0][0]
        return position_state(row, v[2][0], v[4][0], v[7][0], v[6][0], v[1][0], self._v_close[row])

    def position_state(self, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` (n, 4) with exposure, unrealised return, bars held and cash fraction."""
        if self.n == 1:
            out[0] = self.position_state_one()
            return out
        out[:, 0] = self.exposure()
        out[:, 1] = self.unrealised_return()
        out[:, 2] = self.bars_held()
        out[:, 3] = self.cash_fraction()
        return out

    def drawdown(self) -> np.ndarray:
        return 1.0 - self.equity / self.peak

    def trade_log(self, account: int = 0) -> dict[str, np.ndarray]:
        """Closed round trips of ``account`` (see :mod:`sim.trade_log`)."""
        if self.logs is None:
            raise ValueError("this Simulator was built with record_trades=False")
        return self.logs[account].trades.to_dict()

    def fill_log(self, account: int = 0) -> dict[str, np.ndarray]:
        """Every fill of ``account``: row, units, reference_price, fill_price, commission, slippage."""
        return self._fills(account).to_dict()

    def fill_count(self, account: int = 0) -> int:
        """How many fills ``account`` has (since the last :meth:`reset`)."""
        return self._fills(account).size

    def last_fill(self, account: int = 0) -> dict[str, float]:
        """The latest fill of ``account`` as Python floats (:meth:`fill_log`'s fields), without copying the log.

        :raises IndexError: when it has none.
        """
        return self._fills(account).last()

    def _fills(self, account: int) -> Any:
        if self.logs is None:
            raise ValueError("this Simulator was built with record_trades=False")
        return self.logs[account].fills


__all__ = ["Costs", "Simulator", "StepResult", "FILL_AT"]
