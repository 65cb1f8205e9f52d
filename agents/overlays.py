"""Regime-aware risk overlays: any single-asset policy of this package, sent to cash when a regime
filter says "risk off" or when its own drawdown brake is on.

A filter is fitted on the TRAIN rows of a :class:`features.MarketData` and computed causally: its value
at bar t uses closes up to t only (tests/test_overlays.py checks it by truncation). The filters, each
computed on a reference series (``index_symbol``, e.g. SPY, or each traded symbol's own closes):

- ``index_trend``: risk on while the close is above its ``window``-bar simple moving average (nothing is
  fitted);
- ``volatility``: risk on while the ``window``-bar realised volatility (standard deviation of log
  returns) is under the ``quantile`` of its values on the train rows;
- ``hmm``: a 2-state Gaussian HMM (hmmlearn, seeded) fitted on the train log returns; risk on while the
  FILTERED probability P(calm state | returns up to t) >= 0.5. The forward recursion only, never the
  smoothed posteriors (``predict_proba``) nor the Viterbi path, which look ahead. The calm ("risk on")
  state is the one with the LOWER variance: variances are estimated far more precisely than means on
  returns, and a crash regime is a high-variance one;
- ``drawdown``: a brake on the overlay's own paper equity (below).

A bar whose filter is undefined (fewer than ``window`` bars of history, an index with no bar yet) is
risk off.

The drawdown brake keeps two frictionless paper equity curves, close to close, of target exposures
decided at each bar (the next bar's open fill and the costs are left out: the brake's rule, not a
reported number): the overlay's own actions and the wrapped policy's ("shadow"). It goes to cash when
the overlay's curve is more than ``brake_threshold`` below its peak, and re-arms at the first bar
where the shadow curve makes a new high (above every earlier value) or ``window`` bars after it
engaged, whichever comes first; on re-arming, the overlay's peak restarts at its current equity.

:class:`OverlayPolicy` finds the bar an observation shows by its feature window (the overlay's data,
rebuilt with the wrapped policy's own preprocessing when it has one): an observation from other data
is an error, never a guess. The wrapped policy is asked on every bar, risk on or off, so its own
state (a random generator, a counter) advances as without the overlay; policies that read the
position from the observation see the account as it is (flat while the overlay holds cash).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from scipy.stats import norm

from envs.layout import STATE_FIELDS
from features.market_data import MarketData

KINDS: tuple[str, ...] = ("index_trend", "volatility", "hmm", "drawdown")
HMM_TOL = 1e-2  # hmmlearn's default: EM stops when the log-likelihood gains less than this


class OverlayError(ValueError):
    """A bad overlay setting or an overlay that cannot be fitted; the message names the field or symbol."""


@dataclass(frozen=True)
class OverlayConfig:
    """What defines an overlay.

    :param kind: one of :data:`KINDS`.
    :param window: bars of the moving average / the realised volatility; for ``drawdown``, the most bars
        the brake stays on; for ``hmm``, unused.
    :param quantile: ``volatility``: the train quantile under which the market is risk on.
    :param index_symbol: the symbol whose closes the filter reads (a symbol of the data); None: each
        traded symbol's own.
    :param brake_threshold: ``drawdown``: the paper drawdown (a fraction) above which the brake is on.
    :param seed: seed of the HMM's initialisation.
    :param hmm_iterations: most EM iterations; not converging within them is an error.
    """

    kind: str
    window: int = 50
    quantile: float = 0.8
    index_symbol: str | None = None
    brake_threshold: float = 0.2
    seed: int = 0
    hmm_iterations: int = 200

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise OverlayError(f"OverlayConfig.kind={self.kind!r} is not an overlay; expected one of {list(KINDS)}")
        if not _is_integer(self.window) or self.window < 2:
            raise OverlayError(f"OverlayConfig.window={self.window!r} must be an integer >= 2 bars")
        if not _is_real(self.quantile) or not 0.0 < self.quantile < 1.0:
            raise OverlayError(f"OverlayConfig.quantile={self.quantile!r} must be in (0, 1)")
        if not _is_real(self.brake_threshold) or not 0.0 < self.brake_threshold < 1.0:
            raise OverlayError(f"OverlayConfig.brake_threshold={self.brake_threshold!r} must be a drawdown in (0, 1)")
        if not _is_integer(self.hmm_iterations) or self.hmm_iterations < 1:
            raise OverlayError(f"OverlayConfig.hmm_iterations={self.hmm_iterations!r} must be an integer >= 1")
        if not _is_integer(self.seed):
            raise OverlayError(f"OverlayConfig.seed={self.seed!r} must be an integer")
        if self.index_symbol is not None and not isinstance(self.index_symbol, str):
            raise OverlayError(f"OverlayConfig.index_symbol={self.index_symbol!r} must be a symbol name or None")

    def describe(self) -> str:
        on = f" of {self.index_symbol}" if self.index_symbol else ""
        if self.kind == "index_trend":
            return f"close{on} > SMA{self.window}"
        if self.kind == "volatility":
            return f"vol{self.window}{on} < train q{self.quantile:g}"
        if self.kind == "hmm":
            return f"HMM{on} P(calm) >= 0.5"
        return f"drawdown brake {self.brake_threshold:.0%}, re-arm <= {self.window} bars"


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)


# ----- causal series -------------------------------------------------------------------------------
def log_returns(close: np.ndarray) -> np.ndarray:
    """``log(c_t / c_{t-1})``; NaN at the first bar.

    :param close: one symbol's closes.
    """
    close = np.asarray(close, dtype=np.float64)
    out = np.full(len(close), np.nan)
    out[1:] = np.log(close[1:] / close[:-1])
    return out


def above_moving_average(close: np.ndarray, window: int) -> np.ndarray:
    """1.0 where the close is above its ``window``-bar simple moving average (closes up to t), 0.0 where
    not, NaN before ``window`` bars exist.

    :param close: one symbol's closes.
    :param window: bars of the average.
    """
    close = np.asarray(close, dtype=np.float64)
    average = pd.Series(close).rolling(window, min_periods=window).mean().to_numpy()
    return np.where(np.isnan(average), np.nan, (close > average).astype(np.float64))


def realised_volatility(close: np.ndarray, window: int) -> np.ndarray:
    """Standard deviation (ddof 1) of the last ``window`` log returns up to t; NaN before they exist.

    :param close: one symbol's closes.
    :param window: returns in the estimate.
    """
    return pd.Series(log_returns(close)).rolling(window, min_periods=window).std().to_numpy()


def forward_probabilities(model: Any, x: np.ndarray) -> np.ndarray:
    """P(state_t | x_1..x_t) of a fitted 1-D diagonal ``GaussianHMM``: the forward (filtering)
    recursion, normalised each bar, so the row of t uses observations up to t only.

    :param model: a fitted ``hmmlearn.hmm.GaussianHMM`` with one feature.
    :param x: ``(T,)`` observations.
    :return: ``(T, n_states)`` probabilities.
    """
    means = np.asarray(model.means_, dtype=np.float64)[:, 0]
    sds = np.sqrt(np.asarray(model.covars_, dtype=np.float64)[:, 0, 0])
    log_emission = norm.logpdf(np.asarray(x, dtype=np.float64)[:, None], means[None, :], sds[None, :])
    # each bar's emissions rescaled by their largest (a common factor the normalisation removes)
    emission = np.exp(log_emission - log_emission.max(axis=1, keepdims=True))
    transition = np.asarray(model.transmat_, dtype=np.float64)
    out = np.empty_like(log_emission)
    alpha = np.asarray(model.startprob_, dtype=np.float64)
    for t in range(len(out)):
        predicted = alpha @ transition if t else alpha
        alpha = predicted * emission[t]
        total = alpha.sum()
        if not total > 0.0:  # every likely state judged impossible: the same step in log space
            with np.errstate(divide="ignore"):
                log_alpha = np.log(predicted) + log_emission[t]
            alpha = np.exp(log_alpha - logsumexp(log_alpha))
            total = alpha.sum()
        alpha = alpha / total
        out[t] = alpha
    return out


def fit_hmm(train_returns: np.ndarray, config: OverlayConfig, symbol: str) -> tuple[Any, float]:
    """A 2-state Gaussian HMM of ``train_returns`` scaled by their standard deviation (so hmmlearn's
    variance floor is small against them); the model and the scale.

    :param train_returns: log returns of the train rows (finite).
    :param config: the overlay settings (seed, iterations).
    :param symbol: named in errors.
    """
    from hmmlearn.hmm import GaussianHMM
    from threadpoolctl import threadpool_limits

    train_returns = np.asarray(train_returns, dtype=np.float64)
    scale = float(np.std(train_returns, ddof=1)) if len(train_returns) > 1 else 0.0
    if len(train_returns) < 20 or not scale > 0.0:
        raise OverlayError(f"HMM overlay: {symbol} has {len(train_returns)} train log returns "
                           f"(std {scale:g}); it needs at least 20 that vary")
    model = GaussianHMM(n_components=2, covariance_type="diag", n_iter=int(config.hmm_iterations), tol=HMM_TOL,
                        random_state=int(config.seed))
    with threadpool_limits(limits=1):  # k-means' OpenMP initialisation: 10x faster on shared cores, one summation order
        model.fit((train_returns / scale)[:, None])
    history = list(model.monitor_.history)
    converged = len(history) >= 2 and history[-1] - history[-2] < HMM_TOL
    finite = all(np.isfinite(a).all() for a in (model.means_, model.covars_, model.transmat_, model.startprob_))
    if not (converged and finite):
        raise OverlayError(f"HMM overlay: the 2-state HMM of {symbol}'s train log returns did not converge in "
                           f"{config.hmm_iterations} EM iterations (seed {config.seed})")
    return model, scale


# ----- the fitted overlay ---------------------------------------------------------------------------
@dataclass
class RegimeOverlay:
    """A fitted overlay: which bars of ``data`` are risk on, the fitted values, and the brake setting.

    :param config: the settings.
    :param data: the data it was fitted on (its closes; rows are its global rows).
    :param risk_on: bool ``(N,)`` per global row of ``data`` (all True for ``drawdown``).
    :param fitted: per reference symbol, what was fitted on its train rows (thresholds, HMM parameters).
    :param value: float ``(N,)`` the filter's value per row (SMA side, volatility, P(calm)); NaN where undefined.
    """

    config: OverlayConfig
    data: MarketData
    risk_on: np.ndarray
    fitted: dict[str, dict[str, Any]] = field(default_factory=dict)
    value: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def brake(self) -> bool:
        return self.config.kind == "drawdown"

    def describe(self) -> str:
        return self.config.describe()


def fit_overlay(config: OverlayConfig, data: MarketData) -> RegimeOverlay:
    """Fit ``config`` on the train rows of ``data`` and compute its causal risk-on flag for every row.

    :param config: the overlay settings.
    :param data: the dataset (every symbol the overlay will trade, and the index symbol if one).
    """
    if config.index_symbol is not None and config.index_symbol not in data.symbols:
        raise OverlayError(f"OverlayConfig.index_symbol={config.index_symbol!r} is not a symbol of the data; "
                           f"it has {list(data.symbols)}")
    n = len(data.timestamps)
    if config.kind == "drawdown":
        return RegimeOverlay(config, data, np.ones(n, dtype=bool), {}, np.full(n, np.nan))
    references = [config.index_symbol] if config.index_symbol else list(data.symbols)
    fitted, values = {}, {}
    for symbol in references:
        values[symbol], fitted[symbol] = _reference_values(config, data, symbol)
    value = np.full(n, np.nan)
    for symbol in data.symbols:
        rows = data.symbol_rows(symbol)
        reference = config.index_symbol or symbol
        value[rows] = _aligned(data, reference, values[reference], symbol)
    return RegimeOverlay(config, data, _risk_on(config, value, fitted, data), fitted, value)


def _reference_values(config: OverlayConfig, data: MarketData, symbol: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The filter's causal value on ``symbol``'s own rows and what was fitted on its train rows."""
    rows = data.symbol_rows(symbol)
    close = data.close[rows]
    lo, hi = (r - rows.start for r in data.split_range("train", symbol))
    if config.kind == "index_trend":
        return above_moving_average(close, config.window), {}
    if config.kind == "volatility":
        volatility = realised_volatility(close, config.window)
        train = volatility[lo:hi]
        train = train[np.isfinite(train)]
        if not len(train):
            raise OverlayError(f"volatility overlay: {symbol} has no train bar with a {config.window}-bar "
                               f"volatility (train rows {lo}..{hi})")
        return volatility, {"threshold": float(np.quantile(train, config.quantile)), "n_train": int(len(train))}
    returns = log_returns(close)
    train = returns[max(lo, 1):hi]
    model, scale = fit_hmm(train[np.isfinite(train)], config, symbol)
    calm = int(np.argmin(model.covars_[:, 0, 0]))
    probability = np.full(len(close), np.nan)
    if len(close) > 1:
        probability[1:] = forward_probabilities(model, returns[1:] / scale)[:, calm]
    return probability, {
        "scale": scale, "calm_state": calm, "means": (model.means_[:, 0] * scale).tolist(),
        "variances": (model.covars_[:, 0, 0] * scale**2).tolist(), "transmat": model.transmat_.tolist(),
        "startprob": model.startprob_.tolist(), "iterations": int(model.monitor_.iter),
    }


