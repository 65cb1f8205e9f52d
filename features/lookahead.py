"""Look-ahead checks by truncation (after freqtrade's ``lookahead-analysis``).

A value computed for bar ``t`` may use bars ``0..t`` only. The check: compute the features on all
bars, then again on the bars cut at a row ``c`` (``bars.iloc[:c]``), and compare the rows ``< c``. A
causal column gives the same values; a column that looked past ``t`` (a centred rolling window, a
``bfill()``, a ``shift(-1)``, a full-sample z-score) changes somewhere before the cut, and the first
row where it does says how far ahead it looked (``c - 1`` for a ``shift(-1)``, row 0 for a
full-sample statistic). Cut points are random (seeded), after the features' warm-up and before the
last bar. A leak that shows only at some bars is caught only by a cut just after one of them (a
``bfill()`` over Monday gaps changes a value only when the cut falls on the Tuesday): more cuts find
more; a clean result is evidence, not proof.

Three checks share that comparison:

- :func:`find_lookahead`: any feature function (bars DataFrame in, DataFrame on the same index out),
  e.g. :func:`features.build_features` or a user's own.
- :func:`find_env_lookahead`: the observations ``TradingEnv-v0`` builds (scaled feature window,
  position state, asset id) on a :class:`~features.MarketData` built from the full bars and from the
  cut bars with the same scaler and asset ids. Splits by fraction move when bars are removed, and the
  scaler is fit on the train split, so this check sets the split by an explicit date that ends the
  train split before every cut: both builds then fit the scaler on the very same rows, and a
  different scaler is itself a look-ahead (:class:`LookaheadError`).
- :func:`label_guard` and :func:`label_lookahead`: labels look forward by design
  (:mod:`features.labels`), so they must never be observations. The guard checks (1) that no
  feature column is named like the label (``label`` in the name), (2) that no feature column is a
  function of the label (one value on every row labelled 1, another on every row labelled 0), and
  (3), as a self-test of the comparison, that the labels themselves *are* flagged by truncation
  (their last ``horizon`` rows before a cut change). A column derived from the label in any other way
  looks forward too, and the truncation checks above flag it like any other look-ahead.

Tolerance: values are equal when ``|cut - full| <= atol + rtol * |full|`` (:data:`RTOL` 1e-9,
:data:`ATOL` 1e-12), and NaN equals NaN. A causal computation on a prefix is normally bit-identical,
but a reduction whose blocking depends on the array length (numpy's pairwise sums, BLAS kernels) may
round differently; that noise is a few ulps times the number of terms (float64 epsilon 2.2e-16 times
1e4 bars is about 2e-12 relative), three orders below ``rtol``. A real leak moves values by far more:
one future bar in a 20-bar mean shifts it by about a twentieth of a bar's return (1e-4 .. 1e-2
relative). ``atol`` only covers values that should be zero and come out as rounding residue
(``x - mean(x)`` of a flat window); features here are scale-free, O(1e-4 .. 1e1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .bars import validate_bars
from .dataset import DatasetConfig, build_market_data
from .feature_builder import warmup_bars
from .labels import LabelConfig, make_labels
from .market_data import MarketData
from .splits import SplitConfig

#: Relative tolerance of the comparison (see the module docstring).
RTOL = 1e-9
#: Absolute tolerance of the comparison (see the module docstring).
ATOL = 1e-12
#: Number of random cut points when none are given.
DEFAULT_CUTS = 5

FeatureFn = Callable[[pd.DataFrame], pd.DataFrame]


class LookaheadError(RuntimeError):
    """A look-ahead that is not one column's values, e.g. a dataset scaler that saw rows past the train split."""


