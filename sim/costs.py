"""Cost models: commission and pluggable slippage (numpy only).

Slippage moves the fill price against the trader: a buy fills at ``price * (1 + f)``, a sell at
``price * (1 - f)``, where ``f`` is the model's fraction. Slippage cost is ``|units| * price * f``;
commission is ``commission_rate * |units| * fill_price + fixed_fee`` per order. Every model is a small
object with ``prepare(open, high, low, close, volume)`` (called once per price series),
``fraction(rows, notional)`` (vectorised over accounts). Two shortcuts must return exactly ``fraction``'s
values: ``fraction_one(row, notional)`` (one order in Python floats, for the simulator's single-account
path) and ``constant_fraction()`` (the fraction if it depends on neither bar nor notional, else None). A
subclass that overrides ``fraction`` but not a shortcut gets the base class's (which calls ``fraction``,
or says None).
The sizing of buys (``sim.engine``) assumes ``f`` does not decrease as the notional grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .settings import check_setting

SLIPPAGE_MODELS: tuple[str, ...] = ("fixed", "spread", "volatility", "volume")


class SlippageModel:
    """Base class: fixed zero slippage. Subclasses override :meth:`fraction`."""

    name = "none"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "fraction" in cls.__dict__:  # shortcuts inherited from a parent must never disagree with it
            for shortcut in ("fraction_one", "constant_fraction"):
                if shortcut not in cls.__dict__:
                    setattr(cls, shortcut, getattr(SlippageModel, shortcut))

    def prepare(self, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                volume: np.ndarray) -> None:
        """Precompute per-bar quantities from the whole price series (causal use only)."""

    def fraction(self, rows: np.ndarray, notional: np.ndarray) -> np.ndarray:
        """Slippage fraction for orders filled at ``rows`` with absolute ``notional``.

        :param rows: bar index of each fill.
        :param notional: absolute traded notional of each order, before slippage.
        """
        return np.zeros(len(rows))

    def fraction_one(self, row: int, notional: float) -> float:
        """:meth:`fraction` of one order, as a Python float (the same value, bit for bit)."""
        return float(self.fraction(np.array([row]), np.array([notional]))[0])

    def constant_fraction(self) -> float | None:
        """The fraction when it depends on neither the bar nor the notional (exactly :meth:`fraction`'s
        value), else None."""
        return None

    def describe(self) -> str:
        return self.name


@dataclass
class FixedBpsSlippage(SlippageModel):
    """A fixed fraction of price: ``bps / 10_000`` (default 5 bps)."""

    bps: float = 5.0
    name = "fixed"

    def __post_init__(self) -> None:
        self.bps = check_setting("slippage bps", self.bps, rule="slippage_bps")

    def fraction(self, rows: np.ndarray, notional: np.ndarray) -> np.ndarray:
        return np.full(len(rows), self.bps * 1e-4)

    def fraction_one(self, row: int, notional: float) -> float:
        return self.bps * 1e-4

    def constant_fraction(self) -> float:
        return self.bps * 1e-4

    def describe(self) -> str:
        return f"fixed {self.bps:g} bps"


@dataclass
class SpreadSlippage(SlippageModel):
    """Pay half a quoted spread of ``spread_bps`` on every fill."""

    spread_bps: float = 10.0
    name = "spread"

    def __post_init__(self) -> None:
        self.spread_bps = check_setting("spread_bps", self.spread_bps)

    def fraction(self, rows: np.ndarray, notional: np.ndarray) -> np.ndarray:
        return np.full(len(rows), 0.5 * self.spread_bps * 1e-4)

    def fraction_one(self, row: int, notional: float) -> float:
        return 0.5 * self.spread_bps * 1e-4

    def constant_fraction(self) -> float:
        return 0.5 * self.spread_bps * 1e-4

    def describe(self) -> str:
        return f"half spread of {self.spread_bps:g} bps"


@dataclass
class VolatilityScaledSlippage(SlippageModel):
    """``base_bps / 1e4 + k * sigma``, sigma = std of log close-to-close returns over the ``window``
    bars that closed before the fill bar (known when the order is sent); over the first bars of a series, the
    std of the returns so far (the base alone before two returns exist), never of later bars."""

    k: float = 0.1
    window: int = 20
    base_bps: float = 1.0
    name = "volatility"

    def __post_init__(self) -> None:
        _non_negative("volatility slippage k", self.k)
        self.base_bps = check_setting("volatility slippage base_bps", self.base_bps, rule="slippage_bps")
        self.window = check_setting("volatility slippage window", self.window, rule="window")
        if self.window < 2:
            raise ValueError(f"volatility slippage window={self.window} must be >= 2")
        self._sigma = np.zeros(0)

    def prepare(self, open_, high, low, close, volume) -> None:
        logret = np.diff(np.log(close), prepend=np.nan)
        sigma = np.full(len(close), np.nan)
        if len(close) > self.window:
            windows = np.lib.stride_tricks.sliding_window_view(logret[1:], self.window)
            sigma[self.window:] = windows.std(axis=1, ddof=1)
        # before `window` returns exist: the std of the returns so far (2 at least), never of later bars
        early = min(self.window, len(close))
        for t in range(2, early):
            sigma[t] = np.std(logret[1 : t + 1], ddof=1)
        # fill at bar t uses the volatility known at the close of t-1; 0 (the base only) before 2 returns exist
        shifted = np.concatenate([[np.nan], sigma[:-1]])
        self._sigma = np.nan_to_num(shifted, nan=0.0)

    def fraction(self, rows: np.ndarray, notional: np.ndarray) -> np.ndarray:
        return self.base_bps * 1e-4 + self.k * self._sigma[rows]

    def fraction_one(self, row: int, notional: float) -> float:
        return self.base_bps * 1e-4 + self.k * float(self._sigma[row])

    def describe(self) -> str:
        return f"{self.base_bps:g} bps + {self.k:g} x {self.window}-bar volatility"


@dataclass
class VolumeScaledSlippage(SlippageModel):
    """Square-root market impact: ``base_bps / 1e4 + impact * sqrt(notional / adv)``, where adv is the
    mean dollar volume of the ``window`` bars before the fill bar."""

    impact: float = 0.1
    window: int = 20
    base_bps: float = 1.0
    name = "volume"

    def __post_init__(self) -> None:
        _non_negative("volume slippage impact", self.impact)
        self.base_bps = check_setting("volume slippage base_bps", self.base_bps, rule="slippage_bps")
        self.window = check_setting("volume slippage window", self.window, rule="window")
        self._adv = np.zeros(0)

    def prepare(self, open_, high, low, close, volume) -> None:
        dollar = close * volume
        csum = np.concatenate([[0.0], np.cumsum(dollar)])
        n = len(close)
        adv = np.empty(n)
        for_rows = np.arange(n)
        lo = np.maximum(for_rows - self.window, 0)
        counts = for_rows - lo
        adv[:] = np.where(counts > 0, (csum[for_rows] - csum[lo]) / np.maximum(counts, 1), np.inf)
        self._adv = np.where(adv > 0, adv, np.inf)

    def fraction(self, rows: np.ndarray, notional: np.ndarray) -> np.ndarray:
        return self.base_bps * 1e-4 + self.impact * np.sqrt(np.abs(notional) / self._adv[rows])

    def fraction_one(self, row: int, notional: float) -> float:
        return self.base_bps * 1e-4 + self.impact * math.sqrt(abs(notional) / float(self._adv[row]))

    def describe(self) -> str:
        return f"{self.base_bps:g} bps + {self.impact:g} x sqrt(notional / {self.window}-bar dollar volume)"


def make_slippage(spec: "SlippageModel | float | str | dict | None") -> SlippageModel:
    """Slippage model from a model, a number of bps (fixed), a name, or ``{"model": name, **params}``.

    :param spec: e.g. ``5.0``, ``"fixed"``, ``{"model": "volatility", "k": 0.2}``, or None (= 0 bps).
    """
    if spec is None:
        return FixedBpsSlippage(0.0)
    if isinstance(spec, SlippageModel):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return FixedBpsSlippage(check_setting("slippage", spec, rule="slippage_bps"))
    params: dict = {}
    name = spec
    if isinstance(spec, dict):
        params = dict(spec)
        name = params.pop("model", "fixed")
    classes = {"fixed": FixedBpsSlippage, "spread": SpreadSlippage,
               "volatility": VolatilityScaledSlippage, "volume": VolumeScaledSlippage}
    if name not in classes:
        raise ValueError(f"slippage model {name!r} is not known; expected one of {list(SLIPPAGE_MODELS)} "
                         f"or a number of bps")
    try:
        return classes[name](**params)
    except TypeError as exc:
        raise ValueError(f"slippage model {name!r}: bad parameters {params}: {exc}") from exc


def _non_negative(name: str, value: float) -> None:
    check_setting(name, value, rule="non_negative")