def _aligned(data: MarketData, reference: str, values: np.ndarray, symbol: str) -> np.ndarray:
    """``values`` of ``reference``'s rows at each bar of ``symbol``: the latest reference bar stamped at
    or before it (NaN where none), so a traded bar reads no later index bar."""
    if reference == symbol:
        return values
    stamps = data.timestamps[data.symbol_rows(reference)]
    at = np.searchsorted(stamps, data.timestamps[data.symbol_rows(symbol)], side="right") - 1
    return np.where(at >= 0, values[np.maximum(at, 0)], np.nan)


def _risk_on(config: OverlayConfig, value: np.ndarray, fitted: dict[str, dict[str, Any]],
             data: MarketData) -> np.ndarray:
    defined = np.isfinite(value)
    if config.kind == "index_trend":
        return defined & (np.nan_to_num(value) > 0.5)
    if config.kind == "hmm":
        return defined & (np.nan_to_num(value) >= 0.5)
    threshold = np.full(len(value), np.nan)
    for symbol in data.symbols:
        threshold[data.symbol_rows(symbol)] = fitted[config.index_symbol or symbol]["threshold"]
    return defined & (np.nan_to_num(value, nan=np.inf) < threshold)


# ----- the policy ------------------------------------------------------------------------------------
class _BarLocator:
    """Which global row of the observed data an observation's feature window ends at (exact float32
    equality of the window, restricted to the observation's asset id)."""

    def __init__(self, data: MarketData) -> None:
        self.features = np.ascontiguousarray(data.features, dtype=np.float32)
        self.asset = np.asarray(data.row_asset_ids, dtype=np.int64)
        self.symbol_start = np.repeat(np.asarray(data.offsets[:-1], dtype=np.int64), np.diff(data.offsets))
        self.rows_of: dict[bytes, list[int]] = {}
        for row, values in enumerate(self.features):
            self.rows_of.setdefault(values.tobytes(), []).append(row)

    def window_matches(self, row: int, window: np.ndarray, asset_id: int) -> bool:
        first = row - len(window) + 1
        return (self.asset[row] == asset_id and first >= self.symbol_start[row]
                and np.array_equal(self.features[first : row + 1], window))

    def candidates(self, window: np.ndarray, asset_id: int) -> list[int]:
        rows = self.rows_of.get(np.ascontiguousarray(window[-1], dtype=np.float32).tobytes(), [])
        return [row for row in rows if self.window_matches(row, window, asset_id)]

    def row(self, window: np.ndarray, asset_id: int, previous: int | None) -> int:
        """The row of one observation's ``(window, F)`` feature window; ``previous`` (this account's last
        row) is tried first: the next bar, or the same bar again."""
        if previous is not None:
            for row in (previous + 1, previous):
                if row < len(self.features) and self.window_matches(row, window, asset_id):
                    return row
        return self._one(self.candidates(window, asset_id), asset_id)

    def rows(self, windows: np.ndarray, asset_id: int) -> np.ndarray:
        """The rows of ``(T, window, F)`` windows of consecutive bars (the backtester's fast path)."""
        n = len(windows)
        found = [row for row in self.candidates(windows[0], asset_id)
                 if row + n <= len(self.features) and (self.asset[row : row + n] == asset_id).all()
                 and np.array_equal(self.features[row : row + n], windows[:, -1])]
        first = self._one(found, asset_id)
        return np.arange(first, first + n, dtype=np.int64)

    @staticmethod
    def _one(rows: list[int], asset_id: int) -> int:
        if not rows:
            raise OverlayError(f"overlay: an observation of asset id {asset_id} shows a bar that is not in the "
                               "overlay's data; fit the overlay on the data the policy runs on")
        if len(rows) > 1:
            raise OverlayError(f"overlay: an observation of asset id {asset_id} matches rows {rows[:5]} of the "
                               "overlay's data (the same feature window); its bar is ambiguous")
        return rows[0]


