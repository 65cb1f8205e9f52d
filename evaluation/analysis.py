"""From job results to the benchmark's numbers: portfolios, pooled metrics, intervals, verdicts.

Conventions (stated in the report too):

- A market's policy return is an equal-weight portfolio of its symbols (one account per symbol, equal
  starting capital), per bar of the union of their test timestamps; a portfolio policy (allocation, portfolio
  agent) is one account across the symbols. Costs compare as a share of the capital.
- Seeds: every seed is reported (spread: min / median / max); the headline series of a trained policy
  gives each seed's run equal capital (the mean of the seeds' equity curves), never the best seed.
- Pooled: the folds' test windows are consecutive and disjoint; their per-bar log returns are joined.
- Intervals: stationary bootstrap over per-bar returns (autocorrelation kept); excess over buy-and-hold
  is bootstrapped jointly with buy-and-hold's returns on the same bars; excess over cash is the log
  return itself (cash earns 0).
- Deflated Sharpe: the number of trials is every policy x seed run of the market (what was tried).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from features.calendars import NO_CALENDAR, annualisation, timeline_calendar

from . import statistics as st
from .overfitting import probability_of_backtest_overfitting
from .config import BenchmarkConfig, MarketSpec
from .folds import Fold, fold_summary
from .jobs import Job, JobResult
from .runner import PORTFOLIO_SLEEVE, level_name

BENCHMARK_POLICIES = ("cash", "buy_and_hold")


def portfolio_equity(result: JobResult, level: str) -> pd.Series:
    """Equal-weight portfolio equity (starting at 1) of a job's symbols at one cost level, on the union of their
    times (daily bars by their UTC date, as :class:`features.Panel` lays them: a stock stamped at midnight New
    York and a pair stamped at 00:00 UTC share a date)."""
    curves = []
    daily = result.meta.get("timeframe") == "1Day"
    for symbol in result.meta["symbols"]:
        stamps = pd.to_datetime(result.arrays[f"{symbol}|timestamps"], utc=True)
        stamps = stamps.floor("D") if daily else stamps
        equity = result.arrays[f"{symbol}|{level}|equity"]
        curves.append(pd.Series(equity / equity[0], index=stamps, name=symbol))
    frame = pd.concat(curves, axis=1, sort=True).ffill().fillna(1.0)
    return frame.mean(axis=1)


def analyse(config: BenchmarkConfig, folds: dict[str, list[Fold]], jobs: list[Job],
            results: list[JobResult]) -> dict[str, Any]:
    """Every number of the report (JSON-able). See the module docstring for the conventions."""
    by_job = {job.key: (job, result) for job, result in zip(jobs, results)}
    base = level_name(config.costs.commission, config.costs.slippage_bps)
    rng = np.random.default_rng(config.statistics.seed)
    report: dict[str, Any] = {
        "config": config.to_dict(),
        "base_cost": {"commission": config.costs.commission, "slippage_bps": config.costs.slippage_bps, "level": base},
        "confidence": config.statistics.confidence,
        "markets": {},
    }
    for market in config.markets:
        market_jobs = [(job, result) for job, result in by_job.values() if job.market == market.name]
        report["markets"][market.name] = _analyse_market(config, market, folds[market.name], market_jobs,
                                                         base, rng)
    report["verdicts"] = [v for m in report["markets"].values() for v in m["verdicts"]]
    return report


def _analyse_market(config: BenchmarkConfig, market_spec: MarketSpec, folds: list[Fold],
                    jobs: list[tuple[Job, JobResult]], base: str, rng: np.random.Generator) -> dict[str, Any]:
    market = market_spec.name
    specs = [p for p in config.policies if market_spec.runs(p)]  # the policies run on this market
    stats = config.statistics
    levels = [level_name(c, s) for c, s in config.costs.levels()]
    # (policy, fold, seed) -> portfolio equity per level
    curves: dict[tuple[str, int, int], dict[str, pd.Series]] = {}
    metas: dict[tuple[str, int, int], dict[str, Any]] = {}
    for job, result in jobs:
        curves[(job.policy, job.fold, job.seed)] = {level: portfolio_equity(result, level) for level in levels}
        metas[(job.policy, job.fold, job.seed)] = result.meta
    any_meta = next(iter(metas.values()))
    first_symbol = any_meta["symbols"][0]
    stamps = next(r for j, r in jobs).arrays[f"{first_symbol}|timestamps"]
    # stale jobs reused by --reuse-stale-jobs may predate the recorded calendar: measured, as their code did
    calendar = timeline_calendar([m.get("calendar", NO_CALENDAR) for m in metas.values()])
    if calendar == NO_CALENDAR and len(stamps) <= 2:
        periods, annualised_by = 252.0, "252 bars a year (too few bars to measure a frequency)"
    else:
        periods, annualised_by = annualisation(calendar, any_meta.get("timeframe", "1Day"), stamps)
    fold_ids = [f.index for f in folds]

    def seeds_of(policy: str) -> list[int]:
        return sorted({s for (p, _, s) in curves if p == policy})

    def fold_returns(policy: str, fold: int, seed: int, level: str) -> np.ndarray:
        return np.diff(np.log(curves[(policy, fold, seed)][level].to_numpy()))

    def seed_average_returns(policy: str, level: str) -> np.ndarray:
        """Pooled per-bar log returns of the equal-capital mix of the policy's seeds."""
        pieces = []
        for fold in fold_ids:
            mix = np.mean([curves[(policy, fold, s)][level].to_numpy() for s in seeds_of(policy)], axis=0)
            pieces.append(np.diff(np.log(mix)))
        return np.concatenate(pieces)

    policies = [p.name for p in specs]
    bh_name = next(p.name for p in specs if p.kind == "buy_and_hold")
    bh_returns = seed_average_returns(bh_name, base)
    block = stats.mean_block or st.default_block_length(bh_returns)

    # trials: every policy x seed run; their per-bar Sharpes give the variance the DSR needs
    trial_sharpes = []
    for policy in policies:
        for seed in seeds_of(policy):
            pooled = np.concatenate([fold_returns(policy, f, seed, base) for f in fold_ids])
            if pooled.std(ddof=1) > 0:
                trial_sharpes.append(pooled.mean() / pooled.std(ddof=1))
    n_trials = sum(len(seeds_of(p)) for p in policies)
    overfitting = _overfitting(curves, [(p, s) for p in policies for s in seeds_of(p)], fold_ids, base,
                               stats.pbo_splits)
    trial_variance = float(np.var(trial_sharpes, ddof=1)) if len(trial_sharpes) > 1 else 0.0

    out_policies: dict[str, Any] = {}
    for spec in specs:
        name = spec.name
        seeds = seeds_of(name)
        per_fold = []
        for fold in fold_ids:
            for seed in seeds:
                meta = metas[(name, fold, seed)]
                r = fold_returns(name, fold, seed, base)
                bh = fold_returns(bh_name, fold, 0, base)
                per_fold.append({
                    "fold": fold, "seed": seed, **_series_metrics(r, periods),
                    **_trading_totals(meta, base),
                    "excess_vs_buy_and_hold": float(r.sum() - bh.sum()),
                    "selection": meta.get("selection"), "train_seconds": meta.get("train_seconds"),
                })
        seed_pooled = {}
        for seed in seeds:
            r = np.concatenate([fold_returns(name, f, seed, base) for f in fold_ids])
            seed_pooled[seed] = _series_metrics(r, periods)
        mix = seed_average_returns(name, base)
        pooled = {**_series_metrics(mix, periods),
                  **{k: float(np.mean([row[k] for row in per_fold]))
                     * (len(fold_ids) if k in ("n_orders", "costs_paid", "costs_share") else 1)
                     for k in ("n_orders", "costs_paid", "costs_share", "turnover", "exposure")}}
        sharpe_ci = st.sharpe_interval(mix, periods, mean_block=block, n_resamples=stats.bootstrap_resamples,
                                       confidence=stats.confidence, rng=rng)
        vs_bh = st.excess_log_return_interval(mix, bh_returns, mean_block=block,
                                              n_resamples=stats.bootstrap_resamples, confidence=stats.confidence,
                                              rng=rng)
        vs_cash = st.excess_log_return_interval(mix, np.zeros_like(mix), mean_block=block,
                                                n_resamples=stats.bootstrap_resamples, confidence=stats.confidence,
                                                rng=rng)
        deflated = st.deflated_sharpe_ratio(mix, n_trials=n_trials, trial_sharpes_variance=trial_variance)
        beats = st.beat_share(np.array([row["log_return"] for row in per_fold]),
                              np.array([fold_returns(bh_name, row["fold"], 0, base).sum() for row in per_fold]))
        sensitivity = {}
        for commission, slippage in config.costs.levels():
            level = level_name(commission, slippage)
            sensitivity[level] = {"commission": commission, "slippage_bps": slippage,
                                  "log_return": float(seed_average_returns(name, level).sum())}
        path = [(commission * 1e4 + slippage, sensitivity[level_name(commission, slippage)]["log_return"])
                for commission, slippage in ((config.costs.commission * k, config.costs.slippage_bps * k)
                                             for k in config.costs.break_even_scales)]
        path.sort()
        break_even = st.break_even_cost([x for x, _ in path], [y for _, y in path])
        if spec.kind == "cash":
            break_even, break_even_note = None, "n/a (cash is the reference)"
        elif all(y == 0.0 for _, y in path):
            break_even, break_even_note = None, "n/a (never trades: cash fallback)"
        elif break_even is None:
            break_even_note = "negative even at zero cost"
        elif np.isinf(break_even):
            break_even_note = f"positive at every cost tested (up to {path[-1][0]:g} bps per side)"
            break_even = None
        else:
            break_even_note = f"{break_even:.1f} bps per side"
        out_policies[name] = {
            "kind": spec.kind,
            "n_seeds": len(seeds),
            "per_fold": per_fold,
            "per_seed": {str(k): v for k, v in seed_pooled.items()},
            "seed_spread": {
                "log_return": st.summarise_spread([v["log_return"] for v in seed_pooled.values()]),
                "sharpe": st.summarise_spread([v["sharpe"] for v in seed_pooled.values()]),
            },
            "pooled": pooled,
            "intervals": {"sharpe": list(sharpe_ci), "excess_vs_buy_and_hold": list(vs_bh),
                          "excess_vs_cash": list(vs_cash)},
            "deflated_sharpe": deflated,
            "beat_buy_and_hold_share": beats,
            "cost_sensitivity": sensitivity,
            "break_even_cost_bps_per_side": break_even,
            "break_even_note": break_even_note,
            "selection": sorted({row["selection"] for row in per_fold if row["selection"]}),
        }
    ranking = sorted(out_policies, key=lambda p: out_policies[p]["pooled"]["sharpe"], reverse=True)
    curves_out = {}
    for fold in fold_ids:
        curves_out[str(fold)] = {}
        for name in policies:
            mix = np.mean([curves[(name, fold, s)][base].to_numpy() for s in seeds_of(name)], axis=0)
            index = curves[(name, fold, seeds_of(name)[0])][base].index
            curves_out[str(fold)][name] = {"timestamps": [t.isoformat() for t in index], "equity": mix.tolist()}
    return {
        "folds": fold_summary(folds),
        "symbols": next((m["symbols"] for m in metas.values() if m["symbols"] != [PORTFOLIO_SLEEVE]),
                        list(market_spec.dataset.symbols)),
        # what the scores say about the data (close-only data fills at the next close), once each
        "notes": sorted({note for m in metas.values() for note in (m["scores"][base].get("notes") or [])}),
        "periods_per_year": periods,
        "annualised_by": annualised_by,
        "mean_block": int(block),
        "n_trials": n_trials,
        "policies": out_policies,
        "ranking": ranking,
        "overfitting": overfitting,
        "verdicts": _verdicts(market, out_policies, config.statistics.confidence)
        + [f"{market}: {overfitting['verdict']}"],
        "equity_curves": curves_out,
    }


