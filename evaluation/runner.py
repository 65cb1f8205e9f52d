"""Run one benchmark job in a worker: build the fold's data, train the policy on train/validation only,
then score it on the fold's test window once per cost level, without retraining.

:func:`run_job` is a top-level function of plain inputs (a :class:`evaluation.jobs.Job`), so the same
call runs in-process, in local worker processes or on a Dask cluster.

Options of a policy (see :class:`evaluation.config.PolicySpec`), all chosen or fitted on the fold's train and
validation rows only:

- ``thresholds``/``sizing``/``min_holding`` (kinds ``supervised`` and ``ensemble``): the threshold policy on the
  model, its thresholds by validation F1 or by :func:`agents.threshold_choice.choose_thresholds_for_money` at the
  base costs; ``meta["threshold_choice"]`` records what was chosen (a money choice may be "stay in cash").
- ``overlay``: the policy wrapped in :class:`agents.overlays.OverlayPolicy`, fitted on the fold's train rows;
  ``meta["overlay"]`` records the settings, what was fitted and the share of test bars risk on.
- ``ensemble``: :class:`agents.ensembles.SupervisedEnsemble` of the member jobs' bundles (``job.inputs``).
- ``agent_selector``: nothing trained; the member with the best ``meta["validation_sharpe"]`` (every supervised,
  ppo, dqn and ensemble job records it: the per-bar Sharpe, mean / std of the per-bar log returns of the equal-
  capital sleeves, of its final policy on the fold's validation split at the base costs) is chosen by
  :func:`agents.ensembles.select_per_window` (``lag=0``: a fold's validation ends before its test window), and
  its test results are the selector's. Ties go to the member listed first; a member without a finite recorded
  value (a job of older code) is left out of the comparison (the selection line names it); cash when no member's
  value is above 0 (cash's Sharpe), and an error when no member has one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from envs.backtest import backtest_many
from features.calendars import timeline_calendar
from features.dataset import DatasetConfig
from features.loading import load_bars
from features.market_data import MarketData
from sim.engine import Costs

from .code_version import code_version
from .config import PORTFOLIO_KINDS, SELECTOR_MEMBER_KINDS, merged
from .folds import Fold, fold_market_data
from .jobs import Job, JobResult, pack_directory, unpack_directory

SCORED_METRICS: tuple[str, ...] = ("total_return", "sharpe", "max_drawdown", "n_orders", "n_trades", "turnover",
                                   "costs_paid", "exposure")


def level_name(commission: float, slippage_bps: float) -> str:
    """The name of a cost level in results: ``c0.001_s5``."""
    return f"c{commission:g}_s{slippage_bps:g}"


@lru_cache(maxsize=4)
def _market_bars(dataset_json: str) -> dict:
    """The market's bars, loaded once per worker process."""
    import json

    from features.dataset import source_timeframe

    config = DatasetConfig.from_dict(json.loads(dataset_json))
    return load_bars(list(config.symbols), source_timeframe(config), config.start, config.end, config.source,
                     config.cache_dir)


@lru_cache(maxsize=8)
def _fold_data(dataset_json: str, fold_json: str, purge_gap: int | None) -> MarketData:
    import json

    config = DatasetConfig.from_dict(json.loads(dataset_json))
    fold = Fold(**json.loads(fold_json))
    return fold_market_data(_market_bars(dataset_json), config, fold, purge_gap)


def job_data(job: Job) -> MarketData:
    """The fold dataset of ``job`` (built from the market's bars, cached per process)."""
    import json

    spec = job.spec
    return _fold_data(json.dumps(spec["dataset"], sort_keys=True), json.dumps(spec["fold"], sort_keys=True),
                      spec["purge_gap"])