@dataclass
class _Brake:
    """The drawdown brake of one account (see the module docstring)."""

    threshold: float
    rearm_bars: int
    equity: float = 1.0
    peak: float = 1.0
    shadow: float = 1.0
    shadow_peak: float = 1.0
    engaged: bool = False
    shadow_high: float = math.nan
    since: int = 0

    def mark(self, price_ratio: float, exposure: float, shadow_exposure: float) -> None:
        """Both paper curves over one bar: the exposures decided at the last bar times its close-to-close move."""
        move = price_ratio - 1.0
        self.equity *= 1.0 + exposure * move
        self.shadow *= 1.0 + shadow_exposure * move

    def on(self) -> bool:
        """Whether the brake holds cash at this bar (after :meth:`mark`)."""
        self.peak = max(self.peak, self.equity)
        self.shadow_peak = max(self.shadow_peak, self.shadow)
        if self.engaged:
            self.since += 1
            if self.shadow > self.shadow_high or self.since >= self.rearm_bars:
                self.engaged, self.peak = False, self.equity
        elif 1.0 - self.equity / self.peak > self.threshold:
            self.engaged, self.since, self.shadow_high = True, 0, self.shadow_peak
        return self.engaged


@dataclass
class _Account:
    """What the overlay remembers of one account between bars."""

    brake: _Brake | None
    row: int | None = None
    off: bool = False
    exposure: float = 0.0
    shadow_exposure: float = 0.0


