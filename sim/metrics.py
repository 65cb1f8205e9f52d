"""Performance metrics from an equity curve and a trade log, computed once after the run.

Inputs
------
- ``equity[i]`` is the marked-to-market equity after bar ``i``; ``equity[0]`` is the starting value
  and must be positive. Every value must be finite; equity may fall to zero or below (ruin).
- ``timestamps_ns[i]`` is bar ``i``'s time as int64 UTC nanoseconds (``datetime64`` is accepted too),
  strictly increasing, one per equity value.
- ``periods_per_year`` is the number of bars in a year of this data's frequency; measure it with
  :func:`bars_per_year` (daily US equities about 252, hourly FX about 6,200) rather than assuming one.
- ``trades`` holds one row per closed round trip: ``entry_time``, ``exit_time``, ``entry_price``,
  ``exit_price``, ``size`` (signed units), ``gross_pnl``, ``net_pnl``, ``costs``, ``bars_held``.
  Only ``net_pnl``, ``size``, ``entry_price`` and ``bars_held`` are read; None means no trades.

Conventions
-----------
- Returns are per-bar simple returns ``equity[i] / equity[i-1] - 1``; after ruin (previous equity
  <= 0) a bar's return is 0, since nothing is left to compound.
- ``years = (n_bars - 1) / periods_per_year``. ``cagr = (final / start) ** (1 / years) - 1``; it is
  -1.0 once final equity is <= 0, 0.0 for a single bar (no time has passed), and None if it
  overflows a float.
- ``annual_volatility`` is the sample standard deviation (ddof=1) of per-bar returns times
  ``sqrt(periods_per_year)``; 0.0 with fewer than two returns or a per-bar deviation below 1e-12.
- The annual ``risk_free_rate`` becomes a per-bar rate ``(1 + rf) ** (1 / periods_per_year) - 1``.
  ``sharpe = mean(excess) / std(excess, ddof=1) * sqrt(periods_per_year)``;
  ``sortino = mean(excess) / downside_deviation * sqrt(periods_per_year)`` with
  ``downside_deviation = sqrt(mean(min(excess, 0) ** 2))`` over all returns (Sortino and Price).
- ``max_drawdown`` is a positive fraction (0.25 for a fall of 25% from the running peak); with
  equity below zero it can exceed 1. ``max_drawdown_trough`` is the first bar at the deepest point and
  ``max_drawdown_peak`` the last bar before it at the running peak, both as ISO-8601 UTC strings
  (``2020-03-23T00:00:00Z``), None when equity never falls below a previous peak.
  ``max_drawdown_duration_bars`` is the longest run of consecutive bars below a previous peak (not
  necessarily the deepest drawdown's), 0 if none.
- ``calmar = cagr / max_drawdown``.
- Ratios with a zero denominator (``sharpe``, ``sortino``, ``calmar``, ``profit_factor``): 0.0 when
  the numerator is zero too (nothing gained, nothing risked, e.g. flat equity), None otherwise (the
  ratio would be infinite, e.g. ``profit_factor`` with no losing trades, ``sortino`` with no downside
  returns). "Zero" means below 1e-12 in absolute value, so float noise on a constant-return curve
  does not produce a Sharpe of 1e15.
- Trade statistics use ``net_pnl`` (after costs). ``win_rate`` = share of trades with
  ``net_pnl > 0`` (break-even trades count as non-wins); ``profit_factor`` = sum of positive
  ``net_pnl`` / absolute sum of negative ``net_pnl`` (0.0 when every trade loses);
  ``avg_trade_return`` = mean of ``net_pnl / (|size| * entry_price)``, over trades with a positive
  entry notional. With no trades, ``n_trades`` is 0 and ``win_rate``, ``profit_factor``,
  ``avg_trade_pnl``, ``avg_trade_return``, ``avg_bars_held`` are None.
- ``exposure`` = share of bars whose ``position`` is nonzero; None when no position is given.
- ``turnover`` = ``traded_notional / mean(equity)`` over the whole run, ``annual_turnover`` =
  ``turnover / years`` (0.0 for a single bar); both None if mean equity is <= 0 while something
  was traded.
- Every value returned is a Python ``float``, ``int``, ``str`` or None, never NaN or infinity, so
  ``json.dumps(metrics, allow_nan=False)`` works; :func:`metrics_to_json` cleans up dicts from
  elsewhere (numpy scalars, non-finite floats).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

_NS_PER_YEAR = 365.25 * 86_400 * 1_000_000_000
_ZERO = 1e-12  # denominators and numerators below this count as zero (float noise, not signal)
_TRADE_KEYS_READ = ("net_pnl", "size", "entry_price", "bars_held")

MetricValue = float | int | str | None


def _as_ns(timestamps: np.ndarray, name: str = "timestamps_ns") -> np.ndarray:
    """Timestamps as a 1-D int64 nanosecond array (from int64 ns or ``datetime64``)."""
    stamps = np.asarray(timestamps)
    if stamps.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {stamps.shape}")
    if np.issubdtype(stamps.dtype, np.datetime64):
        return stamps.astype("datetime64[ns]").astype(np.int64)
    if not np.issubdtype(stamps.dtype, np.integer):
        raise ValueError(f"{name} must be int64 UTC nanoseconds or datetime64; got dtype {stamps.dtype}")
    return stamps.astype(np.int64, copy=False)


def _check_increasing(stamps: np.ndarray, name: str = "timestamps_ns") -> None:
    steps = np.diff(stamps)
    if np.any(steps <= 0):
        bad = int(np.argmax(steps <= 0)) + 1
        raise ValueError(
            f"{name} must be strictly increasing; element {bad} ({int(stamps[bad])}) does not come "
            f"after element {bad - 1} ({int(stamps[bad - 1])})"
        )


def _as_equity(equity: np.ndarray) -> np.ndarray:
    values = np.asarray(equity, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"equity must be a non-empty 1-D array; got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        bad = int(np.argmax(~np.isfinite(values)))
        raise ValueError(f"equity must be finite; equity[{bad}] is {values[bad]}")
    if values[0] <= 0:
        raise ValueError(f"equity[0] is the starting value and must be positive; got {values[0]}")
    return values


def _iso_utc(ns: int) -> str:
    """ISO-8601 UTC string at the coarsest of s/ms/us/ns that holds the instant exactly."""
    for unit, per in (("s", 10**9), ("ms", 10**6), ("us", 10**3), ("ns", 1)):
        if ns % per == 0:
            return str(np.datetime_as_string(np.datetime64(ns // per, unit), unit=unit)) + "Z"
    raise AssertionError("unreachable")


def _ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, 0.0 for 0/0 and None for x/0 (would be infinite)."""
    if abs(denominator) < _ZERO:
        return 0.0 if abs(numerator) < _ZERO else None
    return float(numerator / denominator)


