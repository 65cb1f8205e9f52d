"""Allocation baselines for the portfolio backtester, fitted by skfolio on a fold's train rows.

Each method is a pure function of the train closes it is given: ``fit_allocation`` sees no other
data, keeps no state and returns long-only target weights over the universe's assets (no cash).

Methods (``ALLOCATIONS``):

- ``equal_weight``: 1/N (skfolio ``EqualWeighted``), meant to be rebalanced back to 1/N by the backtester.
- ``buy_and_hold``: the same 1/N starting weights (skfolio ``EqualWeighted``); it differs from
  ``equal_weight`` only in never being rebalanced after the first bar, which is the backtester's
  business (``NEVER_REBALANCED`` names it), not this module's.
- ``inverse_volatility``: weights proportional to 1/sigma of each asset's returns (skfolio ``InverseVolatility``).
- ``minimum_variance``: the long-only minimum-variance portfolio (skfolio ``MeanRisk``, minimise variance).
- ``hierarchical_risk_parity``: skfolio ``HierarchicalRiskParity`` with its defaults.
- ``mean_risk``: the long-only maximum-Sharpe portfolio (skfolio ``MeanRisk``, maximise the mean/variance
  ratio at the default risk-free rate 0).
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from skfolio import RiskMeasure
from skfolio.optimization import (
    EqualWeighted,
    HierarchicalRiskParity,
    InverseVolatility,
    MeanRisk,
    ObjectiveFunction,
)

ALLOCATIONS: tuple[str, ...] = (
    "equal_weight",
    "buy_and_hold",
    "inverse_volatility",
    "minimum_variance",
    "hierarchical_risk_parity",
    "mean_risk",
)

NEVER_REBALANCED: frozenset[str] = frozenset({"buy_and_hold"})
"""Methods whose weights are set once at the start and then left to drift (the backtester applies this)."""

DEFAULT_MIN_ROWS = 20
WEIGHT_TOLERANCE = 1e-9

_ESTIMATORS: dict[str, type] = {
    "equal_weight": EqualWeighted,
    "buy_and_hold": EqualWeighted,
    "inverse_volatility": InverseVolatility,
    "minimum_variance": MeanRisk,
    "hierarchical_risk_parity": HierarchicalRiskParity,
    "mean_risk": MeanRisk,
}

# Constructor arguments that define a method: ``params`` may not change them (the method's name and
# its description would then be wrong).
_FIXED: dict[str, dict[str, Any]] = {
    "minimum_variance": {"objective_function": ObjectiveFunction.MINIMIZE_RISK, "risk_measure": RiskMeasure.VARIANCE},
    "mean_risk": {"objective_function": ObjectiveFunction.MAXIMIZE_RATIO, "risk_measure": RiskMeasure.VARIANCE},
}

# skfolio arguments that would hide a failed fit (substitute weights, or set them to None).
_FORBIDDEN = ("fallback", "raise_on_failure")

_DESCRIPTIONS: dict[str, str] = {
    "equal_weight": "equal weight 1/N (skfolio EqualWeighted), rebalanced",
    "buy_and_hold": "buy and hold from equal weight 1/N (skfolio EqualWeighted), never rebalanced",
    "inverse_volatility": "inverse volatility (skfolio InverseVolatility), refit on train",
    "minimum_variance": "minimum variance (skfolio MeanRisk, variance), refit on train",
    "hierarchical_risk_parity": "hierarchical risk parity (skfolio HierarchicalRiskParity), refit on train",
    "mean_risk": "maximum Sharpe ratio (skfolio MeanRisk, mean/variance ratio, risk-free 0), refit on train",
}


class AllocationError(ValueError):
    """Bad input to, or a failed fit of, an allocation baseline (one line)."""


def describe_allocation(method: str) -> str:
    """One line naming the method and the skfolio estimator behind it, for reports.

    :param method: one of ``ALLOCATIONS``.
    :return: e.g. ``"minimum variance (skfolio MeanRisk, variance), refit on train"``.
    """
    _check_method(method)
    return _DESCRIPTIONS[method]


def fit_allocation(
    method: str,
    closes: np.ndarray,
    symbols: Sequence[str],
    *,
    params: Mapping[str, Any] | None = None,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> np.ndarray:
    """Fit an allocation baseline on the TRAIN closes of a universe and return its target weights.

    Returns are the simple returns of consecutive closes of each asset (``closes[t] / closes[t-1] - 1``),
    NaN where either close is missing. An asset with fewer than ``min_rows`` returns in the rows given
    gets weight 0 (it has too little history to be fitted); the other assets are fitted together on
    the rows where all of them have a return. Fewer than 2 such assets, or fewer than ``min_rows`` rows
    shared by them, is an error. Only the rows passed in are used: pass the train rows only. skfolio's weights have negatives above -1e-9 clipped to 0 and are renormalised to sum to 1.

    :param method: one of ``ALLOCATIONS``.
    :param closes: float (T, N) closes of the train rows, one column per symbol; NaN where an asset has
        no bar at that timestamp (not yet listed, holiday). Prices must be positive and finite.
    :param symbols: the N symbols, in the column order of ``closes``.
    :param params: keyword arguments for the skfolio estimator's constructor (its own parameter names);
        the arguments that define the method and ``fallback``/``raise_on_failure`` are not accepted.
    :param min_rows: fewest returns an asset needs in these rows to be fitted (and fewest common rows).
    :return: float64 (N,) long-only weights, each >= 0, summing to 1 within 1e-9.
    :raises AllocationError: (a ValueError) with one line naming what is wrong.
    """
    _check_method(method)
    estimator_kwargs = _estimator_kwargs(method, params)
    if isinstance(min_rows, bool) or not isinstance(min_rows, (int, np.integer)) or min_rows < 2:
        raise AllocationError(f"min_rows={min_rows!r}: expected an integer >= 2")
    prices = _checked_closes(closes, symbols, min_rows)
    returns = prices[1:] / prices[:-1] - 1.0
    fitted = _eligible_assets(returns, symbols, min_rows)
    rows = np.all(np.isfinite(returns[:, fitted]), axis=1)
    if int(rows.sum()) < min_rows:
        names = ", ".join(str(symbols[i]) for i in np.flatnonzero(fitted))
        raise AllocationError(
            f"{method}: the assets with enough history ({names}) have returns together on only "
            f"{int(rows.sum())} of {len(returns)} train rows; at least min_rows={min_rows} needed"
        )
    weights = np.zeros(prices.shape[1], dtype=np.float64)
    fitted_symbols = [symbols[i] for i in np.flatnonzero(fitted)]
    weights[fitted] = _fit_weights(method, estimator_kwargs, returns[rows][:, fitted], fitted_symbols)
    return weights


def _check_method(method: str) -> None:
    """Raise unless ``method`` is one of ``ALLOCATIONS``."""
    if method not in _ESTIMATORS:
        raise AllocationError(f"unknown allocation method {method!r}: expected one of {', '.join(ALLOCATIONS)}")


def _estimator_kwargs(method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The estimator's constructor arguments: the method's fixed ones plus the checked ``params``.

    :param method: a known method.
    :param params: user arguments, or None.
    """
    given = dict(params or {})
    accepted = set(inspect.signature(_ESTIMATORS[method].__init__).parameters) - {"self"}
    unknown = sorted(name for name in given if name not in accepted)
    if unknown:
        raise AllocationError(
            f"{method}: unknown params {', '.join(unknown)} for skfolio {_ESTIMATORS[method].__name__} "
            f"(accepted: {', '.join(sorted(accepted - set(_FORBIDDEN) - set(_FIXED.get(method, {}))))})"
        )
    fixed = sorted(name for name in given if name in _FIXED.get(method, {}))
    if fixed:
        raise AllocationError(f"{method}: params {', '.join(fixed)} are fixed by the method and cannot be set")
    forbidden = sorted(name for name in given if name in _FORBIDDEN)
    if forbidden:
        raise AllocationError(
            f"{method}: params {', '.join(forbidden)} are not allowed (a failed fit must raise, not fall back)"
        )
    return {**_FIXED.get(method, {}), **given}


