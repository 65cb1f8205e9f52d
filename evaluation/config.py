"""The benchmark's configuration (``configs/benchmark.yaml``): markets, folds, policies, budgets, costs.

Every key maps to a dataclass field and an unknown key is an error naming it. ``--quick`` applies
:meth:`BenchmarkConfig.quick`: 2 folds, 1 seed, small training budgets - the same code path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from configs.loader import ConfigError, config_to_dict, dataclass_from_dict
from features.dataset import DatasetConfig
from sim.engine import Costs

POLICY_KINDS: tuple[str, ...] = ("cash", "buy_and_hold", "random", "sma_crossover", "supervised", "ppo", "dqn",
                                  "allocation", "portfolio_agent", "ensemble", "agent_selector")
# kinds that allocate one account across a market's symbols (markets of 2 symbols or more); the others trade each
# symbol in its own account, and the market's return is their equal-capital sleeves
PORTFOLIO_KINDS: tuple[str, ...] = ("allocation", "portfolio_agent")
PORTFOLIO_ALGOS: tuple[str, ...] = ("ppo", "sac")
BASELINE_KINDS: tuple[str, ...] = ("cash", "buy_and_hold", "random", "sma_crossover")
# the options of a probability model's threshold policy (kinds supervised and ensemble): how thresholds are chosen
# on the fold's validation split (f1: the classifier's F1; the others: agents.threshold_choice, for money after the
# base costs) and how positions are sized (agents.supervised_policy.SIZINGS)
THRESHOLD_KINDS: tuple[str, ...] = ("supervised", "ensemble")
THRESHOLD_CHOICES: tuple[str, ...] = ("f1", "net_log_return", "t_stat")
SIZING_OPTIONS: dict[str, tuple[str, ...]] = {"all_in": (), "kelly": ("kelly_fraction", "max_fraction"),
                                              "vol_target": ("target_volatility", "volatility_window", "max_fraction")}
# the kinds a risk overlay (agents.overlays) may wrap: single-asset policies that can trade (not cash, not the
# portfolio kinds, not the selector, which copies its members' results)
OVERLAY_KINDS: tuple[str, ...] = ("buy_and_hold", "random", "sma_crossover", "supervised", "ppo", "dqn", "ensemble")
# the policies an agent selector may choose among: single-asset trained jobs that record a validation Sharpe
SELECTOR_MEMBER_KINDS: tuple[str, ...] = ("supervised", "ppo", "dqn", "ensemble")
ENSEMBLE_WEIGHTS: tuple[str, ...] = ("equal", "inverse_loss", "stacking")
SECTIONS: tuple[str, ...] = ("markets", "folds", "seeds", "policies", "budgets", "costs", "statistics", "quick")


@dataclass(frozen=True)
class FoldConfig:
    """Walk-forward folds over a market's timeline (the union of its symbols' timestamps).

    The last ``test_share`` of the timeline is cut into ``n_folds`` equal test windows, in time order.
    Fold k validates on the ``validation_bars`` bars just before its test window (None: as many as a
    test window) and trains on what comes before that: from the start (``scheme="expanding"``) or the
    same number of bars as fold 0 (``"rolling"``). Purge gaps of ``purge_gap`` bars (None: the label
    horizon) separate train from validation and validation from test; nothing after the test window
    is loaded, and the scaler, thresholds and checkpoints of a fold see its train and validation only.

    :param n_folds: number of test windows.
    :param scheme: ``"expanding"`` or ``"rolling"``.
    :param test_share: fraction of the timeline covered by the test windows together.
    :param validation_bars: bars in each fold's validation window; None: a test window's length.
    :param purge_gap: bars dropped before each boundary; None: the label horizon.
    """

    n_folds: int = 4
    scheme: str = "expanding"
    test_share: float = 0.4
    validation_bars: int | None = None
    purge_gap: int | None = None

    def __post_init__(self) -> None:
        if self.n_folds < 1:
            raise ValueError(f"folds.n_folds={self.n_folds} must be >= 1")
        if self.scheme not in ("expanding", "rolling"):
            raise ValueError(f"folds.scheme={self.scheme!r} is not known; expected 'expanding' or 'rolling'")
        if not 0 < self.test_share < 0.9:
            raise ValueError(f"folds.test_share={self.test_share} must be in (0, 0.9)")
        if self.validation_bars is not None and self.validation_bars < 2:
            raise ValueError(f"folds.validation_bars={self.validation_bars} must be >= 2 or null")


@dataclass(frozen=True)
class MarketSpec:
    """One market: a name and the dataset that defines it (any source: embedded, Parquet, Alpaca).

    :param name: label in the report.
    :param dataset: a :class:`features.DatasetConfig` (its ``split`` is replaced by each fold's).
    :param policies: the names of the policies run on this market (YAML: a ``policies:`` list among the dataset
        settings); None: every policy of the benchmark (portfolio kinds only where the market has 2 symbols or more).
    """

    name: str
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    policies: tuple[str, ...] | None = None

    def uncached_symbols(self) -> list[str]:
        """The symbols of a ``parquet`` market whose bars are not in its cache (none for other sources: the
        embedded ones ship with the package, ``alpaca`` downloads what is missing)."""
        if self.dataset.source != "parquet":
            return []
        from features.dataset import source_timeframe
        from features.parquet_cache import cache_path

        timeframe = source_timeframe(self.dataset)
        return [s for s in self.dataset.symbols if not cache_path(s, timeframe, self.dataset.cache_dir).exists()]

    def runs(self, policy: "PolicySpec") -> bool:
        """Whether ``policy`` is run on this market."""
        if self.policies is not None and policy.name not in self.policies:
            return False
        return policy.kind not in PORTFOLIO_KINDS or len(self.dataset.symbols) >= 2


@dataclass(frozen=True)
class PolicySpec:
    """One policy of the benchmark.

    :param name: label in the report (unique).
    :param kind: one of ``cash, buy_and_hold, random, sma_crossover, supervised, ppo, dqn``.
    :param model: for ``supervised``: ``mlp``, ``lstm``, ``gru`` or ``cnn_lstm``.
    :param pretrained: for ``ppo``/``dqn``: the name of a ``supervised`` policy of this benchmark whose
        bundle (same market, fold and seed) gives the frozen encoder.
    :param init_from_classifier: for ``ppo``/``dqn`` with ``pretrained``: clone the threshold policy first.
    :param agent: overrides of :class:`agents.AgentConfig` for this policy (over ``budgets.ppo``/``dqn``).
    :param model_settings: overrides of :class:`supervised.ModelConfig` for ``supervised``.
    :param method: for ``allocation``: one of :data:`agents.allocation.ALLOCATIONS` (skfolio, refit on each fold's
        train rows).
    :param rebalance_every: for ``allocation``: bars between rebalances to the fitted weights (buy_and_hold never
        rebalances).
    :param algo: for ``portfolio_agent``: ``ppo`` or ``sac``.
    :param thresholds: for ``supervised``/``ensemble``: ``f1`` (the threshold of the best validation F1), or
        ``net_log_return``/``t_stat`` (entry, exit and minimum hold chosen by that objective on the fold's validation
        split after the base costs, :func:`agents.threshold_choice.choose_thresholds_for_money`; may be "stay in
        cash").
    :param sizing: for ``supervised``/``ensemble``: ``all_in``, ``kelly`` (calibrated on validation) or
        ``vol_target`` (needs ``sizing_options.target_volatility``).
    :param sizing_options: the sizing's arguments (kelly: ``kelly_fraction``, ``max_fraction``; vol_target:
        ``target_volatility``, ``volatility_window``, ``max_fraction``).
    :param min_holding: for ``supervised``/``ensemble``: bars held before an exit. With ``thresholds: f1`` one number
        (None: 0); with a money objective the grid the chooser picks from (a number or a list; None: its default
        grid).
    :param overlay: a risk overlay (:class:`agents.overlays.OverlayConfig` fields, ``kind`` among them) wrapped
        around a single-asset policy, fitted on each fold's train rows; its ``index_symbol`` must be a traded symbol
        of every market the policy runs on (it is scored as a sleeve like the others).
    :param members: for ``ensemble``: names of ``supervised`` policies whose models (same market, fold, seed) are
        combined; for ``agent_selector``: names of ``supervised``/``ppo``/``dqn``/``ensemble`` policies, one of which
        trades each fold (the best validation Sharpe).
    :param weights: for ``ensemble``: ``equal``, ``inverse_loss`` or ``stacking`` (fitted on validation).
    """

    name: str
    kind: str
    model: str | None = None
    pretrained: str | None = None
    init_from_classifier: bool = False
    agent: dict[str, Any] = field(default_factory=dict)
    model_settings: dict[str, Any] = field(default_factory=dict)
    method: str | None = None
    rebalance_every: int | None = 21
    algo: str | None = None
    thresholds: str = "f1"
    sizing: str = "all_in"
    sizing_options: dict[str, Any] = field(default_factory=dict)
    min_holding: int | tuple[int, ...] | None = None
    overlay: dict[str, Any] | None = None
    members: tuple[str, ...] | None = None
    weights: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise ValueError(f"policies.{self.name}.kind={self.kind!r} is not known; expected one of {list(POLICY_KINDS)}")
        if self.kind == "allocation":
            from agents.allocation import ALLOCATIONS

            if self.method not in ALLOCATIONS:
                raise ValueError(f"policies.{self.name}: kind 'allocation' needs method: one of {list(ALLOCATIONS)}; "
                                 f"got {self.method!r}")
            if self.rebalance_every is not None and (not _is_int(self.rebalance_every) or self.rebalance_every < 1):
                raise ValueError(f"policies.{self.name}.rebalance_every={self.rebalance_every!r} must be an integer "
                                 f">= 1 (bars) or null")
        elif self.method is not None:
            raise ValueError(f"policies.{self.name}: method applies to kind 'allocation' only")
        if self.kind == "portfolio_agent" and self.algo not in PORTFOLIO_ALGOS:
            raise ValueError(f"policies.{self.name}: kind 'portfolio_agent' needs algo: one of {list(PORTFOLIO_ALGOS)}; "
                             f"got {self.algo!r}")
        if self.kind != "portfolio_agent" and self.algo is not None:
            raise ValueError(f"policies.{self.name}: algo applies to kind 'portfolio_agent' only")
        if self.kind == "supervised" and self.model not in ("mlp", "lstm", "gru", "cnn_lstm"):
            raise ValueError(f"policies.{self.name}: kind 'supervised' needs model: mlp, lstm, gru or cnn_lstm")
        if self.kind not in ("ppo", "dqn", "portfolio_agent") and (self.pretrained or self.init_from_classifier
                                                                   or self.agent):
            raise ValueError(f"policies.{self.name}: pretrained/init_from_classifier/agent apply to ppo, dqn and "
                             f"portfolio_agent only")
        if self.kind == "portfolio_agent" and self.init_from_classifier:
            raise ValueError(f"policies.{self.name}: init_from_classifier applies to ppo and dqn only")
        if self.init_from_classifier and not self.pretrained:
            raise ValueError(f"policies.{self.name}: init_from_classifier needs pretrained: <a supervised policy>")
        self._check_threshold_options()
        self._check_overlay()
        self._check_members()

    def _check_threshold_options(self) -> None:
        """thresholds, sizing, sizing_options and min_holding: for the kinds of :data:`THRESHOLD_KINDS` only."""
        where = f"policies.{self.name}"
        if self.kind not in THRESHOLD_KINDS:
            if (self.thresholds != "f1" or self.sizing != "all_in" or self.sizing_options
                    or self.min_holding is not None):
                raise ValueError(f"{where}: thresholds/sizing/sizing_options/min_holding apply to kinds "
                                 f"{list(THRESHOLD_KINDS)} only, not {self.kind!r}")
            return
        if self.thresholds not in THRESHOLD_CHOICES:
            raise ValueError(f"{where}.thresholds={self.thresholds!r} is not known; expected one of "
                             f"{list(THRESHOLD_CHOICES)}")
        if self.sizing not in SIZING_OPTIONS:
            raise ValueError(f"{where}.sizing={self.sizing!r} is not known; expected one of {list(SIZING_OPTIONS)}")
        if not isinstance(self.sizing_options, Mapping):
            raise ValueError(f"{where}.sizing_options must be a mapping, got {self.sizing_options!r}")
        allowed = SIZING_OPTIONS[self.sizing]
        unknown = sorted(set(self.sizing_options) - set(allowed), key=str)
        if unknown:
            raise ValueError(f"{where}.sizing_options: {unknown} do not apply to sizing {self.sizing!r}; its options: "
                             f"{list(allowed) or 'none'}")
        for key, value in self.sizing_options.items():
            integral = key == "volatility_window"
            if not (_is_int(value) if integral else _is_number(value)) or not value > 0:
                raise ValueError(f"{where}.sizing_options.{key}={value!r} must be a "
                                 f"{'whole number of bars >= 2' if integral else 'number > 0'}")
        if self.sizing == "vol_target" and "target_volatility" not in self.sizing_options:
            raise ValueError(f"{where}: sizing 'vol_target' needs sizing_options.target_volatility (the per-bar "
                             f"standard deviation of log returns aimed at, e.g. 0.01)")
        holds = self.min_holding if isinstance(self.min_holding, tuple) else (
            () if self.min_holding is None else (self.min_holding,))
        if self.thresholds == "f1" and isinstance(self.min_holding, tuple):
            raise ValueError(f"{where}.min_holding={list(self.min_holding)}: a list is the grid of a money "
                             f"objective (thresholds net_log_return or t_stat); with thresholds f1 give one number")
        if (isinstance(self.min_holding, tuple) and not holds) or any(not _is_int(h) or h < 0 for h in holds):
            raise ValueError(f"{where}.min_holding={self.min_holding!r} must be whole numbers of bars >= 0")

    def _check_overlay(self) -> None:
        """overlay: an :class:`agents.overlays.OverlayConfig` mapping, on the kinds of :data:`OVERLAY_KINDS`."""
        if self.overlay is None:
            return
        where = f"policies.{self.name}.overlay"
        if self.kind not in OVERLAY_KINDS:
            raise ValueError(f"{where}: an overlay wraps a single-asset policy that trades ({list(OVERLAY_KINDS)}), "
                             f"not kind {self.kind!r}")
        if not isinstance(self.overlay, Mapping) or "kind" not in self.overlay:
            raise ValueError(f"{where} must be a mapping with kind: one of index_trend, volatility, hmm, drawdown; "
                             f"got {self.overlay!r}")
        make_overlay_config(self.overlay, where)

    def _check_members(self) -> None:
        """members and weights: for ``ensemble`` and ``agent_selector`` only (the kinds of the members are checked
        by :class:`BenchmarkConfig`, which knows every policy)."""
        where = f"policies.{self.name}"
        if self.kind not in ("ensemble", "agent_selector"):
            if self.members is not None or self.weights is not None:
                raise ValueError(f"{where}: members/weights apply to kinds ensemble and agent_selector only")
            return
        if not self.members or len(set(self.members)) != len(self.members):
            raise ValueError(f"{where}: kind {self.kind!r} needs members: a list of distinct policy names; "
                             f"got {None if self.members is None else list(self.members)}")
        if self.kind == "ensemble" and self.weights not in ENSEMBLE_WEIGHTS:
            raise ValueError(f"{where}: kind 'ensemble' needs weights: one of {list(ENSEMBLE_WEIGHTS)}; "
                             f"got {self.weights!r}")
        if self.kind == "agent_selector" and self.weights is not None:
            raise ValueError(f"{where}: weights apply to kind 'ensemble' only")

    @property
    def dependencies(self) -> tuple[str, ...]:
        """The policies whose jobs (same market, fold and seed) this one's jobs need."""
        if self.pretrained:
            return (self.pretrained,)
        return tuple(self.members or ())

    @property
    def trained(self) -> bool:
        """Whether it is trained per fold (and run for every seed)."""
        return self.kind in ("supervised", "ppo", "dqn", "portfolio_agent", "ensemble", "agent_selector")

    @property
    def seeded(self) -> bool:
        """Whether its result depends on the seed (trained, or the random baseline)."""
        return self.trained or self.kind == "random"


@dataclass(frozen=True)
class Budgets:
    """Training budgets and settings shared by the policies of a kind.

    :param supervised: overrides of :class:`supervised.TrainConfig` (epochs, batch_size, ...).
    :param ppo: overrides of :class:`agents.AgentConfig` for PPO policies.
    :param dqn: overrides of :class:`agents.AgentConfig` for DQN policies.
    :param portfolio_agent: overrides of the portfolio agent's config (``configs/portfolio.yaml``) for
        ``portfolio_agent`` policies.
    """

    supervised: dict[str, Any] = field(default_factory=lambda: {"epochs": 6, "early_stopping_patience": 3})
    ppo: dict[str, Any] = field(default_factory=lambda: {"total_timesteps": 50_000, "eval_freq": 10_000,
                                                          "bc_steps": 5_000})
    dqn: dict[str, Any] = field(default_factory=lambda: {"total_timesteps": 30_000, "eval_freq": 10_000})
    portfolio_agent: dict[str, Any] = field(default_factory=lambda: {"total_timesteps": 30_000, "eval_freq": 10_000})


@dataclass(frozen=True)
class CostGrid:
    """Costs: the base level every headline number uses, and the grid each policy is re-scored on.

    :param commission: base commission (fraction of notional per side).
    :param slippage_bps: base slippage (bps per side).
    :param commissions: commission levels of the sensitivity grid.
    :param slippages_bps: slippage levels of the grid.
    :param break_even_scales: multiples of the base costs (both scaled together) on which each policy's
        break-even cost (excess log return over cash reaching 0) is found.
    """

    commission: float = 0.001
    slippage_bps: float = 5.0
    commissions: tuple[float, ...] = (0.0, 0.0005, 0.001)
    slippages_bps: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0)
    break_even_scales: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)

    def __post_init__(self) -> None:
        for key, commission, slippage in self.labelled_levels():
            check_cost_level(key, commission, slippage)

    def labelled_levels(self) -> list[tuple[str, Any, Any]]:
        """Every (config keys, commission, slippage_bps) scored, as configured (before any conversion)."""
        found: list[tuple[str, Any, Any]] = [("costs.commission/slippage_bps (the base level)", self.commission,
                                              self.slippage_bps)]
        for i, c in enumerate(self.commissions):
            for j, s in enumerate(self.slippages_bps):
                found.append((f"costs.commissions[{i}] x costs.slippages_bps[{j}]", c, s))
        for k, scale in enumerate(self.break_even_scales):
            found.append((f"costs.break_even_scales[{k}]={scale!r} x the base level",
                          _times(scale, self.commission), _times(scale, self.slippage_bps)))
        return found

    def levels(self) -> list[tuple[float, float]]:
        """Every (commission, slippage_bps) to score: the grid, the break-even path and the base."""
        found: list[tuple[float, float]] = [(self.commission, self.slippage_bps)]
        for c in self.commissions:
            for s in self.slippages_bps:
                found.append((float(c), float(s)))
        for k in self.break_even_scales:
            found.append((float(self.commission * k), float(self.slippage_bps * k)))
        unique: list[tuple[float, float]] = []
        for level in found:
            if level not in unique:
                unique.append(level)
        return unique