@dataclass(frozen=True)
class LookaheadFinding:
    """A column whose values before a cut changed when the bars from the cut on were removed.

    :param column: the column (feature name; ``obs:<part>`` for an env observation part).
    :param cut: rows kept (``bars.iloc[:cut]``), counted in this symbol's bars.
    :param first_bad_row: the first row (``< cut``) whose value changed.
    :param first_bad_timestamp: that row's timestamp (None when the index holds no timestamps).
    :param full_value: the value there computed on all bars.
    :param truncated_value: the value there computed on the bars cut at ``cut``.
    :param bad_rows: how many rows before the cut changed.
    :param symbol: the symbol ("" when not known).
    :param check: which check found it: ``"features"``, ``"labels"``, ``"dataset"`` or ``"env"``.
    """

    column: str
    cut: int
    first_bad_row: int
    first_bad_timestamp: pd.Timestamp | None
    full_value: Any
    truncated_value: Any
    bad_rows: int = 1
    symbol: str = ""
    check: str = "features"

    @property
    def reach(self) -> int:
        """Bars before the cut that the removal reached back to: at least how far the column looks ahead."""
        return self.cut - self.first_bad_row

    def describe(self) -> str:
        """One line: what changed, where, and by how much."""
        where = f"{self.symbol} " if self.symbol else ""
        stamp = f" ({self.first_bad_timestamp})" if self.first_bad_timestamp is not None else ""
        return (
            f"{self.check}: {where}{self.column!r} changes at row {self.first_bad_row}{stamp} when the bars from "
            f"row {self.cut} on are removed ({self.full_value!r} -> {self.truncated_value!r}; "
            f"{self.bad_rows} row(s) before the cut changed)"
        )


@dataclass
class EnvLookaheadResult:
    """What :func:`find_env_lookahead` compared and found.

    :param findings: columns (scaled features, observation parts) that changed before a cut.
    :param cut_timestamps: the cut instants; bars at or after one were removed.
    :param observations_compared: env observations compared (one per symbol, split and bar before a cut).
    :param label_changes: cuts at which the dataset's labels changed before the cut (expected: all of
        them, labels look forward; see :func:`label_lookahead`).
    :param observation_size: values in one observation.
    :param validation_start: the explicit split date used so that the scaler is fit on rows before every cut.
    """

    findings: list[LookaheadFinding] = field(default_factory=list)
    cut_timestamps: list[pd.Timestamp] = field(default_factory=list)
    observations_compared: int = 0
    label_changes: int = 0
    observation_size: int = 0
    validation_start: pd.Timestamp | None = None


# ----------------------------------------------------------------------------------------------------
# Cut points and the comparison


def choose_cuts(n_rows: int, cuts: int | Sequence[int] = DEFAULT_CUTS, seed: int = 0, first: int = 1) -> list[int]:
    """Cut points: ``cuts`` distinct random rows in ``[first, n_rows - 1]`` (seeded), or the given rows checked.

    A cut ``c`` keeps rows ``0..c-1``; ``c <= n_rows - 1`` removes at least the last bar.

    :param n_rows: rows of the frame to cut.
    :param cuts: how many random cuts, or an explicit sequence of cut rows.
    :param seed: seed of the draw.
    :param first: the smallest allowed cut (e.g. past the features' warm-up).
    :return: sorted cut rows.
    """
    first = max(int(first), 1)
    if n_rows - 1 < first:
        raise ValueError(
            f"the bars have {n_rows} rows; cuts must lie in [{first}, {n_rows - 1}] (after the warm-up, before "
            f"the last bar): pass more bars"
        )
    if not isinstance(cuts, (int, np.integer)) or isinstance(cuts, (bool, np.bool_)):
        chosen = sorted({int(c) for c in cuts})
        bad = [c for c in chosen if not first <= c <= n_rows - 1]
        if bad or not chosen:
            raise ValueError(f"cuts {bad or list(cuts)} must be rows in [{first}, {n_rows - 1}]")
        return chosen
    if cuts < 1:
        raise ValueError(f"cuts={cuts} must be at least 1")
    rng = np.random.default_rng(seed)
    count = min(int(cuts), n_rows - first)
    return sorted(int(c) for c in rng.choice(np.arange(first, n_rows), size=count, replace=False))


