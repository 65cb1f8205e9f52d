"""The benchmark's report: ``report.json`` (everything), ``report.md`` (tables and verdicts) and PNG charts.

:func:`write_report` renders the dict :func:`evaluation.analysis.analyse` returns (plus the ``run`` facts
:func:`evaluation.benchmark.run_benchmark` adds) into a run folder:

- ``report.json``: the whole dict, strict JSON (``allow_nan=False``): NaN and +-inf become ``null`` and a
  ``notes`` entry says where;
- ``report.md``: the run facts, then per market a ranking table (in descending pooled Sharpe), the seed
  spread, per-fold results, the cost sensitivity, how each trained policy was selected and the verdicts;
- ``equity_<market>.png``, ``sharpe_<market>.png``, ``costs_<market>.png``, ``trades_<market>.png``.

Every file is written through a temp file in ``run_dir`` and ``os.replace``: a reader sees the previous
file or the new one, never half of one, and a rerun leaves no temp file behind. Charts are drawn on
matplotlib's Agg canvas without pyplot (no global figure state, no display needed).
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from features.atomic_io import write_bytes_atomic, write_text_atomic

TRAINED_KINDS = ("supervised", "ppo", "dqn", "ensemble", "agent_selector")
NA = "n/a"
_MAX_NOTED_PATHS = 20


# ------------------------------------------------------------------------------------------- entry point


def write_report(report: dict, run_dir: Path) -> dict[str, Path]:
    """Write the benchmark report into ``run_dir``; returns ``{file name: path}`` of every file written.

    :param report: the dict of :func:`evaluation.analysis.analyse` (optionally with ``run``: jobs, cached,
        ran, seconds, config_hash).
    :param run_dir: the run folder (created if missing).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    markets: Mapping[str, Any] = report.get("markets") or {}
    charts: dict[str, dict[str, str]] = {}
    for market_name, market in markets.items():
        stem = _safe_name(market_name)
        charts[market_name] = {}
        for kind, draw in (("equity", _plot_equity), ("sharpe", _plot_sharpe), ("costs", _plot_costs),
                           ("trades", _plot_trades)):
            name = f"{kind}_{stem}.png"
            write_bytes_atomic(run_dir / name, draw(report, market_name, market))
            written[name] = run_dir / name
            charts[market_name][kind] = name
    write_text_atomic(run_dir / "report.md", render_markdown(report, charts))
    written["report.md"] = run_dir / "report.md"
    write_text_atomic(run_dir / "report.json", report_json(report))
    written["report.json"] = run_dir / "report.json"
    return written


def report_json(report: Mapping[str, Any]) -> str:
    """The report as strict JSON text: NaN/inf become null and ``notes`` says where.

    :param report: the report dict (numpy scalars and arrays, tuples and paths are accepted).
    """
    replaced: list[str] = []
    clean = _json_safe(report, "$", replaced)
    existing = clean.get("notes")
    notes = list(existing) if isinstance(existing, list) else ([existing] if existing else [])
    if replaced:
        shown = ", ".join(replaced[:_MAX_NOTED_PATHS])
        more = f" and {len(replaced) - _MAX_NOTED_PATHS} more" if len(replaced) > _MAX_NOTED_PATHS else ""
        notes.append(f"{len(replaced)} non-finite value(s) (NaN or inf) were written as null: {shown}{more}")
    else:
        notes.append("no non-finite values: every number is as computed")
    clean["notes"] = notes
    return json.dumps(clean, indent=1, allow_nan=False) + "\n"


def _json_safe(value: Any, path: str, replaced: list[str]) -> Any:
    """``value`` with plain JSON types only; non-finite floats become None (their paths in ``replaced``)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, f"{path}.{k}", replaced) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_json_safe(v, f"{path}[{i}]", replaced) for i, v in enumerate(items)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            replaced.append(path)
            return None
        return float(value)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------------------------- formats


def _num(value: Any) -> float | None:
    """``value`` as a finite float, or None (None, NaN, inf, not a number)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def fmt_log(value: Any) -> str:
    """A log return: 3 decimals."""
    x = _num(value)
    return NA if x is None else f"{x:.3f}"


