"""Portfolio policies for :func:`envs.portfolio_backtest.backtest_portfolio`: the protocol and the baselines.

A portfolio policy answers ``reset()`` and ``act(observation) -> action`` (N + 1 values: one per asset, then
cash) and says how its actions are read (``action_transform``, one of the env's ``"normalize"``,
``"softmax"``, ``"weights"``) and how often the backtester brings drifted weights back to its targets
(``rebalance_every`` steps, or None: orders only when the target itself changes).

Baselines:

- :class:`AllocationPolicy`: the constant target weights of an allocation method of
  :mod:`agents.allocation` (skfolio), fitted by :func:`fit_allocation_policy` on one split's rows only
  (train by default: a fold's train rows in walk-forward). ``buy_and_hold`` is bought once, then held;
  every other method is rebalanced every ``rebalance_every`` bars.
- :class:`CashPolicy`: all cash, never an order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from envs.portfolio_core import resolve_panel
from features.panel import Panel
from sim.settings import check_setting

from .allocation import (
    ALLOCATIONS,
    NEVER_REBALANCED,
    WEIGHT_TOLERANCE,
    AllocationError,
    describe_allocation,
    fit_allocation,
)

DEFAULT_REBALANCE_EVERY = 21  # about a month of daily bars


@runtime_checkable
class PortfolioPolicy(Protocol):
    """What the portfolio backtester runs.

    ``action_transform`` is the env transform its actions are meant for; ``rebalance_every`` the steps
    between scheduled rebalances of drifted weights (None: never, orders only when the target changes).
    """

    action_transform: str
    rebalance_every: int | None

    def reset(self) -> None: ...

    def act(self, observation: np.ndarray) -> Any: ...


def _check_rebalance_every(value: Any) -> int | None:
    """``rebalance_every`` as None or an integer >= 1 (a one-line error otherwise).

    :param value: the setting as given.
    """
    if value is None:
        return None
    return int(check_setting("rebalance_every", value, rule="window"))


def _schedule_text(rebalance_every: int | None) -> str:
    """How the weights are kept, for reports.

    :param rebalance_every: steps between rebalances, or None.
    """
    if rebalance_every is None:
        return "bought once, then held"
    return f"rebalanced every {rebalance_every} bar{'s' if rebalance_every != 1 else ''}"


def _method_name(method: str) -> str:
    """The method's description without its own note on fitting or rebalancing (the policy says that).

    :param method: one of ``ALLOCATIONS``.
    """
    text = describe_allocation(method)
    head, sep, _ = text.rpartition("), ")
    return head + ")" if sep else text


class AllocationPolicy:
    """Constant target weights ``[w..., 0.0 cash]`` read with ``action_transform="weights"``.

    :param method: the allocation method (one of ``agents.allocation.ALLOCATIONS``).
    :param weights: float (N,) long-only weights summing to 1 (within 1e-9), in the order of ``symbols``.
    :param symbols: the universe's N symbols; the backtester refuses a universe in another order.
    :param rebalance_every: steps between rebalances back to the weights; None: bought once, then held
        (required for ``buy_and_hold``).
    :param fitted_on: the split whose rows fitted the weights (for :meth:`describe`); None: weights given.
    """

    action_transform = "weights"

    def __init__(self, method: str, weights: Any, symbols: Sequence[str], rebalance_every: int | None = None,
                 *, fitted_on: str | None = None) -> None:
        if method not in ALLOCATIONS:
            raise AllocationError(f"unknown allocation method {method!r}: expected one of {', '.join(ALLOCATIONS)}")
        self.method = method
        self.name = method
        self.symbols = [str(s) for s in symbols]
        self.weights = self._checked_weights(weights)
        self.rebalance_every = _check_rebalance_every(rebalance_every)
        if method in NEVER_REBALANCED and self.rebalance_every is not None:
            raise AllocationError(f"{method} is never rebalanced: rebalance_every must be None, "
                                  f"got {self.rebalance_every}")
        self.fitted_on = fitted_on
        self._action = np.append(self.weights, 0.0)
        self._action.setflags(write=False)

    def _checked_weights(self, weights: Any) -> np.ndarray:
        """The weights as float64 (N,), checked: finite, >= 0, one per symbol, summing to 1.

        :param weights: the weights as given.
        """
        try:
            values = np.asarray(weights, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise AllocationError(f"{self.method}: weights={weights!r} are not numbers") from None
        if values.size != len(self.symbols):
            raise AllocationError(f"{self.method}: {values.size} weights for {len(self.symbols)} symbols "
                                  f"{self.symbols}: expected one weight per symbol")
        bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
        if bad.size:
            i = int(bad[0])
            raise AllocationError(f"{self.method}: weight of {self.symbols[i]} is {float(values[i])!r}: "
                                  f"expected a finite weight >= 0")
        if abs(float(values.sum()) - 1.0) > WEIGHT_TOLERANCE:
            raise AllocationError(f"{self.method}: weights sum to {float(values.sum())!r}: expected 1 "
                                  f"(within {WEIGHT_TOLERANCE:g})")
        return values

    def reset(self) -> None:
        """Nothing to reset: the action is constant."""

    def act(self, observation: np.ndarray) -> np.ndarray:
        """The constant action (read-only): the weights, then 0 cash.

        :param observation: ignored.
        """
        return self._action

    def describe(self) -> str:
        """One line for reports, e.g. ``"minimum variance (skfolio MeanRisk, variance): refit on train rows,
        rebalanced every 21 bars"``."""
        fitted = f"refit on {self.fitted_on} rows" if self.fitted_on else "weights given"
        return f"{_method_name(self.method)}: {fitted}, {_schedule_text(self.rebalance_every)}"

    def __repr__(self) -> str:
        pairs = ", ".join(f"{s}={w:.4f}" for s, w in zip(self.symbols, self.weights))
        return f"AllocationPolicy({self.method}: {pairs}; {_schedule_text(self.rebalance_every)})"