def run_job(job: Job) -> JobResult:
    """Train (if needed) and score one policy on one fold; see the module docstring.

    Arrays returned: ``<symbol>|timestamps`` (int64 ns of the test bars scored) and
    ``<symbol>|<level>|equity`` / ``<symbol>|<level>|position`` per cost level.
    """
    import torch

    torch.set_num_threads(1)
    spec = job.spec
    data = job_data(job)
    started = time.perf_counter()
    portfolio = spec["policy"]["kind"] in PORTFOLIO_KINDS
    with tempfile.TemporaryDirectory(prefix="bench_job_") as tmp:
        if spec["policy"]["kind"] == "agent_selector":
            meta, scores, arrays = _select_agent(job, data)
            train_seconds, artifact = time.perf_counter() - started, None
        else:
            if portfolio:
                policy, env_settings, meta, artifact_dir = _portfolio_policy(job, data, Path(tmp))
            else:
                policy, env_settings, meta, artifact_dir = _trained_policy(job, data, Path(tmp))
            train_seconds = time.perf_counter() - started
            artifact = pack_directory(artifact_dir) if artifact_dir is not None else None
            if portfolio:
                scores, arrays = _score_portfolio(policy, data, env_settings, spec["cost_levels"])
            else:
                scores, arrays = _score(policy, data, env_settings, spec["cost_levels"])
    meta.update(
        code=code_version(),  # the code that computed this result (a rerun of other code does not reuse it silently)
        key=job.key, name=job.name, market=job.market, fold=job.fold, policy=job.policy, seed=job.seed,
        kind=spec["policy"]["kind"], train_seconds=train_seconds, score_seconds=time.perf_counter() - started - train_seconds,
        symbols=[PORTFOLIO_SLEEVE] if portfolio else [s for s in data.symbols if f"{s}|timestamps" in arrays],
        scores=scores,
        base_level=level_name(*spec["base_cost"]),
        # the calendar of the symbols' timeline annualises the market's metrics (features.calendars.annualisation)
        calendar=timeline_calendar(data.calendars), timeframe=data.timeframe,
    )
    return JobResult(job.key, meta, arrays, artifact)


def _trained_policy(job: Job, data: MarketData, tmp: Path) -> tuple[Any, dict[str, Any], dict[str, Any], Path | None]:
    """The policy of ``job`` (trained on ``data``'s train split, chosen on validation) and what it records."""
    spec = job.spec
    policy_spec = spec["policy"]
    kind = policy_spec["kind"]
    if kind in ("cash", "buy_and_hold", "random", "sma_crossover"):
        from agents.baselines import make_baseline

        policy, env_settings, meta, artifact = make_baseline(kind, data, seed=job.seed), {}, {}, None
        meta["selection"] = "fixed rule"
    elif kind == "supervised":
        policy, env_settings, meta, artifact = _train_supervised(job, data, tmp)
    elif kind == "ensemble":
        policy, env_settings, meta, artifact = _ensemble_policy(job, data, tmp)
    else:
        policy, env_settings, meta, artifact = _train_agent(job, data, tmp)
    if policy_spec.get("overlay"):
        policy, meta = _with_overlay(job, policy, data, meta)
    if kind in SELECTOR_MEMBER_KINDS:
        meta["validation_sharpe"] = validation_sharpe(policy, data, env_settings, spec["base_cost"])
    return policy, env_settings, meta, artifact


def _train_supervised(job: Job, data: MarketData, tmp: Path):
    from features.preprocessing import Preprocessing
    from supervised.bundle import load_model, save_bundle
    from supervised.evaluation import choose_threshold, threshold_sweep
    from supervised.samples import predict_samples, split_rows
    from supervised.trainer import train_classifier

    model_config, train_config = supervised_configs(job)
    result = train_classifier(data, model_config, train_config, None, progress=False)
    validation = split_rows(data, "validation")  # windows gathered per batch, never the whole split at once
    probabilities = predict_samples(result.classifier.predict_proba, validation)
    chosen = choose_threshold(threshold_sweep(validation.labels, probabilities))
    bundle = tmp / "model"
    save_bundle(bundle, result.classifier, result.model_config, preprocessing=Preprocessing.of(data),
                label=data.label, threshold=chosen["threshold"], dataset_hashes=data.hashes,
                metrics={"validation_f1": chosen["f1"]})
    f1_text = f"threshold {chosen['threshold']:.2f} by validation F1 ({chosen['f1']:.3f})"
    policy, record, text = _threshold_policy(job, load_model(bundle), data, f1_text)
    meta = {"selection": f"{text}; best epoch {result.best_epoch} by validation F1",
            "threshold": chosen["threshold"], "validation_f1": chosen["f1"], "best_epoch": result.best_epoch,
            "threshold_choice": record}
    return policy, dict(getattr(policy, "env_settings", {})), meta, bundle


