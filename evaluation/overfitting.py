"""The probability of backtest overfitting (PBO) by combinatorially symmetric cross-validation (CSCV).

Bailey, Borwein, Lopez de Prado & Zhu, "The Probability of Backtest Overfitting", Journal of
Computational Finance 20(4), 2017 (SSRN 2326253). No installed library computes it (skfolio has the
combinatorial CV splitters but not PBO; the reference implementation is the R package ``pbo``), so this
follows the paper's algorithm step by step in numpy:

1. ``returns`` is the T x N matrix M: per-bar returns of N strategy configurations on the same T bars.
2. M is cut along its rows into S contiguous blocks (``n_splits``, even).
3. Every combination c of S/2 blocks is an in-sample set J; the other S/2 blocks are its out-of-sample
   set (so each split appears once with each half as the in-sample one: C(S, S/2) combinations).
4. For each c: the metric of every column on J (vector R) and on the complement (vector R-bar); n* is the
   in-sample best (argmax of R); omega_c = rank of R-bar[n*] among R-bar / (N + 1) (rank 1 = worst);
   lambda_c = ln(omega_c / (1 - omega_c)).
5. PBO = the share of combinations with lambda_c <= 0: how often the configuration picked in sample is
   at or below the median configuration out of sample.

Also from the paper: the performance degradation (OLS of R-bar[n*] on R[n*] across combinations; a
negative slope means a better in-sample metric foretells a worse out-of-sample one) and the probability
of loss (the share of combinations whose out-of-sample metric of n* is below 0).

Rules the paper leaves open, fixed here so the result is deterministic and does not depend on the order
of the columns:

* Blocks: ``numpy.array_split`` -- when S does not divide T the first ``T mod S`` blocks are one bar
  longer (every bar is used; the paper assumes equal blocks).
* Out-of-sample ties: average ranks (``scipy.stats.rankdata(method="average")``, as R's ``rank`` in the
  ``pbo`` package), so omega stays inside (0, 1) and lambda is finite. With N odd the median
  configuration has lambda = 0 and counts as overfit (the paper integrates f(lambda) up to 0 inclusive).
* In-sample ties (several columns share the best in-sample metric, e.g. duplicated configurations or
  several that never trade): n* is the tied column with the LOWEST out-of-sample metric -- the pessimistic
  pick, which never flatters and does not depend on column order.
* The default metric is the per-bar Sharpe ratio ``mean / std(ddof=1)`` (no risk-free rate; scale and
  annualisation do not change ranks), 0.0 for a column constant on the half (cash), as
  :func:`evaluation.statistics.sharpe_ratio`. It is computed from per-block statistics (Chan et al.'s
  pairwise combination of means and centred sums of squares), so all 12,870 combinations of S = 16 take
  milliseconds; any other metric is called on each half's rows (slower).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as _stats

DEFAULT_MAX_COMBINATIONS: int = 20_000
"""The most CSCV combinations computed unless the caller raises it (C(16, 8) = 12,870 fits; C(18, 9) does not)."""

Metric = Callable[[np.ndarray], np.ndarray]
"""A performance metric: (bars, N) per-bar returns -> (N,) finite values, higher is better."""


class PBOError(ValueError):
    """The input cannot give a PBO: one line naming the argument, column or row and what was expected."""


def per_bar_sharpe(returns: np.ndarray) -> np.ndarray:
    """Per-bar Sharpe ratio of every column: ``mean / std(ddof=1)``, 0.0 for a constant column.

    :param returns: (bars, N) finite per-bar returns, at least 2 bars.
    """
    matrix = np.asarray(returns, dtype=float)
    std = matrix.std(axis=0, ddof=1)
    constant = np.ptp(matrix, axis=0) == 0
    safe_std = np.where(constant | (std == 0), 1.0, std)
    return np.where(constant | (std == 0), 0.0, matrix.mean(axis=0) / safe_std)


@dataclass(frozen=True)
class PBOResult:
    """The CSCV outcome.

    :param pbo: share of combinations whose in-sample best is at or below the out-of-sample median
        (lambda <= 0).
    :param lambdas: (n_combinations,) logits ln(omega / (1 - omega)) of the in-sample best's relative
        out-of-sample rank, in ``itertools.combinations(range(S), S // 2)`` order of the in-sample blocks.
    :param in_sample_winner: (n_combinations,) column index n* picked in each combination.
    :param in_sample_metric: (n_combinations,) metric of n* on the in-sample half.
    :param out_of_sample_metric: (n_combinations,) metric of n* on the out-of-sample half.
    :param degradation_slope: OLS slope of ``out_of_sample_metric`` on ``in_sample_metric``; None when all
        in-sample metrics are equal up to rounding (no regression possible).
    :param degradation_intercept: the regression's intercept (None likewise).
    :param probability_of_loss: share of combinations with ``out_of_sample_metric < 0``.
    :param n_strategies: N, the configurations compared.
    :param n_bars: T, the bars.
    :param n_splits: S, the blocks.
    :param n_combinations: C(S, S/2).
    :param metric_name: the metric's name (``per_bar_sharpe`` by default).
    """

    pbo: float
    lambdas: np.ndarray
    in_sample_winner: np.ndarray
    in_sample_metric: np.ndarray
    out_of_sample_metric: np.ndarray
    degradation_slope: float | None
    degradation_intercept: float | None
    probability_of_loss: float
    n_strategies: int
    n_bars: int
    n_splits: int
    n_combinations: int
    metric_name: str

    def to_dict(self, include_values: bool = False) -> dict[str, Any]:
        """A JSON-ready summary for report.json.

        :param include_values: also list every combination's lambda, winner and metrics (n_combinations
            values each; 12,870 for S = 16).
        """
        quantiles = np.quantile(self.lambdas, [0.05, 0.25, 0.5, 0.75, 0.95])
        winners, counts = np.unique(self.in_sample_winner, return_counts=True)
        order = np.lexsort((winners, -counts))[:5]
        summary: dict[str, Any] = {
            "pbo": float(self.pbo),
            "n_strategies": self.n_strategies,
            "n_bars": self.n_bars,
            "n_splits": self.n_splits,
            "n_combinations": self.n_combinations,
            "metric": self.metric_name,
            "lambda_mean": float(self.lambdas.mean()),
            "lambda_quantiles": {name: float(value) for name, value
                                 in zip(("q05", "q25", "q50", "q75", "q95"), quantiles)},
            "degradation_slope": self.degradation_slope,
            "degradation_intercept": self.degradation_intercept,
            "probability_of_loss": float(self.probability_of_loss),
            "in_sample_metric_mean": float(self.in_sample_metric.mean()),
            "out_of_sample_metric_mean": float(self.out_of_sample_metric.mean()),
            "most_picked": [{"column": int(winners[i]), "share": float(counts[i] / self.n_combinations)}
                            for i in order],
        }
        if include_values:
            summary["lambdas"] = [float(v) for v in self.lambdas]
            summary["in_sample_winner"] = [int(v) for v in self.in_sample_winner]
            summary["in_sample_metric"] = [float(v) for v in self.in_sample_metric]
            summary["out_of_sample_metric"] = [float(v) for v in self.out_of_sample_metric]
        return summary

    def verdict(self) -> str:
        """One sentence for report.md: the PBO, what it means, and the verdict on the selection.

        The bands: >= 0.5 overfits (a random pick does as well); 0.1 to 0.5 is common among skill-less
        configurations too (50 i.i.d. noise columns give a PBO below 0.2 in only ~5% of samples and
        below 0.1 in ~1%), so only <= 0.1 reads as a selection that holds up.
        """
        head = (f"PBO {self.pbo:.2f} over {self.n_strategies:,} configurations and "
                f"{self.n_combinations:,} combinations")
        at_or_below = int(np.sum(self.lambdas <= 0))
        splits = f"{at_or_below:,} of the {self.n_combinations:,} splits"
        if self.pbo >= 0.5:
            return (f"{head}: the in-sample best is at or below the median out of sample in {splits} - "
                    f"the selection overfits (no better than a random pick)")
        if self.pbo > 0.1:
            return (f"{head}: the in-sample best is at or below the median out of sample in {splits} - "
                    f"not clearly better than luck")
        return (f"{head}: the in-sample best is at or below the median out of sample in only {splits} - "
                f"no sign that the selection overfits")


# --------------------------------------------------------------------------------------------- checks


def _check_returns(returns: ArrayLike, labels: Sequence[str] | None) -> np.ndarray:
    """``returns`` as a finite (T, N) float matrix with N >= 2, or a PBOError naming column and row.

    :param returns: the input matrix.
    :param labels: optional column names for the messages.
    """
    matrix = np.asarray(returns, dtype=float)
    if matrix.ndim != 2:
        raise PBOError(f"returns must be a (bars, strategies) matrix, got shape {matrix.shape}")
    n_bars, n_strategies = matrix.shape
    if labels is not None and len(labels) != n_strategies:
        raise PBOError(f"labels has {len(labels)} names for {n_strategies} returns columns")
    if n_strategies < 2:
        raise PBOError(f"returns needs at least 2 strategy columns to select from, got {n_strategies}")
    bad = ~np.isfinite(matrix)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        name = f" ({labels[column]!r})" if labels is not None else ""
        raise PBOError(f"returns column {column}{name} row {row} is {matrix[row, column]}; expected finite "
                       f"per-bar returns ({int(bad.sum())} non-finite value(s) in all)")
    return matrix


def _check_splits(n_splits: int, n_bars: int, max_combinations: int) -> int:
    """The number of CSCV combinations C(S, S/2), or a PBOError for a bad S, short blocks or too many.

    :param n_splits: S.
    :param n_bars: T.
    :param max_combinations: the cap on C(S, S/2).
    """
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)):
        raise PBOError(f"n_splits must be an even integer >= 2, got {n_splits!r}")
    if n_splits < 2 or n_splits % 2:
        raise PBOError(f"n_splits must be an even integer >= 2, got {n_splits}")
    if n_bars < 2 * n_splits:
        raise PBOError(f"n_splits={n_splits} needs at least {2 * n_splits} bars (2 per block); "
                       f"returns has {n_bars}")
    if isinstance(max_combinations, bool) or not isinstance(max_combinations, (int, np.integer)) \
            or max_combinations < 1:
        raise PBOError(f"max_combinations must be a positive integer, got {max_combinations!r}")
    n_combinations = math.comb(int(n_splits), int(n_splits) // 2)
    if n_combinations > max_combinations:
        raise PBOError(f"n_splits={n_splits} gives {n_combinations:,} combinations, over max_combinations="
                       f"{max_combinations:,}; use fewer splits or raise max_combinations")
    return n_combinations


# --------------------------------------------------------------------------------------------- metrics


def _sharpe_halves(blocks: list[np.ndarray], combos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-bar Sharpe of every column on every in-sample half and its complement.

    No half is copied: each half's mean and sum of squared deviations come from the blocks' (Chan, Golub
    & LeVeque 1979: within-block sums plus the between-block term), summed over the half by one matrix
    product with the 0/1 membership matrix. The returns are first centred on each column's mean so the
    between-block term does not lose digits. A half whose values are all equal gets 0.0, as
    :func:`per_bar_sharpe`.

    :param blocks: the S row blocks, each (bars_b, N).
    :param combos: (C, S/2) in-sample block indices.
    """
    grand_mean = np.concatenate(blocks).mean(axis=0)
    counts = np.array([len(b) for b in blocks], dtype=float)
    means = np.stack([(b - grand_mean).mean(axis=0) for b in blocks])                 # (S, N)
    within = np.stack([((b - grand_mean - m) ** 2).sum(axis=0) for b, m in zip(blocks, means)])
    lows = np.stack([b.min(axis=0) for b in blocks])
    highs = np.stack([b.max(axis=0) for b in blocks])
    in_sample = np.zeros((len(combos), len(blocks)))
    np.put_along_axis(in_sample, combos, 1.0, axis=1)
    halves = []
    for member in (in_sample, 1.0 - in_sample):
        total = (member @ counts)[:, None]
        mean = member @ (counts[:, None] * means) / total
        between = np.maximum(member @ (counts[:, None] * means ** 2) - total * mean ** 2, 0.0)
        std = np.sqrt((member @ within + between) / (total - 1))
        flat = _flat_halves(member.astype(bool), lows, highs) | (std == 0)
        halves.append(np.where(flat, 0.0, (mean + grand_mean) / np.where(flat, 1.0, std)))
    return halves[0], halves[1]