class CashPolicy:
    """All cash: the action ``[0, ..., 0, 1]``, never an order.

    :param symbols: the universe's N symbols.
    """

    action_transform = "weights"
    rebalance_every: int | None = None

    def __init__(self, symbols: Sequence[str]) -> None:
        self.name = "cash"
        self.symbols = [str(s) for s in symbols]
        if not self.symbols:
            raise ValueError("CashPolicy needs the universe's symbols; got none")
        self._action = np.zeros(len(self.symbols) + 1)
        self._action[-1] = 1.0
        self._action.setflags(write=False)

    def reset(self) -> None:
        """Nothing to reset."""

    def act(self, observation: np.ndarray) -> np.ndarray:
        """All cash.

        :param observation: ignored.
        """
        return self._action

    def describe(self) -> str:
        """One line for reports."""
        return "cash: all cash, never an order"


def fit_allocation_policy(method: str, panel: Any, split: str = "train",
                          rebalance_every: int | None = DEFAULT_REBALANCE_EVERY,
                          params: Mapping[str, Any] | None = None) -> AllocationPolicy:
    """Fit ``method`` on the closes of ``split``'s rows of the universe only and return its policy.

    :param method: one of ``agents.allocation.ALLOCATIONS``.
    :param panel: a :class:`features.Panel` (or anything :func:`envs.portfolio_core.resolve_panel` takes).
    :param split: the rows the fit sees (``"train"``; in walk-forward the fold's train rows).
    :param rebalance_every: steps between rebalances for every method but ``buy_and_hold`` (always None:
        bought once, then held).
    :param params: keyword arguments of the skfolio estimator (see :func:`agents.allocation.fit_allocation`).
    :return: the fitted :class:`AllocationPolicy`.
    """
    if not isinstance(panel, Panel):
        panel = resolve_panel(panel)
    start, end = panel.split_range(split)
    if end <= start:
        raise AllocationError(f"{method}: split {split!r} of the universe has no rows to fit on")
    weights = fit_allocation(method, panel.closes(start, end), panel.symbols, params=params)
    schedule = None if method in NEVER_REBALANCED else rebalance_every
    return AllocationPolicy(method, weights, panel.symbols, schedule, fitted_on=split)


__all__ = ["AllocationPolicy", "CashPolicy", "DEFAULT_REBALANCE_EVERY", "PortfolioPolicy", "fit_allocation_policy"]
