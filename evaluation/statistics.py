"""Statistics that do not flatter: block-bootstrap intervals, the deflated Sharpe ratio, break-even costs.

Everything here is plain numpy/scipy and deterministic given a seed: randomness comes only from a
:class:`numpy.random.Generator` passed in (or built from an int seed), never from the global state.

* :func:`stationary_bootstrap_indices` -- Politis & Romano (1994) resampling indices: blocks of
  geometric length (mean ``mean_block``) that wrap around the end of the series, so serial dependence
  within a block survives the resampling. ``mean_block=1`` is the iid bootstrap.
* :func:`default_block_length` -- the Politis & White (2004) automatic mean block length (with the
  Patton, Politis & White (2009) correction), used when the config gives none.
* :func:`bootstrap_interval` -- a percentile interval of any statistic of one series or of several
  aligned series resampled with the same indices (e.g. a policy's and buy-and-hold's per-bar log
  returns on the same bars), always containing the point estimate; :func:`sharpe_interval` and
  :func:`excess_log_return_interval` are the two the benchmark reports.
* :func:`deflated_sharpe_ratio` / :func:`probabilistic_sharpe_ratio` -- Bailey & Lopez de Prado (2014):
  the probability that the true Sharpe exceeds what the best of ``n_trials`` skill-less trials would show.
* :func:`break_even_cost`, :func:`beat_share`, :func:`summarise_spread` -- reporting helpers.

Every function refuses NaN/inf input with a :class:`ValueError` that names the argument and the problem.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as _stats

EULER_GAMMA: float = 0.5772156649015329
"""The Euler-Mascheroni constant, used by the expected maximum Sharpe ratio."""



class Interval(NamedTuple):
    """A point estimate and a two-sided interval that contains it.

    :param point: the statistic on the original series.
    :param low: lower bound.
    :param high: upper bound.
    """

    point: float
    low: float
    high: float


# --------------------------------------------------------------------------------------------- checks


def _finite_1d(values: ArrayLike, name: str, min_length: int = 1) -> np.ndarray:
    """``values`` as a finite 1-D float array, or a ValueError naming ``name`` and the problem.

    :param values: the input.
    :param name: the argument's name, for the message.
    :param min_length: the fewest values accepted.
    """
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size < min_length:
        raise ValueError(f"{name} needs at least {min_length} value(s), got {array.size}")
    bad = ~np.isfinite(array)
    if bad.any():
        n_nan = int(np.isnan(array).sum())
        n_inf = int(bad.sum()) - n_nan
        kinds = ", ".join(part for part in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} inf" if n_inf else "")
                          if part)
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} contains non-finite values ({kinds}; first at index {first})")
    return array


def _generator(rng: np.random.Generator | int) -> np.random.Generator:
    """A Generator: ``rng`` itself, or one seeded with it.

    :param rng: a Generator or an int seed.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")


def _check_confidence(confidence: float) -> float:
    """``confidence`` if it lies strictly between 0 and 1.

    :param confidence: two-sided level.
    """
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    return confidence


# ------------------------------------------------------------------------------------------ bootstrap