def _flat_halves(member: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """(C, N) True where a half's values are all equal (every block constant, all at one value).

    :param member: (C, S) which blocks make each half.
    :param lows: (S, N) block minima.
    :param highs: (S, N) block maxima.
    """
    varying = (lows != highs).astype(float)
    flat = (member.astype(float) @ varying) == 0
    for column in np.flatnonzero(flat.any(axis=0)):
        rows = np.flatnonzero(flat[:, column])
        chosen = member[rows]
        half_low = np.where(chosen, lows[:, column], np.inf).min(axis=1)
        half_high = np.where(chosen, highs[:, column], -np.inf).max(axis=1)
        flat[rows, column] = half_low == half_high
    return flat


def _metric_halves(matrix: np.ndarray, bounds: list[tuple[int, int]], combos: np.ndarray,
                   metric: Metric, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A caller's metric on every in-sample half and its complement (the rows copied in time order).

    :param matrix: (T, N) returns.
    :param bounds: each block's [start, stop) rows.
    :param combos: (C, S/2) in-sample block indices.
    :param metric: the metric.
    :param name: its name, for the messages.
    """
    n_splits = len(bounds)
    rows = [np.arange(start, stop) for start, stop in bounds]
    in_sample = np.empty((len(combos), matrix.shape[1]))
    out_of_sample = np.empty_like(in_sample)
    for index, combo in enumerate(combos.tolist()):
        rest = [s for s in range(n_splits) if s not in combo]
        for target, blocks in ((in_sample, combo), (out_of_sample, rest)):
            values = np.asarray(metric(matrix[np.concatenate([rows[s] for s in blocks])]), dtype=float)
            if values.shape != (matrix.shape[1],):
                raise PBOError(f"metric {name} returned shape {values.shape}; expected ({matrix.shape[1]},), "
                               f"one value per returns column")
            if not np.isfinite(values).all():
                column = int(np.flatnonzero(~np.isfinite(values))[0])
                raise PBOError(f"metric {name} gave {values[column]} for returns column {column} on blocks "
                               f"{blocks}; expected finite values")
            target[index] = values
    return in_sample, out_of_sample


# --------------------------------------------------------------------------------------------- CSCV


def _pick_in_sample_best(in_sample: np.ndarray, out_of_sample: np.ndarray) -> np.ndarray:
    """n* of every combination: the in-sample argmax; among ties, the lowest out-of-sample metric.

    :param in_sample: (C, N) in-sample metrics.
    :param out_of_sample: (C, N) out-of-sample metrics.
    """
    tied = in_sample == in_sample.max(axis=1, keepdims=True)
    return np.where(tied, out_of_sample, np.inf).argmin(axis=1)


def _degradation(in_sample: np.ndarray, out_of_sample: np.ndarray) -> tuple[float | None, float | None]:
    """Slope and intercept of the OLS of the out-of-sample on the in-sample metric of n* (None if x is flat:
    a spread of at most 1e-12 times the largest magnitude, or 1e-12).

    :param in_sample: (C,) in-sample metric of n*.
    :param out_of_sample: (C,) its out-of-sample metric.
    """
    # equal up to rounding (e.g. the same winner with the same metric on every half): no line to fit
    if np.ptp(in_sample) <= 1e-12 * max(1.0, float(np.abs(in_sample).max())):
        return None, None
    fit = _stats.linregress(in_sample, out_of_sample)
    return float(fit.slope), float(fit.intercept)


def probability_of_backtest_overfitting(returns: ArrayLike, n_splits: int = 16,
                                        metric: Metric = per_bar_sharpe, *,
                                        max_combinations: int = DEFAULT_MAX_COMBINATIONS,
                                        labels: Sequence[str] | None = None) -> PBOResult:
    """The PBO of picking the best of N configurations by ``metric``, by CSCV (Bailey et al. 2017).

    :param returns: (T, N) per-bar (log) returns of N configurations on the same T bars, finite.
    :param n_splits: S, the number of contiguous row blocks; even, >= 2, with at least 2 bars per block.
    :param metric: (bars, N) returns -> (N,) finite values, higher is better; the default per-bar Sharpe
        runs on block statistics, any other callable is called 2 * C(S, S/2) times on copied halves.
    :param max_combinations: refuse S whose C(S, S/2) exceeds this (memory and time guard).
    :param labels: optional N column names, used only in error messages.
    """
    matrix = _check_returns(returns, labels)
    n_bars, n_strategies = matrix.shape
    n_combinations = _check_splits(n_splits, n_bars, max_combinations)
    n_splits = int(n_splits)
    combos = np.array(list(itertools.combinations(range(n_splits), n_splits // 2)), dtype=int)
    blocks = np.array_split(matrix, n_splits, axis=0)
    name = getattr(metric, "__name__", type(metric).__name__)
    if metric is per_bar_sharpe:
        in_sample, out_of_sample = _sharpe_halves(blocks, combos)
    else:
        stops = np.cumsum([len(b) for b in blocks])
        bounds = [(int(stop - len(b)), int(stop)) for b, stop in zip(blocks, stops)]
        in_sample, out_of_sample = _metric_halves(matrix, bounds, combos, metric, name)
    winner = _pick_in_sample_best(in_sample, out_of_sample)
    picked = np.arange(n_combinations)
    ranks = _stats.rankdata(out_of_sample, method="average", axis=1)[picked, winner]
    # omega / (1 - omega) with omega = rank / (N + 1), written without the rounding of omega
    lambdas = np.log(ranks / (n_strategies + 1 - ranks))
    winner_in = in_sample[picked, winner]
    winner_out = out_of_sample[picked, winner]
    slope, intercept = _degradation(winner_in, winner_out)
    return PBOResult(
        pbo=float(np.mean(lambdas <= 0)),
        lambdas=lambdas,
        in_sample_winner=winner,
        in_sample_metric=winner_in,
        out_of_sample_metric=winner_out,
        degradation_slope=slope,
        degradation_intercept=intercept,
        probability_of_loss=float(np.mean(winner_out < 0)),
        n_strategies=n_strategies,
        n_bars=n_bars,
        n_splits=n_splits,
        n_combinations=n_combinations,
        metric_name=name,
    )