def _series_metrics(returns: np.ndarray, periods: float) -> dict[str, float]:
    """Log return, annualised Sharpe and max drawdown of per-bar log returns."""
    equity = np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    drawdown = 1.0 - equity / np.maximum.accumulate(equity)
    return {"log_return": float(returns.sum()), "sharpe": st.sharpe_ratio(returns, periods),
            "max_drawdown": float(drawdown.max())}


def _trading_totals(meta: dict[str, Any], level: str) -> dict[str, float]:
    per_symbol = meta["scores"][level]["per_symbol"].values()
    return {
        "n_orders": float(sum(m["n_orders"] or 0 for m in per_symbol)),
        "costs_paid": float(sum(m["costs_paid"] or 0 for m in per_symbol)),
        # costs as a share of the capital: every account starts with the same cash, so the mean of the accounts'
        # shares is the market's (one portfolio account and N per-symbol sleeves compare on it)
        "costs_share": float(np.mean([m.get("costs_share") or 0 for m in per_symbol])),
        "turnover": float(np.mean([m["turnover"] or 0 for m in per_symbol])),
        "exposure": float(np.mean([m["exposure"] or 0 for m in per_symbol])),
    }


def _overfitting(curves: dict[tuple[str, int, int], dict[str, pd.Series]], columns: list[tuple[str, int]],
                 fold_ids: list[int], base: str, n_splits: int) -> dict[str, Any]:
    """The probability of backtest overfitting over every policy x seed the market ran (one column each: its
    per-bar log returns at the base costs over every fold's test bars, in time order), by CSCV
    (:mod:`evaluation.overfitting`). Fewer blocks than ``n_splits`` when the bars are too few; none at all
    (a verdict saying so) under 4 bars or 2 columns.

    :param curves: ``(policy, fold, seed) -> {level: equity}``.
    :param columns: the ``(policy, seed)`` runs, in report order.
    :param fold_ids: the folds, in time order.
    :param base: the base cost level.
    :param n_splits: the configured number of blocks S.
    """
    pieces = []
    for fold in fold_ids:
        frame = pd.concat([curves[(policy, fold, seed)][base].rename(f"{policy} seed {seed}")
                           for policy, seed in columns], axis=1, sort=True).ffill().bfill()
        pieces.append(np.diff(np.log(frame.to_numpy()), axis=0))
    returns = np.concatenate(pieces) if pieces else np.zeros((0, len(columns)))
    labels = [f"{policy} seed {seed}" for policy, seed in columns]
    splits = min(n_splits, (len(returns) // 2) // 2 * 2)
    if len(columns) < 2 or splits < 2:
        return {"pbo": None, "verdict": f"PBO not computed: {len(columns)} configuration(s) over {len(returns)} "
                                        f"test bars (needs 2 or more over 4 bars or more)"}
    result = probability_of_backtest_overfitting(returns, n_splits=splits, labels=labels)
    summary = result.to_dict()
    for picked in summary["most_picked"]:
        picked["name"] = labels[picked["column"]]
    return {**summary, "verdict": result.verdict()}


def _verdicts(market: str, policies: dict[str, Any], confidence: float) -> list[str]:
    level = f"{confidence:.0%}"
    out = []
    contenders = [p for p in policies if p not in BENCHMARK_POLICIES and policies[p]["kind"] not in BENCHMARK_POLICIES]
    winners_bh = [p for p in contenders if policies[p]["intervals"]["excess_vs_buy_and_hold"][1] > 0]
    winners_cash = [p for p in contenders if policies[p]["intervals"]["excess_vs_cash"][1] > 0]
    losers_cash = [p for p in contenders if policies[p]["intervals"]["excess_vs_cash"][2] < 0]
    if winners_bh:
        out.append(f"{market}: {', '.join(winners_bh)} beat(s) buy-and-hold after costs at {level}.")
    else:
        out.append(f"{market}: no policy beats buy-and-hold after costs at {level}.")
    if winners_cash:
        out.append(f"{market}: {', '.join(winners_cash)} beat(s) cash after costs at {level}.")
    else:
        out.append(f"{market}: no trained or rule-based policy beats cash after costs at {level}.")
    if losers_cash:
        out.append(f"{market}: {', '.join(losers_cash)} lose(s) money against cash at {level}.")
    return out


__all__ = ["analyse", "portfolio_equity"]
