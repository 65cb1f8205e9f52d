"""Diagnose a saved policy: distribution shift between the splits, calibration, and where the money goes.

    python -m experiments.diagnose --policy runs/sup_lstm/model
    python -m experiments.diagnose --policy runs/ppo_default --dataset runs/datasets/default
    python -m experiments.diagnose --policy runs/sup_lstm --out reports/sup_lstm

Writes diagnosis.md, diagnosis.json and PNGs into --out (default: <runs-dir>/diagnose_<policy>_<YYYYmmdd-HHMMSS>),
built in a temporary folder and renamed into place whole:

- shift.png: the features whose distribution moved most from train (population stability index, PSI, on
  --psi-bins quantile bins of train; an empty bin counts as a 1e-4 share), with the Kolmogorov-Smirnov test in the tables;
- scores.png: the model's score per split (a supervised bundle's predicted probability; an agent's or baseline's
  exposure held after each bar of the backtest);
- calibration.png (supervised bundles): reliability curves per split, with Brier score, expected calibration
  error (--calibration-bins equal-width bins) and precision/recall/F1 at the bundle's threshold in the tables;
- economics.png: per trade of the backtest, the gross move over the holding against a round trip's cost, and
  the holding time in bars; the tables give the share of trades whose gross move does not cover a round trip,
  turnover per year and the break-even cost per side (backtests re-run at 0 to 4 times the costs).

Costs: --commission / --slippage-bps / --fixed-fee where given; else a saved agent's own training costs (its
agent.json); else the backtester's defaults (0.10% commission + 5 bps slippage): a supervised bundle records none.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from agents.baselines import BASELINES
from evaluation.diagnosis import Diagnosis, diagnose
from experiments.common import (
    RL_AGENT_FILE,
    add_dataset_arguments,
    cli,
    dataset_from_args,
    make_parser,
    policy_label,
    resolve_policy_path,
    staged_run_directory,
)
from features.splits import SPLITS
from sim.engine import Costs

TOP_FEATURES = 15  # rows of the shift table and bars of shift.png; diagnosis.json has every feature
DEFAULT_COSTS = Costs()


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("python -m experiments.diagnose", __doc__)
    parser.add_argument("--policy", required=True,
                        help=f"a supervised bundle runs/<sup>/model, a saved agent runs/<rl>/best, the run folder "
                             f"holding either, or a baseline ({', '.join(BASELINES)})")
    add_dataset_arguments(parser)
    parser.add_argument("--symbol", action="append", default=None,
                        help="symbol to diagnose (repeatable; default: every symbol of the dataset)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: <runs-dir>/diagnose_<policy>_<YYYYmmdd-HHMMSS>)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="root of run outputs, without --out")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out folder once the new one is complete")
    parser.add_argument("--commission", type=float, default=None,
                        help=f"commission, fraction of notional (default: a saved agent's own, else "
                             f"{DEFAULT_COSTS.commission:g})")
    parser.add_argument("--slippage-bps", type=float, default=None,
                        help=f"fixed slippage in bps (default: a saved agent's own, else "
                             f"{DEFAULT_COSTS.slippage.describe()})")
    parser.add_argument("--fixed-fee", type=float, default=None,
                        help="fee per order in currency (default: a saved agent's own, else 0)")
    parser.add_argument("--psi-bins", type=int, default=10, help="quantile bins of train for the PSI")
    parser.add_argument("--calibration-bins", type=int, default=10,
                        help="equal-width probability bins of the reliability curve and the ECE")
    parser.add_argument("--seed", type=int, default=0, help="seed of a stochastic baseline (random)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def resolve_costs(spec: str, commission: float | None, slippage_bps: float | None,
                  fixed_fee: float | None) -> tuple[Costs, str]:
    """The base costs and where they came from: the flags given, else a saved agent's training costs
    (``agent.json`` ``config.env``), else the backtester's defaults.

    :param spec: the resolved ``--policy``.
    :param commission: ``--commission`` or None.
    :param slippage_bps: ``--slippage-bps`` or None.
    :param fixed_fee: ``--fixed-fee`` or None.
    """
    given = {"commission": commission, "slippage": slippage_bps, "fixed_fee": fixed_fee}
    recorded: dict[str, Any] = {}
    source = "the backtester's defaults"
    meta_path = Path(spec) / RL_AGENT_FILE
    if meta_path.is_file() and any(v is None for v in given.values()):
        try:
            env = json.loads(meta_path.read_text())["config"]["env"]
            recorded = {key: env[key] for key in ("commission", "slippage", "fixed_fee", "borrow_rate")}
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{meta_path}: cannot read the agent's costs at config.env ({type(error).__name__}: "
                             f"{error}); pass --commission, --slippage-bps and --fixed-fee") from None
        source = f"the agent's training costs ({meta_path})"
    settings = {key: (recorded.get(key, getattr(DEFAULT_COSTS, key)) if value is None else value)
                for key, value in given.items()}
    if all(v is not None for v in given.values()):
        source = "the command line"
    elif any(v is not None for v in given.values()):
        source = f"the command line, else {source}"
    return Costs(borrow_rate=recorded.get("borrow_rate", 0.0), **settings), source


def main(argv: list[str] | None = None) -> Diagnosis:
    args = build_parser().parse_args(argv)
    spec = resolve_policy_path(args.policy, BASELINES)
    costs, source = resolve_costs(spec, args.commission, args.slippage_bps, args.fixed_fee)
    data = dataset_from_args(args)
    if args.out is not None:
        runs_dir, name, flag = args.out.parent, args.out.name, "--out"
    else:
        runs_dir, name, flag = args.runs_dir, None, "--runs-dir"
    with staged_run_directory(runs_dir, name, args.overwrite, prefix=f"diagnose_{policy_label(spec)}",
                              flag=flag) as run:
        result = diagnose(spec, data, costs, symbols=args.symbol, psi_bins=args.psi_bins,
                          calibration_bins=args.calibration_bins, costs_source=source, seed=args.seed,
                          progress=not args.no_progress)
        write_diagnosis(result, run.path)
    print(f"written to {run.final}")
    return result


def write_diagnosis(diagnosis: Diagnosis, folder: Path) -> list[Path]:
    """Write ``diagnosis.json``, ``diagnosis.md`` and the PNGs into ``folder``; returns the paths.

    :param diagnosis: from :func:`evaluation.diagnosis.diagnose`.
    :param folder: an existing folder (the CLI's staged run folder, renamed into place once complete).
    """
    pictures = _plots(diagnosis, folder)
    json_path, md_path = folder / "diagnosis.json", folder / "diagnosis.md"
    json_path.write_text(json.dumps(diagnosis.to_json(), indent=2, allow_nan=False) + "\n")
    md_path.write_text(markdown(diagnosis, [p.name for p in pictures]))
    return [json_path, md_path, *pictures]


# ----------------------------------------------------------------------------------------------------
# diagnosis.md


def _f(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def markdown(d: Diagnosis, pictures: list[str]) -> str:
    """The report as Markdown.

    :param d: the diagnosis.
    :param pictures: the PNG file names written beside it.
    """
    lines = [f"# Diagnosis of {d.policy}", "",
             f"{d.kind} policy on {', '.join(d.symbols)}; costs: {d.costs['description']} (from {d.costs['source']}; "
             f"{d.costs['cost_per_side'] * 1e4:.1f} bps per side, a round trip {d.costs['round_trip_cost'] * 1e4:.1f} bps).",
             "", "## 1. Distribution shift", "",
             "PSI on quantile bins of train (below 0.1 stable, 0.1-0.25 moderate, above 0.25 major); KS: two-sample "
             f"Kolmogorov-Smirnov statistic (p-value). The {TOP_FEATURES} largest PSI first; diagnosis.json has all.", ""]
    rows = [[r["feature"], _f(r["psi_validation"]), _f(r["psi_test"]),
             f"{_f(r['ks_validation'])} ({r['ks_pvalue_validation']:.2g})",
             f"{_f(r['ks_test'])} ({r['ks_pvalue_test']:.2g})"] for r in d.shift[:TOP_FEATURES]]
    lines += _table(["feature", "PSI validation", "PSI test", "KS validation (p)", "KS test (p)"], rows)
    lines += _table(["split", "labelled samples", "label base rate"],
                    [[s, _f(d.base_rates[s]["n"]), _pct(d.base_rates[s]["positive_rate"])] for s in SPLITS])
    what = "predicted probability" if d.score_kind == "probability" else "exposure held after each bar"
    header = ["split", "n", "mean", "std", "q05", "q50", "q95", "PSI vs train"]
    extra = "share_at_or_above_threshold" if d.score_kind == "probability" else "share_long"
    lines += [f"Score: the {what}.", ""]
    lines += _table(header + [extra.replace("_", " ")],
                    [[s, _f(v["n"]), _f(v["mean"]), _f(v["std"]), _f(v["q05"]), _f(v["q50"]), _f(v["q95"]),
                      _f(v["psi_vs_train"]), _pct(v[extra])] for s, v in d.scores.items()])
    if d.calibration is not None:
        lines += ["## 2. Calibration", "",
                  "Brier score; ECE: expected calibration error on equal-width probability bins; precision, recall "
                  "and F1 of probability >= the bundle's threshold.", ""]
        lines += _table(["split", "n", "base rate", "mean probability", "Brier", "ECE", "threshold", "precision",
                         "recall", "F1"],
                        [[s, _f(c["n"]), _pct(c["base_rate"]), _pct(c["mean_probability"]), _f(c["brier"]),
                          _f(c["ece"]), _f(c["threshold"], 2), _f(c["precision"]), _f(c["recall"]), _f(c["f1"])]
                         for s, c in d.calibration.items()])
    lines += ["## 3. Where the money goes", "",
              "Per closed trade: gross move = gross P&L / (|size| x entry price), the price move over the holding "
              "before costs. Break-even (trades): the cost per side at which the trades' summed net P&L is 0. "
              "Break-even (backtests): the cost per side at which the mean log return of the symbols' accounts is 0, "
              "interpolated over backtests re-run at multiples of the costs.", ""]
    lines += _table(["split", "trades", "mean gross move", "mean cost", "not covering a round trip",
                     "net negative", "median bars held", "turnover / year", "cost drag / year", "log return",
                     "break-even (trades)", "break-even (backtests)"],
                    [[s, _f(e["n_trades"]), _pct(e.get("mean_gross_move")), _pct(e.get("mean_cost")),
                      _pct(e.get("share_not_covering_round_trip")), _pct(e.get("share_net_negative")),
                      _f((e.get("bars_held") or {}).get("q50"), 1), _f(e["annual_turnover"], 2),
                      _pct(e["annual_cost_drag"]), _f(e["log_return"]), e["break_even_note"],
                      e["break_even_sweep_note"]] for s, e in d.economics.items()])
    lines += ["## Notes", "", *(f"- {note}" for note in d.notes), "", "## Figures", "",
              *(f"![{name}]({name})" for name in pictures), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# PNGs


def _plots(d: Diagnosis, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        written.append(folder / name)

    top = d.shift[:TOP_FEATURES][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(top) + 1.5))
    y = np.arange(len(top))
    for offset, split in ((-0.2, "validation"), (0.2, "test")):
        ax.barh(y + offset, [r[f"psi_{split}"] for r in top], height=0.4, label=split)
    ax.axvline(0.25, color="black", lw=0.8, ls="--", label="0.25 (major shift)")
    ax.set_yticks(y, [r["feature"] for r in top], fontsize=8)
    ax.set_xlabel("PSI against train")
    ax.set_title(f"Feature shift: {d.policy}", fontsize=9)
    ax.legend(fontsize=8)
    save(fig, "shift.png")

    fig, ax = plt.subplots(figsize=(8, 4))
    edges = np.linspace(0, 1, 21) if d.score_kind == "probability" else np.linspace(-1.05, 1.05, 22)
    for split in SPLITS:
        ax.hist(np.clip(d.samples[split]["scores"], edges[0], edges[-1]), bins=edges, density=True, histtype="step",
                lw=1.5, label=split)
    ax.set_xlabel("predicted probability" if d.score_kind == "probability" else "exposure")
    ax.set_ylabel("density")
    ax.set_title(f"Score distribution per split: {d.policy}", fontsize=9)
    ax.legend(fontsize=8)
    save(fig, "scores.png")

    if d.calibration is not None:
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls="--", label="perfect")
        for split, c in d.calibration.items():
            ax.plot(c["curve"]["mean_predicted"], c["curve"]["fraction_positive"], marker="o", ms=3,
                    label=f"{split} (ECE {c['ece']:.3f})")
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("fraction of positives")
        ax.set_title("Reliability curve", fontsize=9)
        ax.legend(fontsize=8)
        save(fig, "calibration.png")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    longest = max([float(np.max(d.samples[s]["bars_held"])) for s in SPLITS if len(d.samples[s]["bars_held"])] or [1.0])
    held_edges = np.arange(0.5, longest + 1.5)  # one bin per whole number of bars
    for split in SPLITS:
        moves = d.samples[split]["gross_move"]
        if len(moves):
            left.hist(100 * moves, bins=30, histtype="step", lw=1.5, label=f"{split} ({len(moves)} trades)")
            right.hist(d.samples[split]["bars_held"], bins=held_edges, histtype="step", lw=1.5, label=split)
    left.axvline(100 * d.costs["round_trip_cost"], color="black", lw=0.8, ls="--", label="round-trip cost")
    left.set_xlabel("gross move per trade (%)")
    left.set_ylabel("trades")
    left.legend(fontsize=8)
    right.set_xlabel("bars held")
    right.legend(fontsize=8)
    fig.suptitle(f"Where the money goes: {d.policy}; costs {d.costs['description']}", fontsize=9)
    save(fig, "economics.png")
    return written


if __name__ == "__main__":
    cli(main)