class OverlayPolicy:
    """``policy``, flat while ``overlay`` says risk off (or its drawdown brake is on).

    It answers the backtester's protocol like the wrapped policy: ``reset()``, ``act(observation)``,
    ``batch_actor(n)`` (the wrapped policy's own batch actor, else a copy per account) and, when the
    wrapped policy offers it, ``act_windows`` (the same numbers as the event path). It offers no
    ``act_path``: a policy that follows its own positions (the supervised threshold policy) would assume
    positions the overlay did not hold; the event path runs it instead.

    :param policy: any single-asset policy of this package.
    :param overlay: a fitted overlay (:func:`fit_overlay`) of the data the policy runs on.
    :param allow_short: the env's action space; None: read from the policy (``allow_short``, an agent's
        ``env_settings``, the supervised threshold policy's {flat, long}).
    :param action_mode: ``"discrete"`` or ``"continuous"``; None: read from the policy likewise.
    """

    def __init__(self, policy: Any, overlay: RegimeOverlay, *, allow_short: bool | None = None,
                 action_mode: str | None = None) -> None:
        self.policy = policy
        self.overlay = overlay
        self.allow_short, self.continuous = _action_space(policy, allow_short, action_mode)
        self.levels = None if self.continuous else np.array([-1.0, 0.0, 1.0] if self.allow_short else [0.0, 1.0])
        self.flat: Any = 0.0 if self.continuous else (1 if self.allow_short else 0)
        self.name = f"{getattr(policy, 'name', type(policy).__name__)}+{overlay.config.kind}"
        self.preprocessing = getattr(policy, "preprocessing", None)  # the backtester rebuilds the data with it
        if hasattr(policy, "env_settings"):
            self.env_settings = dict(policy.env_settings)
        self._locator: _BarLocator | None = None
        self._account = self.new_account()

    # ----- the protocol ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Reset the wrapped policy and the overlay's memory of the account (a new episode)."""
        self.policy.reset()
        self._account = self.new_account()

    def act(self, observation: np.ndarray) -> Any:
        """The wrapped policy's action for ``observation``, or flat where the overlay says risk off.

        :param observation: the env's flat observation (features window | state | asset id).
        """
        return self.decide(self._account, observation, self.policy.act(observation))

    def batch_actor(self, n: int) -> "_OverlayBatch":
        """The batch protocol of :func:`envs.backtest.backtest_many` for ``n`` accounts."""
        return _OverlayBatch(self, n)

    @property
    def act_windows(self) -> Any:
        """Every bar's action at once (the backtester's fast path), present only when the wrapped policy
        offers ``act_windows``: the wrapped actions, flat where risk off, the brake run over them."""
        inner = getattr(self.policy, "act_windows", None)
        return self._act_windows if callable(inner) else None

    def _act_windows(self, windows: np.ndarray, asset_ids: np.ndarray) -> np.ndarray:
        actions = np.asarray(self.policy.act_windows(windows, asset_ids))
        if not len(windows):
            return actions
        rows = self.locator.rows(np.asarray(windows), int(asset_ids[0]))
        off = ~self.overlay.risk_on[rows]
        if self.overlay.brake:
            account = self.new_account()
            for k, row in enumerate(rows.tolist()):
                off[k] = self._step(account, int(row), actions[k])
        return np.where(off, np.asarray(self.flat, dtype=actions.dtype), actions)

    # ----- one bar of one account -----------------------------------------------------------------
    @property
    def locator(self) -> _BarLocator:
        if self._locator is None:
            data = self.overlay.data
            self._locator = _BarLocator(self.preprocessing.apply(data) if self.preprocessing is not None else data)
        return self._locator

    def new_account(self) -> _Account:
        config = self.overlay.config
        return _Account(_Brake(float(config.brake_threshold), int(config.window)) if self.overlay.brake else None)

    def decide(self, account: _Account, observation: np.ndarray, inner_action: Any) -> Any:
        """The action of one account at the bar ``observation`` shows, given the wrapped policy's.

        :param account: the account's memory (:meth:`new_account`).
        :param observation: the env's flat observation.
        :param inner_action: the wrapped policy's action for it.
        """
        observation = np.asarray(observation, dtype=np.float32).reshape(-1)
        n_features = self.locator.features.shape[1]
        n_window_values = len(observation) - len(STATE_FIELDS) - 1  # the position state and asset id follow
        if n_window_values <= 0 or n_window_values % n_features:
            raise OverlayError(f"overlay: an observation of {len(observation)} values does not hold windows of "
                               f"the overlay's {n_features} features")
        window = observation[:n_window_values].reshape(-1, n_features)
        row = self.locator.row(window, int(round(float(observation[-1]))), account.row)
        if row == account.row:  # the same bar again (an account the batch has finished): no new bar
            return self.flat if account.off else inner_action
        if account.row is not None and row != account.row + 1:
            raise OverlayError(f"overlay: an account's observations jumped from row {account.row} to {row}; "
                               "call reset() at the start of each episode")
        return self.flat if self._step(account, row, inner_action) else inner_action

    def _step(self, account: _Account, row: int, inner_action: Any) -> bool:
        """Advance ``account`` to ``row`` (the next bar); whether the overlay holds cash there."""
        off = not bool(self.overlay.risk_on[row])
        brake = account.brake
        if brake is not None:
            if account.row is not None:
                close = self.overlay.data.close
                brake.mark(float(close[row] / close[account.row]), account.exposure, account.shadow_exposure)
            off = brake.on() or off
            account.shadow_exposure = self.exposure(inner_action)
            account.exposure = 0.0 if off else account.shadow_exposure
        account.row, account.off = row, off
        return off

    def exposure(self, action: Any) -> float:
        """The target exposure of one action (what the brake's paper curves hold).

        :param action: an action of the env's action space.
        """
        value = np.asarray(action, dtype=np.float64).reshape(-1)
        if value.size != 1 or not np.isfinite(value[0]):
            raise OverlayError(f"overlay: the wrapped policy's action {action!r} is not one finite number")
        if self.levels is None:
            return float(np.clip(value[0], -1.0 if self.allow_short else 0.0, 1.0))
        index = int(value[0])
        if index != value[0] or not 0 <= index < len(self.levels):
            raise OverlayError(f"overlay: the wrapped policy's action {action!r} is not in 0..{len(self.levels) - 1}")
        return float(self.levels[index])