@dataclass(frozen=True)
class StatisticsConfig:
    """How intervals are computed.

    :param bootstrap_resamples: stationary-bootstrap resamples per interval.
    :param confidence: two-sided level of every interval.
    :param mean_block: mean block length in bars; None: chosen from the data.
    :param seed: seed of the bootstrap.
    :param pbo_splits: blocks S of the probability of backtest overfitting's combinatorially symmetric
        cross-validation (even; fewer when the pooled test bars are under 2 S).
    """

    bootstrap_resamples: int = 1000
    confidence: float = 0.95
    mean_block: int | None = None
    seed: int = 0
    pbo_splits: int = 16

    def __post_init__(self) -> None:
        if not _is_number(self.confidence) or not 0.0 < self.confidence < 1.0:
            raise ValueError(f"statistics.confidence={self.confidence!r} must lie strictly between 0 and 1 "
                             f"(0.95 for 95% intervals)")
        if not _is_int(self.bootstrap_resamples) or self.bootstrap_resamples < 1:
            raise ValueError(f"statistics.bootstrap_resamples={self.bootstrap_resamples!r} must be an integer >= 1")
        if self.mean_block is not None and (not _is_int(self.mean_block) or self.mean_block < 1):
            raise ValueError(f"statistics.mean_block={self.mean_block!r} must be an integer >= 1 (bars) or null "
                             f"(chosen from the data)")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"statistics.seed={self.seed!r} must be an integer >= 0")
        if not _is_int(self.pbo_splits) or self.pbo_splits < 2 or self.pbo_splits % 2 or self.pbo_splits > 16:
            raise ValueError(f"statistics.pbo_splits={self.pbo_splits!r} must be an even integer from 2 to 16 "
                             f"(C(16, 8) = 12,870 combinations)")


