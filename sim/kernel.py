"""A compiled batched step (numba, optional): :meth:`sim.Simulator.step_one`'s expressions in a loop over
accounts, for the batched path of a :class:`sim.Simulator` whose slippage fraction is constant.

Bit for bit the numpy path's numbers (tested; no fast-math, numpy's error model: x / 0 is inf or nan, as
in numpy). Without numba (``pip install -e ".[fast]"``) ``step_kernel`` is None and the simulator uses its
pure-numpy path. ``TRADING_RL_NO_NUMBA=1`` turns the kernel off.
"""

from __future__ import annotations

import os

import numpy as np

FIT = 1.0 + 1e-14  # as sim.engine.FIT (kept here so this module imports nothing of the engine)


def _step(target, row, cash, units, last_target, equity, peak, entry_row, entry_value, n_orders, costs_paid,
          traded_notional, filled, fill_price_out, cost_out, prev_equity, fill_rows, deltas, references,
          commissions, slippages, borrows, open_, close, next_open, allow_short, min_rebalance, rate, fee, s,
          borrow_rate):  # pragma: no cover - compiled
    for i in range(len(row)):
        t = target[i]
        if not allow_short and t < 0.0:
            t = 0.0
        r = row[i]
        if next_open:
            fill_row = r + 1
            reference = open_[fill_row]
        else:
            fill_row = r
            reference = close[r]
        c, u = cash[i], units[i]
        held = u * reference
        equity_at_fill = c + held
        send = abs(t - last_target[i]) > min_rebalance and equity_at_fill > 0
        target_units = t * equity_at_fill / reference if send else u
        slippage = 0.0
        commission = 0.0
        fill_price = reference
        traded = False
        notional = 0.0
        delta = 0.0
        if target_units != u:
            if target_units > u and t > 0.0:
                k = s * (1.0 + rate) + rate
                sized = t * (equity_at_fill + held * k - fee) / (reference * (FIT + t * k))
                if sized > u:
                    target_units = sized
                else:
                    target_units = u
                    send = False
            delta = target_units - u
            if delta != 0.0:
                notional = abs(delta) * reference
                fill_price = reference * (1.0 + (1.0 if delta > 0 else -1.0) * s)
                slippage = notional * s
                commission = rate * abs(delta) * fill_price
                if fee > 0.0:
                    commission += fee
                after = c - (delta * fill_price + commission)
                if fee > 0.0 and delta < 0.0 and u + delta >= 0.0 and after < 0.0 and after < c:
                    notional = 0.0
                    slippage = 0.0
                    commission = 0.0
                    send = False
                    fill_price = reference
                else:
                    traded = True
            if traded:
                c = after
                new_units = u + delta
                before = new_units - delta
                sign_new = (1 if new_units > 0.0 else 0) - (1 if new_units < 0.0 else 0)
                sign_before = (1 if before > 0.0 else 0) - (1 if before < 0.0 else 0)
                opened = u == 0.0 or sign_new != sign_before
                if new_units == 0.0:
                    entry_row[i] = -1
                    entry_value[i] = 0.0
                elif opened:
                    entry_row[i] = fill_row
                    entry_value[i] = new_units * fill_price
                elif (delta > 0) == (new_units > 0):
                    entry_value[i] = entry_value[i] + delta * fill_price
                else:
                    entry_value[i] = entry_value[i] * (new_units / (new_units - delta))
                u = new_units
                n_orders[i] += 1
                traded_notional[i] += notional
        if send:
            last_target[i] = t
        r += 1
        row[i] = r
        price = close[r]
        borrow = 0.0
        if u < 0.0 and borrow_rate > 0.0:
            borrow = borrow_rate * -u * price
            c -= borrow
        e = c + u * price
        cash[i] = c
        units[i] = u
        prev_equity[i] = equity[i]
        equity[i] = e
        if e > peak[i]:
            peak[i] = e
        step_cost = slippage + commission + borrow
        if step_cost != 0.0:
            costs_paid[i] += step_cost
        filled[i] = traded
        fill_price_out[i] = fill_price if traded else np.nan
        cost_out[i] = step_cost
        fill_rows[i] = fill_row
        deltas[i] = delta
        references[i] = reference
        commissions[i] = commission
        slippages[i] = slippage
        borrows[i] = borrow


step_kernel = None
if not os.environ.get("TRADING_RL_NO_NUMBA"):
    try:
        import numba
    except ImportError:  # the pure-numpy path serves
        numba = None
    if numba is not None:
        step_kernel = numba.njit(cache=True, error_model="numpy", nogil=True)(_step)
