"""The benchmark's configuration (``configs/benchmark.yaml``): markets, folds, policies, budgets, costs.

Every key maps to a dataclass field and an unknown key is an error naming it. ``--quick`` applies
:meth:`BenchmarkConfig.quick`: 2 folds, 1 seed, small training budgets - the same code path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from configs.loader import config_to_dict, dataclass_from_dict
from features.dataset import DatasetConfig

POLICY_KINDS: tuple[str, ...] = ("cash", "buy_and_hold", "random", "sma_crossover", "supervised", "ppo", "dqn")
BASELINE_KINDS: tuple[str, ...] = ("cash", "buy_and_hold", "random", "sma_crossover")
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
    """

    name: str
    dataset: DatasetConfig = field(default_factory=DatasetConfig)


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
    """

    name: str
    kind: str
    model: str | None = None
    pretrained: str | None = None
    init_from_classifier: bool = False
    agent: dict[str, Any] = field(default_factory=dict)
    model_settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise ValueError(f"policies.{self.name}.kind={self.kind!r} is not known; expected one of {list(POLICY_KINDS)}")
        if self.kind == "supervised" and self.model not in ("mlp", "lstm", "gru", "cnn_lstm"):
            raise ValueError(f"policies.{self.name}: kind 'supervised' needs model: mlp, lstm, gru or cnn_lstm")
        if self.kind not in ("ppo", "dqn") and (self.pretrained or self.init_from_classifier or self.agent):
            raise ValueError(f"policies.{self.name}: pretrained/init_from_classifier/agent apply to ppo and dqn only")
        if self.init_from_classifier and not self.pretrained:
            raise ValueError(f"policies.{self.name}: init_from_classifier needs pretrained: <a supervised policy>")

    @property
    def trained(self) -> bool:
        """Whether it is trained per fold (and run for every seed)."""
        return self.kind in ("supervised", "ppo", "dqn")

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
    """

    supervised: dict[str, Any] = field(default_factory=lambda: {"epochs": 6, "early_stopping_patience": 3})
    ppo: dict[str, Any] = field(default_factory=lambda: {"total_timesteps": 50_000, "eval_freq": 10_000,
                                                          "bc_steps": 5_000})
    dqn: dict[str, Any] = field(default_factory=lambda: {"total_timesteps": 30_000, "eval_freq": 10_000})


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
    """

    bootstrap_resamples: int = 1000
    confidence: float = 0.95
    mean_block: int | None = None
    seed: int = 0


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
    )


def default_markets() -> tuple[MarketSpec, ...]:
    """The embedded daily equities and the embedded hourly EUR/USD (volatility-scaled labels)."""
    return (
        MarketSpec("equities_daily", DatasetConfig(symbols=("AAPL", "IBM", "MSFT", "GOOG"))),
        MarketSpec("eurusd_hourly", DatasetConfig(
            symbols=("EURUSD",), timeframe="1Hour",
            labels={"barrier": "volatility", "profit": 1.5, "stop": 1.0, "horizon": 8, "volatility_window": 20},
        )),
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
                            "dqn": {"learning_starts": 500, "buffer_size": 10000}}},
        "statistics": {"bootstrap_resamples": 200},
    })

    def __post_init__(self) -> None:
        if self.seeds < 1:
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
        markets = [m.name for m in self.markets]
        if not markets or len(set(markets)) != len(markets):
            raise ValueError(f"markets must be a non-empty list with unique names, got {markets}")
        for required in ("cash", "buy_and_hold"):
            if required not in {p.kind for p in self.policies}:
                raise ValueError(f"policies must include a '{required}' policy: every comparison is made against it")

    # ----- YAML -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "benchmark config") -> "BenchmarkConfig":
        """Build from a mapping; unknown sections or keys are errors naming them.

        ``markets`` is ``{name: dataset settings}``; ``policies`` is ``{name: policy settings}``.
        """
        data = dict(data or {})
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ValueError(f"{where}: unknown section(s) {unknown}; valid sections: {list(SECTIONS)}")
        kwargs: dict[str, Any] = {}
        if "markets" in data:
            markets = data["markets"]
            if not isinstance(markets, Mapping) or not markets:
                raise ValueError(f"{where}: markets must map a market name to its dataset settings")
            kwargs["markets"] = tuple(
                MarketSpec(str(name), DatasetConfig.from_dict(settings or {})) for name, settings in markets.items()
            )
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
            kwargs["seeds"] = int(data["seeds"])
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
        """This config with the ``quick`` overrides applied (small budgets, same code path)."""
        quick = self.quick
        unknown = sorted(set(quick) - set(SECTIONS) - {"quick"})
        if unknown:
            raise ValueError(f"quick: unknown section(s) {unknown}")
        changes: dict[str, Any] = {}
        if "folds" in quick:
            changes["folds"] = dataclasses.replace(self.folds, **quick["folds"])
        if "seeds" in quick:
            changes["seeds"] = int(quick["seeds"])
        if "budgets" in quick:
            changes["budgets"] = Budgets(**{k: merged(getattr(self.budgets, k), quick["budgets"].get(k, {}))
                                            for k in ("supervised", "ppo", "dqn")})
        if "statistics" in quick:
            changes["statistics"] = dataclasses.replace(self.statistics, **quick["statistics"])
        if "costs" in quick:
            changes["costs"] = dataclasses.replace(self.costs, **quick["costs"])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = config_to_dict(self)
        out["markets"] = {m.name: m.dataset.to_dict() for m in self.markets}
        out["policies"] = {p["name"]: {k: v for k, v in p.items() if k != "name"} for p in out["policies"]}
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


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` on top, nested mappings merged."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


__all__ = ["BenchmarkConfig", "Budgets", "CostGrid", "FoldConfig", "MarketSpec", "POLICY_KINDS", "PolicySpec",
           "StatisticsConfig", "default_markets", "default_policies"]
