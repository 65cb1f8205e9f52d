"""The portfolio env's compiled step: actions -> target weights (checked), the simulator's step
(:data:`sim.portfolio.portfolio_step`), observations and episode ends, in one call for every account.

Without numba (``TRADING_RL_NO_NUMBA=1``) the same functions run as Python (slowly, same numbers).
"""

from __future__ import annotations

import math

import numpy as np

from sim import portfolio as sim_portfolio
from sim.portfolio import CASH, CLOSE, EQUITY, OK, PREV_EQUITY, ROW, UNITS

TRANSFORMS: tuple[str, ...] = ("normalize", "softmax", "weights")
NORMALIZE, SOFTMAX, WEIGHTS = range(len(TRANSFORMS))
# what a bad action is (the code in ``status[account]``; the asset, or -1 for the whole vector, in ``where``)
ACTION_OK, NOT_FINITE, NEGATIVE, LEVERAGE, NOT_SUM_ONE = range(5)
CONTINUE, TERMINATED, TRUNCATED = range(3)


def _targets(actions, transform, allow_short, max_leverage, targets, status, where):  # pragma: no cover - compiled
    """Turn each account's action (N + 1 values: assets then cash) into target weights of the N assets."""
    n = targets.shape[1]
    for a in range(actions.shape[0]):
        status[a] = ACTION_OK
        where[a] = -1
        for j in range(n + 1):
            if not math.isfinite(actions[a, j]):
                status[a] = NOT_FINITE
                where[a] = j
                break
        if status[a] != ACTION_OK:
            continue
        if transform == SOFTMAX:
            top = actions[a, 0]
            for j in range(1, n + 1):
                if actions[a, j] > top:
                    top = actions[a, j]
            total = 0.0
            for j in range(n + 1):
                total += math.exp(actions[a, j] - top)
            for i in range(n):
                targets[a, i] = math.exp(actions[a, i] - top) / total
            continue
        if not allow_short:
            for j in range(n + 1):
                if actions[a, j] < 0.0:
                    status[a] = NEGATIVE
                    where[a] = j
                    break
            if status[a] != ACTION_OK:
                continue
        total = 0.0
        gross = 0.0
        for j in range(n + 1):
            total += abs(actions[a, j])
            if j < n:
                gross += abs(actions[a, j])
        if transform == WEIGHTS:
            signed = 0.0
            for j in range(n + 1):
                signed += actions[a, j]
            if abs(signed - 1.0) > 1e-6:
                status[a] = NOT_SUM_ONE
                continue
            limit = max_leverage if allow_short else 1.0
            if gross > limit + 1e-9:
                status[a] = LEVERAGE
                continue
            for i in range(n):
                targets[a, i] = actions[a, i]
            continue
        scale = (max_leverage if allow_short else 1.0) / total if total > 0.0 else 0.0
        for i in range(n):
            targets[a, i] = actions[a, i] * scale


def _observe(accounts, ints, floats, assets, market, window_start, padded, window, covariance, obs, weights):
    """Row ``k`` of ``obs`` (float32): account ``accounts[k]``'s windows (asset-major), weights, covariance; the
    weights also in float64 to ``weights[accounts[k]]``."""
    n = assets.shape[2]
    n_features = padded.shape[1]
    n_window = window * n_features
    for k in range(len(accounts)):
        a = accounts[k]
        r = ints[ROW, a]
        for i in range(n):
            start = window_start[r, i]
            base = i * n_window
            for w in range(window):
                for f in range(n_features):
                    obs[k, base + w * n_features + f] = padded[start + w, f]
        equity = floats[EQUITY, a]
        at = n * n_window
        if equity > 0.0:
            for i in range(n):
                weights[a, i] = assets[UNITS, a, i] * market[CLOSE, r, i] / equity
            weights[a, n] = floats[CASH, a] / equity
        else:
            for i in range(n):
                weights[a, i] = 0.0
            weights[a, n] = 1.0
        for i in range(n + 1):
            obs[k, at + i] = weights[a, i]
        at += n + 1
        if covariance.shape[0] > 0:
            for j in range(covariance.shape[1]):
                obs[k, at + j] = covariance[r, j]


# rows of the env's int matrix (``env_ints[FIELD, account]``) and slots of its settings vector
ENV_INT_FIELDS: tuple[str, ...] = ("status", "where", "end", "episode_end")
STATUS, WHERE, END, EPISODE_END = range(len(ENV_INT_FIELDS))
ENV_PARAMS: tuple[str, ...] = ("transform", "allow_short", "max_leverage", "min_equity_cash", "window")
E_TRANSFORM, E_ALLOW_SHORT, E_MAX_LEVERAGE, E_MIN_EQUITY_CASH, E_WINDOW = range(len(ENV_PARAMS))


def _step(actions, targets, rebalance, env_ints, env_params, ints, floats, assets, market, params, window_start,
          padded, covariance, accounts, obs, weights, log_returns):  # pragma: no cover - compiled
    """Every account's step: -2 if an action is bad (see ``env_ints[STATUS]``), the simulator's status otherwise
    (``OK`` or the slippage failure), with the observations and weights written, ``log_returns`` (log of equity
    over the step's starting equity) and ``env_ints[END]`` set (CONTINUE, TERMINATED, TRUNCATED). Few arguments on
    purpose: each array costs the call ~50 ns to unbox."""
    _targets(actions, int(env_params[E_TRANSFORM]), env_params[E_ALLOW_SHORT] != 0.0, env_params[E_MAX_LEVERAGE],
             targets, env_ints[STATUS], env_ints[WHERE])
    for a in range(env_ints.shape[1]):
        if env_ints[STATUS, a] != ACTION_OK:
            return -2
    result = sim_step(targets, rebalance, ints, floats, assets, market, params)
    if result != OK:
        return result
    _observe(accounts, ints, floats, assets, market, window_start, padded, int(env_params[E_WINDOW]), covariance, obs,
             weights)
    min_equity_cash = env_params[E_MIN_EQUITY_CASH]
    for a in range(ints.shape[1]):
        equity = floats[EQUITY, a]
        log_returns[a] = math.log(max(equity, 1e-12) / floats[PREV_EQUITY, a])
        if not equity > min_equity_cash:
            env_ints[END, a] = TERMINATED
        elif ints[ROW, a] >= env_ints[EPISODE_END, a]:
            env_ints[END, a] = TRUNCATED
        else:
            env_ints[END, a] = CONTINUE
    return OK


sim_step = sim_portfolio.portfolio_step
targets_kernel = _targets
observe_kernel = _observe
step_kernel = _step
if sim_portfolio.portfolio_step is not sim_portfolio._step:  # numba is there and on
    from sim.compiled import njit_cached

    # the step carries the simulator's compiled step (and all three its layout constants) in their on-disk cache:
    # an edit of sim/portfolio.py recompiles them (sim.compiled)
    targets_kernel = _targets = njit_cached(_targets, depends_on=(sim_portfolio,))
    observe_kernel = _observe = njit_cached(_observe, depends_on=(sim_portfolio,))
    step_kernel = njit_cached(_step, depends_on=(sim_portfolio,))


__all__ = ["TRANSFORMS", "step_kernel", "observe_kernel", "targets_kernel"]