def check_cost_level(key: str, commission: Any, slippage_bps: Any) -> None:
    """Refuse a cost level that :class:`sim.engine.Costs` refuses (its message, prefixed with ``key``), or
    whose values are not plain numbers (the benchmark's levels are a commission and fixed-bps slippage).

    :param key: the config keys the level comes from, for the message.
    :param commission: commission, fraction of notional per side.
    :param slippage_bps: slippage, bps per side.
    """
    try:
        Costs(commission=commission, slippage=slippage_bps)
    except ValueError as error:
        raise ValueError(f"{key}: {' '.join(str(error).split())}") from None
    for name, value in (("commission", commission), ("slippage_bps", slippage_bps)):
        if not _is_number(value):
            raise ValueError(f"{key}: {name}={value!r} must be a number (the benchmark scores fixed-bps slippage)")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _times(scale: Any, value: Any) -> Any:
    """``scale * value`` when both are numbers, else ``scale`` as it is (for the check to name it)."""
    return float(scale) * float(value) if _is_number(scale) and _is_number(value) else scale


def make_overlay_config(settings: Mapping[str, Any], where: str) -> Any:
    """The :class:`agents.overlays.OverlayConfig` of a policy's ``overlay:`` settings; an unknown key or a value it
    refuses is a ``ValueError`` naming ``where``.

    :param settings: the ``overlay:`` mapping (``kind`` and the other fields).
    :param where: e.g. ``policies.supervised_mlp_hmm.overlay``.
    """
    from agents.overlays import OverlayConfig

    valid = [f.name for f in dataclasses.fields(OverlayConfig)]
    unknown = sorted(set(settings) - set(valid), key=str)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {valid}")
    try:
        return OverlayConfig(**dict(settings))
    except ValueError as error:
        raise ValueError(f"{where}: {' '.join(str(error).split())}") from None