class _OverlayBatch:
    """:class:`OverlayPolicy` for ``n`` accounts: the wrapped policy's batch actor (or a copy of it per
    account) and the overlay's memory per account."""

    def __init__(self, policy: OverlayPolicy, n: int) -> None:
        self.policy = policy
        make = getattr(policy.policy, "batch_actor", None)
        self.inner = make(n) if callable(make) else None
        self.copies = [] if self.inner is not None else \
            [policy.policy] if n == 1 else [copy.deepcopy(policy.policy) for _ in range(n)]
        self.accounts = [policy.new_account() for _ in range(n)]

    def reset(self) -> None:
        if self.inner is not None:
            self.inner.reset()
        else:
            for copied in self.copies:
                copied.reset()
        self.accounts = [self.policy.new_account() for _ in self.accounts]

    def act(self, observations: np.ndarray) -> list[Any]:
        if self.inner is not None:
            inner = self.inner.act(observations)
        else:
            inner = [copied.act(observations[i]) for i, copied in enumerate(self.copies)]
        return [self.policy.decide(account, observations[i], inner[i]) for i, account in enumerate(self.accounts)]


def _action_space(policy: Any, allow_short: bool | None, action_mode: str | None) -> tuple[bool, bool]:
    """(allow_short, continuous) of the env ``policy`` acts in: as given, else read from the policy."""
    settings = getattr(policy, "env_settings", None)
    if isinstance(settings, dict):
        allow_short = bool(settings.get("allow_short", False)) if allow_short is None else allow_short
        action_mode = settings.get("action_mode", "discrete") if action_mode is None else action_mode
    from .supervised_policy import SupervisedThresholdPolicy

    if isinstance(policy, SupervisedThresholdPolicy):
        allow_short = False if allow_short is None else allow_short
    if allow_short is None and isinstance(getattr(policy, "allow_short", None), bool):
        allow_short = policy.allow_short
    if allow_short is None:
        raise OverlayError(f"overlay: cannot tell the flat action of {type(policy).__name__}; pass allow_short= "
                           "(and action_mode= for a continuous policy)")
    action_mode = action_mode or "discrete"
    if action_mode not in ("discrete", "continuous"):
        raise OverlayError(f"overlay: action_mode={action_mode!r} must be 'discrete' or 'continuous'")
    return bool(allow_short), action_mode == "continuous"