def _threshold_policy(job: Job, model: Any, data: MarketData, f1_text: str) -> tuple[Any, dict[str, Any], str]:
    """The threshold policy of a probability model (a bundle's model, an ensemble) with the job's ``thresholds``,
    ``sizing`` and ``min_holding``; what was chosen (JSON-able) and a line saying so.

    :param job: a ``supervised`` or ``ensemble`` job.
    :param model: the model, whose ``threshold`` is the one chosen by validation F1.
    :param data: the fold's data (only its validation split is read).
    :param f1_text: how the F1 threshold was chosen, for the line.
    """
    from agents.supervised_policy import SupervisedThresholdPolicy
    from agents.threshold_choice import DEFAULT_MIN_HOLDS, choose_thresholds_for_money, fit_calibrator
    from agents.threshold_choice import validation_probabilities

    policy_spec = job.spec["policy"]
    objective, sizing = policy_spec.get("thresholds", "f1"), policy_spec.get("sizing", "all_in")
    options, holds = dict(policy_spec.get("sizing_options") or {}), policy_spec.get("min_holding")
    sized = "" if sizing == "all_in" else f", sizing {sizing}{' ' + str(options) if options else ''}"
    with _named(f"policies.{job.policy}"):
        if objective != "f1":
            grid = DEFAULT_MIN_HOLDS if holds is None else (
                tuple(holds) if isinstance(holds, (list, tuple)) else (holds,))
            commission, slippage = job.spec["base_cost"]
            choice = choose_thresholds_for_money(model, data, Costs(commission=float(commission),
                                                                    slippage=float(slippage)),
                                                 objective=objective, min_holds=grid, sizing=sizing,
                                                 sizing_options=options)
            return choice.policy(model), choice.to_dict(), f"by validation {objective} after costs: {choice.describe()}"
        calibrator = fit_calibrator(*validation_probabilities(model, data)) if sizing == "kelly" else None
        policy = SupervisedThresholdPolicy(model, min_holding=int(holds or 0), sizing=sizing, calibrator=calibrator,
                                           **options)
    record = {"objective": "f1", "stay_in_cash": False, "entry_threshold": policy.entry_threshold,
              "exit_threshold": policy.exit_threshold, "min_holding": policy.min_holding,
              "max_holding": policy.max_holding, "sizing": sizing, "sizing_options": options,
              "calibrator": None if calibrator is None else calibrator.to_dict(), "split": "validation"}
    held = f", min hold {policy.min_holding}" if holds else ""
    calibrated = f" ({calibrator.method} calibration on validation)" if calibrator is not None else ""
    return policy, record, f"{f1_text}{held}{sized}{calibrated}"


def _ensemble_policy(job: Job, data: MarketData, tmp: Path):
    """The threshold policy of the ensemble of the member jobs' bundles (``job.inputs``, in ``members`` order),
    weighted on the fold's validation split."""
    from agents.ensembles import SupervisedEnsemble
    from supervised.bundle import load_model

    policy_spec = job.spec["policy"]
    members = list(policy_spec["members"])
    if not isinstance(job.inputs, tuple) or len(job.inputs) != len(members):
        raise ValueError(f"{job.name} needs the results of its members {members} (jobs {job.depends_on})")
    models = []
    for name, result in zip(members, job.inputs):
        if result.artifact is None:
            raise ValueError(f"{job.name}: member {name!r} (job {result.key[:12]}) has no bundle")
        models.append(load_model(unpack_directory(result.artifact, tmp / "members" / name)))
    with _named(f"policies.{job.policy}"):
        ensemble = SupervisedEnsemble(models, policy_spec["weights"], data=data, seed=job.seed)
    record = {**ensemble.to_dict(), "members": members}
    f1_text = f"threshold {ensemble.threshold:.2f} by validation F1"
    policy, choice, text = _threshold_policy(job, ensemble, data, f1_text)
    weights = ", ".join(f"{n} {w:.2f}" for n, w in zip(members, ensemble.weights))
    how = "stacked by a logistic regression on validation" if policy_spec["weights"] == "stacking" else \
        f"{policy_spec['weights']} weights ({weights})"
    meta = {"selection": f"ensemble of {len(members)} models, {how}; {text}", "ensemble": record,
            "threshold_choice": choice}
    return policy, dict(getattr(policy, "env_settings", {})), meta, None