# the fields added after job keys existed: left out of a policy's settings while at their defaults, so the job keys
# of the policies that do not use them read as before
_OPTIONAL_FIELDS: dict[str, Any] = {"thresholds": "f1", "sizing": "all_in", "sizing_options": {}, "min_holding": None,
                                    "overlay": None, "members": None, "weights": None}


def policy_settings(policy: PolicySpec) -> dict[str, Any]:
    """A policy's settings as a plain dict (no name); the portfolio-only fields only for the kinds they belong to,
    and the options (thresholds, sizing, overlay, members...) only where set, so that the other policies' settings
    (and job keys) read as they did before those fields existed."""
    settings = {k: v for k, v in dataclasses.asdict(policy).items() if k != "name"}
    if policy.kind != "allocation":
        settings.pop("method")
        settings.pop("rebalance_every")
    if policy.kind != "portfolio_agent":
        settings.pop("algo")
    for key, default in _OPTIONAL_FIELDS.items():
        if settings[key] == default:
            settings.pop(key)
        elif isinstance(settings[key], tuple):
            settings[key] = list(settings[key])
    return settings


def default_policies() -> tuple[PolicySpec, ...]:
    """Every policy the benchmark compares by default."""
    return (
        PolicySpec("cash", "cash"),
        PolicySpec("buy_and_hold", "buy_and_hold"),
        PolicySpec("random", "random"),
        PolicySpec("sma_crossover", "sma_crossover"),
        PolicySpec("supervised_mlp", "supervised", model="mlp"),
        PolicySpec("supervised_lstm", "supervised", model="lstm"),
        PolicySpec("supervised_gru", "supervised", model="gru"),
        PolicySpec("supervised_cnn_lstm", "supervised", model="cnn_lstm"),
        PolicySpec("ppo", "ppo"),
        PolicySpec("ppo_frozen_encoder", "ppo", pretrained="supervised_lstm"),
        PolicySpec("ppo_from_classifier", "ppo", pretrained="supervised_lstm", init_from_classifier=True),
        PolicySpec("dqn", "dqn"),
        PolicySpec("equal_weight", "allocation", method="equal_weight"),
        PolicySpec("inverse_volatility", "allocation", method="inverse_volatility"),
        PolicySpec("minimum_variance", "allocation", method="minimum_variance"),
        PolicySpec("hierarchical_risk_parity", "allocation", method="hierarchical_risk_parity"),
        PolicySpec("mean_risk", "allocation", method="mean_risk"),
        PolicySpec("portfolio_ppo", "portfolio_agent", algo="ppo"),
        PolicySpec("portfolio_sac", "portfolio_agent", algo="sac"),
        PolicySpec("portfolio_ppo_encoder", "portfolio_agent", algo="ppo", pretrained="supervised_mlp"),
        *option_policies(),
    )


