"""One validation of each trading setting, shared by the env, the backtester, the benchmark and live.

Every place that takes a cost or account setting (``sim.Costs``, ``sim.Simulator``, ``envs.EnvConfig``, the
benchmark's cost levels, the paper-trading config) calls :func:`check_setting` with the setting's name, so
the same bad value gets the same one-line error everywhere. A caller that knows the file or key prefixes
it (``configs/paper.yaml: costs.commission=5 must be ...``).

The rules (the :data:`RULES` table):

- ``commission``: a fraction of traded notional in [0, 1) (0.001 = 0.10%).
- ``fixed_fee``: currency per order, finite and >= 0.
- ``borrow_rate``: a fraction of short notional per bar in [0, 1).
- ``slippage_bps`` / ``spread_bps``: basis points whose price fraction is below 100% (a sell at a
  slippage of 100% or more would fill at a price <= 0).
- ``initial_cash``: finite and > 0.
- ``min_rebalance``: a change of target exposure in [0, 2).
- ``min_equity``: a fraction of initial equity in [0, 1).
- ``drawdown_penalty``: finite and >= 0; ``dsr_eta``: in (0, 1).
- ``window``, ``episode_length``: positive integers (2.5 is not 2).
- ``allow_short``, ``random_start``, ``record_trades``: booleans (the string ``"no"`` is not False).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import numpy as np


class SettingError(ValueError):
    """A setting outside its valid range or of the wrong type; the message names the setting and value."""


def _shown(value: Any) -> str:
    """The value as the user gave it (``5``, ``5.0``, ``nan``, ``'no'``); numpy scalars as Python's."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _number(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise SettingError(f"{name}={_shown(value)} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise SettingError(f"{name}={_shown(value)} must be a finite number")
    return number


def _in_range(low: float, high: float | None, *, low_open: bool = False, high_open: bool = True,
              hint: str = "") -> Callable[[str, Any], float]:
    def check(name: str, value: Any) -> float:
        number = _number(name, value)
        below = number <= low if low_open else number < low
        above = high is not None and (number >= high if high_open else number > high)
        if below or above:
            left = "(" if low_open else "["
            right = "inf)" if high is None else (f"{high:g})" if high_open else f"{high:g}]")
            raise SettingError(f"{name}={_shown(value)} must be in {left}{low:g}, {right}{hint}")
        return number
    return check


def _commission(name: str, value: Any) -> float:
    number = _number(name, value)
    if not 0 <= number < 1:
        hint = f"; did you mean {number / 100:g}?" if 1 <= number < 100 else ""
        raise SettingError(f"{name}={_shown(value)} must be a fraction of traded notional in [0, 1) "
                           f"(0.001 = 0.10%){hint}")
    return number


def _bps_below_100_percent(per_fill: float) -> Callable[[str, Any], float]:
    """Basis points whose fill-price fraction (``bps * per_fill / 1e4``) stays below 1."""
    limit = 10_000.0 / per_fill

    def check(name: str, value: Any) -> float:
        number = _number(name, value)
        if not 0 <= number < limit:
            raise SettingError(f"{name}={_shown(value)} must be in [0, {limit:g}) basis points: a slippage of 100% "
                               f"or more fills sells at a price <= 0")
        return number
    return check


def _integer(low: int, high: int | None = None) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise SettingError(f"{name}={_shown(value)} must be a whole number {bound}, got {type(value).__name__}")
        if not math.isfinite(float(value)) or float(value) != int(value) or not (
                low <= int(value) and (high is None or int(value) <= high)):
            raise SettingError(f"{name}={_shown(value)} must be a whole number {bound}")
        return int(value)
    return check


_positive_int = _integer(1)


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise SettingError(f"{name}={_shown(value)} must be true or false, got {type(value).__name__}")
    return bool(value)


#: The rule of each setting, by name: a function ``(name, value) -> normalised value`` raising SettingError.
RULES: dict[str, Callable[[str, Any], Any]] = {
    "commission": _commission,
    "fixed_fee": _in_range(0.0, None),
    "non_negative": _in_range(0.0, None),
    "borrow_rate": _in_range(0.0, 1.0, hint=" (a fraction of short notional per bar)"),
    "slippage_bps": _bps_below_100_percent(1.0),
    "spread_bps": _bps_below_100_percent(0.5),
    "initial_cash": _in_range(0.0, None, low_open=True),
    "min_rebalance": _in_range(0.0, 2.0, hint=" (a change of target exposure)"),
    "min_equity": _in_range(0.0, 1.0, hint=" (a fraction of initial equity)"),
    "drawdown_penalty": _in_range(0.0, None),
    "dsr_eta": _in_range(0.0, 1.0, low_open=True),
    "window": _positive_int,
    "episode_length": _positive_int,
    "allow_short": _boolean,
    "random_start": _boolean,
    "record_trades": _boolean,
    "n_accounts": _positive_int,
    "cash_rate": _in_range(0.0, 1.0, hint=" (interest on cash per bar)"),
    "max_leverage": _in_range(0.0, 10.0, low_open=True, hint=" (gross exposure / equity)"),
}


def check_range(name: str, value: Any, low: float, high: float | None = None, *, low_open: bool = False,
                high_open: bool = True) -> float:
    """``value`` as a finite float in the interval from ``low`` to ``high`` (None: no upper bound), closed
    at ``low`` unless ``low_open``, open at ``high`` unless not ``high_open``; else a SettingError naming
    ``name``. For settings outside :data:`RULES` (an agent's ``gamma``, say)."""
    return _in_range(low, high, low_open=low_open, high_open=high_open)(name, value)


def check_integer(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in [``low``, ``high``] (None: no upper bound); ``2.5`` and ``True`` are
    SettingErrors naming ``name``."""
    return _integer(low, high)(name, value)


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1 (``2.5``, ``True`` and ``0`` are SettingErrors naming ``name``)."""
    return _positive_int(name, value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a :class:`SettingError` naming the setting and listing them."""
    if value not in choices:
        raise SettingError(f"{name}={_shown(value)} is not known; expected one of {list(choices)}")
    return value


def check_setting(name: str, value: Any, *, rule: str | None = None) -> Any:
    """``value`` checked (and normalised: a float, an int or a bool) by the rule of setting ``name``.

    :param name: the setting's name as the user wrote it (shown in the error).
    :param value: the value to check.
    :param rule: the rule to apply when it differs from ``name`` (e.g. ``"slippage_bps"`` for ``slippage``).
    :raises SettingError: naming the setting, the value and the valid range.
    """
    return RULES[rule or name](name, value)