def bars_per_year(timestamps_ns: np.ndarray) -> float:
    """The number of bars per year of the data's frequency: ``(n_bars - 1) / years spanned``.

    Years are 365.25 days, so daily US equity bars give about 252, business-day bars about 261,
    weekday-hourly FX bars about 6,260 and round-the-clock hourly bars 8,766.

    :param timestamps_ns: bar times as int64 UTC nanoseconds (or ``datetime64``), strictly increasing.
    :return: bars per year, for ``compute_metrics(..., periods_per_year=...)``.
    """
    stamps = _as_ns(timestamps_ns)
    if stamps.size < 2:
        raise ValueError(
            f"bars_per_year needs at least 2 timestamps to measure a frequency; got {stamps.size}"
        )
    _check_increasing(stamps)
    years = float(stamps[-1] - stamps[0]) / _NS_PER_YEAR
    return (stamps.size - 1) / years


def drawdown_curve(equity: np.ndarray) -> np.ndarray:
    """The fraction by which equity stands below its running peak at each bar (0 at a peak, else < 0).

    :param equity: equity after each bar, ``equity[0]`` positive, all finite.
    :return: float64 array of ``equity / running_peak - 1``, same length as ``equity``.
    """
    values = _as_equity(equity)
    return values / np.maximum.accumulate(values) - 1.0