SUPERVISED_MODELS = ("supervised_mlp", "supervised_lstm", "supervised_gru", "supervised_cnn_lstm")


def option_policies() -> tuple[PolicySpec, ...]:
    """Issue 24's options in the default benchmark, run on the daily equities only: thresholds and sizing chosen
    for money, risk overlays, ensembles of the four supervised models, and FinRL's per-fold agent selection."""
    return (
        PolicySpec("supervised_mlp_money", "supervised", model="mlp", thresholds="net_log_return"),
        PolicySpec("supervised_mlp_kelly", "supervised", model="mlp", sizing="kelly"),
        PolicySpec("supervised_mlp_vol_target", "supervised", model="mlp", sizing="vol_target",
                   sizing_options={"target_volatility": 0.01}),
        PolicySpec("supervised_mlp_volatility", "supervised", model="mlp", overlay={"kind": "volatility"}),
        PolicySpec("supervised_mlp_hmm", "supervised", model="mlp", overlay={"kind": "hmm"}),
        PolicySpec("supervised_mlp_drawdown", "supervised", model="mlp", overlay={"kind": "drawdown"}),
        PolicySpec("ensemble_inverse_loss", "ensemble", members=SUPERVISED_MODELS, weights="inverse_loss"),
        PolicySpec("ensemble_stacking", "ensemble", members=SUPERVISED_MODELS, weights="stacking"),
        PolicySpec("agent_selector", "agent_selector", members=("ppo", "dqn", "ppo_frozen_encoder")),
    )


