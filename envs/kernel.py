"""The env's compiled paths (numba, optional): the single env's step, in which one call fills the order,
marks the account, writes the observation and says whether the episode ended; and the batched
observations of ``TradingVecEnv`` (:data:`observe_kernel`).

:meth:`envs.core.TradingCore.step_observe_one` uses it for the plain log-return reward, a constant slippage
fraction and no trade log; it runs :data:`sim.kernel.step_kernel` (the simulator's own compiled step, the
same numbers as :meth:`sim.Simulator.step_one`) and then :meth:`~envs.core.TradingCore.observation_one`'s
expressions. The reward's log is taken by the caller with numpy, so rewards stay bit for bit those of the
other paths (numpy's vectorised log and the C library's differ in the last bit for some inputs).

The arguments are few on purpose: each array costs a numba call ~50-70 ns to unbox, a good part of a step.
So the account's state and the env's numbers travel in one buffer, the simulator's ``state_buffer``, whose
extra float64 slots hold the :data:`SCALARS`: the settings and the episode's bounds in, the position state
out. Without numba ``env_step_kernel`` and ``observe_kernel`` are None. numba compiles them on first use (~2-3 s
once; the machine code is cached next to this module, or under ``NUMBA_CACHE_DIR``, and recompiled when this
module or :mod:`sim.kernel` changes: see :mod:`sim.compiled`).
"""

from __future__ import annotations

import numpy as np

from sim import kernel as sim_kernel
from sim.kernel import CASH, ENTRY_ROW, ENTRY_VALUE, EQUITY, FLOAT_FIELDS, INT_FIELDS, PREV_EQUITY, ROW, UNITS

# slots of the ``scalars`` array: settings (fixed), the episode (set at each start), the step's target, the
# state (written)
SCALARS: tuple[str, ...] = (
    "next_open", "allow_short", "min_rebalance", "commission", "fixed_fee", "slippage", "borrow_rate",
    "min_equity_cash", "window", "n_features", "bars_held_scale",
    "episode_end", "order_target",
    # the observation's last five values, in its order (envs.layout): the state, then the asset id
    "position", "unrealised", "bars_held", "cash_fraction", "asset",
)
(NEXT_OPEN, ALLOW_SHORT, MIN_REBALANCE, COMMISSION, FIXED_FEE, SLIPPAGE, BORROW_RATE, MIN_EQUITY_CASH, WINDOW,
 N_FEATURES, BARS_HELD_SCALE, EPISODE_END, ORDER_TARGET, POSITION, UNREALISED, BARS_HELD, CASH_FRACTION,
 ASSET) = range(len(SCALARS))

CONTINUE, TERMINATED, TRUNCATED, NOT_FINITE = range(4)

FLOATS_AT, SCALARS_AT, FILLED_AT, _ = sim_kernel.state_layout(1, len(SCALARS))


def _observe(accounts, ints, floats, close, features, window, n_features, bars_held_scale, sym_asset,
             account_symbol, state, obs):  # pragma: no cover - compiled
    """:meth:`envs.core.TradingCore.observations` of ``accounts``, compiled: row ``k`` of ``obs`` (float32) is
    the window of account ``accounts[k]`` then its position state (also written to ``state[a]``) and
    asset id."""
    n_values = window * n_features
    for k in range(len(accounts)):
        a = accounts[k]
        row = ints[ROW, a]
        source = features[(row + 1) * n_features - n_values :]
        for j in range(n_values):
            obs[k, j] = source[j]
        position, unrealised, bars_held, cash_fraction = sim_kernel.position_state_compiled(
            row, floats[UNITS, a], floats[EQUITY, a], floats[ENTRY_VALUE, a], ints[ENTRY_ROW, a], floats[CASH, a],
            close[row])
        state[a, 0], state[a, 1], state[a, 2], state[a, 3] = (
            position, unrealised, bars_held / bars_held_scale, cash_fraction)
        for j in range(4):
            obs[k, n_values + j] = state[a, j]
        obs[k, n_values + 4] = sym_asset[account_symbol[a]]


def _env_step(target, state, open_, close, features, obs):  # pragma: no cover - compiled
    """Step the single account of ``state`` (a Simulator's ``state_buffer`` with the :data:`SCALARS` as its
    extra slots) to ``target`` and write its observation into ``obs`` (float32, the layout's size).

    :return: ``(ratio, status)``: the reward is ``log(ratio)`` (``max(equity, 1e-12) / prev_equity``); status
        is ``CONTINUE``, ``TERMINATED`` (equity at or under min_equity), ``TRUNCATED`` (the episode's last
        row) or ``NOT_FINITE`` (a NaN/inf equity or reward: the caller raises).
    """
    ints = state[:FLOATS_AT].view(np.int64).reshape(len(INT_FIELDS), 1)
    floats = state[FLOATS_AT:SCALARS_AT].view(np.float64).reshape(len(FLOAT_FIELDS), 1)
    scalars = state[SCALARS_AT:FILLED_AT].view(np.float64)
    scalars[ORDER_TARGET] = target
    sim_kernel.step_kernel(
        scalars[ORDER_TARGET : ORDER_TARGET + 1], ints, floats, state[FILLED_AT : FILLED_AT + 1].view(np.bool_),
        open_, close, scalars[NEXT_OPEN] != 0.0, scalars[ALLOW_SHORT] != 0.0, scalars[MIN_REBALANCE],
        scalars[COMMISSION], scalars[FIXED_FEE], scalars[SLIPPAGE], scalars[BORROW_RATE])
    row = ints[ROW, 0]
    equity = floats[EQUITY, 0]
    ratio = (1e-12 if equity < 1e-12 else equity) / floats[PREV_EQUITY, 0]
    # the observation: the window of feature rows row - window + 1 .. row, flattened, then the state
    n_features = int(scalars[N_FEATURES])
    n_values = int(scalars[WINDOW]) * n_features
    window = features[(row + 1) * n_features - n_values :]  # a view: indexing it with j >= 0 needs no wraparound
    for j in range(n_values):
        obs[j] = window[j]
    position, unrealised, bars_held, cash_fraction = sim_kernel.position_state_compiled(
        row, floats[UNITS, 0], equity, floats[ENTRY_VALUE, 0], ints[ENTRY_ROW, 0], floats[CASH, 0], close[row])
    scalars[POSITION], scalars[UNREALISED], scalars[BARS_HELD], scalars[CASH_FRACTION] = (
        position, unrealised, bars_held / scalars[BARS_HELD_SCALE], cash_fraction)
    for j in range(5):
        obs[n_values + j] = scalars[POSITION + j]
    if not (np.isfinite(ratio) and ratio > 0.0 and np.isfinite(equity)):
        return ratio, NOT_FINITE
    if equity <= scalars[MIN_EQUITY_CASH]:
        return ratio, TERMINATED
    if row >= scalars[EPISODE_END]:
        return ratio, TRUNCATED
    return ratio, CONTINUE


env_step_kernel = observe_kernel = None
if sim_kernel.step_kernel is not None:  # numba is installed and not turned off
    from sim.compiled import njit_cached

    # they carry the simulator's compiled step and layout in their cache: an edit of sim/kernel.py recompiles them
    env_step_kernel = njit_cached(_env_step, depends_on=(sim_kernel,))
    observe_kernel = njit_cached(_observe, depends_on=(sim_kernel,))
