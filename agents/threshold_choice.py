"""Thresholds, holding periods and sizing of the supervised threshold policy, chosen for money on validation.

The F1 threshold (:func:`supervised.evaluation.choose_threshold`) is the best classifier, not the best trader:
it may trade so often that costs eat the edge. :func:`choose_thresholds_for_money` backtests the threshold
policy through the simulator (:func:`envs.backtest.backtest_many`, the costs given) on the VALIDATION split
only, over a small grid of entry thresholds, exit hysteresis gaps (``exit = entry - gap``; by default both on the
scale of the model's own validation probabilities: quantiles of them and its F1 threshold) and minimum
holding periods, and keeps the setting with the best net log return after costs (or its t statistic).

The rule, in order:

1. Each setting is scored by its per-bar log returns pooled over the symbols: ``net_log_return`` is their sum
   (the sum over symbols of ``log(final / initial equity)``), ``t_stat`` is ``mean / std(ddof=1) * sqrt(n)``
   (0 for a constant series).
2. A setting must beat cash, whose objective is 0: if no setting's objective is > 0, the choice is
   **stay in cash** (``stay_in_cash=True``; :meth:`ThresholdChoice.policy` is the cash policy), never the F1
   threshold.
3. Ties (equal objective) go to the more selective setting: the higher entry threshold, then the wider exit
   gap, then the longer minimum hold (fewer trades for the same money).

Kelly sizing needs a calibrated probability: :func:`fit_calibrator` fits an isotonic (or Platt) map on the
validation split's probabilities and labels (scikit-learn), and the fitted map is stored with the choice
(:meth:`ThresholdChoice.to_dict`) as plain numbers, so a benchmark job records it and rebuilds the same policy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from envs.backtest import backtest_many
from features.market_data import MarketData
from sim.engine import Costs

from .evaluation import _tstat
from .supervised_policy import SIZINGS, ProbabilityModel, SupervisedThresholdPolicy

OBJECTIVES: tuple[str, ...] = ("net_log_return", "t_stat")
CALIBRATIONS: tuple[str, ...] = ("isotonic", "platt")
#: Entry thresholds tried by default: these quantiles of the model's own validation probabilities (a model whose
#: scores live in 0.2-0.38 on a 20% base rate never reaches a fixed 0.5), plus the model's F1 threshold.
DEFAULT_ENTRY_QUANTILES: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
#: Exit gaps tried by default, as shares of the validation probabilities' 10-90% range.
DEFAULT_GAP_SHARES: tuple[float, ...] = (0.0, 0.1, 0.25)
DEFAULT_MIN_HOLDS: tuple[int, ...] = (0, 2, 4)
SPLIT = "validation"
PLATT_EPS = 1e-6  # probabilities are clipped to [eps, 1 - eps] before the logit


class ThresholdChoiceError(ValueError):
    """Inputs the chooser cannot score; the message names the setting or field."""


# ----- calibration ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbabilityCalibrator:
    """A fitted map from raw to calibrated probabilities, held as plain numbers.

    ``"isotonic"``: piecewise-linear through ``(x, y)`` (scikit-learn's ``IsotonicRegression`` thresholds),
    constant beyond the ends. ``"platt"``: ``expit(a * logit(p) + b)`` with ``(a, b) = (x[0], y[0])``.

    :param method: ``"isotonic"`` or ``"platt"``.
    :param x: isotonic thresholds, or ``[a]``.
    :param y: isotonic values, or ``[b]``.
    """

    method: str
    x: tuple[float, ...]
    y: tuple[float, ...]

    def __call__(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``probabilities`` (float64, same shape).

        :param probabilities: raw model probabilities.
        """
        p = np.asarray(probabilities, dtype=np.float64)
        if self.method == "isotonic":
            return np.interp(p, self.x, self.y)
        from scipy.special import expit, logit

        return expit(self.x[0] * logit(np.clip(p, PLATT_EPS, 1.0 - PLATT_EPS)) + self.y[0])

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ProbabilityCalibrator":
        """The calibrator :meth:`to_dict` recorded.

        :param data: the recorded mapping.
        """
        method = data.get("method")
        if method not in CALIBRATIONS:
            raise ThresholdChoiceError(f"calibrator field 'method'={method!r}; expected one of {list(CALIBRATIONS)}")
        x, y = tuple(float(v) for v in data["x"]), tuple(float(v) for v in data["y"])
        if len(x) != len(y) or not x or (method == "platt" and len(x) != 1):
            raise ThresholdChoiceError(f"calibrator fields 'x' and 'y' have {len(x)} and {len(y)} values; "
                                       f"expected equal, non-empty ({'1 each' if method == 'platt' else 'isotonic'})")
        return cls(method, x, y)


def fit_calibrator(probabilities: np.ndarray, labels: np.ndarray, method: str = "isotonic") -> ProbabilityCalibrator:
    """Fit a calibration map on VALIDATION probabilities and their 0/1 labels (scikit-learn).

    :param probabilities: the model's raw probabilities of the validation samples.
    :param labels: their labels, 0 or 1.
    :param method: ``"isotonic"`` (``IsotonicRegression``, clipped to [0, 1] out of range) or ``"platt"``
        (``LogisticRegression`` on the logit, unpenalised).
    """
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if method not in CALIBRATIONS:
        raise ThresholdChoiceError(f"calibration={method!r} is not known; expected one of {list(CALIBRATIONS)}")
    if len(p) != len(y) or len(p) < 2:
        raise ThresholdChoiceError(f"calibration needs >= 2 validation samples with one label each; "
                                   f"got {len(p)} probabilities and {len(y)} labels")
    if not (np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()):
        raise ThresholdChoiceError("calibration: the validation probabilities must be finite and in [0, 1]")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ThresholdChoiceError("calibration: the validation labels must be 0 or 1")
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return ProbabilityCalibrator("isotonic", tuple(map(float, fitted.X_thresholds_)),
                                     tuple(map(float, fitted.y_thresholds_)))
    if len(np.unique(y)) < 2:
        raise ThresholdChoiceError("calibration='platt' needs both labels in the validation split; use 'isotonic'")
    from scipy.special import logit
    from sklearn.linear_model import LogisticRegression

    x = logit(np.clip(p, PLATT_EPS, 1.0 - PLATT_EPS))[:, None]
    fitted = LogisticRegression(C=np.inf).fit(x, y)  # unpenalised (penalty=None is deprecated)
    return ProbabilityCalibrator("platt", (float(fitted.coef_[0, 0]),), (float(fitted.intercept_[0]),))


def validation_probabilities(model: ProbabilityModel, data: MarketData) -> tuple[np.ndarray, np.ndarray]:
    """The model's probabilities and the labels of the validation samples of ``data`` (rebuilt with the model's
    preprocessing when it has one); the data's label definition must be the model's.

    :param model: the probability model.
    :param data: the fold's data.
    """
    from features.labels import LabelConfig
    from supervised.samples import predict_samples, split_rows

    preprocessing = getattr(model, "preprocessing", None)
    prepared = preprocessing.apply(data) if preprocessing is not None else data
    ours, theirs = LabelConfig(**dict(model.label)).to_dict(), LabelConfig(**dict(prepared.label)).to_dict()
    if ours != theirs:
        raise ThresholdChoiceError(f"the data's labels {theirs} are not the model's {ours}: calibrating on them "
                                   f"would fit another target")
    rows = split_rows(prepared, SPLIT, min_samples=2)
    return predict_samples(model.predict_proba, rows), rows.labels.astype(np.float64)


# ----- the choice ----------------------------------------------------------------------------------------
@dataclass
class ThresholdChoice:
    """The settings chosen on validation, the whole grid and the objective.

    :param stay_in_cash: no setting beat cash on validation: the policy is cash.
    :param entry_threshold: the chosen entry probability (None in cash).
    :param exit_threshold: the chosen exit probability (None in cash).
    :param min_holding: the chosen minimum hold in bars (None in cash).
    :param max_holding: the holding limit every setting used (bars).
    :param objective: ``"net_log_return"`` or ``"t_stat"``.
    :param value: the chosen setting's objective on validation (0.0 for cash).
    :param sizing: ``"all_in"``, ``"kelly"`` or ``"vol_target"``.
    :param sizing_options: the sizing arguments of the policy (``kelly_fraction``, ``max_fraction``,
        ``target_volatility``, ``volatility_window``).
    :param calibrator: the calibration map fitted on validation (``"kelly"`` only).
    :param costs: the costs the grid was scored at (``Costs.describe()``).
    :param table: one row per setting: ``entry_threshold``, ``exit_gap``, ``exit_threshold``, ``min_holding``,
        ``net_log_return``, ``t_stat``, ``n_bars``, ``n_orders``.
    :param split: the split scored (always ``"validation"``).
    """

    stay_in_cash: bool
    entry_threshold: float | None
    exit_threshold: float | None
    min_holding: int | None
    max_holding: int
    objective: str
    value: float
    sizing: str = "all_in"
    sizing_options: dict[str, Any] = field(default_factory=dict)
    calibrator: ProbabilityCalibrator | None = None
    costs: str = ""
    table: list[dict[str, Any]] = field(default_factory=list)
    split: str = SPLIT

    def describe(self) -> str:
        """One line for a report: what was chosen, on what, by what rule."""
        if self.stay_in_cash:
            return (f"stay in cash: no setting of {len(self.table)} beat cash on {self.split} by {self.objective} "
                    f"(best {max((r[self.objective] for r in self.table), default=float('nan')):.4g})")
        return (f"entry {self.entry_threshold:g}, exit {self.exit_threshold:g}, min hold {self.min_holding}, "
                f"max hold {self.max_holding}, sizing {self.sizing}: {self.objective} {self.value:.4g} on {self.split} "
                f"({len(self.table)} settings, costs {self.costs})")

    def policy(self, model: ProbabilityModel) -> Any:
        """The policy of this choice on ``model``: the threshold policy, or the cash policy when in cash.

        :param model: the model the choice was made for (a bundle's :class:`supervised.LoadedModel`, an ensemble).
        """
        if self.stay_in_cash:
            from .baselines import CashPolicy

            return CashPolicy()
        return SupervisedThresholdPolicy(model, self.entry_threshold, self.exit_threshold, self.max_holding,
                                         min_holding=int(self.min_holding), sizing=self.sizing,
                                         calibrator=self.calibrator, **self.sizing_options)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields (the table included), for a benchmark job's meta or a file beside a bundle."""
        return {
            "stay_in_cash": self.stay_in_cash, "entry_threshold": self.entry_threshold,
            "exit_threshold": self.exit_threshold, "min_holding": self.min_holding, "max_holding": self.max_holding,
            "objective": self.objective, "value": self.value, "sizing": self.sizing,
            "sizing_options": dict(self.sizing_options),
            "calibrator": None if self.calibrator is None else self.calibrator.to_dict(),
            "costs": self.costs, "table": [dict(row) for row in self.table], "split": self.split,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ThresholdChoice":
        """The choice :meth:`to_dict` recorded.

        :param data: the recorded mapping.
        """
        missing = sorted({"stay_in_cash", "entry_threshold", "exit_threshold", "min_holding", "max_holding",
                          "objective", "value"} - set(data))
        if missing:
            raise ThresholdChoiceError(f"threshold choice: missing field(s) {missing}")
        if data["objective"] not in OBJECTIVES:
            raise ThresholdChoiceError(f"threshold choice field 'objective'={data['objective']!r}; "
                                       f"expected one of {list(OBJECTIVES)}")
        sizing = data.get("sizing", "all_in")
        if sizing not in SIZINGS:
            raise ThresholdChoiceError(f"threshold choice field 'sizing'={sizing!r}; expected one of {list(SIZINGS)}")
        calibrator = data.get("calibrator")
        return cls(
            stay_in_cash=bool(data["stay_in_cash"]),
            entry_threshold=None if data["entry_threshold"] is None else float(data["entry_threshold"]),
            exit_threshold=None if data["exit_threshold"] is None else float(data["exit_threshold"]),
            min_holding=None if data["min_holding"] is None else int(data["min_holding"]),
            max_holding=int(data["max_holding"]), objective=str(data["objective"]), value=float(data["value"]),
            sizing=sizing, sizing_options=dict(data.get("sizing_options") or {}),
            calibrator=None if calibrator is None else ProbabilityCalibrator.from_dict(calibrator),
            costs=str(data.get("costs", "")), table=[dict(row) for row in data.get("table", [])],
            split=str(data.get("split", SPLIT)),
        )


def choose_thresholds_for_money(
    model: ProbabilityModel,
    data: MarketData,
    costs: Costs | None = None,
    *,
    objective: str = "net_log_return",
    entries: Sequence[float] | None = None,
    hysteresis: Sequence[float] | None = None,
    min_holds: Sequence[int] = DEFAULT_MIN_HOLDS,
    max_holding: int | None = None,
    sizing: str = "all_in",
    sizing_options: Mapping[str, Any] | None = None,
    calibration: str = "isotonic",
    symbols: Sequence[str] | None = None,
    **env_settings: Any,
) -> ThresholdChoice:
    """Backtest the threshold policy on the VALIDATION split over the grid and keep the setting that makes the
    most money after costs (rules in the module docstring). The test split is never read.

    :param model: the probability model (a bundle's :class:`supervised.LoadedModel`, an ensemble, ...).
    :param data: the fold's data (train, validation and test splits; only validation is scored).
    :param costs: the costs to score at; None: the defaults (0.10% + 5 bps).
    :param objective: ``"net_log_return"`` (sum of per-bar log returns, pooled over symbols) or ``"t_stat"``.
    :param entries: entry thresholds to try; None: the :data:`DEFAULT_ENTRY_QUANTILES` of the model's validation
        probabilities and the model's own (F1) threshold.
    :param hysteresis: exit gaps to try (``exit = max(entry - gap, 0)``); None: :data:`DEFAULT_GAP_SHARES` of the
        validation probabilities' 10-90% range.
    :param min_holds: minimum holding periods (bars) to try.
    :param max_holding: the holding limit of every setting; None: the label horizon.
    :param sizing: the sizing of every setting (see :class:`agents.supervised_policy.SupervisedThresholdPolicy`).
    :param sizing_options: its arguments (``kelly_fraction``, ``max_fraction``, ``target_volatility``,
        ``volatility_window``).
    :param calibration: ``"isotonic"`` or ``"platt"``: the calibrator fitted on validation for Kelly sizing.
    :param symbols: the symbols to score; None: every symbol with at least 2 validation bars.
    :param env_settings: other backtest settings (``fill_at``, ``min_rebalance``...); the action mode is the
        policy's own.
    """
    if objective not in OBJECTIVES:
        raise ThresholdChoiceError(f"objective={objective!r} is not known; expected one of {list(OBJECTIVES)}")
    if sizing not in SIZINGS:
        raise ThresholdChoiceError(f"sizing={sizing!r} is not known; expected one of {list(SIZINGS)}")
    if sizing == "kelly" and not callable(getattr(model, "predict_proba", None)):
        raise ThresholdChoiceError(f"sizing='kelly' needs probabilities: {type(model).__name__} has no predict_proba")
    if "action_mode" in env_settings:
        raise ThresholdChoiceError("do not pass action_mode: the policy's sizing sets it")
    if entries is None or hysteresis is None:
        entries, hysteresis = _scaled_grid(model, data, entries, hysteresis)
    grid = _grid(entries, hysteresis, min_holds)
    limit = int(model.label["horizon"] if max_holding is None else max_holding)
    if max(hold for _, _, hold in grid) > limit:
        raise ThresholdChoiceError(f"min_holds={list(min_holds)} exceed max_holding={limit} bars"
                                   f"{' (the label horizon)' if max_holding is None else ''}; give smaller min_holds")
    costs = costs or Costs()
    options = dict(sizing_options or {})
    calibrator = fit_calibrator(*validation_probabilities(model, data), calibration) if sizing == "kelly" else None
    memo = _MemoModel(model)
    symbols = list(symbols) if symbols is not None else _scorable_symbols(data)
    if not symbols:
        raise ThresholdChoiceError(f"no symbol of {data.symbols} has at least 2 {SPLIT} bars to score")
    table = []
    for entry, gap, min_hold in grid:
        policy = SupervisedThresholdPolicy(memo, entry, round(max(entry - gap, 0.0), 12), limit, min_holding=min_hold,
                                           sizing=sizing, calibrator=calibrator, **options)
        results = backtest_many(policy, data, SPLIT, [costs], symbols, **policy.env_settings, **env_settings)
        returns = np.concatenate([np.diff(np.log(np.maximum(r.equity, 1e-300))) for r in results])
        table.append({"entry_threshold": entry, "exit_gap": gap, "exit_threshold": policy.exit_threshold,
                      "min_holding": min_hold, "net_log_return": float(returns.sum()), "t_stat": _tstat(returns),
                      "n_bars": int(len(returns)), "n_orders": int(sum(r.metrics["n_orders"] for r in results))})
    best = max(table, key=lambda r: (r[objective], r["entry_threshold"], r["exit_gap"], r["min_holding"]))
    base = dict(max_holding=limit, objective=objective, sizing=sizing, sizing_options=options,
                calibrator=calibrator, costs=costs.describe(), table=table)
    if not best[objective] > 0.0:
        return ThresholdChoice(True, None, None, None, value=0.0, **base)
    return ThresholdChoice(False, best["entry_threshold"], best["exit_threshold"], best["min_holding"],
                           value=float(best[objective]), **base)


def _scaled_grid(model: ProbabilityModel, data: MarketData, entries: Sequence[float] | None,
                 hysteresis: Sequence[float] | None) -> tuple[list[float], list[float]]:
    """The default entries and gaps, on the scale of the model's validation probabilities (see the defaults).

    :param model: the probability model.
    :param data: the fold's data.
    :param entries: given entries (kept), or None.
    :param hysteresis: given gaps (kept), or None.
    """
    probabilities, _ = validation_probabilities(model, data)
    if entries is None:
        found = [float(v) for v in np.quantile(probabilities, DEFAULT_ENTRY_QUANTILES)]
        own = getattr(model, "threshold", None)
        found += [float(own)] if own is not None else []
        entries = sorted({round(min(max(v, 0.0), 1.0), 4) for v in found})
    if hysteresis is None:
        low, high = np.quantile(probabilities, [0.1, 0.9])
        hysteresis = sorted({round(float(share * (high - low)), 4) for share in DEFAULT_GAP_SHARES})
    return list(entries), list(hysteresis)


def _grid(entries: Sequence[float], hysteresis: Sequence[float], min_holds: Sequence[int]) -> list[tuple[float, float, int]]:
    """Every (entry, gap, min hold) of the grid, checked."""
    for name, values in (("entries", entries), ("hysteresis", hysteresis), ("min_holds", min_holds)):
        if len(values) == 0:
            raise ThresholdChoiceError(f"{name} is empty; give at least one value")
    for entry in entries:
        if not (isinstance(entry, (int, float)) and 0.0 <= entry <= 1.0):
            raise ThresholdChoiceError(f"entries: {entry!r} is not a probability in [0, 1]")
    for gap in hysteresis:
        if not (isinstance(gap, (int, float)) and 0.0 <= gap <= 1.0):
            raise ThresholdChoiceError(f"hysteresis: gap {gap!r} must be in [0, 1]")
    for hold in min_holds:
        if isinstance(hold, bool) or int(hold) != hold or hold < 0:
            raise ThresholdChoiceError(f"min_holds: {hold!r} must be a whole number of bars >= 0")
    return [(float(e), float(g), int(h)) for e in entries for g in hysteresis for h in min_holds]


def _scorable_symbols(data: MarketData) -> list[str]:
    """The symbols with at least 2 validation bars (as the benchmark scores the test split)."""
    return [s for s in data.symbols if np.subtract(*data.split_range(SPLIT, s)[::-1]) >= 2]


class _MemoModel:
    """``model`` with its ``predict_proba`` remembered by the content of its inputs: the grid backtests the same
    validation windows many times, and a forward pass per setting would dominate the time."""

    def __init__(self, model: ProbabilityModel) -> None:
        self.model = model
        self.window, self.feature_names = model.window, model.feature_names
        self.label, self.threshold = model.label, model.threshold
        self.preprocessing = getattr(model, "preprocessing", None)
        self._seen: dict[bytes, np.ndarray] = {}

    def predict_proba(self, windows: np.ndarray, asset_ids: np.ndarray) -> np.ndarray:
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        ids = np.ascontiguousarray(asset_ids, dtype=np.int64)
        digest = hashlib.blake2b(windows.tobytes(), digest_size=20)
        digest.update(repr(windows.shape).encode())
        digest.update(ids.tobytes())
        key = digest.digest()
        if key not in self._seen:
            self._seen[key] = np.asarray(self.model.predict_proba(windows, ids), dtype=np.float64)
        return self._seen[key]