def _per_bar_returns(values: np.ndarray) -> np.ndarray:
    previous, current = values[:-1], values[1:]
    alive = previous > 0
    returns = np.zeros(previous.shape, dtype=np.float64)
    np.divide(current, previous, out=returns, where=alive)
    returns[alive] -= 1.0
    return returns


def _cagr(start: float, final: float, years: float) -> float | None:
    if years <= 0:
        return 0.0
    if final <= 0:
        return -1.0
    exponent = math.log(final / start) / years
    if exponent > 709.0:  # exp would overflow a float
        return None
    return math.expm1(exponent)


def _drawdown_stats(values: np.ndarray, stamps: np.ndarray) -> dict[str, MetricValue]:
    peaks = np.maximum.accumulate(values)
    drawdown = values / peaks - 1.0
    trough = int(np.argmin(drawdown))
    if drawdown[trough] >= 0:
        return {"max_drawdown": 0.0, "max_drawdown_peak": None, "max_drawdown_trough": None,
                "max_drawdown_duration_bars": 0}
    at_peak = np.flatnonzero(values[: trough + 1] == peaks[trough])
    peak = int(at_peak[-1])
    # longest run of consecutive underwater bars
    underwater = np.concatenate(([0], (values < peaks).astype(np.int8), [0]))
    edges = np.diff(underwater)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return {
        "max_drawdown": float(-drawdown[trough]),
        "max_drawdown_peak": _iso_utc(int(stamps[peak])),
        "max_drawdown_trough": _iso_utc(int(stamps[trough])),
        "max_drawdown_duration_bars": int(np.max(ends - starts)),
    }


def _trade_stats(trades: Mapping[str, np.ndarray] | None) -> dict[str, MetricValue]:
    empty = {"win_rate": None, "profit_factor": None, "avg_trade_pnl": None, "avg_trade_return": None,
             "avg_bars_held": None, "n_trades": 0}
    if trades is None or len(trades) == 0:
        return empty
    missing = [key for key in _TRADE_KEYS_READ if key not in trades]
    if missing:
        raise ValueError(f"trades is missing key(s) {missing}; it has {sorted(trades)}")
    columns = {key: np.asarray(trades[key], dtype=np.float64).reshape(-1) for key in _TRADE_KEYS_READ}
    lengths = {key: column.size for key, column in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"trades columns must have equal lengths; got {lengths}")
    net_pnl = columns["net_pnl"]
    n_trades = net_pnl.size
    if n_trades == 0:
        return empty
    for key, column in columns.items():
        if not np.all(np.isfinite(column)):
            bad = int(np.argmax(~np.isfinite(column)))
            raise ValueError(f"trades[{key!r}] must be finite; row {bad} is {column[bad]}")
    gross_profit = float(net_pnl[net_pnl > 0].sum())
    gross_loss = float(-net_pnl[net_pnl < 0].sum())
    notional = np.abs(columns["size"]) * columns["entry_price"]
    priced = notional > 0
    return {
        "win_rate": float(np.count_nonzero(net_pnl > 0) / n_trades),
        "profit_factor": _ratio(gross_profit, gross_loss),
        "avg_trade_pnl": float(net_pnl.mean()),
        "avg_trade_return": float(np.mean(net_pnl[priced] / notional[priced])) if priced.any() else None,
        "avg_bars_held": float(columns["bars_held"].mean()),
        "n_trades": int(n_trades),
    }


