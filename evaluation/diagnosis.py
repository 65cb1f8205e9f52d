"""Why a policy makes or loses money: distribution shift between the splits, calibration, where the money goes.

Pure functions on arrays (the benchmark can reuse them):

* :func:`psi` -- population stability index ``sum((a - e) * ln(a / e))`` over bins cut at the quantiles of
  ``expected`` (the train sample): bin ``i`` holds ``cut[i-1] <= x < cut[i]``, the outer bins are open
  (``-inf``, ``+inf``), and tied quantiles merge their bins. A bin empty in either sample gets the proportion
  :data:`PSI_EPSILON` instead of 0, so it adds a large finite term instead of an infinite one. Reading: below
  0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a major one.
* :func:`ks` -- the two-sample Kolmogorov-Smirnov statistic and p-value (:func:`scipy.stats.ks_2samp`).
* :func:`expected_calibration_error` -- ``sum_b n_b / n * |mean(y_b) - mean(p_b)|`` over ``n_bins`` equal-width
  bins of [0, 1] cut as :func:`sklearn.calibration.calibration_curve` (``strategy="uniform"``) cuts them:
  bin ``b`` holds ``b / n_bins < p <= (b + 1) / n_bins``, and 0 falls in the first bin.
* :func:`calibration` -- the reliability curve, Brier score, ECE and precision/recall/F1 at a threshold.
* :func:`trade_economics` -- per trade of a trade log (:mod:`sim.trade_log`): the gross move against the costs
  paid, the share of trades whose gross move does not cover a round trip, holding times, and the cost per side
  at which the trades' summed net P&L is 0.

:func:`diagnose` runs them all for a saved policy on a dataset and returns a :class:`Diagnosis`
(``experiments.diagnose`` writes it out).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.stats import ks_2samp
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from features.market_data import MarketData
from features.splits import SPLITS
from sim.engine import Costs
from sim.trade_log import TRADE_FIELDS

from . import statistics as st
from .config import CostGrid

PSI_EPSILON = 1e-4
"""Proportion given to a bin that is empty in one sample, so that ``ln(a / e)`` stays finite."""

BREAK_EVEN_SCALES: tuple[float, ...] = CostGrid().break_even_scales
"""Multiples of the base costs the backtests are re-run at to find the break-even cost (the benchmark's)."""

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)

EXPOSURE_CUTS: tuple[float, ...] = (-0.75, -0.25, 0.25, 0.75)
"""PSI cut points of an exposure (in [-1, 1]): five bins around the action levels -1, -0.5, 0, 0.5 and 1.
Quantile cuts would split the float noise of a held position (0.99999999999999 vs 0.99999999999998)."""


def _finite_1d(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{name} is empty; need at least one value")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{name} holds {bad.size} non-finite value(s), the first at position {bad[0]}")
    return array


def psi_cuts(expected: Any, bins: int = 10) -> np.ndarray:
    """The inner cut points of :func:`psi`'s bins: the distinct quantiles of ``expected`` at 1/bins .. (bins-1)/bins.

    :param expected: the reference sample (train).
    :param bins: the number of quantile bins (fewer result where quantiles tie).
    """
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins={bins} must be a whole number >= 1")
    reference = _finite_1d(expected, "expected")
    return np.unique(np.quantile(reference, np.linspace(0.0, 1.0, int(bins) + 1)[1:-1]))


def bin_proportions(values: Any, cuts: Any, name: str = "values") -> np.ndarray:
    """Share of ``values`` in each bin ``(-inf, c1), [c1, c2), ..., [ck, inf)`` of the sorted ``cuts``.

    :param values: the sample.
    :param cuts: inner cut points, increasing.
    :param name: the sample's name, for errors.
    """
    sample = _finite_1d(values, name)
    cuts = np.asarray(cuts, dtype=np.float64).ravel()
    if np.any(np.diff(cuts) <= 0):
        raise ValueError(f"cuts must be strictly increasing, got {cuts.tolist()}")
    index = np.searchsorted(cuts, sample, side="right")
    return np.bincount(index, minlength=len(cuts) + 1) / len(sample)