def _checked_closes(closes: np.ndarray, symbols: Sequence[str], min_rows: int) -> np.ndarray:
    """Validate the closes' shape, symbols and prices; return them as float64 (T, N).

    :param closes: (T, N) closes, NaN where missing.
    :param symbols: N symbols.
    :param min_rows: fewest returns a fit needs (so at least ``min_rows + 1`` rows).
    """
    array = np.asarray(closes)
    if array.ndim != 2:
        raise AllocationError(f"closes has shape {array.shape}: expected 2-D (rows, assets)")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise AllocationError(f"closes has dtype {array.dtype}: expected float64 prices")
    if array.shape[1] != len(symbols):
        raise AllocationError(
            f"closes has {array.shape[1]} columns but symbols has {len(symbols)}: expected one column per symbol"
        )
    if len(symbols) < 2:
        raise AllocationError(f"closes has {len(symbols)} asset(s): a universe needs at least 2 assets")
    duplicates = sorted(str(name) for name, count in Counter(symbols).items() if count > 1)
    if duplicates:
        raise AllocationError(f"symbols has duplicates {', '.join(duplicates)}: expected each symbol once")
    prices = array.astype(np.float64)
    bad = ~np.isnan(prices) & ~((prices > 0) & np.isfinite(prices))
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise AllocationError(
            f"closes row {row} for {symbols[col]} is {float(prices[row, col])!r}: "
            "expected a positive finite price (NaN for no bar)"
        )
    if len(prices) < min_rows + 1:
        raise AllocationError(
            f"closes has {len(prices)} rows: at least min_rows + 1 = {min_rows + 1} needed for {min_rows} returns"
        )
    return prices