def fmt_sharpe(value: Any) -> str:
    """A Sharpe ratio: 2 decimals."""
    x = _num(value)
    return NA if x is None else f"{x:.2f}"


def fmt_pct(value: Any, decimals: int = 1) -> str:
    """A fraction as a percentage: ``0.123 -> 12.3%``."""
    x = _num(value)
    return NA if x is None else f"{x * 100:.{decimals}f}%"


def fmt_count(value: Any) -> str:
    """A count (possibly a mean over seeds): an integer when it is one, else 1 decimal."""
    x = _num(value)
    if x is None:
        return NA
    return f"{x:,.0f}" if abs(x - round(x)) < 1e-9 else f"{x:,.1f}"


def fmt_interval(interval: Sequence[Any] | None, fmt=fmt_sharpe, point: Any = None) -> str:
    """``point [low, high]``, e.g. ``0.41 [-0.20, 1.05]``; the point of ``interval`` unless given.

    :param interval: ``[point, low, high]`` (or None).
    :param fmt: formats one number.
    :param point: the point to show instead of ``interval[0]``.
    """
    values = list(interval or []) + [None] * 3
    shown = values[0] if point is None else point
    if _num(values[1]) is None and _num(values[2]) is None:
        return fmt(shown)
    return f"{fmt(shown)} [{fmt(values[1])}, {fmt(values[2])}]"


def format_break_even(value: Any, note: str | None = None, kind: str | None = None,
                      max_tested_bps: float | None = None) -> str:
    """A break-even cost in bps per side for the ranking table.

    ``12.3`` for a crossing found; ``none`` when the policy loses even at zero cost; ``> X`` when it makes
    money at every cost tested (X the highest cost tested, from ``max_tested_bps`` or the note);
    ``n/a`` for cash (the reference) or when nothing is known.

    :param value: ``break_even_cost_bps_per_side`` of the analysis (None when there is no crossing).
    :param note: ``break_even_note`` of the analysis.
    :param kind: the policy's kind.
    :param max_tested_bps: the highest total cost per side tested, in bps.
    """
    if kind == "cash":
        return NA
    x = _num(value)
    if x is not None:
        return f"{x:.1f}"
    if value is not None and isinstance(value, (int, float)) and math.isinf(value) and value > 0:
        note = note or "positive at every cost tested"
    text = (note or "").lower()
    if text.startswith("negative") or "negative even" in text:
        return "none"
    if text.startswith("positive") or "every cost tested" in text:
        if max_tested_bps is None:
            found = re.search(r"up to ([0-9.eE+-]+) bps", note or "")
            max_tested_bps = float(found.group(1)) if found else None
        return f"> {max_tested_bps:g}" if max_tested_bps is not None else "> highest cost tested"
    return NA


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)) or "market"


def _cell(text: Any) -> str:
    """A markdown table cell (pipes escaped, no line breaks)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: Sequence[str] | None = None) -> list[str]:
    """A markdown table; ``align`` per column: 'l' or 'r' (default: first left, the rest right)."""
    align = align or ["l"] + ["r"] * (len(header) - 1)
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return lines


# ------------------------------------------------------------------------------------------ report facts


def _costs(report: Mapping[str, Any]) -> dict[str, Any]:
    config_costs = (report.get("config") or {}).get("costs") or {}
    base = report.get("base_cost") or {}
    return {
        "commission": _num(base.get("commission", config_costs.get("commission"))) or 0.0,
        "slippage_bps": _num(base.get("slippage_bps", config_costs.get("slippage_bps"))) or 0.0,
        "level": base.get("level"),
        "break_even_scales": config_costs.get("break_even_scales"),
    }


def describe_costs(commission: float, slippage_bps: float) -> str:
    """``0.10% commission + 5 bps slippage per side``."""
    return f"{commission * 100:.2f}% commission + {slippage_bps:g} bps slippage per side"


def _total_bps(commission: Any, slippage_bps: Any) -> float:
    return (_num(commission) or 0.0) * 1e4 + (_num(slippage_bps) or 0.0)


def _level_label(level: Mapping[str, Any]) -> str:
    """``15 bps (0.10% + 5 bps)`` for a cost level ``{commission, slippage_bps}``."""
    c, s = _num(level.get("commission")) or 0.0, _num(level.get("slippage_bps")) or 0.0
    return f"{_total_bps(c, s):g} bps ({c * 100:.2f}% + {s:g} bps)"


def _max_tested_bps(report: Mapping[str, Any]) -> float | None:
    """The highest total cost per side on the break-even path (base costs x the largest scale)."""
    costs = _costs(report)
    scales = [x for x in (_num(s) for s in costs["break_even_scales"] or []) if x is not None]
    if not scales:
        return None
    return _total_bps(costs["commission"], costs["slippage_bps"]) * max(scales)


def _ranking(market: Mapping[str, Any]) -> list[str]:
    """The market's policies in descending pooled Sharpe (a missing or non-finite Sharpe last)."""
    policies = market.get("policies") or {}
    given = [p for p in market.get("ranking") or [] if p in policies]
    names = given + [p for p in policies if p not in given]

    def key(name: str) -> tuple[int, float]:
        sharpe = _num(((policies[name] or {}).get("pooled") or {}).get("sharpe"))
        return (0, -sharpe) if sharpe is not None else (1, 0.0)

    return sorted(names, key=key)  # stable: ties keep the analysis' order


