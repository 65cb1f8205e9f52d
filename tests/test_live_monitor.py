"""The monitor page and the JSON-lines log: the figures shown are the journal's, in the HTML and in a real
headless browser (Debian's chromium, which ``.ci/run`` installs), which also saves a screenshot.

Set ``LIVE_MONITOR_SCREENSHOT=/some/path.png`` to keep the browser test's screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from live.monitor import serve, write_monitor

from live_helpers import make_loop, market, market_close, paper_config, start_fake

CHROMIUM = Path("/usr/bin/chromium")
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
pytestmark = [pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
              pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run of a few weeks against the fake Alpaca: trades, alerts, and an order sent at today's open."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NO_PROXY", "127.0.0.1,localhost")
        srv = start_fake()
        try:
            fake = srv.fake
            folder = tmp_path_factory.mktemp("monitor")
            loop = make_loop(fake, folder, config=paper_config(alerts={"max_trades_per_day": 0}))
            _, days = market(("AAPL",))
            k = 330
            while True:  # up to the first open at which the loop sends an order (the page shows it in flight)
                loop.run(until=market_close(days[k]) + pd.Timedelta(seconds=20))
                fake.set_now(loop.broker.clock().next_open + pd.Timedelta(minutes=5))
                loop.write_monitor = k > 360  # as the entry point runs it: the page is rebuilt after the cycle
                if loop.cycle().orders or k > 360:
                    break
                k += 1
            write_monitor(loop.journal, folder / "monitor.html")
            assert "Today's orders" in (folder / "monitor.html").read_text()
            loop.journal.record_alert(fake.now, "reconciliation", "AAPL: a <b>test</b> difference & more", "AAPL",
                                      key="test")
            write_monitor(loop.journal, folder / "monitor.html")
            return loop.journal, folder
        finally:
            srv.close()


class Figures(HTMLParser):
    """Collects ``data-figure`` values, position cells, order rows and banners from a page."""

    def __init__(self) -> None:
        super().__init__()
        self.figures, self.text, self.cells, self.orders, self.banners = {}, {}, {}, [], {}
        self.ready = None
        self._open: tuple[str, str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.ready = a.get("data-ready")
        if "data-figure" in a:
            self.figures[a["data-figure"]] = a.get("data-value")
            self._open = ("figure", a["data-figure"])
        if tag == "td" and "data-col" in a and "data-value" in a:
            self.cells[a["data-col"]] = float(a["data-value"])
        if tag == "tr" and "data-cid" in a:
            self.orders.append(a["data-cid"])
        if "data-banner" in a:
            self.banners[a["data-banner"]] = a.get("data-count")

    def handle_data(self, data):
        if self._open is not None and data.strip():
            self.text[self._open[1]] = data.strip()
            self._open = None


def journal_figures(journal):
    """The figures straight from the journal's tables (not through the page's own code)."""
    db = journal.conn
    day = journal.meta("day_start")["day"]
    capital = db.execute("SELECT SUM(capital) FROM sleeves").fetchone()[0]
    equity = journal.meta("equity_now")["equity"]
    orders = db.execute("SELECT client_order_id FROM orders WHERE trading_day = ? AND status != 'not_sent' "
                        "ORDER BY created_at", (day,)).fetchall()
    fills = db.execute("SELECT COUNT(*) FROM fills f JOIN orders o USING (client_order_id) WHERE o.trading_day = ?",
                       (day,)).fetchone()[0]
    units = db.execute("SELECT units FROM sleeves WHERE symbol = 'AAPL'").fetchone()[0]
    cash = db.execute("SELECT cash FROM sleeves WHERE symbol = 'AAPL'").fetchone()[0]
    alerts_today = db.execute("SELECT COUNT(*) FROM alerts WHERE at LIKE ?", (f"{day}%",)).fetchone()[0]
    curve = [r[0] for r in db.execute("SELECT equity FROM equity ORDER BY bar_time")]
    peak = np.maximum.accumulate(curve)
    return {"equity": equity, "pnl": equity - capital, "orders": [r[0] for r in orders], "fills": fills,
            "units": units, "cash": cash, "alerts_today": alerts_today, "day": day,
            "max_drawdown": float(np.max(1 - np.array(curve) / peak))}


def assert_page_shows_the_journal(page: Figures, journal) -> None:
    expected = journal_figures(journal)
    assert float(page.figures["equity"]) == expected["equity"]
    assert page.text["equity"] == f"{expected['equity']:,.2f}"
    assert float(page.figures["pnl"]) == pytest.approx(expected["pnl"], abs=1e-9)
    assert page.text["pnl"] == f"{expected['pnl']:+,.2f}"
    assert float(page.figures["max_drawdown"]) == pytest.approx(expected["max_drawdown"], abs=1e-12)
    assert int(float(page.figures["orders_today"])) == len(expected["orders"]) >= 1
    assert int(float(page.figures["fills_today"])) == expected["fills"]
    assert page.orders == expected["orders"]
    assert page.cells["units"] == expected["units"] and page.cells["cash"] == expected["cash"]
    assert page.text["today"] == expected["day"]
    assert int(page.banners["alerts"]) == expected["alerts_today"] >= 2


def test_the_page_shows_the_journals_figures(run):
    journal, folder = run
    text = (folder / "monitor.html").read_text()
    page = Figures()
    page.feed(text)
    assert_page_shows_the_journal(page, journal)
    assert "a &lt;b&gt;test&lt;/b&gt; difference &amp; more" in text  # messages are escaped
    assert "http://" not in text.replace("http-equiv", "") and "https://" not in text  # no CDN: opens offline
    assert "<svg" in text and "<polyline" in text


def test_each_cycle_writes_one_json_line(run):
    journal, folder = run
    lines = (folder / "cycles.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == len(journal.conn.execute("SELECT id FROM cycles").fetchall())
    sent = [o["client_order_id"] for r in records for o in r["orders"]]
    assert sorted(sent) == sorted(row["client_order_id"] for row in journal.orders())
    assert any(r["alerts"] for r in records) and all("equity" in r for r in records)


def test_serve_answers_with_the_page(run):
    _, folder = run
    server = serve(folder, 0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/monitor.html"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=5) as response:
            body = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert response.status == 200 and 'data-figure="equity"' in body


def test_serve_refuses_a_port_in_use_in_one_line_naming_it(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ValueError, match=rf"^cannot serve the monitor on 127\.0\.0\.1:{port}: it is already in use —"):
            serve(tmp_path, port)


@pytest.mark.parametrize("port", [70000, -1, True, 8080.5])
def test_serve_refuses_a_port_out_of_range_in_one_line_naming_it(tmp_path, port):
    with pytest.raises(ValueError, match=rf"^port={port!r} is not a TCP port: .*\[0, 65535\]"):
        serve(tmp_path, port)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                    "(apt-get install -y chromium); .ci/run installs it")
def test_the_page_in_a_headless_browser_shows_the_journals_figures(run, tmp_path):
    journal, folder = run
    url = (folder / "monitor.html").as_uri()
    common = [str(CHROMIUM), *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1500"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = Figures()
    page.feed(dom.stdout)
    assert page.ready == "1"  # the page's script ran in the browser
    assert_page_shows_the_journal(page, journal)
    shot = tmp_path / "monitor.png"
    taken = subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, text=True, timeout=60)
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1500, 1200)
    assert pixels[..., :3].std() > 0.05  # not a blank page
    keep = os.environ.get("LIVE_MONITOR_SCREENSHOT")
    if keep:
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, keep)
