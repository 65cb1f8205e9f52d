"""The compiled simulator step (numba): :meth:`sim.Simulator.step_one`'s expressions in a loop over
accounts, for a :class:`sim.Simulator` whose slippage fraction is constant (the batched step of
``TradingVecEnv``, and through :mod:`envs.kernel` the single env's step).

Bit for bit the numpy path's numbers (tested; no fast-math, numpy's error model: x / 0 is inf or nan, as
in numpy). numba is a core dependency; without it, or with ``TRADING_RL_NO_NUMBA=1``, ``step_kernel`` is None
and the simulator uses its pure-numpy path.

The state of all accounts is two matrices, one row per field (:data:`INT_FIELDS`, :data:`FLOAT_FIELDS`),
indexed ``[FIELD, account]``: the kernel takes them as two arguments, and a caller's compiled code can call
it without handing numba a reference-counted array per field and account.
"""

from __future__ import annotations

import os

import numpy as np

FIT = 1.0 + 1e-14  # as sim.engine.FIT (kept here so this module imports nothing of the engine)

# The rows of a Simulator's state (``Simulator.int_state`` and ``Simulator.float_state``), in order. The
# ``fill_*`` rows hold the last compiled step's fill details for the trade log.
INT_FIELDS: tuple[str, ...] = ("row", "entry_row", "n_orders", "fill_row")
FLOAT_FIELDS: tuple[str, ...] = (
    "cash", "units", "target", "equity", "peak", "entry_value", "costs_paid", "traded_notional", "fill_price",
    "cost", "prev_equity", "fill_delta", "fill_reference", "fill_commission", "fill_slippage", "fill_borrow")
ROW, ENTRY_ROW, N_ORDERS, FILL_ROW = range(len(INT_FIELDS))
(CASH, UNITS, TARGET, EQUITY, PEAK, ENTRY_VALUE, COSTS_PAID, NOTIONAL, FILL_PRICE, COST, PREV_EQUITY, FILL_DELTA,
 FILL_REFERENCE, FILL_COMMISSION, FILL_SLIPPAGE, FILL_BORROW) = range(len(FLOAT_FIELDS))


def state_layout(n: int, extra: int) -> tuple[int, int, int, int]:
    """Byte offsets in a Simulator's ``state_buffer`` of ``n`` accounts: the int64 fields (``INT_FIELDS`` x n),
    the float64 fields (``FLOAT_FIELDS`` x n), ``extra`` float64 slots, then the ``filled`` flags (n bools).

    :return: ``(floats_at, extra_at, filled_at, size)``; the int64 fields start at 0.
    """
    floats_at = 8 * len(INT_FIELDS) * n
    extra_at = floats_at + 8 * len(FLOAT_FIELDS) * n
    filled_at = extra_at + 8 * extra
    return floats_at, extra_at, filled_at, filled_at + n


def state_views(n: int, extra: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A zeroed state buffer and its views: ``(buffer, int_state, float_state, extra, filled)``."""
    floats_at, extra_at, filled_at, size = state_layout(n, extra)
    buffer = np.zeros(-(-size // 8) * 8, dtype=np.uint8)  # whole 8-byte words: numpy aligns the start to 16
    return (buffer, buffer[:floats_at].view(np.int64).reshape(len(INT_FIELDS), n),
            buffer[floats_at:extra_at].view(np.float64).reshape(len(FLOAT_FIELDS), n),
            buffer[extra_at:filled_at].view(np.float64), buffer[filled_at : filled_at + n].view(np.bool_))


def position_state(row, units, equity, entry_value, entry_row, cash, close):
    """One account's position state as the env observes it: ``(exposure, unrealised return, bars held, cash
    fraction)``, ``close`` being the price of the account's last close (bar ``row``). The one formula of
    :meth:`sim.Simulator.position_state_one` and of the compiled observations (``envs.kernel``); the batched
    numpy path is :meth:`sim.Simulator.position_state`."""
    value = units * close
    return (
        value / equity if equity > 0 else 0.0,
        (value - entry_value) / abs(entry_value) if entry_value != 0 else 0.0,
        row - entry_row if entry_row >= 0 else 0,
        cash / equity if equity > 0 else 1.0,
    )


def _step(targets, ints, floats, filled, open_, close, next_open, allow_short, min_rebalance, rate, fee, s,
          borrow_rate):  # pragma: no cover - compiled
    """Step every account (column) of the state matrices ``ints`` and ``floats`` to its target."""
    for i in range(ints.shape[1]):
        t = targets[i]
        if not allow_short and t < 0.0:
            t = 0.0
        r = ints[ROW, i]
        if next_open:
            fill_row = r + 1
            reference = open_[fill_row]
        else:
            fill_row = r
            reference = close[r]
        c, u = floats[CASH, i], floats[UNITS, i]
        held = u * reference
        equity_at_fill = c + held
        send = abs(t - floats[TARGET, i]) > min_rebalance and equity_at_fill > 0
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
                    ints[ENTRY_ROW, i] = -1
                    floats[ENTRY_VALUE, i] = 0.0
                elif opened:
                    ints[ENTRY_ROW, i] = fill_row
                    floats[ENTRY_VALUE, i] = new_units * fill_price
                elif (delta > 0) == (new_units > 0):
                    floats[ENTRY_VALUE, i] = floats[ENTRY_VALUE, i] + delta * fill_price
                else:
                    floats[ENTRY_VALUE, i] = floats[ENTRY_VALUE, i] * (new_units / (new_units - delta))
                u = new_units
                ints[N_ORDERS, i] += 1
                floats[NOTIONAL, i] += notional
        if send:
            floats[TARGET, i] = t
        r += 1
        ints[ROW, i] = r
        price = close[r]
        borrow = 0.0
        if u < 0.0 and borrow_rate > 0.0:
            borrow = borrow_rate * -u * price
            c -= borrow
        e = c + u * price
        floats[CASH, i] = c
        floats[UNITS, i] = u
        floats[PREV_EQUITY, i] = floats[EQUITY, i]
        floats[EQUITY, i] = e
        if e > floats[PEAK, i]:
            floats[PEAK, i] = e
        step_cost = slippage + commission + borrow
        if step_cost != 0.0:
            floats[COSTS_PAID, i] += step_cost
        filled[i] = traded
        floats[FILL_PRICE, i] = fill_price if traded else np.nan
        floats[COST, i] = step_cost
        ints[FILL_ROW, i] = fill_row
        floats[FILL_DELTA, i] = delta
        floats[FILL_REFERENCE, i] = reference
        floats[FILL_COMMISSION, i] = commission
        floats[FILL_SLIPPAGE, i] = slippage
        floats[FILL_BORROW, i] = borrow



step_kernel = None
position_state_compiled = position_state  # what compiled callers call (compiled below when numba is there)
if not os.environ.get("TRADING_RL_NO_NUMBA"):
    try:
        import numba
    except ImportError:  # the pure-numpy path serves
        numba = None
    if numba is not None:
        step_kernel = numba.njit(cache=True, error_model="numpy", nogil=True)(_step)
        position_state_compiled = numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")(
            position_state)