def _column_values(column: pd.Series | np.ndarray) -> tuple[np.ndarray, bool]:
    """The values as float64 when numeric (bools included), else as objects; and whether numeric."""
    values = np.asarray(column)
    if values.dtype.kind in "biuf":
        return values.astype(np.float64), True
    return values.astype(object), False


def _changed(full: np.ndarray, cut: np.ndarray, numeric: bool, rtol: float, atol: float) -> np.ndarray:
    """Boolean mask of entries that differ (NaN equals NaN; numbers within the tolerance are equal)."""
    if numeric:
        return ~np.isclose(cut, full, rtol=rtol, atol=atol, equal_nan=True)
    a, b = pd.Series(full, dtype=object), pd.Series(cut, dtype=object)
    return ~((a == b) | (a.isna() & b.isna())).to_numpy(bool)


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _compare_block(
    full: np.ndarray,
    truncated: np.ndarray,
    names: Sequence[str],
    index: pd.Index,
    cut: int,
    symbol: str,
    check: str,
    rtol: float,
    atol: float,
) -> list[LookaheadFinding]:
    """Findings of a numeric block (rows ``0..cut-1``, columns): one per column with a changed entry."""
    bad = _changed(full, truncated, True, rtol, atol)
    findings = []
    for k in np.flatnonzero(bad.any(axis=0)):
        hits = np.flatnonzero(bad[:, k])
        first = int(hits[0])
        findings.append(
            LookaheadFinding(
                column=str(names[k]), cut=cut, first_bad_row=first, first_bad_timestamp=_stamp(index, first),
                full_value=_scalar(full[first, k]), truncated_value=_scalar(truncated[first, k]),
                bad_rows=len(hits), symbol=symbol, check=check,
            )
        )
    return findings


def _stamp(index: pd.Index, row: int) -> pd.Timestamp | None:
    value = index[row] if 0 <= row < len(index) else None
    return value if isinstance(value, pd.Timestamp) else None


def _as_frame(result: Any, what: str) -> pd.DataFrame:
    if isinstance(result, pd.Series):
        return result.to_frame(result.name if result.name is not None else "value")
    if not isinstance(result, pd.DataFrame):
        raise ValueError(f"{what} returned {type(result).__name__}; a feature function must return a DataFrame")
    return result


# ----------------------------------------------------------------------------------------------------
# Feature functions