ALLOCATION_POLICIES = ("equal_weight", "inverse_volatility", "minimum_variance", "hierarchical_risk_parity",
                       "mean_risk")


def default_markets() -> tuple[MarketSpec, ...]:
    """The embedded daily equities (with the allocations), the embedded hourly EUR/USD (volatility-scaled labels),
    the embedded 20-stock universe (per-symbol sleeves, allocations and portfolio agents), and two markets of the
    Parquet cache: crypto pairs hourly and ETFs with pairs daily (left out of a run while not cached)."""
    from features.embedded import SKFOLIO_SYMBOLS

    options = {p.name for p in option_policies()}
    per_symbol = tuple(p.name for p in default_policies() if p.kind not in PORTFOLIO_KINDS and p.name not in options)
    return (
        MarketSpec("equities_daily", DatasetConfig(symbols=("AAPL", "IBM", "MSFT", "GOOG")),
                   per_symbol + ALLOCATION_POLICIES + tuple(p.name for p in option_policies())),
        MarketSpec("eurusd_hourly", DatasetConfig(
            symbols=("EURUSD",), timeframe="1Hour",
            labels={"barrier": "volatility", "profit": 1.5, "stop": 1.0, "horizon": 8, "volatility_window": 20},
        ), per_symbol),
        MarketSpec("sp500_20", DatasetConfig(symbols=SKFOLIO_SYMBOLS, source="skfolio", window=8),
                   ("cash", "buy_and_hold", "sma_crossover", "supervised_mlp", "ppo") + ALLOCATION_POLICIES
                   + ("portfolio_ppo", "portfolio_sac", "portfolio_ppo_encoder")),
        MarketSpec("crypto_hourly", DatasetConfig(
            symbols=("BTC/USD", "ETH/USD", "SOL/USD"), source="parquet", timeframe="1Hour",
            labels={"barrier": "volatility", "profit": 1.5, "stop": 1.0, "horizon": 8, "volatility_window": 20},
        ), ("cash", "buy_and_hold", "random", "sma_crossover", "supervised_mlp", "ppo", "dqn", "equal_weight",
            "inverse_volatility", "minimum_variance", "portfolio_ppo")),
        MarketSpec("stocks_and_crypto_daily", DatasetConfig(
            symbols=("SPY", "QQQ", "TLT", "GLD", "BTC/USD", "ETH/USD"), source="parquet", timeframe="1Day", window=8,
        ), ("cash", "buy_and_hold", "sma_crossover", "supervised_mlp", "ppo", "equal_weight", "inverse_volatility",
            "minimum_variance", "hierarchical_risk_parity", "portfolio_ppo")),
    )