def compute_metrics(
    equity: np.ndarray,
    timestamps_ns: np.ndarray,
    trades: dict[str, np.ndarray] | None = None,
    *,
    periods_per_year: float,
    position: np.ndarray | None = None,
    traded_notional: float = 0.0,
    costs_paid: float = 0.0,
    risk_free_rate: float = 0.0,
) -> dict[str, MetricValue]:
    """Every performance metric of one run, as a flat JSON-safe dict (conventions in the module docstring).

    :param equity: marked-to-market equity after each bar; ``equity[0]`` is the positive starting value.
    :param timestamps_ns: bar times as int64 UTC nanoseconds (or ``datetime64``), strictly increasing,
        one per equity value.
    :param trades: the closed round trips as equal-length arrays (``net_pnl``, ``size``,
        ``entry_price``, ``bars_held`` are read); None means no trades.
    :param periods_per_year: bars per year of this data, e.g. ``bars_per_year(timestamps_ns)``.
    :param position: signed exposure per bar (fraction of equity held), for ``exposure``; None leaves
        ``exposure`` None.
    :param traded_notional: total absolute notional traded over the run, for ``turnover``.
    :param costs_paid: total commission and slippage paid, reported as is.
    :param risk_free_rate: annual risk-free rate subtracted from returns in Sharpe and Sortino.
    :return: dict with keys total_return, cagr, annual_volatility, sharpe, sortino, calmar,
        max_drawdown, max_drawdown_peak, max_drawdown_trough, max_drawdown_duration_bars, win_rate,
        profit_factor, avg_trade_pnl, avg_trade_return, avg_bars_held, exposure, turnover,
        annual_turnover, n_trades, costs_paid, final_equity, start_equity, n_bars, periods_per_year.
    """
    values = _as_equity(equity)
    stamps = _as_ns(timestamps_ns)
    if stamps.size != values.size:
        raise ValueError(
            f"timestamps_ns has {stamps.size} values but equity has {values.size}; need one per bar"
        )
    _check_increasing(stamps)
    periods_per_year = float(periods_per_year)
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be positive and finite; got {periods_per_year}")
    for name, amount in (("traded_notional", traded_notional), ("costs_paid", costs_paid),
                         ("risk_free_rate", risk_free_rate)):
        if not math.isfinite(float(amount)):
            raise ValueError(f"{name} must be finite; got {amount}")
    if traded_notional < 0:
        raise ValueError(
            f"traded_notional is a total of absolute amounts and cannot be negative; got {traded_notional}"
        )
    if risk_free_rate <= -1:
        raise ValueError(f"risk_free_rate is an annual rate and must be above -1; got {risk_free_rate}")

    n_bars = int(values.size)
    start, final = float(values[0]), float(values[-1])
    years = (n_bars - 1) / periods_per_year
    returns = _per_bar_returns(values)
    excess = returns - ((1.0 + risk_free_rate) ** (1.0 / periods_per_year) - 1.0)
    mean_excess = float(excess.mean()) if excess.size else 0.0
    std = float(np.std(returns, ddof=1)) if returns.size >= 2 else 0.0
    std = 0.0 if std < _ZERO else std  # float noise on a constant-return curve
    downside = float(np.sqrt(np.mean(np.minimum(excess, 0.0) ** 2))) if excess.size else 0.0
    annualise = math.sqrt(periods_per_year)

    cagr = _cagr(start, final, years)
    drawdown = _drawdown_stats(values, stamps)
    sharpe = _ratio(mean_excess, std)
    sortino = _ratio(mean_excess, downside)

    if position is None:
        exposure = None
    else:
        held = np.asarray(position, dtype=np.float64).reshape(-1)
        if held.size != n_bars:
            raise ValueError(f"position has {held.size} values but equity has {n_bars}; need one per bar")
        exposure = float(np.count_nonzero(held) / n_bars)

    mean_equity = float(values.mean())
    if traded_notional == 0:
        turnover: float | None = 0.0
    else:
        turnover = float(traded_notional) / mean_equity if mean_equity > 0 else None
    if turnover is None:
        annual_turnover = None
    else:
        annual_turnover = turnover / years if years > 0 else 0.0

    return {
        "total_return": final / start - 1.0,
        "cagr": cagr,
        "annual_volatility": std * annualise,
        "sharpe": None if sharpe is None else sharpe * annualise,
        "sortino": None if sortino is None else sortino * annualise,
        "calmar": None if cagr is None else _ratio(cagr, float(drawdown["max_drawdown"])),
        **drawdown,
        **_trade_stats(trades),
        "exposure": exposure,
        "turnover": turnover,
        "annual_turnover": annual_turnover,
        "costs_paid": float(costs_paid),
        "final_equity": final,
        "start_equity": start,
        "n_bars": n_bars,
        "periods_per_year": periods_per_year,
    }


