"""The monitor page: one self-contained HTML file rebuilt from the journal after every cycle.

Equity (against buy-and-hold of the traded symbols, :func:`live.report.equity_and_buy_and_hold`) and drawdown
chart (inline SVG), the figures (equity, P&L, drawdown, orders and fills today), positions, today's orders and
fills, the parity panel (the run's fills against the simulator's prices, :func:`live.parity.parity_report`, with a
banner for :func:`live.parity.drift_alerts`) and the alerts, with a banner for today's. No CDN, no server: it
opens from disk (``file://``); a small inline script adds a hover read-out on the chart and the page's
age, and reloads the page every ``refresh_seconds``. ``serve(run_dir, port)`` serves the folder on
127.0.0.1 for a browser on another machine of yours (through an SSH tunnel, say).

Every figure is also in a ``data-value`` attribute (``data-figure="equity"``), so a test can read back
exactly what is shown.

The parity panel compares the fills to the cost model the run recorded when it started (``meta costs``). A run
that recorded none, a slippage model that reads bars when no bars are given, or any error computing the panel
shows one line saying why in its place: the page itself never fails because of the panel.
"""

from __future__ import annotations

import errno
import html
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .config import CostConfig, MonitorConfig, check_port
from .journal import Journal
from .parity import ParityReport, drift_alerts, parity_report

logger = logging.getLogger(__name__)

CHART_WIDTH, EQUITY_HEIGHT, DRAWDOWN_HEIGHT, PAD = 960, 240, 90, 48


def page_figures(journal: Journal, chart_bars: int = 500, drift_bps: float = MonitorConfig.drift_bps,
                 bars: Mapping[str, pd.DataFrame] | None = None) -> dict[str, Any]:
    """Everything the page shows, computed from the journal (the browser test compares against this).

    :param journal: the run's journal.
    :param chart_bars: bars shown in the chart (the latest).
    :param drift_bps: the slippage-drift banner's threshold (``monitor.drift_bps``).
    :param bars: per symbol, its bars: needed only by slippage models that read bars (else the parity panel
        says so).
    """
    identity = journal.meta("identity", {}) or {}
    sleeves = journal.sleeves()
    capital = sum(s.capital for s in sleeves.values())
    marks = journal.equity()
    curve = _total_equity(marks)
    latest = journal.latest_marks()
    day_start = journal.meta("day_start") or {}
    today = day_start.get("day")
    now = journal.meta("equity_now") or {}
    # equity at the latest prices the loop saw (the last trade while the market is open), else at the last close
    equity = float(now["equity"]) if now.get("equity") is not None else (float(curve.iloc[-1]) if len(curve) else capital)
    peak = max(float(curve.max()) if len(curve) else capital, equity)
    drawdown_curve = 1.0 - curve / curve.cummax() if len(curve) else curve
    orders_today = journal.orders(trading_day=today) if today else []
    sent_today = [o for o in orders_today if o["status"] != "not_sent"]
    cids_today = {o["client_order_id"] for o in orders_today}
    fills_today = [f for f in journal.fills() if f["client_order_id"] in cids_today]
    positions = []
    for symbol, sleeve in sleeves.items():
        mark = latest.get(symbol)
        close = float(mark["close"]) if mark is not None else float("nan")
        value = sleeve.units * close if mark is not None else 0.0
        sleeve_equity = sleeve.cash + value
        basis = _cost_basis(journal.fills(symbol))
        positions.append({
            "symbol": symbol, "units": sleeve.units, "close": close, "value": value, "cash": sleeve.cash,
            "equity": sleeve_equity, "exposure": value / sleeve_equity if sleeve_equity > 0 else 0.0,
            "unrealised": value - basis if sleeve.units != 0 else 0.0,
            "entry_bar": sleeve.entry_bar.isoformat() if sleeve.entry_bar is not None else "",
            "last_target": journal.last_target(symbol), "bar": mark["bar_time"] if mark is not None else "",
        })
    alerts = journal.alerts()
    last_cycle = journal.last_cycle()
    return {
        "run": identity.get("run", ""), "policy": identity.get("policy", ""), "broker": identity.get("broker", ""),
        "symbols": identity.get("symbols", []), "timeframe": identity.get("timeframe", ""),
        "status": journal.meta("status", ""), "halted": journal.meta("halted"),
        "updated": last_cycle["at"] if last_cycle is not None else "", "today": today or "",
        "equity_at": now.get("at", ""),
        "capital": capital, "equity": equity, "pnl": equity - capital,
        "return": equity / capital - 1.0 if capital > 0 else 0.0,
        "day_pnl": equity - float(day_start["equity"]) if day_start.get("equity") else 0.0,
        "max_drawdown": float(drawdown_curve.max()) if len(curve) else 0.0,
        "drawdown": 1.0 - equity / peak if peak > 0 else 0.0,
        "orders_today": len(sent_today), "fills_today": len(fills_today),
        "open_positions": sum(1 for s in sleeves.values() if s.units != 0),
        "positions": positions,
        "orders": [dict(o) for o in orders_today],
        "fills": [dict(f) for f in fills_today],
        "alerts": [dict(a) for a in alerts[-30:]][::-1],
        "alerts_today": [dict(a) for a in alerts if today and str(a["at"]).startswith(today)],
        "curve": curve.iloc[-chart_bars:],
        "drawdown_curve": drawdown_curve.iloc[-chart_bars:] if len(curve) else drawdown_curve,
        "buy_and_hold": _buy_and_hold(journal, curve).iloc[-chart_bars:],
        **_parity_panel(journal, drift_bps, bars),
        **_retraining_panel(journal),
    }