@dataclass(frozen=True)
class BenchmarkConfig:
    """The whole benchmark.

    :param markets: the markets compared (each gets its own folds).
    :param folds: the walk-forward scheme.
    :param seeds: seeds of every trained (and random) policy: 0 .. seeds-1.
    :param policies: the policies compared.
    :param budgets: training budgets per kind.
    :param costs: base costs and the re-scoring grid.
    :param statistics: bootstrap settings.
    :param quick: overrides applied by ``--quick`` (same keys as this config).
    """

    markets: tuple[MarketSpec, ...] = field(default_factory=default_markets)
    folds: FoldConfig = field(default_factory=FoldConfig)
    seeds: int = 3
    policies: tuple[PolicySpec, ...] = field(default_factory=default_policies)
    budgets: Budgets = field(default_factory=Budgets)
    costs: CostGrid = field(default_factory=CostGrid)
    statistics: StatisticsConfig = field(default_factory=StatisticsConfig)
    quick: dict[str, Any] = field(default_factory=lambda: {
        "folds": {"n_folds": 2},
        "seeds": 1,
        "budgets": {"supervised": {"epochs": 2, "early_stopping_patience": 2},
                    "ppo": {"total_timesteps": 8192, "eval_freq": 4096, "n_envs": 8, "bc_steps": 2000},
                    "dqn": {"total_timesteps": 6000, "eval_freq": 3000, "n_envs": 4,
                            "dqn": {"learning_starts": 500, "buffer_size": 10000}},
                    "portfolio_agent": {"total_timesteps": 6000, "eval_freq": 3000}},
        "statistics": {"bootstrap_resamples": 200},
    })

    def __post_init__(self) -> None:
        if not _is_int(self.seeds) or self.seeds < 1:
            raise ValueError(f"seeds={self.seeds} must be >= 1")
        names = [p.name for p in self.policies]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"policies: names {duplicates} appear twice")
        by_name = {p.name: p for p in self.policies}
        for policy in self.policies:
            if policy.pretrained is not None:
                source = by_name.get(policy.pretrained)
                if source is None or source.kind != "supervised":
                    raise ValueError(
                        f"policies.{policy.name}.pretrained={policy.pretrained!r} must name a 'supervised' policy "
                        f"of this benchmark; supervised ones: {[p.name for p in self.policies if p.kind == 'supervised']}"
                    )
        self._check_members(by_name)
        markets = [m.name for m in self.markets]
        if not markets or len(set(markets)) != len(markets):
            raise ValueError(f"markets must be a non-empty list with unique names, got {markets}")
        for required in ("cash", "buy_and_hold"):
            if required not in {p.kind for p in self.policies}:
                raise ValueError(f"policies must include a '{required}' policy: every comparison is made against it")
        for market in self.markets:
            if market.policies is None:
                continue
            unknown = [name for name in market.policies if name not in by_name]
            if unknown:
                raise ValueError(f"markets.{market.name}.policies names {unknown}, not policies of this benchmark "
                                 f"({sorted(by_name)})")
            kinds = {by_name[name].kind for name in market.policies}
            for required in ("cash", "buy_and_hold"):
                if required not in kinds:
                    raise ValueError(f"markets.{market.name}.policies must include a '{required}' policy: every "
                                     f"comparison is made against it")
            for name in market.policies:
                source = by_name[name].pretrained
                if source is not None and source not in market.policies:
                    raise ValueError(f"markets.{market.name}.policies has {name!r}, whose pretrained encoder comes from "
                                     f"{source!r}: list {source!r} too")
                missing = [m for m in by_name[name].members or () if m not in market.policies]
                if missing:
                    raise ValueError(f"markets.{market.name}.policies has {name!r}, whose members include {missing}: "
                                     f"list them too")
        self._check_overlay_symbols()

    def _check_members(self, by_name: Mapping[str, PolicySpec]) -> None:
        """Each ensemble's members are supervised policies of this benchmark, each selector's are policies of
        :data:`SELECTOR_MEMBER_KINDS`."""
        for policy in self.policies:
            if policy.kind not in ("ensemble", "agent_selector"):
                continue
            kinds = ("supervised",) if policy.kind == "ensemble" else SELECTOR_MEMBER_KINDS
            for member in policy.members or ():
                if member not in by_name or by_name[member].kind not in kinds:
                    found = by_name[member].kind if member in by_name else "not a policy of this benchmark"
                    raise ValueError(
                        f"policies.{policy.name}.members: {member!r} ({found}) must name a policy of kind "
                        f"{' or '.join(kinds)}; those of this benchmark: "
                        f"{[p.name for p in self.policies if p.kind in kinds]}")

    def _check_overlay_symbols(self) -> None:
        """An overlay's ``index_symbol`` must be a traded symbol of every market its policy runs on."""
        for market in self.markets:
            for policy in self.policies:
                index = (policy.overlay or {}).get("index_symbol")
                if index is not None and market.runs(policy) and index not in market.dataset.symbols:
                    raise ValueError(f"policies.{policy.name}.overlay.index_symbol={index!r} is not a symbol of market "
                                     f"{market.name!r} ({list(market.dataset.symbols)}): the index must be one of the "
                                     f"market's traded symbols (list it in the market's symbols, or set "
                                     f"markets.{market.name}.policies without {policy.name!r})")

    # ----- YAML -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "benchmark config") -> "BenchmarkConfig":
        """Build from a mapping; unknown sections or keys, and values a section refuses, are one
        :class:`configs.loader.ConfigError` naming ``where`` and the key.

        ``markets`` is ``{name: dataset settings}``; ``policies`` is ``{name: policy settings}``.

        :param data: the sections.
        :param where: the file (or other source) named in errors.
        """
        try:
            config = cls._from_dict(data, where)
            config.with_quick()  # the quick: section is checked too, with or without --quick
        except ConfigError:
            raise
        except ValueError as error:
            text = " ".join(str(error).split())
            raise ConfigError(text if text.startswith(f"{where}:") else f"{where}: {text}") from None
        return config

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any] | None, where: str) -> "BenchmarkConfig":
        data = dict(data or {})
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ValueError(f"{where}: unknown section(s) {unknown}; valid sections: {list(SECTIONS)}")
        kwargs: dict[str, Any] = {}
        if "markets" in data:
            markets = data["markets"]
            if not isinstance(markets, Mapping) or not markets:
                raise ValueError(f"{where}: markets must map a market name to its dataset settings")
            specs = []
            for name, settings in markets.items():
                settings = dict(settings or {})
                runs = settings.pop("policies", None)
                if runs is not None and (isinstance(runs, str) or not isinstance(runs, (list, tuple))
                                         or not all(isinstance(p, str) for p in runs)):
                    raise ValueError(f"{where}: markets.{name}.policies must be a list of policy names; got {runs!r}")
                specs.append(MarketSpec(str(name), DatasetConfig.from_dict(settings),
                                        None if runs is None else tuple(runs)))
            kwargs["markets"] = tuple(specs)
        if "policies" in data:
            policies = data["policies"]
            if not isinstance(policies, Mapping) or not policies:
                raise ValueError(f"{where}: policies must map a policy name to its settings (kind: ...)")
            parsed = []
            for name, settings in policies.items():
                settings = dict(settings or {})
                settings.setdefault("kind", str(name) if str(name) in BASELINE_KINDS else None)
                parsed.append(dataclass_from_dict(PolicySpec, {"name": str(name), **settings}, f"{where}: policies.{name}"))
            kwargs["policies"] = tuple(parsed)
        for name, kind in (("folds", FoldConfig), ("budgets", Budgets), ("costs", CostGrid),
                           ("statistics", StatisticsConfig)):
            if name in data:
                kwargs[name] = dataclass_from_dict(kind, data[name] or {}, f"{where}: {name}")
        if "seeds" in data:
            seeds = data["seeds"]
            if isinstance(seeds, float) and seeds.is_integer():
                seeds = int(seeds)
            if not _is_int(seeds):
                raise ConfigError(f"{where}: seeds={seeds!r} must be an integer >= 1")
            kwargs["seeds"] = int(seeds)
        if "quick" in data:
            kwargs["quick"] = dict(data["quick"] or {})
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "BenchmarkConfig":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"config file {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the top level must be a mapping of sections {list(SECTIONS)}")
        return cls.from_dict(data, str(path))

    def with_quick(self) -> "BenchmarkConfig":
        """This config with the ``quick`` overrides applied (small budgets, same code path); a key or
        value the overrides get wrong is a ``ValueError`` naming ``quick.<section>``."""
        quick = self.quick
        unknown = sorted(set(quick) - set(SECTIONS) - {"quick"})
        if unknown:
            raise ValueError(f"quick: unknown section(s) {unknown}")
        try:
            changes: dict[str, Any] = {}
            for name in ("folds", "statistics", "costs"):
                if name in quick:
                    changes[name] = _replaced(getattr(self, name), quick[name], f"quick.{name}")
            if "seeds" in quick:
                changes["seeds"] = quick["seeds"]
            if "budgets" in quick:
                budgets = quick["budgets"]
                kinds = ("supervised", "ppo", "dqn", "portfolio_agent")
                if not isinstance(budgets, Mapping) or set(budgets) - set(kinds):
                    raise ValueError(f"quick.budgets must map {'/'.join(kinds)} to settings, got {budgets!r}")
                changes["budgets"] = Budgets(**{k: merged(getattr(self.budgets, k), budgets.get(k, {}))
                                                for k in kinds})
            return dataclasses.replace(self, **changes)
        except ValueError as error:
            text = " ".join(str(error).split())
            raise ValueError(text if text.startswith("quick") else f"quick: {text}") from None

    def only_markets(self, names: list[str]) -> "BenchmarkConfig":
        """This config restricted to the markets called ``names`` (an unknown name is a ``ValueError`` listing the
        markets)."""
        known = [m.name for m in self.markets]
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise ValueError(f"--markets {unknown or names}: not markets of this config; its markets are {known}")
        return dataclasses.replace(self, markets=tuple(m for m in self.markets if m.name in names))

    def without_uncached_markets(self) -> tuple["BenchmarkConfig", list[str]]:
        """This config without the ``parquet`` markets whose bars are not cached, and a line for each one left
        out naming the symbols and the download command (a run that names the market with ``--markets`` reads
        the cache instead, and its error names the missing file).

        :raises ValueError: no market is left.
        """
        kept, notes = [], []
        for market in self.markets:
            missing = market.uncached_symbols()
            if not missing:
                kept.append(market)
                continue
            dataset = market.dataset
            notes.append(
                f"market {market.name} left out: no cached {dataset.timeframe or '1Day'} bars of {', '.join(missing)} "
                f"in {dataset.cache_dir}; download them with python -m experiments.fetch_bars --symbols "
                f"{' '.join(missing)} --timeframe {dataset.timeframe or '1Day'} --start {dataset.start or '2019-01-01'}"
                f" (or name it with --markets to run it)")
        if not kept:
            raise ValueError("no market of this config has its bars: " + "; ".join(notes))
        return dataclasses.replace(self, markets=tuple(kept)), notes

    def to_dict(self) -> dict[str, Any]:
        out = config_to_dict(self)
        out["markets"] = {m.name: {**m.dataset.to_dict(), **({"policies": list(m.policies)} if m.policies else {})}
                          for m in self.markets}
        out["policies"] = {p.name: policy_settings(p) for p in self.policies}
        return out

    def hash(self) -> str:
        """sha256 of everything that defines the results (not where they are written)."""
        settings = self.to_dict()
        settings.pop("quick")
        for market in settings["markets"].values():
            market.pop("output_dir", None)
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()

    def policy(self, name: str) -> PolicySpec:
        for policy in self.policies:
            if policy.name == name:
                return policy
        raise KeyError(f"policy {name!r} is not in this benchmark; it has {[p.name for p in self.policies]}")


def _replaced(section: Any, changes: Any, where: str) -> Any:
    """``dataclasses.replace(section, **changes)``; an unknown key or a non-mapping is a ``ValueError``
    naming ``where``.

    :param section: a config dataclass.
    :param changes: the overrides.
    :param where: e.g. ``quick.folds``.
    """
    if not isinstance(changes, Mapping):
        raise ValueError(f"{where} must be a mapping of {type(section).__name__} keys, got {changes!r}")
    valid = {f.name for f in dataclasses.fields(section)}
    unknown = sorted(set(changes) - valid, key=str)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(valid)}")
    return dataclasses.replace(section, **changes)


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` on top, nested mappings merged."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


__all__ = ["BenchmarkConfig", "Budgets", "CostGrid", "FoldConfig", "MarketSpec", "POLICY_KINDS", "PolicySpec",
           "StatisticsConfig", "default_markets", "default_policies", "make_overlay_config"]