def find_lookahead(
    feature_fn: FeatureFn,
    bars: pd.DataFrame,
    cuts: int | Sequence[int] = DEFAULT_CUTS,
    seed: int = 0,
    *,
    warmup: int | None = None,
    rtol: float = RTOL,
    atol: float = ATOL,
    symbol: str = "",
    check: str = "features",
) -> list[LookaheadFinding]:
    """Columns of ``feature_fn(bars)`` whose values before a cut change when the bars from the cut on are removed.

    For each cut ``c`` compares ``feature_fn(bars)`` on rows ``< c`` with ``feature_fn(bars.iloc[:c])``
    (NaN equals NaN, numbers within ``rtol``/``atol``; other dtypes must be equal).

    :param feature_fn: bars DataFrame in, DataFrame (or Series) on the same index out; it gets copies.
    :param bars: one symbol's bars (any frame ``feature_fn`` accepts), in time order.
    :param cuts: how many random cut points, or the cut rows themselves.
    :param seed: seed of the cut points.
    :param warmup: no cut before ``warmup + 1`` rows; None: :func:`features.warmup_bars` (the project's).
    :param rtol: relative tolerance (see the module docstring).
    :param atol: absolute tolerance.
    :param symbol: the symbol, for the findings and messages.
    :param check: the name of the check recorded in the findings.
    :return: one finding per changed column and cut, by column then cut; empty when causal.
    :raises ValueError: when ``feature_fn`` breaks its contract (not a DataFrame, another index, columns
        that come and go with the cut), naming the cut.
    """
    name = getattr(feature_fn, "__name__", type(feature_fn).__name__)
    what = f"{name}(bars)" + (f" of {symbol}" if symbol else "")
    full = _as_frame(feature_fn(bars.copy()), what)
    if len(full) != len(bars) or not full.index.equals(bars.index):
        raise ValueError(
            f"{what} returned {len(full)} rows on another index than the bars' {len(bars)}; a feature function "
            f"must return one row per bar on the same index"
        )
    warmup = warmup_bars() if warmup is None else int(warmup)
    points = choose_cuts(len(bars), cuts, seed, first=warmup + 1)
    columns = list(full.columns)
    prepared = {c: _column_values(full[c]) for c in columns}
    by_column: dict[str, list[LookaheadFinding]] = {str(c): [] for c in columns}
    for cut in points:
        part = _as_frame(feature_fn(bars.iloc[:cut].copy()), f"{name}(bars.iloc[:{cut}])")
        if len(part) != cut or not part.index.equals(bars.index[:cut]):
            raise ValueError(
                f"{name}(bars.iloc[:{cut}]){' of ' + symbol if symbol else ''} returned {len(part)} rows on another "
                f"index than the {cut} bars it was given"
            )
        if list(part.columns) != columns:
            gone = [str(c) for c in columns if c not in part.columns]
            new = [str(c) for c in part.columns if c not in columns]
            raise ValueError(
                f"{name}(bars.iloc[:{cut}]){' of ' + symbol if symbol else ''} returned other columns than on all "
                f"bars (missing {gone}, extra {new}); columns that depend on how many bars there are look ahead"
            )
        for column in columns:
            values, numeric = prepared[column]
            cut_values, cut_numeric = _column_values(part[column])
            numeric = numeric and cut_numeric
            head = values[:cut] if numeric else values[:cut].astype(object)
            cut_values = cut_values if numeric else cut_values.astype(object)
            bad = np.flatnonzero(_changed(head, cut_values, numeric, rtol, atol))
            if len(bad):
                row = int(bad[0])
                by_column[str(column)].append(
                    LookaheadFinding(
                        column=str(column), cut=cut, first_bad_row=row, first_bad_timestamp=_stamp(bars.index, row),
                        full_value=_scalar(head[row]), truncated_value=_scalar(cut_values[row]),
                        bad_rows=len(bad), symbol=symbol, check=check,
                    )
                )
    return [finding for column in by_column.values() for finding in column]


# ----------------------------------------------------------------------------------------------------
# Labels


def label_guard(features: pd.DataFrame, labels: pd.Series) -> list[str]:
    """Problems that would let the label into the observations (empty when none).

    Checks that no column is named like the label (its name contains ``label``, or equals
    ``labels.name``) and that no column is a function of the label: one value on every labelled-1 row
    and another on every labelled-0 row (rows where the label or the value is NaN are left out; both
    classes must be present, twice each, to tell). A column merely correlated with the label is not
    flagged here; if it was derived from the label it looks forward and :func:`find_lookahead` flags it.

    :param features: the feature frame (or scaled observations as a frame) of one symbol.
    :param labels: that symbol's labels on the same rows (1.0, 0.0 or NaN), e.g. :func:`features.make_labels`.
    """
    problems = []
    label_name = str(labels.name).lower() if labels.name is not None else "label"
    for column in features.columns:
        name = str(column).lower()
        if "label" in name or name == label_name:
            problems.append(f"column {str(column)!r} is named like the label (labels look forward; never observe them)")
    y = np.asarray(labels, dtype=np.float64)
    if len(y) != len(features):
        raise ValueError(f"labels has {len(y)} rows for {len(features)} feature rows")
    for column in features.columns:
        values, numeric = _column_values(features[column])
        if not numeric:
            continue
        keep = np.isfinite(y) & np.isfinite(values)
        ones, zeros = values[keep & (y == 1.0)], values[keep & (y == 0.0)]
        if len(ones) < 2 or len(zeros) < 2:
            continue
        if np.ptp(ones) == 0 and np.ptp(zeros) == 0 and ones[0] != zeros[0]:
            problems.append(
                f"column {str(column)!r} is a function of the label: {float(ones[0])!r} on every row labelled 1, "
                f"{float(zeros[0])!r} on every row labelled 0"
            )
    return problems