def metrics_to_json(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``metrics`` that ``json.dumps(..., allow_nan=False)`` accepts.

    numpy scalars become Python numbers, NaN and infinities become None, arrays become lists,
    ``datetime64`` values become ISO-8601 UTC strings; nested dicts, lists and tuples are converted too.

    :param metrics: a metrics dict, e.g. from :func:`compute_metrics` or merged from several sources.
    :return: a new dict of JSON-safe values.
    """
    return {str(key): _json_value(value, str(key)) for key, value in metrics.items()}


def _json_value(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else _iso_utc(int(value.astype("datetime64[ns]").astype(np.int64)))
    if isinstance(value, np.ndarray):
        return [_json_value(item, f"{where}[{i}]") for i, item in enumerate(value.tolist())]
    if isinstance(value, Mapping):
        return {str(k): _json_value(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"metrics value at {where!r} has type {type(value).__name__}, which JSON cannot hold")


_PERCENT_KEYS = frozenset({"total_return", "cagr", "annual_volatility", "max_drawdown", "win_rate",
                           "avg_trade_return", "exposure", "open_position"})
_COUNT_KEYS = frozenset({"n_trades", "n_orders", "n_bars", "max_drawdown_duration_bars"})
_MONEY_KEYS = frozenset({"final_equity", "start_equity", "avg_trade_pnl", "costs_paid"})
_TIMES_KEYS = frozenset({"turnover", "annual_turnover"})
_LABELS = {
    "total_return": "Total return", "cagr": "CAGR", "annual_volatility": "Volatility (ann.)",
    "sharpe": "Sharpe ratio", "sortino": "Sortino ratio", "calmar": "Calmar ratio",
    "max_drawdown": "Max drawdown", "max_drawdown_peak": "Max drawdown peak",
    "max_drawdown_trough": "Max drawdown trough", "max_drawdown_duration_bars": "Longest drawdown (bars)",
    "win_rate": "Win rate", "profit_factor": "Profit factor", "avg_trade_pnl": "Avg trade P&L",
    "avg_trade_return": "Avg trade return", "avg_bars_held": "Avg bars held", "exposure": "Exposure",
    "turnover": "Turnover", "annual_turnover": "Turnover (ann.)", "n_trades": "Trades (closed)",
    "n_orders": "Orders filled", "open_position": "Position at end",
    "costs_paid": "Costs paid", "final_equity": "Final equity", "start_equity": "Start equity",
    "n_bars": "Bars", "periods_per_year": "Bars per year",
}


def _format_value(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (str, bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        if not math.isfinite(number):
            return "n/a"
        if key in _COUNT_KEYS:
            return f"{int(number):,d}"
        if key in _PERCENT_KEYS:
            return f"{number * 100:.2f}%"
        if key in _MONEY_KEYS:
            return f"{number:,.2f}"
        if key in _TIMES_KEYS:
            return f"{number:.2f}x"
        if key == "periods_per_year" or key == "avg_bars_held":
            return f"{number:,.1f}"
        return f"{number:.3f}" if isinstance(value, (float, np.floating)) else f"{int(number):,d}"
    return str(value)


def format_metrics_table(metrics: Mapping[str, Any], title: str | None = None) -> str:
    """A plain-text two-column table of metrics for the terminal, in the dict's order.

    Fractions (returns, volatility, drawdown, win rate, exposure) print as percentages, counts as
    integers, money with thousands separators, turnover as a multiple ("3.20x") and undefined
    values as "n/a". Unknown keys print under their own name.

    :param metrics: a metrics dict, e.g. from :func:`compute_metrics` or :func:`metrics_to_json`.
    :param title: an optional heading printed above the table.
    :return: the table as one string without a trailing newline.
    """
    rows = [(_LABELS.get(key, key), _format_value(key, value)) for key, value in metrics.items()]
    label_width = max((len(label) for label, _ in rows), default=0)
    value_width = max((len(text) for _, text in rows), default=0)
    lines = [f"{label:<{label_width}}  {text:>{value_width}}" for label, text in rows]
    if title is None:
        return "\n".join(lines)
    rule = "-" * max(label_width + 2 + value_width, len(title))
    return "\n".join([title, rule, *lines, rule])
