"""A paper run's daily (or whole-run) report, read from its journal after the fact: Markdown and a PNG chart.

Sections: the summary; equity against buy-and-hold of the traded symbols and against the backtest's expectation (the
simulator's fills of the same decisions, :func:`simulator_equity`); orders; fills; costs; the parity
table (:mod:`live.parity`: each symbol's slippage against the simulator's model, the equity difference);
risk-limit events; alerts; retraining decisions (the journal's alerts of kind ``retraining``).

A period is a UTC calendar day (``--date``) or the whole run. Marks and fills belong to the period of their bar
(``bar_time``), orders to the period they were sent in (``created_at``), alerts to the one they were raised in.
Equity is the sum of the sleeves' marks at each bar's close (each sleeve's latest mark carried forward, as the
monitor page does); the period starts from the last mark before it (the previous close) when there is one.
Buy-and-hold puts each sleeve's equity at that start into its symbol at that bar's close and holds it: its value at
bar ``t`` is ``sum_s equity_s(start) * close_s(t) / close_s(start)``, from the closes the run journalled.

Nothing here writes to the journal except :func:`send_summary` (an alert row, through :class:`live.alerts.Alerter`).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from evaluation.report import _figure, _png, _table
from features.atomic_io import write_bytes_atomic, write_text_atomic
from sim.engine import Costs

from .alerts import AlertConfig, Alerter
from .journal import Journal
from .monitor import _total_equity
from .parity import ParityReport, drift_alerts, parity_report

#: Alert kinds that are risk limits acting (the rest are shown as alerts).
RISK_KINDS = ("daily_loss", "halted", "kill_switch", "trades_per_day", "order_rejected")
RETRAINING_KIND = "retraining"
REFUSED_STATUSES = ("rejected", "not_sent")
REPORTS_DIR = "reports"


class EmptyPeriod(ValueError):
    """A report period with no bars in the journal."""


@dataclass(frozen=True)
class Period:
    """What a report covers: bars in ``[start, end)`` (None: unbounded).

    :param label: ``"YYYY-MM-DD"`` or ``"all"`` (in the files' names).
    :param start: first moment included.
    :param end: first moment excluded.
    """

    label: str
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None

    def holds(self, moment: pd.Timestamp) -> bool:
        """Whether ``moment`` is in the period."""
        return (self.start is None or moment >= self.start) and (self.end is None or moment < self.end)


def day_period(day: str | dt.date) -> Period:
    """The UTC calendar day ``day`` (``YYYY-MM-DD``).

    :param day: the day.
    :raises ValueError: not a ``YYYY-MM-DD`` date.
    """
    try:
        date = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day))
    except ValueError:
        raise ValueError(f"date {day!r} is not a YYYY-MM-DD date") from None
    start = pd.Timestamp(date, tz="UTC")
    return Period(date.isoformat(), start, start + pd.Timedelta(days=1))


WHOLE_RUN = Period("all")


@dataclass
class ReportFacts:
    """Everything a report shows, computed from the journal (the Markdown and the chart read only this)."""

    run: str
    period: Period
    equity: pd.Series
    buy_and_hold: pd.Series
    orders: list[dict[str, Any]]
    fills: list[dict[str, Any]]
    parity: ParityReport
    drift: list[dict[str, Any]]
    drift_bps: float
    risk_events: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    retraining: list[dict[str, Any]]
    costs: dict[str, float] = field(default_factory=dict)
    simulator: pd.Series | None = None  # the backtest's expectation: the simulator's equity on the same decisions

    @property
    def simulator_return(self) -> float:
        if self.simulator is None:
            raise ValueError(f"report {self.run} {self.period.label}: no simulator equity (made by report_facts)")
        return float(self.simulator.iloc[-1] / self.simulator.iloc[0] - 1.0)

    @property
    def equity_return(self) -> float:
        return float(self.equity.iloc[-1] / self.equity.iloc[0] - 1.0)

    @property
    def buy_and_hold_return(self) -> float:
        return float(self.buy_and_hold.iloc[-1] / self.buy_and_hold.iloc[0] - 1.0)


def report_facts(journal: Journal, costs: Costs, period: Period, bars: dict[str, pd.DataFrame] | None = None,
                 drift_bps: float = 10.0) -> ReportFacts:
    """The report of ``period`` from ``journal``.

    :param journal: the run's journal.
    :param costs: the run's cost model (its config's ``costs``).
    :param period: what the report covers.
    :param bars: bars per symbol, for slippage models that read bars.
    :param drift_bps: the drift alerts' threshold (:func:`live.parity.drift_alerts`).
    :raises EmptyPeriod: no bars in the period.
    """
    equity, buy_and_hold = equity_and_buy_and_hold(journal, period)
    parity = parity_report(journal, costs, bars, period.start, period.end)
    orders = [dict(o) for o in journal.orders() if period.holds(pd.Timestamp(o["created_at"]))]
    fills = [dict(f) for f in journal.fills() if period.holds(pd.Timestamp(f["bar_time"]))]
    alerts = [dict(a) for a in journal.alerts() if period.holds(pd.Timestamp(a["at"]))]
    risk = [{"at": a["at"], "what": a["kind"], "symbol": a["symbol"] or "", "detail": a["message"]}
            for a in alerts if a["kind"] in RISK_KINDS]
    risk += [{"at": o["updated_at"], "what": f"order {o['status']}", "symbol": o["symbol"], "detail": o["reason"] or ""}
             for o in orders if o["status"] in REFUSED_STATUSES]
    identity = journal.meta("identity", {}) or {}
    fact = ReportFacts(
        run=identity.get("run", journal.path.parent.name), period=period, equity=equity, buy_and_hold=buy_and_hold,
        orders=orders, fills=fills, parity=parity, drift=drift_alerts(parity, drift_bps), drift_bps=drift_bps,
        risk_events=sorted(risk, key=lambda e: e["at"]),
        alerts=[a for a in alerts if a["kind"] != RETRAINING_KIND],
        retraining=[a for a in alerts if a["kind"] == RETRAINING_KIND])
    fact.simulator = simulator_equity(equity, parity)
    fact.costs = {
        "commission": math.fsum(f.commission for f in parity.fills),
        "model_commission": math.fsum(f.model_commission for f in parity.fills),
        "slippage": math.fsum((f.price - f.reference_price) * f.units for f in parity.fills),
        "model_slippage": math.fsum((f.model_price - f.reference_price) * f.units for f in parity.fills),
    }
    return fact


def equity_and_buy_and_hold(journal: Journal, period: Period) -> tuple[pd.Series, pd.Series]:
    """The run's total equity per bar over ``period`` (from the mark before it, when there is one) and
    buy-and-hold of the traded symbols from the same start (the module docstring).

    :param journal: the run's journal.
    :param period: what the report covers.
    :raises EmptyPeriod: no bars (equity marks of every sleeve) in the period.
    """
    rows = journal.equity()
    total = _total_equity(rows)
    inside = [t for t in total.index if period.holds(t)]
    if not inside:
        span = (f"the run has bars from {total.index[0]} to {total.index[-1]}" if len(total)
                else "the run has no bars yet")
        raise EmptyPeriod(f"{journal.path}: no bars in the report period {period.label} ({span})")
    before = total.index[total.index < inside[0]]
    start = before[-1] if len(before) else inside[0]
    curve = total.loc[start:inside[-1]]
    frame = pd.DataFrame([(r["bar_time"], r["symbol"], r["equity"], r["close"]) for r in rows],
                         columns=["bar", "symbol", "equity", "close"])
    frame["bar"] = pd.to_datetime(frame["bar"], utc=True)
    wide = {name: frame.pivot(index="bar", columns="symbol", values=name).sort_index().ffill().reindex(curve.index)
            for name in ("equity", "close")}
    held = wide["equity"].loc[start] / wide["close"].loc[start]  # each sleeve's equity at the start, in units
    buy_and_hold = (wide["close"] * held).sum(axis=1)
    return curve.rename("equity"), buy_and_hold.rename("buy_and_hold")


def simulator_equity(equity: pd.Series, parity: ParityReport) -> pd.Series:
    """What the backtest expected over the period: the run's equity with every fill of the period at the simulator's
    price and commission instead of the real ones (the same decisions and units, so only cash differs, from the bar
    of each fill on): ``equity(t) - sum of the differences of the fills in bars up to t``. A ``--broker sim`` replay's
    is its equity exactly.

    :param equity: the run's total equity per bar (:func:`equity_and_buy_and_hold`).
    :param parity: the period's parity report (its fills' ``difference``: live minus simulator).
    """
    if not parity.fills:
        return equity.rename("simulator")
    steps = pd.Series([f.difference for f in parity.fills],
                      index=pd.DatetimeIndex([pd.Timestamp(f.bar_time) for f in parity.fills]))
    cumulative = steps.groupby(level=0).sum().sort_index().cumsum()
    at = cumulative.index.searchsorted(equity.index, side="right")  # fills in bars up to each mark
    shift = pd.Series([0.0, *cumulative.to_numpy()], dtype=float).to_numpy()[at]
    return (equity - shift).rename("simulator")


# ----- output ------------------------------------------------------------------------------------------------
def summary_line(facts: ReportFacts) -> str:
    """The report in one line (what ``--send`` sends)."""
    p = facts.parity
    return (f"{facts.run} {facts.period.label}: equity {facts.equity.iloc[0]:,.2f} -> {facts.equity.iloc[-1]:,.2f} "
            f"({facts.equity_return:+.2%}), buy-and-hold {facts.buy_and_hold_return:+.2%}"
            + (f", backtest expectation {facts.simulator_return:+.2%}" if facts.simulator is not None else "")
            + f"; {len(facts.orders)} orders, "
            f"{len(facts.fills)} fills, commissions {facts.costs['commission']:,.2f}; vs simulator "
            f"{p.equity_difference:+,.2f}; {len(facts.drift)} slippage drift alert(s), "
            f"{len(facts.risk_events)} risk event(s)")


def render_markdown(facts: ReportFacts, chart: str) -> str:
    """The report as Markdown.

    :param facts: the report.
    :param chart: the PNG's file name (beside the Markdown).
    """
    p = facts.parity
    lines = [f"# Paper report: {facts.run}, {facts.period.label}", "", "## Summary", "", summary_line(facts), "",
             "## Equity against buy-and-hold", "", f"![equity]({chart})", ""]
    lines += _table(["", "start", "end", "return"], [
        ["equity", f"{facts.equity.iloc[0]:,.2f}", f"{facts.equity.iloc[-1]:,.2f}", f"{facts.equity_return:+.2%}"],
        ["buy-and-hold", f"{facts.buy_and_hold.iloc[0]:,.2f}", f"{facts.buy_and_hold.iloc[-1]:,.2f}",
         f"{facts.buy_and_hold_return:+.2%}"],
        ["backtest expectation (the simulator's fills of the same decisions)", f"{facts.simulator.iloc[0]:,.2f}",
         f"{facts.simulator.iloc[-1]:,.2f}", f"{facts.simulator_return:+.2%}"]])
    lines += ["", f"From {facts.equity.index[0]} to {facts.equity.index[-1]} ({len(facts.equity)} marks).", "",
              "## Orders", ""]
    lines += _table(["created", "symbol", "intent", "side", "qty", "reference", "status", "filled", "avg price", "reason"],
                    [[o["created_at"], o["symbol"], o["intent"], o["side"], f"{o['qty']:.6g}", f"{o['reference_price']:.4f}",
                      o["status"], f"{o['filled_qty']:.6g}", _price(o["filled_avg_price"]), o["reason"] or ""]
                     for o in facts.orders]) if facts.orders else ["none"]
    lines += ["", "## Fills", ""]
    lines += _table(["bar", "symbol", "units", "price", "model price", "commission", "slippage bps", "model bps"],
                    [[f.bar_time, f.symbol, f"{f.units:+.6g}", f"{f.price:.4f}", f"{f.model_price:.4f}",
                      f"{f.commission:,.2f}", f"{f.live_bps:.2f}", f"{f.model_bps:.2f}"] for f in p.fills]) \
        if p.fills else ["none"]
    c = facts.costs
    lines += ["", "## Costs", ""]
    lines += _table(["", "live", "simulator model"], [
        ["commission", f"{c['commission']:,.2f}", f"{c['model_commission']:,.2f}"],
        ["slippage against the reference", f"{c['slippage']:,.2f}", f"{c['model_slippage']:,.2f}"]])
    lines += ["", "## Parity with the simulator", "",
              f"Slippage model: {p.model}. Slippage in bps against each order's reference price (> 0: worse). "
              f"Equity difference = live minus the simulator on the same fills: {p.equity_difference:+,.2f} "
              f"(prices {p.price_difference:+,.2f}, commissions {p.commission_difference:+,.2f}).", ""]
    lines += _table(["symbol", "fills", "mean bps", "median bps", "p90 bps", "model mean bps", "excess bps",
                     "equity difference"],
                    [[s.symbol, s.count, f"{s.mean_bps:.2f}", f"{s.median_bps:.2f}", f"{s.p90_bps:.2f}",
                      f"{s.model_mean_bps:.2f}", f"{s.excess_bps:+.2f}", f"{s.difference:+,.2f}"]
                     for s in p.symbols.values()]) if p.symbols else ["no fills"]
    lines += ["", f"Drift alerts (mean slippage above the model's by more than {facts.drift_bps:g} bps): "
              + ("; ".join(a["message"] for a in facts.drift) if facts.drift else "none"), "",
              "## Risk-limit events", ""]
    lines += _table(["at", "what", "symbol", "detail"], [[e["at"], e["what"], e["symbol"], e["detail"]]
                                                         for e in facts.risk_events]) if facts.risk_events else ["none"]
    lines += ["", "## Alerts", ""]
    lines += _table(["at", "kind", "symbol", "message"], [[a["at"], a["kind"], a["symbol"] or "", a["message"]]
                                                          for a in facts.alerts]) if facts.alerts else ["none"]
    lines += ["", "## Retraining decisions", ""]
    lines += _table(["at", "symbol", "decision"], [[a["at"], a["symbol"] or "", a["message"]]
                                                   for a in facts.retraining]) if facts.retraining else ["none"]
    return "\n".join(lines) + "\n"


def draw_chart(facts: ReportFacts) -> bytes:
    """Equity against buy-and-hold, and each fill's slippage against the model's, as PNG bytes."""
    fig = _figure(9.6, 6.4)
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 2]})
    top.plot(facts.equity.index, facts.equity.to_numpy(), label="paper equity", color="#2f6fde")
    top.plot(facts.buy_and_hold.index, facts.buy_and_hold.to_numpy(), label="buy-and-hold", color="#8a93a3")
    top.plot(facts.simulator.index, facts.simulator.to_numpy(), label="backtest expectation (simulator fills)",
             color="#d9822b", linestyle="--")
    top.set_title(f"{facts.run}, {facts.period.label}")
    top.legend(loc="best")
    fills = facts.parity.fills
    if fills:
        bottom.plot([f.bar_time for f in fills], [f.live_bps for f in fills], "o", ms=3, label="fill slippage (bps)")
        bottom.plot([f.bar_time for f in fills], [f.model_bps for f in fills], "x", ms=3, label="model (bps)")
        bottom.legend(loc="best")
        # a span of at least 2 bps, without an offset: fills at the model's price (computed to ~1e-12 bps) show as
        # one line, not as a spread of rounding
        values = [v for f in fills for v in (f.live_bps, f.model_bps) if math.isfinite(v)]
        if values and max(values) - min(values) < 2.0:
            middle = (max(values) + min(values)) / 2.0
            bottom.set_ylim(middle - 1.0, middle + 1.0)
        bottom.ticklabel_format(axis="y", useOffset=False)
    else:
        bottom.text(0.5, 0.5, "no fills", ha="center", va="center", transform=bottom.transAxes)
    fig.tight_layout()
    return _png(fig)


def write_report(run_dir: str | Path, facts: ReportFacts) -> dict[str, Path]:
    """Write ``reports/report_<period>.png`` then ``.md`` into the run folder, each atomically (the Markdown last,
    so it never points to a missing chart).

    :param run_dir: the run folder.
    :param facts: the report.
    :return: ``{"markdown": path, "chart": path}``.
    """
    folder = Path(run_dir) / REPORTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"report_{facts.period.label}"
    chart, markdown = folder / f"{stem}.png", folder / f"{stem}.md"
    write_bytes_atomic(chart, draw_chart(facts))
    write_text_atomic(markdown, render_markdown(facts, chart.name))
    return {"markdown": markdown, "chart": chart}


def send_summary(journal: Journal, config: AlertConfig, facts: ReportFacts,
                 post: Callable[..., Any] | None = None) -> list[bool]:
    """Pass the report's summary, and its drift alerts, through the run's alert hooks (journal, log, webhook).

    Raised at the journal's last moment (so a ``--broker sim`` replay still resumes: its clock ends there), once
    per period (alert key ``report:<period>``) and per drift condition.

    :param journal: the run's journal.
    :param config: the alert settings (the webhook).
    :param facts: the report.
    :param post: the webhook's ``post`` (None: ``requests.post``).
    :return: per alert, whether it was new (False: already sent).
    """
    at = journal.last_moment() or facts.equity.index[-1]
    alert = Alerter(journal, config, facts.run, post=post)
    sent = [alert(at, "report", summary_line(facts), key=f"report:{facts.period.label}")]
    for drift in facts.drift:
        sent.append(alert(at, drift["kind"], drift["message"], drift["symbol"], drift["key"]))
    return sent


def _price(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