def _with_overlay(job: Job, policy: Any, data: MarketData, meta: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``policy`` wrapped in the job's risk overlay, fitted on the fold's train rows; ``meta`` with the overlay's
    record and its selection line extended."""
    from agents.overlays import OverlayPolicy, fit_overlay

    from .config import make_overlay_config

    where = f"policies.{job.policy}.overlay"
    config = make_overlay_config(job.spec["policy"]["overlay"], where)
    with _named(where):
        overlay = fit_overlay(config, data)
        wrapped = OverlayPolicy(policy, overlay)
    test = np.concatenate([np.arange(*data.split_range("test", s)) for s in data.symbols])
    # the drawdown brake has no filter (it acts on its own paper equity as it trades): no share to tell
    risk_on = None if overlay.brake or not len(test) else float(np.mean(overlay.risk_on[test]))
    how = "a brake on its own paper equity" if overlay.brake else f"risk on {risk_on:.0%} of test bars"
    meta = {**meta, "selection": f"{meta.get('selection') or 'fixed rule'}; overlay {overlay.describe()} "
                                 f"(fitted on train rows; {how})",
            "overlay": {"config": dataclasses.asdict(config), "fitted": overlay.fitted, "risk_on_test_share": risk_on}}
    return wrapped, meta


def validation_sharpe(policy: Any, data: MarketData, env_settings: dict[str, Any], base_cost: list[float]) -> float:
    """The per-bar Sharpe (mean / std, ddof 1, not annualised) of the per-bar log returns of ``policy``'s equal-
    capital sleeves on the fold's VALIDATION split at the base costs (as the report pools a market's test bars;
    0.0 when they do not vary: cash).

    :param policy: the job's final policy (overlay included).
    :param data: the fold's data.
    :param env_settings: the env settings the policy acts in.
    :param base_cost: ``[commission, slippage_bps]``.
    """
    from .analysis import portfolio_equity

    level = level_name(*base_cost)
    scores, arrays = _score(policy, data, env_settings, [list(base_cost)], split="validation")
    symbols = list(scores[level]["per_symbol"])
    if not symbols:
        raise ValueError(f"no symbol of {list(data.symbols)} has 2 validation bars to measure a validation Sharpe")
    equity = portfolio_equity(JobResult("", {"symbols": symbols, "timeframe": data.timeframe}, arrays), level)
    returns = np.diff(np.log(equity.to_numpy()))
    spread = float(np.std(returns, ddof=1)) if len(returns) > 1 else 0.0
    return float(np.mean(returns) / spread) if spread > 0.0 else 0.0


def _select_agent(job: Job, data: MarketData) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """The agent selector's fold: the member with the best recorded validation Sharpe (rules in the module
    docstring) and its test scores and curves, copied (or cash's, scored here, when no member beats cash)."""
    import math

    from agents.ensembles import select_per_window

    members = list(job.spec["policy"]["members"])
    if not isinstance(job.inputs, tuple) or len(job.inputs) != len(members):
        raise ValueError(f"{job.name} needs the results of its members {members} (jobs {job.depends_on})")
    results = dict(zip(members, job.inputs))
    recorded = {name: results[name].meta.get("validation_sharpe") for name in members}
    sharpes = {name: float(v) for name, v in recorded.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    missing = [name for name in members if name not in sharpes]
    if not sharpes:
        raise ValueError(f"policies.{job.policy}: no member of {members} recorded a validation Sharpe in fold "
                         f"{job.fold} (jobs of older code?); rerun them")
    chosen = select_per_window({name: [value] for name, value in sharpes.items()}, lag=0)[0]
    shown = ", ".join(f"{name} {value:.4f}" for name, value in sharpes.items())
    line = (f"fold {job.fold}: {chosen if chosen else 'cash (no member above 0)'} by validation Sharpe ({shown})"
            + (f"; no recorded value: {', '.join(missing)}" if missing else ""))
    meta = {"selection": line, "selected": chosen, "validation_sharpes": sharpes,
            "validation_sharpe": sharpes[chosen] if chosen else 0.0}
    if chosen is None:
        from agents.baselines import make_baseline

        scores, arrays = _score(make_baseline("cash", data), data, {}, job.spec["cost_levels"])
        return meta, scores, arrays
    source = results[chosen]
    meta["selected_job"] = source.key
    return meta, source.meta["scores"], dict(source.arrays)


def _train_agent(job: Job, data: MarketData, tmp: Path):
    from agents.saved_agent import load_agent
    from agents.training import train_agent

    policy_spec = job.spec["policy"]
    bundle = None
    if policy_spec.get("pretrained"):
        if job.inputs is None:
            raise ValueError(f"{job.name} needs the bundle of {policy_spec['pretrained']} (job {job.depends_on})")
        bundle = str(unpack_directory(job.inputs, tmp / "pretrained"))
    config = agent_config(job, bundle)
    summary = train_agent(config, data, tmp / "run", progress=False)
    agent = load_agent(tmp / "run" / "best")
    best = summary.get("best_validation") or {}
    rule = summary.get("selection_rule") or f"validation against cash (t >= {config.min_tstat:g})"
    if summary["fallback"] is not None:
        rule = f"cash fallback: no checkpoint passed {rule}"
    meta = {"selection": rule, "selection_rule": summary.get("selection_rule"), "fallback": summary["fallback"], "timesteps": summary["timesteps"],
            "validation_log_return": best.get("log_return"), "validation_tstat": best.get("tstat"),
            "init_agreement": summary.get("init_agreement")}
    return agent, dict(agent.env_settings), meta, tmp / "run" / "best"


PORTFOLIO_SLEEVE = "portfolio"  # a portfolio job's one account, where other jobs have one account per symbol


def _portfolio_policy(job: Job, data: MarketData, tmp: Path):
    """A portfolio policy of ``job``: an allocation fitted on the fold's train rows (skfolio), or a portfolio
    agent trained on train and chosen on validation."""
    from features.panel import Panel

    policy_spec = job.spec["policy"]
    panel = Panel.from_market_data(data)
    if policy_spec["kind"] == "allocation":
        from agents.portfolio_baselines import fit_allocation_policy

        method = policy_spec["method"]
        policy = fit_allocation_policy(method, panel, "train", rebalance_every=policy_spec["rebalance_every"])
        meta = {"selection": policy.describe(), "weights": dict(zip(panel.symbols, map(float, policy.weights)))}
        return policy, {}, meta, None
    from agents.portfolio_agent import load_portfolio_agent, train_portfolio_agent

    bundle = None
    if policy_spec.get("pretrained"):
        if job.inputs is None:
            raise ValueError(f"{job.name} needs the bundle of {policy_spec['pretrained']} (job {job.depends_on})")
        bundle = str(unpack_directory(job.inputs, tmp / "pretrained"))
    config = portfolio_agent_config(job)
    summary = train_portfolio_agent(config, data, tmp / "run", bundle=bundle, progress=False)
    agent = load_portfolio_agent(tmp / "run" / "best")
    rule = summary.get("selection_rule") or "validation against buy-and-hold and equal weight"
    if summary.get("fallback"):
        rule = f"{summary['fallback']} fallback: no checkpoint passed {rule}"
    meta = {"selection": rule, "fallback": summary.get("fallback"),
            "timesteps": summary.get("timesteps"),
            "validation_log_return": (summary.get("best_validation") or {}).get("log_return")}
    return agent, {}, meta, tmp / "run" / "best"


def portfolio_agent_config(job: Job) -> Any:
    """The portfolio agent's config of a ``portfolio_agent`` job: ``budgets.portfolio_agent`` under the policy's
    ``agent`` settings (a key or value it refuses is a ``ValueError`` naming the policy). A ``pretrained``
    policy's bundle is not part of it: it is passed to the training beside it."""
    from agents.portfolio_agent import PortfolioAgentConfig

    policy_spec = job.spec["policy"]
    settings = merged(job.spec["budget"], policy_spec.get("agent", {}))
    settings.update(algo=policy_spec["algo"], seed=job.seed, torch_threads=1)
    where = f"policies.{job.policy} (budgets.portfolio_agent + agent)"
    with _named(where):
        return PortfolioAgentConfig.from_dict(settings, where)


def _score_portfolio(policy: Any, data: MarketData, env_settings: dict[str, Any],
                     levels: list[list[float]]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Backtest a portfolio policy on the fold's test rows at every cost level: one account, recorded as the one
    sleeve :data:`PORTFOLIO_SLEEVE` (position = the invested share of equity, 1 - the cash weight)."""
    from envs.portfolio_backtest import backtest_portfolio
    from features.panel import Panel

    panel = Panel.from_market_data(data)
    scores: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for commission, slippage in levels:
        name = level_name(commission, slippage)
        result = backtest_portfolio(policy, panel, "test", Costs(commission=float(commission), slippage=float(slippage)),
                                    **env_settings)
        arrays.setdefault(f"{PORTFOLIO_SLEEVE}|timestamps", _nanoseconds(result.timestamps))
        arrays[f"{PORTFOLIO_SLEEVE}|{name}|equity"] = np.asarray(result.equity, dtype=np.float64)
        arrays[f"{PORTFOLIO_SLEEVE}|{name}|position"] = (1.0 - np.asarray(result.weights)[:, -1]).astype(np.float32)
        metrics = {k: _plain(result.metrics.get(k)) for k in SCORED_METRICS}
        metrics["log_return"] = float(np.log(result.equity[-1] / result.equity[0]))
        metrics["costs_share"] = float((metrics["costs_paid"] or 0.0) / result.equity[0])
        scores[name] = {"commission": float(commission), "slippage_bps": float(slippage),
                        "per_symbol": {PORTFOLIO_SLEEVE: metrics}, "notes": list(getattr(result, "notes", []))}
    return scores, arrays


def _nanoseconds(stamps: Any) -> np.ndarray:
    """int64 UTC nanoseconds of timestamps given as a DatetimeIndex, datetime64 or int64 array."""
    import pandas as pd

    values = pd.DatetimeIndex(stamps) if not isinstance(stamps, np.ndarray) or stamps.dtype != np.int64 else stamps
    return np.asarray(values.asi8 if isinstance(values, pd.DatetimeIndex) else values, dtype=np.int64)


def supervised_configs(job: Job) -> tuple[Any, Any]:
    """The :class:`supervised.ModelConfig` and :class:`supervised.TrainConfig` a supervised job trains with
    (a key or value they refuse is a ``ValueError`` naming the policy or the budget).

    :param job: a job of a ``supervised`` policy.
    """
    from configs.loader import dataclass_from_dict
    from supervised.models import ModelConfig
    from supervised.trainer import TrainConfig

    policy_spec = job.spec["policy"]
    where = f"policies.{job.policy}.model_settings"
    with _named(where):
        model_config = ModelConfig.from_dict({"kind": policy_spec["model"], **policy_spec.get("model_settings", {})},
                                             where)
    with _named("budgets.supervised"):
        train_config = dataclass_from_dict(TrainConfig, {**job.spec["budget"], "seed": job.seed, "num_threads": 1},
                                           "budgets.supervised")
    return model_config, train_config


def agent_config(job: Job, pretrained: str | None) -> Any:
    """The :class:`agents.AgentConfig` a ppo/dqn job trains with: ``budgets.<kind>`` under the policy's
    ``agent`` settings (a key or value it refuses is a ``ValueError`` naming the policy).

    :param job: a job of a ``ppo`` or ``dqn`` policy.
    :param pretrained: the folder of the supervised bundle it starts from (None: none, or not yet known).
    """
    from agents.config import AgentConfig

    policy_spec = job.spec["policy"]
    settings = merged(job.spec["budget"], policy_spec.get("agent", {}))
    settings.update(algo=policy_spec["kind"], seed=job.seed, torch_threads=1)
    if policy_spec.get("pretrained"):
        settings["pretrained"] = pretrained or f"<the bundle of {policy_spec['pretrained']}>"
        settings["init_from_classifier"] = bool(policy_spec.get("init_from_classifier"))
    where = f"policies.{job.policy} (budgets.{policy_spec['kind']} + agent)"
    with _named(where):
        return AgentConfig.from_dict(settings, where)


@contextlib.contextmanager
def _named(where: str) -> Iterator[None]:
    """Prefix ``where`` to a ``ValueError`` raised inside that does not start with it already."""
    try:
        yield
    except ValueError as error:
        text = " ".join(str(error).split())
        if text.startswith(where):
            raise
        raise ValueError(f"{where}: {text}") from None


def check_job_settings(job: Job) -> None:
    """Build the settings ``job`` will train with, so a bad one is refused before any job runs.

    :param job: any job (baselines have no settings to check).
    """
    kind = job.spec["policy"]["kind"]
    if kind in ("supervised", "ensemble"):
        _check_min_holding(job)
    if kind == "supervised":
        supervised_configs(job)
    elif kind in ("ppo", "dqn"):
        agent_config(job, None)
    elif kind == "portfolio_agent":
        portfolio_agent_config(job)


def _check_min_holding(job: Job) -> None:
    """Refuse a ``min_holding`` above the market's label horizon (every position is held at most that long)."""
    from features.labels import LabelConfig

    holds = job.spec["policy"].get("min_holding")
    holds = [] if holds is None else list(holds) if isinstance(holds, (list, tuple)) else [holds]
    horizon = LabelConfig(**job.spec["dataset"].get("labels", {})).horizon
    if any(hold > horizon for hold in holds):
        raise ValueError(f"policies.{job.policy}.min_holding={job.spec['policy']['min_holding']} exceeds the label "
                         f"horizon of market {job.market!r} ({horizon} bars), the longest a position is held")


def check_labels(job: Job) -> None:
    """Refuse a supervised job whose fold's train or validation split has too few label positives (the
    trainer's own check, run on the coordinator before any job starts); the error names the market,
    the fold and the split.

    :param job: a job of a ``supervised`` policy.
    """
    from features.labels import check_positive_rate
    from supervised.samples import split_rows

    data = job_data(job)
    floor = supervised_configs(job)[1].min_positive_rate
    try:
        for split, least in (("train", 2), ("validation", 1)):  # as supervised.trainer.train_classifier
            check_positive_rate(split_rows(data, split, min_samples=least).labels, split, data.label, floor,
                                data.timeframe)
    except ValueError as error:
        raise ValueError(f"market {job.market!r}, fold {job.fold}: {' '.join(str(error).split())}") from None


def _score(policy: Any, data: MarketData, env_settings: dict[str, Any],
           levels: list[list[float]], split: str = "test") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Backtest ``policy`` on the ``split`` (the test split) of every symbol at every cost level (all in one
    lockstep run)."""
    symbols = [s for s in data.symbols if np.subtract(*data.split_range(split, s)[::-1]) >= 2]
    costs = [Costs(commission=float(c), slippage=float(s)) for c, s in levels]
    results = backtest_many(policy, data, split, costs, symbols, **env_settings)
    scores: dict[str, Any] = {level_name(c, s): {"commission": float(c), "slippage_bps": float(s), "per_symbol": {}}
                              for c, s in levels}
    arrays: dict[str, np.ndarray] = {}
    for (symbol, (commission, slippage)), result in zip([(s, l) for s in symbols for l in levels], results):
        name = level_name(commission, slippage)
        arrays.setdefault(f"{symbol}|timestamps", result.timestamps.astype("datetime64[ns]").astype(np.int64))
        arrays[f"{symbol}|{name}|equity"] = result.equity
        arrays[f"{symbol}|{name}|position"] = result.position.astype(np.float32)
        metrics = {k: _plain(result.metrics.get(k)) for k in SCORED_METRICS}
        metrics["log_return"] = float(np.log(result.equity[-1] / result.equity[0]))
        metrics["costs_share"] = float((metrics["costs_paid"] or 0.0) / result.equity[0])  # of the account's capital
        scores[name]["per_symbol"][symbol] = metrics
    return scores, arrays


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


__all__ = ["agent_config", "check_job_settings", "check_labels", "job_data", "level_name", "run_job",
           "supervised_configs", "validation_sharpe"]