def stationary_bootstrap_indices(n: int, mean_block: float, n_resamples: int,
                                 rng: np.random.Generator | int) -> np.ndarray:
    """Resampling indices of the stationary bootstrap (Politis & Romano 1994).

    Each resample is a chain of blocks: the first bar of a block is uniform on ``0..n-1``, each
    following bar is the next one (wrapping from ``n-1`` to ``0``), and a new block starts at every
    bar with probability ``1/mean_block``, so block lengths are geometric with mean ``mean_block``.
    Every position of a resample is marginally uniform on the series, so the resampled mean is
    unbiased for the sample mean. Fully vectorised (about 0.1 s for 1000 x 5000).

    :param n: length of the series (and of each resample).
    :param mean_block: mean block length in bars, at least 1 (1: the iid bootstrap).
    :param n_resamples: number of resamples.
    :param rng: a numpy Generator or an int seed.
    :returns: integer array (int32 unless n needs int64) of shape ``(n_resamples, n)``.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples}")
    if not math.isfinite(float(mean_block)) or mean_block < 1:
        raise ValueError(f"mean_block must be a finite number >= 1, got {mean_block}")
    n, n_resamples = int(n), int(n_resamples)
    generator = _generator(rng)
    dtype = np.int32 if n < 2**31 - 1 else np.int64
    position = np.arange(n, dtype=dtype)
    # a bar's index is its block's random start plus its offset into the block, modulo n
    shift = generator.integers(0, n, size=(n_resamples, n), dtype=dtype)
    shift -= position
    new_block = generator.random((n_resamples, n)) < 1.0 / float(mean_block)
    new_block[:, 0] = True
    block_start = np.where(new_block, position, 0).astype(dtype, copy=False)
    np.maximum.accumulate(block_start, axis=1, out=block_start)
    indices = np.take_along_axis(shift, block_start, axis=1)
    indices += position
    indices %= n
    return indices


def default_block_length(returns: ArrayLike) -> int:
    """Mean block length for the stationary bootstrap: Politis & White (2004), as corrected by Patton,
    Politis & White (2009).

    With ``gamma(k)`` the sample autocovariances (divided by n) and ``rho(k)`` the autocorrelations:
    ``M`` is twice the smallest lag ``m`` after which ``K = max(5, floor(log10 n))`` consecutive
    autocorrelations all lie inside ``+-2 sqrt(log10(n) / n)`` (at least 2, at most
    ``ceil(sqrt n) + K``); with the flat-top kernel ``h(x) = min(1, 2(1 - |x|))``,
    ``G = sum_{|k|<=M} h(k/M) |k| gamma(k)`` and ``sigma2 = sum_{|k|<=M} h(k/M) gamma(k)``; the block is
    ``(2 G^2 / (2 sigma2^2))^(1/3) n^(1/3)``, rounded, clipped to ``[1, ceil(min(3 sqrt n, n/3))]``.
    It is about 1 for serially uncorrelated returns (the iid bootstrap) and grows with persistence.
    A constant series, or one shorter than 8 bars, gets 1.

    :param returns: the series (per-bar returns), finite.
    """
    x = _finite_1d(returns, "returns")
    n = x.size
    if n < 8 or np.ptp(x) == 0:
        return 1
    eps = x - x.mean()
    k_n = max(5, int(math.log10(n)))
    m_max = int(math.ceil(math.sqrt(n))) + k_n
    max_lag = min(m_max + k_n, n - 1)
    acv = np.array([eps[k:] @ eps[: n - k] for k in range(max_lag + 1)]) / n
    if acv[0] <= 0:
        return 1
    insignificant = np.abs(acv / acv[0]) < 2.0 * math.sqrt(math.log10(n) / n)
    m_hat: int | None = None
    for m in range(0, max_lag - k_n + 1):
        if insignificant[m + 1: m + 1 + k_n].all():
            m_hat = m
            break
    big_m = m_max if m_hat is None else min(2 * max(m_hat, 1), m_max)
    big_m = min(big_m, max_lag)
    lags = np.arange(1, big_m + 1)
    kernel = np.minimum(1.0, 2.0 * (1.0 - lags / big_m))
    g = 2.0 * float(np.sum(kernel * lags * acv[1: big_m + 1]))
    sigma2 = float(acv[0] + 2.0 * np.sum(kernel * acv[1: big_m + 1]))
    if sigma2 <= 0 or g == 0:
        return 1
    b = (2.0 * g * g / (2.0 * sigma2 * sigma2)) ** (1.0 / 3.0) * n ** (1.0 / 3.0)
    b_max = math.ceil(min(3.0 * math.sqrt(n), n / 3.0))
    return int(min(max(round(b), 1), b_max))


def bootstrap_interval(statistic: Callable[..., float], series: ArrayLike | Sequence[ArrayLike],
                       mean_block: float | None = None, n_resamples: int = 1000,
                       confidence: float = 0.95, rng: np.random.Generator | int = 0) -> Interval:
    """Stationary-bootstrap percentile interval of ``statistic``.

    ``series`` is one 1-D series (``statistic(x)``; a plain list of numbers counts as one) or a
    list/tuple of aligned 1-D arrays of equal length (``statistic(x, y, ...)``), all resampled with the same indices so that their dependence
    (the same bars, the same market moves) is kept: bootstrapping a policy and its benchmark jointly
    gives an interval of the excess, not of two unrelated draws.

    The point is ``statistic`` on the original series; the interval is the ``(1-confidence)/2`` and
    ``(1+confidence)/2`` quantiles of the resampled statistics. If a skewed bootstrap distribution puts
    the point outside them, the interval is widened to the point (so ``low <= point <= high`` always;
    the widening only ever makes the interval more conservative).

    :param statistic: maps the 1-D series (one positional argument per series) to a float.
    :param series: one series, or a list/tuple of aligned series.
    :param mean_block: mean block length in bars; None: :func:`default_block_length` of each series,
        the largest.
    :param n_resamples: bootstrap resamples.
    :param confidence: two-sided level, in (0, 1).
    :param rng: a numpy Generator or an int seed.
    """
    confidence = _check_confidence(confidence)
    if isinstance(series, (list, tuple)) and not series:
        raise ValueError("series is an empty list")
    if isinstance(series, (list, tuple)) and all(np.ndim(s) == 1 for s in series):
        arrays = [_finite_1d(s, f"series[{i}]") for i, s in enumerate(series)]
        lengths = {a.size for a in arrays}
        if len(lengths) != 1:
            raise ValueError(f"paired series must have equal lengths, got {[a.size for a in arrays]}")
    else:
        arrays = [_finite_1d(series, "series")]
    n = arrays[0].size
    if mean_block is None:
        mean_block = max(default_block_length(a) for a in arrays)
    point = float(statistic(*arrays))
    if not math.isfinite(point):
        raise ValueError(f"statistic of the original series is not finite ({point})")
    indices = stationary_bootstrap_indices(n, mean_block, n_resamples, rng)
    resampled = [a[indices] for a in arrays]
    values = np.array([statistic(*(r[i] for r in resampled)) for i in range(indices.shape[0])],
                      dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"statistic is not finite on {int(bad.sum())} of {values.size} bootstrap resamples")
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Interval(point, float(min(low, point)), float(max(high, point)))


# --------------------------------------------------------------------------------------------- Sharpe


def sharpe_ratio(returns: ArrayLike, periods_per_year: float) -> float:
    """Annualised Sharpe ratio ``mean / std(ddof=1) * sqrt(periods_per_year)`` (no risk-free rate).

    0.0 for a constant series (including all zeros: cash) and for fewer than 2 values.

    :param returns: per-bar returns (simple or log), finite.
    :param periods_per_year: bars per year (1 gives the per-bar Sharpe).
    """
    x = _finite_1d(returns, "returns")
    if not math.isfinite(float(periods_per_year)) or periods_per_year <= 0:
        raise ValueError(f"periods_per_year must be a positive number, got {periods_per_year}")
    return _sharpe(x, float(periods_per_year))


def _sharpe(x: np.ndarray, periods_per_year: float) -> float:
    """:func:`sharpe_ratio` without the checks (the bootstrap's inner loop).

    :param x: finite 1-D returns.
    :param periods_per_year: positive bars per year.
    """
    if x.size < 2 or np.ptp(x) == 0:
        return 0.0
    std = float(np.std(x, ddof=1))
    if std == 0.0:
        return 0.0
    return float(np.mean(x) / std * math.sqrt(periods_per_year))


def sharpe_interval(returns: ArrayLike, periods_per_year: float, mean_block: float | None = None,
                    n_resamples: int = 1000, confidence: float = 0.95,
                    rng: np.random.Generator | int = 0) -> Interval:
    """Stationary-bootstrap interval of the annualised Sharpe ratio (see :func:`bootstrap_interval`).

    :param returns: per-bar returns, finite.
    :param periods_per_year: bars per year.
    :param mean_block: mean block length in bars; None: :func:`default_block_length`.
    :param n_resamples: bootstrap resamples.
    :param confidence: two-sided level.
    :param rng: a numpy Generator or an int seed.
    """
    x = _finite_1d(returns, "returns")
    if not math.isfinite(float(periods_per_year)) or periods_per_year <= 0:
        raise ValueError(f"periods_per_year must be a positive number, got {periods_per_year}")
    return bootstrap_interval(lambda r: _sharpe(r, float(periods_per_year)), x, mean_block, n_resamples,
                              confidence, rng)


def excess_log_return_interval(policy_returns: ArrayLike, benchmark_returns: ArrayLike | None = None,
                               mean_block: float | None = None, n_resamples: int = 1000,
                               confidence: float = 0.95,
                               rng: np.random.Generator | int = 0) -> Interval:
    """Interval of the total excess log return ``sum(policy - benchmark)`` over the same bars.

    Both series are resampled with the same indices (a paired bootstrap). Against cash pass zeros
    (or None): the excess is then the policy's own total log return.

    :param policy_returns: the policy's per-bar log returns, finite.
    :param benchmark_returns: the benchmark's per-bar log returns on the same bars; None: cash (zeros).
    :param mean_block: mean block length in bars; None: the largest :func:`default_block_length` of
        the two series.
    :param n_resamples: bootstrap resamples.
    :param confidence: two-sided level.
    :param rng: a numpy Generator or an int seed.
    """
    policy = _finite_1d(policy_returns, "policy_returns")
    benchmark = (np.zeros_like(policy) if benchmark_returns is None
                 else _finite_1d(benchmark_returns, "benchmark_returns"))
    if benchmark.size != policy.size:
        raise ValueError(f"policy_returns ({policy.size} bars) and benchmark_returns ({benchmark.size} bars) "
                         "must cover the same bars")
    return bootstrap_interval(lambda p, b: float(np.sum(p - b)), [policy, benchmark], mean_block,
                              n_resamples, confidence, rng)


# ------------------------------------------------------------------------------- deflated Sharpe ratio


def expected_max_sharpe(n_trials: int, trial_sharpes_variance: float) -> float:
    """Expected maximum per-bar Sharpe of ``n_trials`` skill-less trials (Bailey & Lopez de Prado 2014).

    ``SR0 = sqrt(V) * ((1 - gamma) * Z^-1(1 - 1/N) + gamma * Z^-1(1 - 1/(N e)))``, gamma the
    Euler-Mascheroni constant; 0 for a single trial or zero variance.

    :param n_trials: number of independent trials N (configurations, policies x seeds, ...) tried.
    :param trial_sharpes_variance: variance V of the per-bar (not annualised) Sharpe ratios across the
        trials; an annualised variance divided by ``periods_per_year``.
    """
    if int(n_trials) != n_trials or n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials}")
    if not math.isfinite(float(trial_sharpes_variance)) or trial_sharpes_variance < 0:
        raise ValueError(f"trial_sharpes_variance must be a finite number >= 0, got {trial_sharpes_variance}")
    if n_trials == 1 or trial_sharpes_variance == 0:
        return 0.0
    n = float(n_trials)
    z = _stats.norm.ppf
    return float(math.sqrt(trial_sharpes_variance)
                 * ((1.0 - EULER_GAMMA) * z(1.0 - 1.0 / n) + EULER_GAMMA * z(1.0 - 1.0 / (n * math.e))))


def sharpe_probability_from_moments(sr: float, n_bars: int, skewness: float, kurtosis: float,
                                    benchmark_sr: float = 0.0) -> float:
    """``Z((SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1)/4 SR^2))``: the probabilistic Sharpe ratio
    from the per-bar moments (the core of both the PSR and the DSR).

    :param sr: per-bar Sharpe ratio.
    :param n_bars: number of bars T, at least 2.
    :param skewness: skewness g3.
    :param kurtosis: kurtosis g4, not excess (3 for a normal).
    :param benchmark_sr: the per-bar Sharpe to beat SR*.
    """
    for name, value in (("sr", sr), ("skewness", skewness), ("kurtosis", kurtosis),
                        ("benchmark_sr", benchmark_sr)):
        if not math.isfinite(float(value)):
            raise ValueError(f"{name} is not finite ({value})")
    if int(n_bars) != n_bars or n_bars < 2:
        raise ValueError(f"n_bars must be an integer >= 2, got {n_bars}")
    diff = float(sr) - float(benchmark_sr)
    variance = 1.0 - skewness * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if variance <= 0.0:  # only at the moment boundary g4 = 1 + g3^2; the estimate is then exact
        return 0.5 if diff == 0 else float(diff > 0)
    return float(_stats.norm.cdf(diff * math.sqrt(n_bars - 1.0) / math.sqrt(variance)))


def _moments(returns: ArrayLike) -> tuple[float, int, float, float]:
    """Per-bar Sharpe, T, skewness and (non-excess) kurtosis; a constant series: (0, T, 0, 3).

    :param returns: per-bar returns, finite, at least 2.
    """
    x = _finite_1d(returns, "returns", min_length=2)
    if np.ptp(x) == 0:
        return 0.0, x.size, 0.0, 3.0
    sr = sharpe_ratio(x, 1.0)
    skewness = float(_stats.skew(x))
    kurtosis = float(_stats.kurtosis(x, fisher=False))
    return sr, x.size, skewness, kurtosis


def probabilistic_sharpe_ratio(returns: ArrayLike, benchmark_sr: float = 0.0) -> float:
    """Probability that the true per-bar Sharpe exceeds ``benchmark_sr`` (Bailey & Lopez de Prado 2012),
    allowing for the sample's length, skewness and fat tails.

    :param returns: per-bar returns, finite, at least 2 values.
    :param benchmark_sr: the per-bar (not annualised) Sharpe to beat.
    """
    sr, n_bars, skewness, kurtosis = _moments(returns)
    return sharpe_probability_from_moments(sr, n_bars, skewness, kurtosis, benchmark_sr)


def deflated_sharpe_ratio(returns: ArrayLike, n_trials: int,
                          trial_sharpes_variance: float) -> dict[str, Any]:
    """The deflated Sharpe ratio (Bailey & Lopez de Prado 2014, "The Deflated Sharpe Ratio").

    The probabilistic Sharpe ratio of ``returns`` against ``SR0``, the Sharpe the best of ``n_trials``
    skill-less trials would be expected to show (:func:`expected_max_sharpe`). All Sharpe ratios are per
    bar, not annualised; skewness and kurtosis are the sample's (biased) moments, kurtosis not excess.
    With ``n_trials == 1`` SR0 is 0 and the DSR is the PSR against 0.

    :param returns: per-bar returns of the selected strategy, finite, at least 2 values.
    :param n_trials: number of independent trials N the strategy was selected from.
    :param trial_sharpes_variance: variance of the per-bar Sharpe ratios across those trials.
    :returns: ``{"sr", "sr0", "dsr", "n_trials", "n_bars", "skewness", "kurtosis"}``; ``dsr`` is a
        probability in [0, 1].
    """
    sr0 = expected_max_sharpe(n_trials, trial_sharpes_variance)
    sr, n_bars, skewness, kurtosis = _moments(returns)
    return {"sr": sr, "sr0": sr0,
            "dsr": sharpe_probability_from_moments(sr, n_bars, skewness, kurtosis, sr0),
            "n_trials": int(n_trials), "n_bars": n_bars, "skewness": skewness, "kurtosis": kurtosis}


# ---------------------------------------------------------------------------------------- reporting


def break_even_cost(cost_levels: ArrayLike, excess_values: ArrayLike) -> float | None:
    """The cost at which the excess first crosses zero, by linear interpolation on sorted costs.

    :param cost_levels: the cost levels tested (any scalar measure of cost, distinct values).
    :param excess_values: the excess (over the benchmark) at each level, aligned with ``cost_levels``.
    :returns: the interpolated cost where the excess first reaches zero going up in cost; the lowest
        cost itself when the excess is exactly 0 there; ``None`` when the excess is negative even at
        the lowest cost tested (no break-even in the range: it loses at any tested cost);
        ``math.inf`` when the excess is positive at every level (break-even above the highest cost
        tested).
    """
    x = _finite_1d(cost_levels, "cost_levels")
    y = _finite_1d(excess_values, "excess_values")
    if x.size != y.size:
        raise ValueError(f"cost_levels ({x.size}) and excess_values ({y.size}) must have equal lengths")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if np.any(np.diff(x) == 0):
        raise ValueError("cost_levels must be distinct")
    if y[0] < 0:
        return None
    if np.all(y > 0):
        return math.inf
    i = int(np.flatnonzero(y <= 0)[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (x1 - x0) * y0 / (y0 - y1))


def beat_share(policy_values: ArrayLike, benchmark_values: ArrayLike) -> float:
    """Share of aligned (fold, seed) pairs in which the policy's value strictly beats the benchmark's.

    :param policy_values: the policy's values, any shape, finite.
    :param benchmark_values: the benchmark's values on the same pairs, the same shape.
    """
    policy = np.asarray(policy_values, dtype=float)
    benchmark = np.asarray(benchmark_values, dtype=float)
    if policy.shape != benchmark.shape:
        raise ValueError(f"policy_values {policy.shape} and benchmark_values {benchmark.shape} must be aligned")
    policy = _finite_1d(policy.ravel(), "policy_values")
    benchmark = _finite_1d(benchmark.ravel(), "benchmark_values")
    return float(np.mean(policy > benchmark))


def summarise_spread(values: ArrayLike) -> dict[str, float | int]:
    """Median, min, max, mean and count of ``values`` (e.g. one metric over every seed), for reporting.

    :param values: the values, any shape, finite, at least one.
    """
    x = _finite_1d(np.asarray(values, dtype=float).ravel(), "values")
    return {"median": float(np.median(x)), "min": float(np.min(x)), "max": float(np.max(x)),
            "mean": float(np.mean(x)), "n": int(x.size)}