def label_lookahead(
    bars: pd.DataFrame,
    labels: LabelConfig | None = None,
    cuts: int | Sequence[int] = DEFAULT_CUTS,
    seed: int = 0,
    *,
    warmup: int | None = None,
    symbol: str = "",
) -> list[LookaheadFinding]:
    """The truncation check run on the labels themselves: it must flag them (they look ``horizon`` bars ahead).

    A self-test of the comparison on a column known to look forward: with the same cuts as the feature
    check, every cut should give a finding whose first changed row is ``cut - horizon`` (the labels of
    the last ``horizon`` bars before the cut lose their full horizon and become NaN).

    :param bars: one symbol's bars.
    :param labels: the label definition; None uses the defaults.
    :param cuts: the cuts, as for :func:`find_lookahead`.
    :param seed: seed of the cut points.
    :param warmup: as for :func:`find_lookahead`.
    :param symbol: the symbol, for the findings.
    """
    config = labels or LabelConfig()

    def labels_fn(frame: pd.DataFrame) -> pd.DataFrame:
        return make_labels(frame, config.profit, config.stop, config.horizon).to_frame()

    return find_lookahead(labels_fn, bars, cuts, seed, warmup=warmup, symbol=symbol, check="labels")


# ----------------------------------------------------------------------------------------------------
# Env observations


def _union_timestamps(frames: Mapping[str, pd.DataFrame]) -> np.ndarray:
    return np.unique(np.concatenate([frame.index.asi8 for frame in frames.values()]))


def _action_levels(n_rows: int, seed: int) -> np.ndarray:
    """Per-bar levels in [0, 1), held for a random number of bars (seeded): positions open, held and close."""
    rng = np.random.default_rng(seed)
    holds = rng.integers(1, 15, size=n_rows)
    levels = rng.random(n_rows)
    out = np.empty(n_rows)
    row = 0
    for hold, level in zip(holds, levels):
        out[row : row + hold] = level
        row += hold
        if row >= n_rows:
            break
    return out