def _eligible_assets(returns: np.ndarray, symbols: Sequence[str], min_rows: int) -> np.ndarray:
    """Boolean mask of the assets with at least ``min_rows`` returns; raise if fewer than 2.

    :param returns: (T-1, N) simple returns, NaN where missing.
    :param symbols: N symbols.
    :param min_rows: fewest returns an asset needs.
    """
    counts = np.isfinite(returns).sum(axis=0)
    eligible = counts >= min_rows
    if int(eligible.sum()) < 2:
        short = ", ".join(f"{symbols[i]} {int(counts[i])}" for i in np.flatnonzero(~eligible))
        raise AllocationError(
            f"only {int(eligible.sum())} of {len(symbols)} assets have at least min_rows={min_rows} returns "
            f"in the train rows (returns: {short}): a universe needs at least 2 assets"
        )
    return eligible


def _fit_weights(method: str, kwargs: dict[str, Any], returns: np.ndarray, symbols: list[str]) -> np.ndarray:
    """Fit the skfolio estimator on complete returns and return its clipped, renormalised weights.

    :param method: a known method.
    :param kwargs: the estimator's constructor arguments.
    :param returns: (rows, n) returns with no NaN.
    :param symbols: the n fitted symbols.
    """
    try:
        estimator = _ESTIMATORS[method](**kwargs)
        estimator.fit(returns)
    except Exception as exc:  # skfolio/cvxpy raise ValueError, SolverError, OptimizationError, ...
        said = " ".join(str(exc).split()) or type(exc).__name__
        raise AllocationError(f"{method}: skfolio failed to fit ({type(exc).__name__}: {said})") from None
    raw = getattr(estimator, "weights_", None)
    weights = None if raw is None else np.asarray(raw, dtype=np.float64)
    if weights is None or weights.shape != (len(symbols),) or not np.all(np.isfinite(weights)):
        raise AllocationError(f"{method}: skfolio returned weights {raw!r}: expected {len(symbols)} finite numbers")
    low = int(np.argmin(weights))
    if weights[low] < -WEIGHT_TOLERANCE:
        raise AllocationError(
            f"{method}: skfolio gave {symbols[low]} weight {float(weights[low])!r}: expected long-only weights >= 0"
        )
    weights = np.clip(weights, 0.0, None)
    total = float(weights.sum())
    if not total > 0:
        raise AllocationError(f"{method}: skfolio's weights sum to {total!r}: expected a positive total")
    return weights / total