def _bh_name(market: Mapping[str, Any]) -> str | None:
    policies = market.get("policies") or {}
    for name, result in policies.items():
        if (result or {}).get("kind") == "buy_and_hold":
            return name
    return "buy_and_hold" if "buy_and_hold" in policies else None


def _cash_name(market: Mapping[str, Any]) -> str | None:
    policies = market.get("policies") or {}
    for name, result in policies.items():
        if (result or {}).get("kind") == "cash":
            return name
    return "cash" if "cash" in policies else None


# -------------------------------------------------------------------------------------------- markdown


def render_markdown(report: Mapping[str, Any], charts: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The text of ``report.md``.

    :param report: the report dict.
    :param charts: ``{market: {"equity"|"sharpe"|"costs"|"trades": file name}}`` to link.
    """
    charts = charts or {}
    config = report.get("config") or {}
    stats = config.get("statistics") or {}
    costs = _costs(report)
    confidence = _num(report.get("confidence", stats.get("confidence"))) or 0.95
    markets: Mapping[str, Any] = report.get("markets") or {}
    run = report.get("run") or {}
    lines: list[str] = ["# Benchmark report", ""]

    lines += ["## Run", ""]
    for name, market in markets.items():
        symbols = ", ".join(market.get("symbols") or []) or NA
        timeframe = ((config.get("markets") or {}).get(name) or {}).get("timeframe")
        bars = _num(market.get("periods_per_year"))
        basis = market.get("annualised_by")
        facts = [f"{timeframe} bars" if timeframe else "",
                 f"annualised by {basis}" if basis else f"{bars:,.0f} bars per year" if bars is not None else ""]
        facts = [f for f in facts if f]
        lines.append(f"- Market **{name}**: {symbols}" + (f" ({', '.join(facts)})" if facts else ""))
        for note in market.get("notes") or []:
            lines.append(f"  - note: {note}")
        for fold in market.get("folds") or []:
            end = str(fold["test_end"])[:10] + " (exclusive)" if fold.get("test_end") else "end of data"
            lines.append(f"  - fold {fold.get('index')}: train from {str(fold.get('train_start'))[:10]}, "
                         f"validation from {str(fold.get('validation_start'))[:10]}, "
                         f"test {str(fold.get('test_start'))[:10]} .. {end}")
    seeds = config.get("seeds")
    if seeds is not None:
        lines.append(f"- Seeds: {seeds} (0..{int(seeds) - 1}) for every seeded policy (trained ones and random); "
                     "deterministic policies run once")
    lines.append(f"- Base costs: {describe_costs(costs['commission'], costs['slippage_bps'])}")
    trials = ", ".join(f"{name}: {m.get('n_trials', NA)}" for name, m in markets.items())
    lines.append(f"- Trials for the deflated Sharpe (every policy x seed run): {trials}")
    resamples = stats.get("bootstrap_resamples", NA)
    configured_block = stats.get("mean_block")
    blocks = ", ".join(f"{name}: {m.get('mean_block', NA)} bar{'' if m.get('mean_block') == 1 else 's'}"
                       for name, m in markets.items())
    lines.append(f"- Bootstrap: stationary, {resamples} resamples, {confidence:.0%} two-sided intervals, "
                 f"seed {stats.get('seed', NA)}; mean block length "
                 + (f"{configured_block} bars (configured)" if configured_block else f"{blocks} (Politis-White, "
                    "from buy-and-hold's returns)"))
    seconds = _num(run.get("seconds"))
    if run:
        lines.append(f"- Jobs: {run.get('jobs', NA)} ({run.get('ran', NA)} ran, {run.get('cached', NA)} cached); "
                     f"wall time {_fmt_seconds(seconds)}"
                     + (f"; config {str(run['config_hash'])[:12]}" if run.get("config_hash") else ""))
        lines += _code_lines(run)
    else:
        lines.append(f"- Wall time: {NA}")
    lines.append("")

    lines += ["## How to read this", "",
              "Each market's policy return is an equal-weight portfolio of its symbols (one account per symbol, "
              "equal starting capital); a portfolio policy (kind allocation or portfolio_agent) is one account "
              "that allocates across the symbols, and its costs compare with the sleeves' as a share of the "
              "capital. The folds' test windows are consecutive and disjoint; *pooled* numbers "
              "join their per-bar log returns. A seeded policy's headline mixes its seeds with equal capital "
              "(the mean of the seeds' equity curves, never the best seed); every seed is shown in the seed "
              f"spread table. Intervals are {confidence:.0%} stationary-bootstrap intervals over per-bar returns "
              "(autocorrelation kept); the excess over buy-and-hold is bootstrapped jointly with buy-and-hold on "
              "the same bars; the excess over cash is the log return itself (cash earns 0). The deflated Sharpe "
              "is the probability that the true Sharpe beats the best of N skill-less trials, N = every policy "
              "x seed run of the market. *Beats B&H* is the share of folds x seeds whose log return beats "
              "buy-and-hold's on the same fold. Break-even is the total cost per side (commission + slippage, "
              "in bps) at which the pooled log return reaches 0: *none* means it loses even at zero cost, "
              "*> X* that it makes money at every cost tested. Log returns have 3 decimals, Sharpe ratios "
              "(annualised) 2; every number is after the base costs unless a cost level says otherwise.", ""]

    verdicts = report.get("verdicts") or []
    if verdicts:
        lines += ["## Verdicts", ""] + [f"- {v}" for v in verdicts] + [""]

    max_bps = _max_tested_bps(report)
    for name, market in markets.items():
        lines += _market_section(name, market, charts.get(name) or {}, costs, confidence, max_bps)
    return "\n".join(lines).rstrip() + "\n"


def _code_lines(run: Mapping[str, Any]) -> list[str]:
    """The run facts about the code: which code this run is, and any cached jobs of other code it reused.

    :param run: the report's ``run`` facts (``code``: version and digest; ``stale_jobs``: count and code).
    """
    lines: list[str] = []
    code = run.get("code") or {}
    if code:
        lines.append(f"- Code: trading-rl {code.get('version', NA)}, source digest {str(code.get('digest'))[:12]}")
    stale = run.get("stale_jobs") or {}
    if stale.get("count"):
        others = ", ".join(f"{s.get('jobs')} of {s.get('version') or 'an unrecorded version'} (source digest "
                           f"{str(s.get('digest'))[:12] if s.get('digest') else 'unrecorded'})"
                           for s in stale.get("code") or [])
        lines.append(f"- **Stale jobs reused (--reuse-stale-jobs): {stale['count']} cached job(s) were computed by "
                     f"other code: {others}; their numbers may differ from what this code gives**")
    return lines


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return NA
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _market_section(name: str, market: Mapping[str, Any], charts: Mapping[str, str], costs: Mapping[str, Any],
                    confidence: float, max_bps: float | None) -> list[str]:
    policies: Mapping[str, Any] = market.get("policies") or {}
    ranking = _ranking(market)
    level = f"{confidence:.0%}"
    lines = [f"## Market: {name}", ""]

    lines += [f"### Ranking (pooled Sharpe, base costs, {level} intervals)", ""]
    rows = []
    for rank, policy in enumerate(ranking, 1):
        r = policies[policy] or {}
        pooled, intervals = r.get("pooled") or {}, r.get("intervals") or {}
        n_pairs = len(r.get("per_fold") or [])
        share = _num(r.get("beat_buy_and_hold_share"))
        beats = fmt_pct(share, 0) + (f" ({round(share * n_pairs)}/{n_pairs})" if share is not None and n_pairs else "")
        dsr = (r.get("deflated_sharpe") or {}).get("dsr") if isinstance(r.get("deflated_sharpe"), Mapping) \
            else r.get("deflated_sharpe")
        rows.append([
            rank, policy, r.get("kind", NA), fmt_log(pooled.get("log_return")),
            fmt_interval(intervals.get("sharpe"), fmt_sharpe, pooled.get("sharpe")),
            fmt_interval(intervals.get("excess_vs_buy_and_hold"), fmt_log),
            fmt_interval(intervals.get("excess_vs_cash"), fmt_log),
            fmt_pct(dsr), beats, fmt_pct(pooled.get("max_drawdown")), fmt_count(pooled.get("n_orders")),
            fmt_pct(pooled.get("costs_share")), fmt_pct(pooled.get("exposure")),
            format_break_even(r.get("break_even_cost_bps_per_side"), r.get("break_even_note"), r.get("kind"),
                              max_bps),
        ])
    lines += _table(["#", "policy", "kind", "log return", "Sharpe [CI]", "excess vs B&H [CI]",
                     "excess vs cash [CI]", "deflated Sharpe", "beats B&H", "max DD", "orders", "costs (% capital)",
                     "exposure", "break-even (bps/side)"], rows,
                    ["r", "l", "l"] + ["r"] * 11)
    lines += ["", "Orders are totals over the folds (mean over seeds), summed over the accounts (one per symbol, or "
              "one for a portfolio policy); costs are their total over the folds as a share of the capital (every "
              "account starts with the same cash); exposure is the mean share of bars in the market.", ""]
    if charts.get("sharpe"):
        lines += [f"![Pooled Sharpe with {level} intervals, {name}]({charts['sharpe']})", ""]

    seeded = [p for p in ranking if int((policies[p] or {}).get("n_seeds") or 1) > 1]
    if seeded:
        lines += ["### Seeds (every seed reported: min / median / max over seeds)", ""]
        rows = []
        for policy in seeded:
            r = policies[policy] or {}
            spread = r.get("seed_spread") or {}
            lr, sh = spread.get("log_return") or {}, spread.get("sharpe") or {}
            per_seed = r.get("per_seed") or {}
            listed = ", ".join(f"{seed}: {fmt_log((v or {}).get('log_return'))}"
                               for seed, v in sorted(per_seed.items(), key=lambda kv: _seed_key(kv[0])))
            rows.append([policy, r.get("n_seeds", len(per_seed)), fmt_log(lr.get("min")), fmt_log(lr.get("median")),
                         fmt_log(lr.get("max")), fmt_sharpe(sh.get("min")), fmt_sharpe(sh.get("median")),
                         fmt_sharpe(sh.get("max")), listed or NA])
        lines += _table(["policy", "seeds", "log return min", "median", "max", "Sharpe min", "median", "max",
                         "log return per seed"], rows, ["l"] + ["r"] * 7 + ["l"])
        lines.append("")

    folds = market.get("folds") or []
    fold_ids = [f.get("index") for f in folds] or sorted(
        {row.get("fold") for r in policies.values() for row in (r or {}).get("per_fold") or []})
    if fold_ids:
        lines += ["### Per fold (log return at base costs; seeded policies: mean over seeds [min, max])", ""]
        dates = {f.get("index"): f"{str(f.get('test_start'))[:10]} .. {str(f.get('test_end') or 'end')[:10]}"
                 for f in folds}
        rows = []
        for policy in ranking:
            r = policies[policy] or {}
            cells = [policy]
            for fold in fold_ids:
                values = [_num(row.get("log_return")) for row in r.get("per_fold") or [] if row.get("fold") == fold]
                finite = [v for v in values if v is not None]
                if not values:
                    cells.append(NA)
                elif not finite:
                    cells.append(NA)
                elif len(values) == 1:
                    cells.append(fmt_log(finite[0]))
                else:
                    cells.append(f"{fmt_log(np.mean(finite))} [{fmt_log(min(finite))}, {fmt_log(max(finite))}]")
            rows.append(cells)
        lines += _table(["policy"] + [f"fold {k} ({dates[k]})" if k in dates else f"fold {k}" for k in fold_ids],
                        rows)
        lines.append("")
        if charts.get("equity"):
            lines += [f"![Equity per fold, {name}]({charts['equity']})", ""]

    level_info = _cost_levels(market)
    if level_info:
        base_level = costs.get("level")
        lines += ["### Cost sensitivity (pooled log return; total cost per side = commission + slippage)", ""]
        header = ["policy"] + [_level_label(info) + (" **base**" if key == base_level else "")
                               for key, info in level_info]
        rows = []
        for policy in ranking:
            sensitivity = (policies[policy] or {}).get("cost_sensitivity") or {}
            rows.append([policy] + [fmt_log((sensitivity.get(key) or {}).get("log_return")) for key, _ in level_info])
        lines += _table(header, rows)
        lines.append("")
        if charts.get("costs"):
            lines += [f"![Cost sensitivity, {name}]({charts['costs']})", ""]
    if charts.get("trades"):
        lines += [f"![Orders per policy, {name}]({charts['trades']})", ""]

    lines += ["### How each policy was selected", ""]
    for policy in ranking:
        r = policies[policy] or {}
        selection = r.get("selection") or []
        if isinstance(selection, str):
            selection = [selection]
        if r.get("kind") in TRAINED_KINDS:
            if selection:
                lines.append(f"- **{policy}** ({r.get('kind')}):")
                lines += [f"  - {s}" for s in selection]
            else:
                lines.append(f"- **{policy}** ({r.get('kind')}): {NA}")
        else:
            lines.append(f"- **{policy}** ({r.get('kind', NA)}): {'; '.join(selection) or 'fixed rule'}")
    lines.append("")

    verdicts = market.get("verdicts") or []
    lines += ["### Verdicts", ""] + ([f"- {v}" for v in verdicts] or [f"- {NA}"]) + [""]
    overfitting = market.get("overfitting") or {}
    if overfitting.get("pbo") is not None:
        picked = ", ".join(f"{p.get('name', p['column'])} ({p['share']:.0%})" for p in overfitting["most_picked"])
        lines += ["### Probability of backtest overfitting", "",
                  f"CSCV over every policy x seed above (per-bar Sharpe at the base costs, {overfitting['n_bars']:,} "
                  f"pooled test bars in {overfitting['n_splits']} blocks): PBO {overfitting['pbo']:.2f}, probability "
                  f"of an out-of-sample loss {overfitting['probability_of_loss']:.2f}; most often best in sample: "
                  f"{picked}.", ""]
    return lines


def _seed_key(seed: Any) -> tuple[int, Any]:
    try:
        return 0, int(seed)
    except (TypeError, ValueError):
        return 1, str(seed)


def _cost_levels(market: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every cost level of the market's sensitivity, ``(name, {commission, slippage_bps})``, cheapest first."""
    found: dict[str, dict[str, Any]] = {}
    for result in (market.get("policies") or {}).values():
        for key, value in ((result or {}).get("cost_sensitivity") or {}).items():
            if key not in found:
                found[key] = {"commission": (value or {}).get("commission"),
                              "slippage_bps": (value or {}).get("slippage_bps")}
    return sorted(found.items(), key=lambda kv: (_total_bps(kv[1]["commission"], kv[1]["slippage_bps"]),
                                                 _num(kv[1]["commission"]) or 0.0))


# ----------------------------------------------------------------------------------------------- charts


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _colours(names: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _style(name: str, kind: str | None, colour: Any) -> dict[str, Any]:
    if kind == "buy_and_hold":
        return {"color": "black", "lw": 2.6, "zorder": 5, "label": name}
    if kind == "cash":
        return {"color": "grey", "lw": 1.2, "ls": "--", "zorder": 4, "label": name}
    return {"color": colour, "lw": 1.0, "alpha": 0.9, "zorder": 3, "label": name}


def _plot_equity(report: Mapping[str, Any], name: str, market: Mapping[str, Any]) -> bytes:
    """Seed-mixed equity of every policy, one subplot per fold; buy-and-hold thick black, cash flat grey."""
    import pandas as pd
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    policies = market.get("policies") or {}
    curves: Mapping[str, Any] = market.get("equity_curves") or {}
    folds = list(curves) or [str(f.get("index")) for f in market.get("folds") or []] or ["0"]
    order = _ranking(market)
    colours = _colours([p for p in order if (policies[p] or {}).get("kind") not in ("cash", "buy_and_hold")])
    n_cols = min(len(folds), 3)
    n_rows = math.ceil(len(folds) / n_cols)
    fig = _figure(5.0 * n_cols + 2.2, 3.4 * n_rows + 0.6)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, fold in enumerate(folds):
        ax = axes[i // n_cols][i % n_cols]
        fold_curves = curves.get(fold) or {}
        drawn_cash = False
        for policy in order:
            kind = (policies[policy] or {}).get("kind")
            curve = fold_curves.get(policy) or {}
            equity = np.asarray([np.nan if _num(v) is None else float(v) for v in curve.get("equity") or []])
            if equity.size == 0:
                continue
            stamps = curve.get("timestamps") or []
            x: Any = np.arange(equity.size)
            if len(stamps) == equity.size:
                try:
                    x = pd.to_datetime(stamps, utc=True, format="ISO8601").tz_localize(None).to_numpy()
                except (TypeError, ValueError):
                    x = np.arange(equity.size)  # unreadable stamps: plot against bar number
            drawn_cash = drawn_cash or kind == "cash"
            ax.plot(x, equity, **_style(policy, kind, colours.get(policy)))
        if not drawn_cash:
            ax.axhline(1.0, color="grey", lw=1.2, ls="--", zorder=4, label="cash")
        if len(fold_curves) and any(len((c or {}).get("timestamps") or []) for c in fold_curves.values()):
            locator = AutoDateLocator(maxticks=5)
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.set_title(f"fold {fold}", fontsize=9)
        ax.set_ylabel("equity (start = 1)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for j in range(len(folds), n_rows * n_cols):
        axes[j // n_cols][j % n_cols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(f"{name}: equity per test fold (seeds mixed with equal capital, base costs)", fontsize=10)
    width, height = fig.get_size_inches()
    # fixed margins (tight_layout would measure every tick label: slow with many subplots)
    fig.subplots_adjust(left=0.75 / width, right=1.0 - 2.2 / width, bottom=0.45 / height, top=1.0 - 0.6 / height,
                        wspace=0.25, hspace=0.45)
    return _png(fig)


def _plot_sharpe(report: Mapping[str, Any], name: str, market: Mapping[str, Any]) -> bytes:
    """Pooled Sharpe per policy with its interval; buy-and-hold's bar black and its Sharpe a dashed line."""
    policies = market.get("policies") or {}
    order = _ranking(market)
    confidence = _num(report.get("confidence")) or 0.95
    fig = _figure(8.0, 0.45 * max(len(order), 2) + 1.6)
    ax = fig.subplots()
    y = np.arange(len(order))[::-1]
    for yi, policy in zip(y, order):
        r = policies[policy] or {}
        interval = list((r.get("intervals") or {}).get("sharpe") or []) + [None] * 3
        point = _num((r.get("pooled") or {}).get("sharpe"))
        point = _num(interval[0]) if point is None else point
        if point is None:
            continue
        low, high = _num(interval[1]), _num(interval[2])
        err = [[max(0.0, point - low) if low is not None else 0.0],
               [max(0.0, high - point) if high is not None else 0.0]]
        kind = r.get("kind")
        colour = "black" if kind == "buy_and_hold" else ("grey" if kind == "cash" else "tab:blue")
        ax.errorbar([point], [yi], xerr=err, fmt="D" if kind == "buy_and_hold" else "o", color=colour,
                    ms=7 if kind == "buy_and_hold" else 5, capsize=4, lw=2.0 if kind == "buy_and_hold" else 1.2)
        if kind == "buy_and_hold":
            ax.axvline(point, color="black", ls="--", lw=1.0, alpha=0.7, label=f"{policy}: {point:.2f}")
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_yticks(y)
    labels = ax.set_yticklabels(order, fontsize=8)
    for label, policy in zip(labels, order):
        if (policies[policy] or {}).get("kind") == "buy_and_hold":
            label.set_fontweight("bold")
    ax.set_xlabel(f"pooled annualised Sharpe, {confidence:.0%} stationary-bootstrap interval", fontsize=8)
    ax.set_title(f"{name}: Sharpe per policy (base costs)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _png(fig)


def _plot_costs(report: Mapping[str, Any], name: str, market: Mapping[str, Any]) -> bytes:
    """Pooled log return against total cost per side (bps), one line per policy (the mean of the levels of
    the same total), every level a marker; a zero line; the base cost a dotted vertical line."""
    policies = market.get("policies") or {}
    order = _ranking(market)
    colours = _colours([p for p in order if (policies[p] or {}).get("kind") not in ("cash", "buy_and_hold")])
    costs = _costs(report)
    fig = _figure(8.5, 5.0)
    ax = fig.subplots()
    for policy in order:
        r = policies[policy] or {}
        points = []
        for level in (r.get("cost_sensitivity") or {}).values():
            value = _num((level or {}).get("log_return"))
            if value is not None:
                points.append((_total_bps((level or {}).get("commission"), (level or {}).get("slippage_bps")), value))
        if not points:
            continue
        xs = sorted({x for x, _ in points})
        means = [float(np.mean([v for x, v in points if x == xi])) for xi in xs]
        style = _style(policy, r.get("kind"), colours.get(policy))
        ax.plot(xs, means, marker="o", ms=3, **style)
        ax.scatter([x for x, _ in points], [v for _, v in points], s=8, color=style["color"], alpha=0.5,
                   zorder=style["zorder"])
    ax.axhline(0.0, color="grey", lw=0.8)
    base = _total_bps(costs["commission"], costs["slippage_bps"])
    ax.axvline(base, color="grey", ls=":", lw=1.0, label=f"base: {base:g} bps")
    ax.set_xlabel("total cost per side (bps) = commission x 1e4 + slippage bps", fontsize=8)
    ax.set_ylabel("pooled log return", fontsize=8)
    ax.set_title(f"{name}: cost sensitivity", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return _png(fig)


def _plot_trades(report: Mapping[str, Any], name: str, market: Mapping[str, Any]) -> bytes:
    """Orders per policy (totals over folds, mean over seeds); a log scale when they span > 2 decades."""
    policies = market.get("policies") or {}
    order = _ranking(market)
    values = [_num(((policies[p] or {}).get("pooled") or {}).get("n_orders")) for p in order]
    heights = [v if v is not None else 0.0 for v in values]
    fig = _figure(max(6.0, 0.7 * len(order) + 2.0), 4.5)
    ax = fig.subplots()
    colours = ["black" if (policies[p] or {}).get("kind") == "buy_and_hold" else
               "grey" if (policies[p] or {}).get("kind") == "cash" else "tab:blue" for p in order]
    bars = ax.bar(range(len(order)), heights, color=colours)
    positive = [h for h in heights if h > 0]
    log_scale = bool(positive) and max(positive) / min(positive) > 100
    if log_scale:
        ax.set_yscale("log")
        ax.set_ylim(bottom=min(positive) / 2, top=max(positive) * 3)
    for bar, value in zip(bars, values):
        text = fmt_count(value)
        if log_scale and (value or 0) <= 0:
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, min(positive) / 2), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7)
        else:
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(order, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("orders (total over folds" + (", log scale)" if log_scale else ")"), fontsize=8)
    ax.set_title(f"{name}: orders per policy (base costs, mean over seeds)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------------------------------------- I/O


__all__ = ["format_break_even", "render_markdown", "report_json", "write_report"]