def _retraining_panel(journal: Journal) -> dict[str, Any]:
    """The active policy (``meta policy``: set by a promotion, else the policy the run started with), a retraining
    in progress and every decision journaled (``meta retrain``, see :mod:`live.retrain`), newest first.

    :param journal: the run's journal.
    """
    active = journal.meta("policy") or {}
    state = journal.meta("retrain") or {}
    return {"active_policy": dict(active), "retrain_running": dict(state.get("running") or {}),
            "retrain_decisions": [dict(d) for d in (state.get("decisions") or [])][::-1]}


def render_monitor(journal: Journal, refresh_seconds: int = 30, chart_bars: int = 500,
                   drift_bps: float = MonitorConfig.drift_bps, bars: Mapping[str, pd.DataFrame] | None = None) -> str:
    """The page as one HTML string.

    :param journal: the run's journal.
    :param refresh_seconds: the page reloads itself this often (0: never).
    :param chart_bars: bars shown in the chart (the latest).
    :param drift_bps: the slippage-drift banner's threshold (``monitor.drift_bps``).
    :param bars: per symbol, its bars (slippage models that read bars).
    """
    f = page_figures(journal, chart_bars, drift_bps, bars)
    esc = html.escape
    banner = ""
    if f["halted"]:
        banner += f'<div class="banner halt" data-banner="halted">HALTED: {esc(str(f["halted"].get("reason", "")))}</div>'
    if f["alerts_today"]:
        kinds = sorted({a["kind"] for a in f["alerts_today"]})
        banner += (f'<div class="banner" data-banner="alerts" data-count="{len(f["alerts_today"])}">'
                   f'{len(f["alerts_today"])} alert(s) today: {esc(", ".join(kinds))} - latest: '
                   f'{esc(f["alerts_today"][-1]["message"])}</div>')
    if f["drift"]:
        banner += (f'<div class="banner" data-banner="drift" data-count="{len(f["drift"])}">slippage drift against '
                   f'the simulator: {esc("; ".join(a["message"] for a in f["drift"]))}</div>')
    figures = [
        ("equity", "Equity now", f["equity"], _money(f["equity"])),
        ("pnl", "P&L", f["pnl"], _money(f["pnl"], signed=True)),
        ("return", "Return", f["return"], f"{f['return']:+.2%}"),
        ("day_pnl", "Today's P&L", f["day_pnl"], _money(f["day_pnl"], signed=True)),
        ("drawdown", "Drawdown", f["drawdown"], f"{f['drawdown']:.2%}"),
        ("max_drawdown", "Max drawdown", f["max_drawdown"], f"{f['max_drawdown']:.2%}"),
        ("orders_today", "Orders today", f["orders_today"], str(f["orders_today"])),
        ("fills_today", "Fills today", f["fills_today"], str(f["fills_today"])),
        ("open_positions", "Open positions", f["open_positions"], str(f["open_positions"])),
    ]
    cards = "".join(
        f'<div class="card"><div class="label">{label}</div>'
        f'<div class="value" data-figure="{key}" data-value="{_raw(value)}">{esc(text)}</div></div>'
        for key, label, value, text in figures)
    position_rows = "".join(
        f'<tr data-symbol="{esc(p["symbol"])}"><td>{esc(p["symbol"])}</td>'
        f'<td data-col="units" data-value="{_raw(p["units"])}">{p["units"]:,.6g}</td>'
        f'<td data-col="close" data-value="{_raw(p["close"])}">{p["close"]:,.4f}</td>'
        f'<td data-col="value" data-value="{_raw(p["value"])}">{_money(p["value"])}</td>'
        f'<td data-col="cash" data-value="{_raw(p["cash"])}">{_money(p["cash"])}</td>'
        f'<td data-col="equity" data-value="{_raw(p["equity"])}">{_money(p["equity"])}</td>'
        f'<td data-col="exposure" data-value="{_raw(p["exposure"])}">{p["exposure"]:.2%}</td>'
        f'<td data-col="unrealised" data-value="{_raw(p["unrealised"])}">{_money(p["unrealised"], signed=True)}</td>'
        f'<td data-col="last_target">{p["last_target"]:g}</td><td>{esc(p["bar"])}</td></tr>'
        for p in f["positions"])
    order_rows = "".join(
        f'<tr data-cid="{esc(o["client_order_id"])}"><td>{esc(o["created_at"])}</td><td>{esc(o["symbol"])}</td>'
        f'<td>{esc(o["intent"])}</td><td>{esc(o["side"])}</td><td data-col="qty">{o["qty"]:,.6g}</td>'
        f'<td data-col="status">{esc(o["status"])}</td><td data-col="filled_qty">{o["filled_qty"]:,.6g}</td>'
        f'<td>{_price(o["filled_avg_price"])}</td>'
        f'<td class="mono">{esc(o["client_order_id"])}</td><td>{esc(o["reason"] or "")}</td></tr>'
        for o in f["orders"]) or '<tr><td colspan="10" class="empty">no orders today</td></tr>'
    fill_rows = "".join(
        f'<tr><td>{esc(x["at"])}</td><td>{esc(x["symbol"])}</td><td data-col="units">{x["units"]:+,.6g}</td>'
        f'<td data-col="price">{x["price"]:,.4f}</td><td>{x["commission"]:,.2f}</td>'
        f'<td class="mono">{esc(x["client_order_id"])}</td></tr>'
        for x in f["fills"]) or '<tr><td colspan="6" class="empty">no fills today</td></tr>'
    alert_rows = "".join(
        f'<tr class="alert-{esc(a["kind"])}"><td>{esc(a["at"])}</td><td>{esc(a["kind"])}</td>'
        f'<td>{esc(a["symbol"] or "")}</td><td>{esc(a["message"])}</td></tr>'
        for a in f["alerts"]) or '<tr><td colspan="4" class="empty">no alerts</td></tr>'
    chart = _chart_svg(f["curve"], f["drawdown_curve"], f["buy_and_hold"])
    parity = _parity_html(f["parity"], f["parity_reason"], f["drift_bps"])
    retraining = _retraining_html(f["active_policy"], f["retrain_running"], f["retrain_decisions"])
    series = json.dumps({"t": [str(t) for t in f["curve"].index], "e": [float(v) for v in f["curve"].to_numpy()],
                         "b": [float(v) for v in f["buy_and_hold"].to_numpy()]})
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">' if refresh_seconds else ""
    title = f"{f['run']} - paper trading monitor"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{refresh}