def psi(expected: Any, actual: Any, bins: int | Sequence[float] = 10) -> float:
    """Population stability index of ``actual`` against ``expected`` (see the module docstring).

    :param expected: the reference sample (train).
    :param actual: the sample compared with it (validation, test).
    :param bins: a number of quantile bins of ``expected``, or the inner cut points themselves.
    """
    cuts = psi_cuts(expected, bins) if np.isscalar(bins) else np.asarray(bins, dtype=np.float64)
    e = bin_proportions(expected, cuts, "expected")
    a = bin_proportions(actual, cuts, "actual")
    e, a = np.where(e == 0, PSI_EPSILON, e), np.where(a == 0, PSI_EPSILON, a)
    return float(np.sum((a - e) * np.log(a / e)))


def ks(expected: Any, actual: Any) -> dict[str, float]:
    """Two-sample Kolmogorov-Smirnov test (:func:`scipy.stats.ks_2samp`, two-sided).

    :param expected: one sample.
    :param actual: the other.
    :return: ``{"statistic": D, "pvalue": p}``.
    """
    result = ks_2samp(_finite_1d(expected, "expected"), _finite_1d(actual, "actual"))
    return {"statistic": float(result.statistic), "pvalue": float(result.pvalue)}


def _labels_probabilities(labels: Any, probabilities: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _finite_1d(labels, "labels")
    p = _finite_1d(probabilities, "probabilities")
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1 (drop unlabelled rows first)")
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(f"probabilities must lie in [0, 1], got {p.min():g} .. {p.max():g}")
    return y, p


def _calibration_bins(probabilities: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each probability, as :func:`sklearn.calibration.calibration_curve` (uniform) assigns it."""
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins={n_bins} must be a whole number >= 1")
    return np.searchsorted(np.linspace(0.0, 1.0, int(n_bins) + 1)[1:-1], probabilities)


def expected_calibration_error(labels: Any, probabilities: Any, n_bins: int = 10) -> float:
    """Expected calibration error on ``n_bins`` equal-width bins (see the module docstring).

    :param labels: 0/1 outcomes.
    :param probabilities: predicted P(label = 1).
    :param n_bins: number of bins of [0, 1].
    """
    y, p = _labels_probabilities(labels, probabilities)
    index = _calibration_bins(p, n_bins)
    # n_b/n * |mean(y_b) - mean(p_b)| = |sum(y_b) - sum(p_b)| / n; an empty bin adds 0
    gap = np.abs(np.bincount(index, weights=y, minlength=n_bins) - np.bincount(index, weights=p, minlength=n_bins))
    return float(gap.sum() / len(y))


def calibration(labels: Any, probabilities: Any, threshold: float = 0.5, n_bins: int = 10) -> dict[str, Any]:
    """Reliability curve, Brier score, ECE, and precision/recall/F1 of ``probability >= threshold``.

    :param labels: 0/1 outcomes.
    :param probabilities: predicted P(label = 1).
    :param threshold: the decision threshold.
    :param n_bins: bins of the curve and the ECE (equal width on [0, 1]).
    """
    y, p = _labels_probabilities(labels, probabilities)
    fraction_positive, mean_predicted = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    count = np.bincount(_calibration_bins(p, n_bins), minlength=n_bins)
    predicted = p >= threshold
    tp, fp, fn = int(np.sum(predicted & (y == 1))), int(np.sum(predicted & (y == 0))), int(np.sum(~predicted & (y == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "n": int(len(y)),
        "base_rate": float(y.mean()),
        "mean_probability": float(p.mean()),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p, n_bins),
        "threshold": float(threshold),
        "predicted_positive_rate": float(predicted.mean()),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "curve": {"mean_predicted": mean_predicted.tolist(), "fraction_positive": fraction_positive.tolist(),
                  "count": count[count > 0].tolist()},
    }


def _check_trades(trades: Mapping[str, Any]) -> dict[str, np.ndarray]:
    missing = [name for name in TRADE_FIELDS if name not in trades]
    if missing:
        raise ValueError(f"trade log lacks column(s) {missing}; expected {list(TRADE_FIELDS)} (sim.trade_log)")
    columns = {name: np.asarray(trades[name], dtype=np.float64).ravel() for name in TRADE_FIELDS}
    lengths = {name: len(column) for name, column in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"trade log columns have different lengths: {lengths}")
    for name in ("size", "entry_price", "gross_pnl", "net_pnl", "costs", "bars_held"):
        bad = np.flatnonzero(~np.isfinite(columns[name]))
        if bad.size:
            raise ValueError(f"trade log column {name!r} is not finite at trade {bad[0]}")
    bad = np.flatnonzero((columns["size"] == 0) | (columns["entry_price"] <= 0))
    if bad.size:
        raise ValueError(f"trade log trade {bad[0]} has size {columns['size'][bad[0]]:g} and entry_price "
                         f"{columns['entry_price'][bad[0]]:g}; expected a nonzero size and a positive price")
    return columns


def trade_economics(trades: Mapping[str, Any], cost_per_side: float) -> dict[str, Any]:
    """Where the money goes, trade by trade.

    A trade's notional is ``|size| * entry_price``; its gross move is ``gross_pnl / notional`` (the price move
    over the holding, before costs), its cost ``costs / notional``. A round trip costs ``2 * cost_per_side``.
    The break-even cost per side is where the trades' summed net P&L is 0 with their costs scaled in
    proportion to the cost per side (a fixed fee or borrow is scaled with them): the net P&L is a line in the
    cost level, so :func:`evaluation.statistics.break_even_cost` on two of its points finds the crossing exactly.

    :param trades: a trade log (the :data:`sim.trade_log.TRADE_FIELDS` columns), e.g. ``BacktestResult.trades``
        of several accounts concatenated.
    :param cost_per_side: the proportional cost of one fill, a fraction of notional (commission + slippage).
    """
    if not (math.isfinite(cost_per_side) and cost_per_side >= 0):
        raise ValueError(f"cost_per_side={cost_per_side} must be a finite fraction >= 0")
    columns = _check_trades(trades)
    n = len(columns["size"])
    out: dict[str, Any] = {"n_trades": n, "cost_per_side": float(cost_per_side), "round_trip_cost": 2 * cost_per_side}
    if n == 0:
        return {**out, "break_even_cost_per_side": None, "break_even_note": "n/a (no closed trade)"}
    notional = np.abs(columns["size"]) * columns["entry_price"]
    gross_move = columns["gross_pnl"] / notional
    held = columns["bars_held"]
    gross, costs = float(columns["gross_pnl"].sum()), float(columns["costs"].sum())
    out.update({
        "gross_pnl": gross, "costs": costs, "net_pnl": float(columns["net_pnl"].sum()),
        "mean_gross_move": float(gross_move.mean()), "median_gross_move": float(np.median(gross_move)),
        "mean_cost": float((columns["costs"] / notional).mean()),
        "mean_net_move": float((columns["net_pnl"] / notional).mean()),
        "share_not_covering_round_trip": float(np.mean(gross_move < 2 * cost_per_side)),
        "share_net_negative": float(np.mean(columns["net_pnl"] < 0)),
        "costs_over_gross": costs / gross if gross > 0 else None,
        "bars_held": {"mean": float(held.mean()), "min": float(held.min()),
                      **{f"q{int(q * 100):02d}": float(np.quantile(held, q)) for q in QUANTILES},
                      "max": float(held.max())},
    })
    level, note = _trade_break_even(gross, costs, cost_per_side)
    return {**out, "break_even_cost_per_side": level, "break_even_note": note}


def _trade_break_even(gross: float, costs: float, cost_per_side: float) -> tuple[float | None, str]:
    if costs <= 0 or cost_per_side <= 0:
        return None, "n/a (no costs were paid)"
    scale = max(1.0, 2.0 * gross / costs)  # a second point past the crossing when there is one
    level = st.break_even_cost([0.0, cost_per_side * scale], [gross, gross - scale * costs])
    if level is None:
        return None, "negative even at zero cost (the gross P&L is below 0)"
    return level, f"{level * 1e4:.1f} bps per side"


def distribution_summary(values: Any, name: str = "values") -> dict[str, float]:
    """n, mean, standard deviation and the :data:`QUANTILES` of a sample.

    :param values: the sample.
    :param name: its name, for errors.
    """
    sample = _finite_1d(values, name)
    return {"n": int(len(sample)), "mean": float(sample.mean()), "std": float(sample.std()),
            **{f"q{int(q * 100):02d}": float(np.quantile(sample, q)) for q in QUANTILES}}


# ----------------------------------------------------------------------------------------------------
# One policy on one dataset


@dataclass
class Diagnosis:
    """Everything :func:`diagnose` found (``to_json()`` for the file; ``samples`` feed the plots).

    :param policy: the policy as given.
    :param kind: ``"supervised"``, ``"agent"`` or ``"baseline"``.
    :param symbols: the symbols diagnosed.
    :param costs: the base costs (description, cost per side, where they came from).
    :param shift: one row per feature (PSI and KS of validation and test against train), largest PSI first.
    :param base_rates: per split, the label's sample count and positive rate.
    :param score_kind: ``"probability"`` (a supervised bundle's P(label = 1)) or ``"exposure"`` (the position
        an agent or baseline held after each bar of the backtest).
    :param scores: per split, the score distribution and its PSI against train (a probability on quantile bins of
        train; an exposure on :data:`EXPOSURE_CUTS`, with the share of each of those bins).
    :param calibration: per split (supervised bundles only), see :func:`calibration`.
    :param economics: per split, :func:`trade_economics` of the backtest's trades, its metrics and the
        break-even cost of the cost sweep.
    :param notes: what the reader must know to trust the numbers.
    :param samples: per split, the arrays behind the plots (scores, gross moves, bars held).
    """

    policy: str
    kind: str
    symbols: list[str]
    costs: dict[str, Any]
    shift: list[dict[str, Any]]
    base_rates: dict[str, dict[str, Any]]
    score_kind: str
    scores: dict[str, dict[str, Any]]
    calibration: dict[str, dict[str, Any]] | None
    economics: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    samples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The diagnosis as JSON-safe values (NaN/inf as None; the plot arrays left out)."""
        from supervised.evaluation import json_safe

        values = dataclasses.asdict(self)
        values.pop("samples")
        return json_safe(values)


def cost_per_side(costs: Costs) -> float:
    """Commission plus slippage of one fill as a fraction of notional; a slippage that depends on the bar or
    the order size has no single value and is refused.

    :param costs: the cost model.
    """
    slippage = costs.slippage.constant_fraction()
    if slippage is None:
        raise ValueError(f"slippage {costs.slippage.describe()} is not a constant fraction; the diagnosis needs "
                         f"one cost per side (pass a fixed slippage in bps)")
    return float(costs.commission + slippage)


def _scaled(costs: Costs, scale: float) -> Costs:
    if scale == 1.0:
        return costs
    return Costs(commission=costs.commission * scale, fixed_fee=costs.fixed_fee,
                 slippage=costs.slippage.constant_fraction() * scale * 1e4, borrow_rate=costs.borrow_rate)


def _split_bars(data: MarketData, split: str, symbols: list[str]) -> np.ndarray:
    return np.concatenate([np.arange(*data.split_range(split, s), dtype=np.int64) for s in symbols])


def feature_shift(data: MarketData, symbols: list[str], bins: int = 10) -> list[dict[str, Any]]:
    """PSI and KS of every feature (unscaled) of the validation and test bars against the train bars,
    largest PSI (of either split) first.

    :param data: the dataset as the policy sees it.
    :param symbols: the symbols whose bars are pooled.
    :param bins: PSI quantile bins.
    """
    rows = {split: _split_bars(data, split, symbols) for split in SPLITS}
    out = []
    for j, name in enumerate(data.feature_names):
        train = data.raw_features[rows["train"], j]
        row: dict[str, Any] = {"feature": name}
        for split in SPLITS[1:]:
            where = f"feature {name!r} in split {split!r}"
            other = _finite_1d(data.raw_features[rows[split], j], where)
            row[f"psi_{split}"] = psi(_finite_1d(train, f"feature {name!r} in split 'train'"), other, bins)
            test = ks(train, other)
            row[f"ks_{split}"], row[f"ks_pvalue_{split}"] = test["statistic"], test["pvalue"]
        out.append(row)
    return sorted(out, key=lambda r: -max(r[f"psi_{s}"] for s in SPLITS[1:]))


def _policy_kind(policy: Any) -> str:
    from agents.saved_agent import AgentPolicy
    from agents.supervised_policy import SupervisedThresholdPolicy

    if isinstance(policy, SupervisedThresholdPolicy):
        return "supervised"
    return "agent" if isinstance(policy, AgentPolicy) else "baseline"


def _with_bundle_labels(data: MarketData, label: Mapping[str, Any], notes: list[str]) -> MarketData:
    """``data`` labelled with the bundle's own definition where the dataset's differs."""
    from features.labels import LabelConfig

    definition = LabelConfig(**dict(label))
    if definition.to_dict() == LabelConfig(**dict(data.label)).to_dict():
        return data
    notes.append(f"labels recomputed with the bundle's definition {definition.to_dict()} (the dataset's is "
                 f"{dict(data.label)})")
    labels = np.concatenate([definition.labels(data.close[data.symbol_rows(s)], data.high[data.symbol_rows(s)],
                                               data.low[data.symbol_rows(s)]) for s in data.symbols])
    return dataclasses.replace(data, labels=labels.astype(np.float32), label=definition.to_dict())


def diagnose(policy: Any, data: MarketData, costs: Costs | None = None, *, symbols: list[str] | None = None,
             psi_bins: int = 10, calibration_bins: int = 10, cost_scales: Sequence[float] = BREAK_EVEN_SCALES,
             costs_source: str = "given", seed: int = 0, progress: bool = False) -> Diagnosis:
    """Distribution shift, calibration and trade economics of ``policy`` on ``data``'s three splits.

    :param policy: a ``--policy`` value (baseline name, saved agent or bundle folder) or a loaded policy.
    :param data: the dataset (the policy's own preprocessing is applied to it, as the backtester does).
    :param costs: the base costs (None: the backtester's defaults); their slippage must be a constant fraction.
    :param symbols: the symbols (None: all of the dataset's).
    :param psi_bins: quantile bins of the PSI.
    :param calibration_bins: equal-width bins of the reliability curve and the ECE.
    :param cost_scales: multiples of the base costs the backtests are re-run at for the break-even cost.
    :param costs_source: where the costs came from, for the report.
    :param seed: seed of a stochastic baseline.
    :param progress: show a progress bar over the backtests.
    """
    from agents.policy_loader import load_policy

    for name, value in (("psi_bins", psi_bins), ("calibration_bins", calibration_bins)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name}={value} must be a whole number >= 1")
    costs = costs or Costs()
    per_side = cost_per_side(costs)
    spec = str(policy) if isinstance(policy, (str, Path)) else getattr(policy, "name", type(policy).__name__)
    if isinstance(policy, (str, Path)):
        policy = load_policy(str(policy), data, seed=seed)
    symbols = list(symbols or data.symbols)
    for symbol in symbols:
        data.symbol_index(symbol)
    kind = _policy_kind(policy)
    notes: list[str] = []
    preprocessing = getattr(policy, "preprocessing", None)
    seen = preprocessing.apply(data) if preprocessing is not None else data
    if kind == "supervised":
        seen = _with_bundle_labels(seen, policy.model.label, notes)
    base_rates = {}
    for split in SPLITS:
        labels = seen.labels[seen.sample_indices(split, symbols)]
        base_rates[split] = {"n": int(len(labels)), "positive_rate": float(labels.mean()) if len(labels) else None}
    economics, samples, exposures = _economics(policy, data, costs, per_side, symbols, cost_scales, progress)
    if kind == "supervised":
        score_kind, calib, score_samples = "probability", {}, {}
        for split in SPLITS:
            labels, probabilities = _probabilities(policy.model, seen, split, symbols)
            score_samples[split] = probabilities
            calib[split] = calibration(labels, probabilities, policy.model.threshold, calibration_bins)
    else:
        score_kind, calib, score_samples = "exposure", None, exposures
        notes.append("scores: the exposure held after each bar of the backtest (an agent's or baseline's actions)")
    scores = {}
    cuts = psi_bins if kind == "supervised" else EXPOSURE_CUTS
    for split in SPLITS:
        scores[split] = {**distribution_summary(score_samples[split], f"{score_kind} in split {split!r}"),
                         "psi_vs_train": psi(score_samples["train"], score_samples[split], cuts)}
        if kind != "supervised":
            shares = bin_proportions(score_samples[split], EXPOSURE_CUTS, f"exposure in split {split!r}")
            scores[split].update(zip(("share_short", "share_part_short", "share_flat", "share_part_long",
                                      "share_long"), shares.tolist()))
        samples[split]["scores"] = score_samples[split]
    if kind == "supervised":
        for split in SPLITS:
            scores[split]["share_at_or_above_threshold"] = float(np.mean(score_samples[split] >= policy.model.threshold))
    notes.append("trade economics count closed trades only; a position still open at a split's end is left out")
    return Diagnosis(
        policy=spec, kind=kind, symbols=symbols,
        costs={"description": costs.describe(), "cost_per_side": per_side, "round_trip_cost": 2 * per_side,
               "source": costs_source},
        shift=feature_shift(seen, symbols, psi_bins), base_rates=base_rates, score_kind=score_kind, scores=scores,
        calibration=calib, economics=economics, notes=notes, samples=samples,
    )


def _probabilities(model: Any, data: MarketData, split: str, symbols: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from supervised.samples import predict_samples, split_rows

    rows = split_rows(data, split, min_samples=1)
    keep = np.isin(rows.rows, data.sample_indices(split, symbols))
    rows = rows.subset(np.flatnonzero(keep))
    return rows.labels.astype(np.float64), predict_samples(model.predict_proba, rows)


def _economics(policy: Any, data: MarketData, costs: Costs, per_side: float, symbols: list[str],
               cost_scales: Sequence[float], progress: bool
               ) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Backtest every split at every cost scale; the base scale's trades and metrics, and the break-even."""
    from tqdm.auto import tqdm

    from envs.backtest import backtest_many

    scales = sorted(set(float(s) for s in cost_scales) | {1.0})
    if per_side == 0:
        scales = [1.0]  # nothing to scale
    levels = [_scaled(costs, s) for s in scales]
    at_base = scales.index(1.0)
    settings = dict(getattr(policy, "env_settings", {}))
    economics, samples, exposures = {}, {}, {}
    for split in tqdm(SPLITS, desc="backtests", disable=not progress):
        results = backtest_many(policy, data, split, levels, symbols, **settings)
        base = results[at_base :: len(levels)]  # results run symbol by symbol, each at every level
        trades = {name: np.concatenate([r.trades[name] for r in base]) for name in TRADE_FIELDS}
        report = trade_economics(trades, per_side)
        annual = [r.metrics["annual_turnover"] for r in base]
        turnover = float(np.mean(annual)) if all(a is not None for a in annual) else None
        net = [float(np.mean([math.log(r.equity[-1] / r.equity[0]) for r in results[i :: len(levels)]]))
               for i in range(len(levels))]
        report.update({
            "log_return": net[at_base],
            "annual_turnover": turnover,
            "annual_cost_drag": turnover * per_side if turnover is not None else None,
            "costs_paid": float(sum(r.metrics["costs_paid"] for r in base)),
            "n_orders": int(sum(r.metrics["n_orders"] for r in base)),
            "cost_sweep": {"cost_per_side_bps": [s * per_side * 1e4 for s in scales], "log_return": net},
            **_sweep_break_even(scales, per_side, net),
        })
        economics[split] = report
        notional = np.abs(trades["size"]) * trades["entry_price"]
        samples[split] = {"gross_move": trades["gross_pnl"] / notional if len(notional) else np.zeros(0),
                          "bars_held": trades["bars_held"]}
        exposures[split] = np.concatenate([r.position[1:] for r in base])
    return economics, samples, exposures


def _sweep_break_even(scales: list[float], per_side: float, net: list[float]) -> dict[str, Any]:
    """The benchmark's break-even: the cost per side (bps) where the mean log return of the symbols' accounts
    crosses 0, interpolated over the re-run cost levels (:func:`evaluation.statistics.break_even_cost`)."""
    if per_side <= 0:
        return {"break_even_bps_per_side": None, "break_even_sweep_note": "n/a (the costs are zero)"}
    if all(v == 0.0 for v in net):
        return {"break_even_bps_per_side": None, "break_even_sweep_note": "n/a (never trades)"}
    levels = [s * per_side * 1e4 for s in scales]
    level = st.break_even_cost(levels, net)
    if level is None:
        return {"break_even_bps_per_side": None, "break_even_sweep_note": "negative even at zero cost"}
    if math.isinf(level):
        return {"break_even_bps_per_side": None,
                "break_even_sweep_note": f"positive at every cost tested (up to {levels[-1]:g} bps per side)"}
    return {"break_even_bps_per_side": level, "break_even_sweep_note": f"{level:.1f} bps per side"}


__all__ = ["BREAK_EVEN_SCALES", "EXPOSURE_CUTS", "PSI_EPSILON", "Diagnosis", "bin_proportions", "calibration", "cost_per_side",
           "diagnose", "distribution_summary", "expected_calibration_error", "feature_shift", "ks", "psi",
           "psi_cuts", "trade_economics"]