def _rollout(data: MarketData, symbol: str, split: str, levels: np.ndarray, settings: Mapping[str, Any],
             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Symbol rows and observations of one episode from the split's first bar to its last (fixed actions)."""
    import gymnasium as gym

    from envs import ENV_ID

    env = gym.make(ENV_ID, data=data, symbol=symbol, split=split, **settings)
    offset = int(data.offsets[data.symbol_index(symbol)])
    space = env.action_space

    def action(row: int) -> Any:
        level = levels[row - offset]
        if isinstance(space, gym.spaces.Discrete):
            return int(space.start + int(level * space.n))
        return np.asarray(space.low + level * (space.high - space.low), dtype=space.dtype)

    observation, info = env.reset(seed=seed)
    rows, observations = [info["row"]], [observation]
    done = False
    while not done:
        observation, _, terminated, truncated, info = env.step(action(info["row"]))
        rows.append(info["row"])
        observations.append(observation)
        done = terminated or truncated
    env.close()
    return np.asarray(rows, dtype=np.int64) - offset, np.asarray(observations)


def _episode_fits(data: MarketData, symbol: str, split: str, window: int) -> bool:
    """Whether the env has at least two bars of ``symbol`` in ``split`` (what :class:`envs.TradingCore` needs)."""
    lo, hi = data.split_range(split, symbol)
    lo = max(lo, int(data.offsets[data.symbol_index(symbol)]) + data.warmup + window - 1)
    return hi - lo >= 2


def _observation_names(data: MarketData) -> list[str]:
    """One name per feature (any of its window positions), per position-state field, and the asset id."""
    from envs import STATE_FIELDS

    return [f"obs:{n}" for n in data.feature_names] + [f"obs:{n}" for n in STATE_FIELDS] + ["obs:asset_id"]


def _observation_findings(
    full: tuple[np.ndarray, np.ndarray],
    truncated: tuple[np.ndarray, np.ndarray],
    names: list[str],
    n_features: int,
    window: int,
    index: pd.Index,
    cut: int,
    symbol: str,
    rtol: float,
    atol: float,
) -> tuple[list[LookaheadFinding], int]:
    """Findings of one symbol/split's observations at the bars both episodes reached before the cut."""
    full_rows, full_obs = full
    cut_rows, cut_obs = truncated
    common, full_at, cut_at = np.intersect1d(full_rows[full_rows < cut], cut_rows, return_indices=True)
    if not len(common):
        return [], 0
    a, b = full_obs[full_at].astype(np.float64), cut_obs[cut_at].astype(np.float64)
    nw = window * n_features
    bad = _changed(a, b, True, rtol, atol)
    # One column per feature (any of its window positions), per state field and for the asset id.
    feature_bad = bad[:, :nw].reshape(len(common), window, n_features)
    per_column = np.concatenate([feature_bad.any(axis=1), bad[:, nw:]], axis=1)
    findings = []
    for k in np.flatnonzero(per_column.any(axis=0)):
        hits = np.flatnonzero(per_column[:, k])
        first = int(hits[0])
        if k < n_features:
            position = int(np.flatnonzero(feature_bad[first, :, k])[0])
            flat = position * n_features + k
        else:
            flat = nw + (k - n_features)
        row = int(common[first])
        findings.append(
            LookaheadFinding(
                column=names[k], cut=cut, first_bad_row=row, first_bad_timestamp=_stamp(index, row),
                full_value=float(a[first, flat]), truncated_value=float(b[first, flat]),
                bad_rows=len(hits), symbol=symbol, check="env",
            )
        )
    return findings, len(common)


def find_env_lookahead(
    bars: Mapping[str, pd.DataFrame],
    config: DatasetConfig | None = None,
    cuts: int | Sequence[int] = DEFAULT_CUTS,
    seed: int = 0,
    *,
    env_settings: Mapping[str, Any] | None = None,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> EnvLookaheadResult:
    """Check that ``TradingEnv-v0``'s observation at bar t does not change when the bars after t are removed.

    Builds a :class:`~features.MarketData` from all bars, and for each cut instant one from the bars
    before it (same :class:`DatasetConfig`, the full build's asset ids). The split is set by date: the
    train split ends ``window`` bars after the first usable bar (on the union timeline), before every
    cut, and the rest is the test split, so both builds fit their scaler on the same rows; a scaler that
    differs anyway raises :class:`LookaheadError`. Compared, for every symbol and bar before the cut:

    - the scaled feature matrix (check ``"dataset"``, one column per feature);
    - the observations ``gym.make("TradingEnv-v0", data=...)`` returns over one episode per symbol and
      split, from the split's first bar to its last, under the same seeded actions on both builds
      (positions open and close, so the position-state part changes over the episode): check
      ``"env"``, columns ``obs:<feature>`` (any of its window positions), ``obs:<state field>``,
      ``obs:asset_id``.

    Cut instants are random (seeded) rows of the union timeline after the train split and before its
    last bar; a symbol with too few bars before a cut is left out of that cut.

    :param bars: ``{symbol: bars}``.
    :param config: dataset settings (features, labels, window, purge gap, scaler); its split is replaced
        as described. None uses the defaults.
    :param cuts: how many random cut instants, or their rows on the union timeline.
    :param seed: seed of the cuts and of the actions.
    :param env_settings: extra :class:`envs.EnvConfig` settings (not ``symbol``/``split``); the episode
        runs from the split's first bar (``random_start=False``) without early end (``min_equity=0``).
    :param rtol: relative tolerance.
    :param atol: absolute tolerance.
    """
    config = config or DatasetConfig()
    if not bars:
        raise ValueError("bars is empty: pass at least one {symbol: DataFrame}")
    frames = {symbol: validate_bars(frame, symbol) for symbol, frame in bars.items()}
    union = _union_timestamps(frames)
    warmup = warmup_bars(config.features)
    window = int(config.window)
    gap = config.split.purge_gap if config.split.purge_gap is not None else config.labels.horizon
    first_usable = warmup + window - 1
    boundary = first_usable + gap + window  # first row of the test split on the union timeline
    if boundary + 2 > len(union) - 1:
        raise ValueError(
            f"the bars span {len(union)} timestamps; the env check needs more than {boundary + 3} (warm-up {warmup}, "
            f"window {window}, purge gap {gap}, then bars to cut)"
        )
    validation_start = pd.Timestamp(int(union[boundary]), tz="UTC")
    split = SplitConfig(purge_gap=config.split.purge_gap, validation_start=validation_start.isoformat(),
                        test_start=validation_start.isoformat())
    check_config = dataclasses.replace(config, split=split, asset_map_path=None, output_dir=None)
    settings = {"random_start": False, "min_equity": 0.0, **dict(env_settings or {})}
    for key in ("symbol", "split", "data"):
        if key in settings:
            raise ValueError(f"env_settings[{key!r}] is set by the check; leave it out")
    if settings.get("window") not in (None, window):
        raise ValueError(f"env_settings['window']={settings['window']} differs from the dataset window {window}")

    full = build_market_data(frames, check_config)
    asset_map = full.asset_map
    names = _observation_names(full)
    levels = {s: _action_levels(len(frame), seed + k) for k, (s, frame) in enumerate(frames.items())}
    episodes = {
        (s, part): _rollout(full, s, part, levels[s], settings, seed)
        for s in frames
        for part in ("train", "test")
        if _episode_fits(full, s, part, window)
    }
    from envs import ObservationLayout

    result = EnvLookaheadResult(validation_start=validation_start,
                                observation_size=ObservationLayout(window, full.n_features).size)
    for cut_row in choose_cuts(len(union), cuts, seed, first=boundary + 2):
        stamp = pd.Timestamp(int(union[cut_row]), tz="UTC")
        result.cut_timestamps.append(stamp)
        kept = {s: f[f.index < stamp] for s, f in frames.items()}
        kept = {s: f for s, f in kept.items() if len(f) > first_usable + 1}
        if not kept:
            continue
        part_data = build_market_data(kept, check_config, asset_map=asset_map)
        if not part_data.scaler.equals(full.scaler):
            raise LookaheadError(
                f"the dataset scaler changed when the bars from {stamp} on were removed, although its train split "
                f"ends before {validation_start}, before them: the scaler is fit on rows past the train split"
            )
        if part_data.feature_names != full.feature_names:
            raise LookaheadError(f"the feature columns changed when the bars from {stamp} on were removed")
        labels_changed = False
        for s in kept:
            cut = len(kept[s])
            rows_full, rows_cut = full.symbol_rows(s), part_data.symbol_rows(s)
            index = frames[s].index
            result.findings += _compare_block(
                full.features[rows_full][:cut], part_data.features[rows_cut], full.feature_names, index, cut, s,
                "dataset", rtol, atol,
            )
            labels_changed |= bool(_changed(full.labels[rows_full][:cut].astype(np.float64),
                                            part_data.labels[rows_cut].astype(np.float64), True, rtol, atol).any())
            for part in ("train", "test"):
                if (s, part) not in episodes or not _episode_fits(part_data, s, part, window):
                    continue
                found, compared = _observation_findings(
                    episodes[(s, part)], _rollout(part_data, s, part, levels[s], settings, seed), names,
                    full.n_features, window, index, cut, s, rtol, atol,
                )
                result.findings += found
                result.observations_compared += compared
        result.label_changes += int(labels_changed)
    return result