<title>{esc(title)}</title>
<style>
body{{font:14px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:20px;color:#1d2330;background:#f6f7f9}}
h1{{font-size:20px;margin:0 0 4px}} h2{{font-size:15px;margin:22px 0 8px}}
.sub{{color:#5b6475}} .mono{{font-family:ui-monospace,Menlo,monospace;font-size:12px}}
.banner{{background:#fff3cd;border:1px solid #e0b84c;padding:8px 12px;margin:12px 0;border-radius:6px}}
.banner.halt{{background:#f8d7da;border-color:#d9534f;font-weight:600}}
.cards{{display:flex;flex-wrap:wrap;gap:10px;margin-top:12px}}
.card{{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:8px 14px;min-width:120px}}
.label{{color:#5b6475;font-size:12px}} .value{{font-size:19px;font-weight:600}}
table{{border-collapse:collapse;background:#fff;width:100%;font-size:13px}}
th,td{{border-bottom:1px solid #e6e8ee;padding:4px 8px;text-align:left}} th{{background:#eef0f4}}
.empty{{color:#8a93a3;text-align:center}} svg{{background:#fff;border:1px solid #dde1e8;border-radius:8px}}
#readout{{color:#5b6475;height:18px}}
</style></head>
<body data-ready="0">
<h1>{esc(title)}</h1>
<div class="sub">policy <b>{esc(f['policy'])}</b> on {esc(', '.join(f['symbols']))} ({esc(f['timeframe'])} bars),
broker <b>{esc(f['broker'])}</b>, status <b data-figure="status">{esc(str(f['status']))}</b>;
trading day <span data-figure="today">{esc(f['today'])}</span>; updated <span id="updated" data-at="{esc(f['updated'])}">{esc(_when(f['updated']))}</span>
<span id="age"></span></div>
{banner}
<div class="cards">{cards}</div>
<h2>Equity against buy-and-hold, and drawdown</h2>
{chart}
<div id="readout"></div>
<h2>Positions</h2>
<table id="positions"><tr><th>symbol</th><th>shares</th><th>last close</th><th>value</th><th>cash</th>
<th>sleeve equity</th><th>exposure</th><th>unrealised P&amp;L</th><th>last target</th><th>bar</th></tr>{position_rows}</table>
<h2>Today's orders</h2>
<table id="orders"><tr><th>created</th><th>symbol</th><th>intent</th><th>side</th><th>qty</th><th>status</th>
<th>filled</th><th>avg price</th><th>client_order_id</th><th>reason</th></tr>{order_rows}</table>
<h2>Today's fills</h2>
<table id="fills"><tr><th>at</th><th>symbol</th><th>shares</th><th>price</th><th>commission</th><th>client_order_id</th></tr>{fill_rows}</table>
<h2>Parity with the simulator</h2>
{parity}
<h2>Retraining</h2>
{retraining}
<h2>Alerts</h2>
<table id="alerts"><tr><th>at</th><th>kind</th><th>symbol</th><th>message</th></tr>{alert_rows}</table>
<script type="application/json" id="series">{html.escape(series, quote=False)}</script>
<script>
(function () {{
  var data = JSON.parse(document.getElementById("series").textContent);
  var svg = document.getElementById("chart"), out = document.getElementById("readout");
  if (svg && data.t.length) {{
    svg.addEventListener("mousemove", function (ev) {{
      var box = svg.getBoundingClientRect();
      var x = (ev.clientX - box.left) / box.width * {CHART_WIDTH};
      var i = Math.round((x - {PAD}) / ({CHART_WIDTH - 2 * PAD}) * Math.max(data.t.length - 1, 1));
      i = Math.max(0, Math.min(data.t.length - 1, i));
      var money = {{maximumFractionDigits: 2}};
      out.textContent = data.t[i] + "  equity " + data.e[i].toLocaleString(undefined, money) +
        (data.b.length === data.e.length ? "  buy-and-hold " + data.b[i].toLocaleString(undefined, money) : "");
    }});
  }}
  var at = Date.parse(document.getElementById("updated").dataset.at);
  if (!isNaN(at)) {{
    var minutes = Math.round((Date.now() - at) / 60000);
    document.getElementById("age").textContent = minutes >= 0 && minutes < 1440 ? "(" + minutes + " min ago)" : "";
  }}
  document.body.dataset.ready = "1";
}})();
</script>
</body></html>
"""


def write_monitor(journal: Journal, path: str | Path, refresh_seconds: int = 30, chart_bars: int = 500,
                  drift_bps: float = MonitorConfig.drift_bps, bars: Mapping[str, pd.DataFrame] | None = None) -> Path:
    """Write the page atomically (a browser never reads half a file).

    :param journal: the run's journal.
    :param path: the page's file.
    :param refresh_seconds: the page reloads itself this often (0: never).
    :param chart_bars: bars shown in the chart (the latest).
    :param drift_bps: the slippage-drift banner's threshold (``monitor.drift_bps``).
    :param bars: per symbol, its bars (slippage models that read bars).
    """
    path = Path(path)
    text = render_monitor(journal, refresh_seconds, chart_bars, drift_bps, bars)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def serve(run_dir: str | Path, port: int) -> Any:
    """Serve ``run_dir`` (the monitor page at ``/monitor.html``) on 127.0.0.1:``port`` in a daemon thread.

    :param run_dir: the folder served.
    :param port: the TCP port, 0..65535 (0: any free port; ``server.server_address[1]`` says which).
    :return: the server (``shutdown()`` stops it).
    :raises ValueError: the port is not a TCP port, or cannot be listened on (in use, not allowed): one line
        naming it.
    """
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    port = check_port("port", port)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(run_dir))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as error:
        reason = "it is already in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
        raise ValueError(f"cannot serve the monitor on 127.0.0.1:{port}: {reason} — choose another port "
                         f"(0: any free one), or stop what listens on {port}") from None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ----- helpers ---------------------------------------------------------------------------------------
def _buy_and_hold(journal: Journal, curve: pd.Series) -> pd.Series:
    """Buy-and-hold of the traded symbols over the whole run, at the bars of ``curve`` (the page's equity).

    :param journal: the run's journal.
    :param curve: the run's total equity per bar (:func:`_total_equity`); empty: no bars yet.
    """
    if not len(curve):
        return pd.Series(dtype=float, name="buy_and_hold")
    from .report import WHOLE_RUN, equity_and_buy_and_hold  # live.report imports this module

    return equity_and_buy_and_hold(journal, WHOLE_RUN)[1]


def _parity_panel(journal: Journal, drift_bps: float, bars: Mapping[str, pd.DataFrame] | None) -> dict[str, Any]:
    """The parity panel's contents: the whole run's fills against the simulator, and the drift alerts; or, when
    it cannot be computed, the reason (never an exception: the page must still be written).

    :param journal: the run's journal.
    :param drift_bps: the drift alerts' threshold.
    :param bars: per symbol, its bars (slippage models that read bars).
    :return: ``{"parity": ParityReport | None, "parity_reason": str, "drift": [...], "drift_bps": float}``.
    """
    empty: dict[str, Any] = {"parity": None, "drift": [], "drift_bps": drift_bps}
    recorded = journal.meta("costs")
    if recorded is None:
        return {**empty, "parity_reason": "no parity with the simulator: this run recorded no cost model when it "
                                          "started (runs started before runs recorded their costs)"}
    try:
        costs = CostConfig(**recorded).costs()
    except (TypeError, ValueError) as error:
        return {**empty, "parity_reason": f"no parity with the simulator: the cost model the run recorded "
                                          f"({recorded!r}) is not a costs section: {error}"}
    try:
        parity = parity_report(journal, costs, bars)
        return {**empty, "parity": parity, "parity_reason": "", "drift": drift_alerts(parity, drift_bps)}
    except ValueError as error:  # ParityError: bars the model reads not given, an incomplete journal
        return {**empty, "parity_reason": f"no parity with the simulator: {error}"}
    except Exception as error:  # noqa: BLE001 - a bug here must not stop the page (nor the loop that writes it)
        logger.exception("the monitor's parity panel failed")
        return {**empty, "parity_reason": f"no parity with the simulator: computing it failed "
                                          f"({type(error).__name__}: {error})"}


def _retraining_html(active: dict[str, Any], running: dict[str, Any], decisions: list[dict[str, Any]]) -> str:
    """The retraining section: the active policy, a retraining in progress and the decisions (newest first).

    :param active: ``meta policy`` (empty: the policy the run started with is active, no promotion yet).
    :param running: the retraining in progress (empty: none).
    :param decisions: the journaled decisions, newest first.
    """
    esc = html.escape
    if active.get("path"):
        since = f" since {esc(str(active.get('since', '')))}" if active.get("since") else ""
        now = (f'<div class="sub">active policy <b id="active-policy" data-n="{esc(str(active.get("n")))}">'
               f'{esc(str(active["path"]))}</b>{since}</div>')
    else:
        now = '<div class="sub" id="active-policy" data-n="">active policy: the one the run started with</div>'
    if running:
        now += (f'<div class="sub" id="retrain-running" data-n="{esc(str(running.get("n")))}">retraining '
                f'{esc(str(running.get("n")))} running since {esc(str(running.get("started", "")))}</div>')

    def number(value: Any, fmt: str) -> str:
        return format(value, fmt) if isinstance(value, (int, float)) else "-"

    rows = "".join(
        f'<tr data-n="{esc(str(d.get("n")))}"><td>{esc(str(d.get("n")))}</td><td>{esc(str(d.get("at", "")))}</td>'
        f'<td data-col="status">{esc(str(d.get("status", "")))}</td>'
        f'<td data-col="promoted">{"promoted" if d.get("promoted") else "kept champion"}</td>'
        f'<td data-col="advantage" data-value="{_raw(d.get("advantage"))}">{number(d.get("advantage"), "+.4f")}</td>'
        f'<td data-col="t" data-value="{_raw(d.get("t"))}">{number(d.get("t"), ".2f")}</td>'
        f'<td>{esc(", ".join(f"{k} {v:+.4f}" for k, v in (d.get("log_returns") or {}).items()))}</td></tr>'
        for d in decisions) or '<tr><td colspan="7" class="empty">no retraining yet</td></tr>'
    return (now + '<table id="retraining"><tr><th>n</th><th>at</th><th>status</th><th>decision</th>'
            '<th>advantage</th><th>t</th><th>log returns on the window</th></tr>' + rows + "</table>")


def _parity_html(parity: ParityReport | None, reason: str, drift_bps: float) -> str:
    """The parity panel: the per-symbol table (every number also in ``data-value``), or the line saying why not.

    :param parity: the parity report; None: not computed.
    :param reason: why not (when ``parity`` is None).
    :param drift_bps: the drift banner's threshold (shown).
    """
    esc = html.escape
    if parity is None:
        return f'<p class="empty" id="parity-reason">{esc(reason)}</p>'
    columns = [("fills", "count", "{:d}"), ("mean_bps", "mean_bps", "{:.2f}"), ("median_bps", "median_bps", "{:.2f}"),
               ("p90_bps", "p90_bps", "{:.2f}"), ("model_bps", "model_mean_bps", "{:.2f}"),
               ("excess_bps", "excess_bps", "{:+.2f}")]
    rows = "".join(
        f'<tr data-symbol="{esc(s.symbol)}"><td>{esc(s.symbol)}</td>'
        + "".join(f'<td data-col="{col}" data-value="{_raw(getattr(s, name))}">{form.format(getattr(s, name))}</td>'
                  for col, name, form in columns)
        + f'<td data-col="difference" data-value="{_raw(s.difference)}">{_money(s.difference, signed=True)}</td></tr>'
        for s in parity.symbols.values()) or '<tr><td colspan="8" class="empty">no fills yet</td></tr>'
    return (f'<div class="sub" id="parity-summary">The whole run\'s fills against the simulator\'s price of each '
            f'(slippage model {esc(parity.model)}); slippage in bps against each order\'s reference price '
            f'(&gt; 0: worse). Live equity minus the simulator\'s on the same fills: '
            f'<b data-figure="parity_difference" data-value="{_raw(parity.equity_difference)}">'
            f'{_money(parity.equity_difference, signed=True)}</b> (prices {_money(parity.price_difference, signed=True)}, '
            f'commissions {_money(parity.commission_difference, signed=True)}); a banner shows when a symbol\'s '
            f'excess is above {drift_bps:g} bps.</div>\n'
            f'<table id="parity"><tr><th>symbol</th><th>fills</th><th>mean slippage bps</th><th>median bps</th>'
            f'<th>p90 bps</th><th>model bps</th><th>excess bps</th><th>difference (live - simulator)</th></tr>'
            f'{rows}</table>')


def _total_equity(rows: list[Any]) -> pd.Series:
    """Total equity per bar: each sleeve's latest mark carried to the bars where it has none."""
    if not rows:
        return pd.Series(dtype=float)
    frame = pd.DataFrame([(r["bar_time"], r["symbol"], r["equity"]) for r in rows], columns=["bar", "symbol", "equity"])
    wide = frame.pivot(index="bar", columns="symbol", values="equity").sort_index().ffill()
    wide = wide.dropna()  # before every sleeve has its first mark the total is not comparable
    total = wide.sum(axis=1)
    total.index = pd.to_datetime(total.index, utc=True)
    return total


def _cost_basis(fills: list[Any]) -> float:
    """Cost of the open shares from the fills, average-cost (the simulator's rule)."""
    units, basis = 0.0, 0.0
    for fill in fills:
        delta, price = float(fill["units"]), float(fill["price"])
        new = units + delta
        if new == 0.0:
            basis = 0.0
        elif units == 0.0 or np.sign(new) != np.sign(units):
            basis = new * price
        elif np.sign(delta) == np.sign(new):
            basis += delta * price
        else:
            basis *= new / units
        units = new
    return basis


def _chart_svg(curve: pd.Series, drawdown: pd.Series, buy_and_hold: pd.Series | None = None) -> str:
    """The chart: equity (blue) and buy-and-hold (grey) on one scale (``data-low``/``data-high`` on the svg: the
    values at the bottom and top of the equity panel), the drawdown below.

    :param curve: total equity per bar.
    :param drawdown: drawdown per bar (same bars).
    :param buy_and_hold: buy-and-hold per bar (same bars); None or other bars: not drawn.
    """
    width, height = CHART_WIDTH, EQUITY_HEIGHT + DRAWDOWN_HEIGHT + 30
    if len(curve) < 2:
        return (f'<svg id="chart" width="{width}" height="80" viewBox="0 0 {width} 80"><text x="{PAD}" y="45" '
                f'fill="#8a93a3">the chart starts after two marked bars</text></svg>')
    values = curve.to_numpy(float)
    held = None
    if buy_and_hold is not None and buy_and_hold.index.equals(curve.index):
        held = buy_and_hold.to_numpy(float)
    shown = values if held is None else np.concatenate([values, held])
    low, high = float(shown.min()), float(shown.max())
    if high == low:
        low, high = low - 1.0, high + 1.0
    xs = PAD + np.arange(len(values)) / (len(values) - 1) * (width - 2 * PAD)

    def points(series: np.ndarray) -> str:
        ys = 10 + (1.0 - (series - low) / (high - low)) * (EQUITY_HEIGHT - 20)
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))

    line = points(values)
    legend_x = width - PAD - 190
    second = ""
    if held is not None:
        second = (f'<polyline id="buy-and-hold-line" points="{points(held)}" fill="none" stroke="#8a93a3" '
                  f'stroke-width="1.4" stroke-dasharray="5,3"/>\n')
    legend = (f'<g id="legend" font-size="11" fill="#5b6475"><line x1="{legend_x}" y1="14" x2="{legend_x + 18}" y2="14" '
              f'stroke="#2f6fde" stroke-width="2"/><text x="{legend_x + 22}" y="18">paper equity</text>'
              + (f'<line x1="{legend_x + 100}" y1="14" x2="{legend_x + 118}" y2="14" stroke="#8a93a3" stroke-width="2" '
                 f'stroke-dasharray="5,3"/><text x="{legend_x + 122}" y="18">buy-and-hold</text>' if held is not None
                 else "")
              + "</g>")
    dd = drawdown.to_numpy(float)
    depth = max(float(dd.max()), 1e-9)
    top = EQUITY_HEIGHT + 20
    dys = top + dd / depth * (DRAWDOWN_HEIGHT - 10)
    area = f"{xs[0]:.1f},{top} " + " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, dys)) + f" {xs[-1]:.1f},{top}"
    first, last = curve.index[0], curve.index[-1]
    return f"""<svg id="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img"
 aria-label="equity against buy-and-hold, and drawdown" data-low="{low!r}" data-high="{high!r}">
<line x1="{PAD}" y1="{EQUITY_HEIGHT - 10}" x2="{width - PAD}" y2="{EQUITY_HEIGHT - 10}" stroke="#e6e8ee"/>
{second}<polyline id="equity-line" points="{line}" fill="none" stroke="#2f6fde" stroke-width="1.6"/>
{legend}
<text x="4" y="18" font-size="11" fill="#5b6475">{high:,.0f}</text>
<text x="4" y="{EQUITY_HEIGHT - 12}" font-size="11" fill="#5b6475">{low:,.0f}</text>
<polygon points="{area}" fill="#d9534f" fill-opacity="0.35" stroke="#d9534f" stroke-width="0.8"/>
<text x="4" y="{top + 12}" font-size="11" fill="#5b6475">0%</text>
<text x="4" y="{top + DRAWDOWN_HEIGHT - 10}" font-size="11" fill="#5b6475">-{depth:.1%}</text>
<text x="{PAD}" y="{height - 4}" font-size="11" fill="#5b6475">{html.escape(str(first.date()))}</text>
<text x="{width - PAD}" y="{height - 4}" font-size="11" fill="#5b6475" text-anchor="end">{html.escape(str(last.date()))}</text>
</svg>"""


def _money(value: float, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:+,.2f}" if signed else f"{value:,.2f}"


def _when(text: str) -> str:
    """An ISO time as the page shows it: to the second, UTC."""
    try:
        return pd.Timestamp(text).tz_convert("UTC").strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, TypeError):
        return text


def _price(value: float | None) -> str:
    return "" if value is None else f"{value:,.4f}"


def _raw(value: Any) -> str:
    return repr(float(value)) if isinstance(value, (int, float, np.floating)) else html.escape(str(value))
