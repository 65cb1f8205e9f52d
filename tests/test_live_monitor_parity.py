"""The monitor page's buy-and-hold line and parity panel: what they show is what live/report.py and live/parity.py
compute (a ``--broker sim`` replay: zero difference; fills at chosen prices on the fake Alpaca: the difference),
the drift banner shows above ``monitor.drift_bps`` only, a run without a recorded cost model (or a bar-reading
model without bars) shows a line saying why, and the page renders in headless chromium.
"""

from __future__ import annotations

import subprocess
from html.parser import HTMLParser

import pytest

from live import PaperConfig
from live.config import CostConfig
from live.monitor import EQUITY_HEIGHT, render_monitor, write_monitor
from live.parity import ParityError, parity_report
from live.report import WHOLE_RUN, equity_and_buy_and_hold

from live_helpers import fake, hand_journal, make_loop, mean_reversion_replay, server, until  # noqa: F401 (fixtures)
from test_live_monitor import CHROMIUM, HEADLESS

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning")]

SYMBOLS = ["SYN", "SYN2"]
SIM_CONFIG = {"risk": {"max_daily_loss": 0.99, "max_orders_per_day": 1000}, "alerts": {"daily_loss": 0.99},
              "costs": {"commission": 0.001, "fixed_fee": 1.0, "slippage": {"model": "volatility", "k": 0.2, "window": 10}}}
PARITY_COLUMNS = {"fills": "count", "mean_bps": "mean_bps", "median_bps": "median_bps", "p90_bps": "p90_bps",
                  "model_bps": "model_mean_bps", "excess_bps": "excess_bps", "difference": "difference"}


class Page(HTMLParser):
    """The chart's scale and polylines, the parity table's cells per symbol, the banners and the panel's reason."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, list[tuple[float, float]]] = {}
        self.scale: tuple[float, float] | None = None
        self.parity: dict[str, dict[str, float]] | None = None
        self.banners: dict[str, str] = {}
        self.figures: dict[str, float] = {}
        self.reason: str | None = None
        self.ready = None
        self._row: str | None = None
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.ready = a.get("data-ready")
        if tag == "svg" and a.get("id") == "chart" and "data-low" in a:
            self.scale = (float(a["data-low"]), float(a["data-high"]))
        if tag == "polyline" and "id" in a:
            self.lines[a["id"]] = [tuple(map(float, p.split(","))) for p in a["points"].split()]
        if tag == "table" and a.get("id") == "parity":
            self.parity = {}
        if tag == "tr" and self.parity is not None and "data-symbol" in a:
            self._row = a["data-symbol"]
            self.parity[self._row] = {}
        if tag == "td" and self._row is not None and "data-col" in a:
            self.parity[self._row][a["data-col"]] = float(a["data-value"])
        if "data-banner" in a:
            self._in = "banner:" + a["data-banner"]
        if "data-figure" in a and "data-value" in a:
            self.figures[a["data-figure"]] = a["data-value"]
        if a.get("id") == "parity-reason":
            self._in = "reason"

    def handle_endtag(self, tag):
        if tag == "table":
            self._row = None

    def handle_data(self, data):
        if self._in == "reason":
            self.reason = data.strip()
        elif self._in is not None:
            self.banners[self._in.split(":", 1)[1]] = data.strip()
        self._in = None


def read(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def assert_table_is_the_parity_report(page: Page, parity) -> None:
    assert page.parity is not None and set(page.parity) == set(parity.symbols)
    for symbol, summary in parity.symbols.items():
        assert page.parity[symbol] == {col: float(getattr(summary, name)) for col, name in PARITY_COLUMNS.items()}
    assert float(page.figures["parity_difference"]) == parity.equity_difference


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    """A ``--broker sim`` replay of a mean-reversion policy on two synthetic symbols, with a bar-reading slippage
    model and a fixed fee: its journal and bars."""
    broker, journal = mean_reversion_replay(tmp_path_factory.mktemp("runs") / "replay", 300,
                                            PaperConfig.from_dict(SIM_CONFIG), tuple(SYMBOLS))
    yield journal, {s: broker.history(s) for s in SYMBOLS}
    journal.close()


# 10, 20 and 30 bps of slippage against a 5 bps model: mean 20, excess 15 bps
DRIFTING = [("buy", 10.0, 100.0, 100.1), ("sell", 10.0, 100.0, 99.8), ("buy", 10.0, 100.0, 100.3)]
FIVE_BPS = {"commission": 0.0, "slippage": 5.0, "fixed_fee": 0.0}


def test_the_buy_and_hold_line_is_the_reports_buy_and_hold_on_the_equity_lines_scale(sim_run):
    journal, bars = sim_run
    page = read(render_monitor(journal, chart_bars=40, bars=bars))
    equity, held = equity_and_buy_and_hold(journal, WHOLE_RUN)
    low, high = page.scale
    unit = (high - low) / (EQUITY_HEIGHT - 20)  # currency per pixel

    def values(line):
        return [low + (EQUITY_HEIGHT - 10 - y) * unit for _, y in line]

    tolerance = 0.051 * unit  # the points are written to 0.1 px
    assert len(page.lines["buy-and-hold-line"]) == 40
    assert values(page.lines["buy-and-hold-line"]) == pytest.approx(list(held.iloc[-40:]), abs=tolerance)
    assert values(page.lines["equity-line"]) == pytest.approx(list(equity.iloc[-40:]), abs=tolerance)
    assert [x for x, _ in page.lines["buy-and-hold-line"]] == [x for x, _ in page.lines["equity-line"]]
    assert (low, high) == (min(equity.iloc[-40:].min(), held.iloc[-40:].min()),
                           max(equity.iloc[-40:].max(), held.iloc[-40:].max()))
    assert not held.iloc[-40:].equals(equity.iloc[-40:])  # two different lines


def test_a_sim_replays_parity_table_is_the_parity_report_with_zero_difference(sim_run):
    journal, bars = sim_run
    page = read(render_monitor(journal, bars=bars))
    parity = parity_report(journal, CostConfig(**journal.meta("costs")).costs(), bars)
    assert_table_is_the_parity_report(page, parity)
    assert set(page.parity) == set(SYMBOLS) and sum(row["fills"] for row in page.parity.values()) > 20
    assert all(row["difference"] == 0.0 for row in page.parity.values())
    assert float(page.figures["parity_difference"]) == 0.0
    assert "drift" not in page.banners


def test_a_bar_reading_slippage_model_without_bars_shows_why_instead_of_failing_the_page(sim_run):
    journal, _ = sim_run
    page = read(render_monitor(journal))
    with pytest.raises(ParityError, match="reads bars") as error:
        parity_report(journal, CostConfig(**journal.meta("costs")).costs())
    assert page.parity is None and page.reason == f"no parity with the simulator: {error.value}"
    assert page.lines["equity-line"] and page.lines["buy-and-hold-line"]  # the rest of the page is there


def test_fills_at_chosen_prices_on_the_fake_alpaca_show_the_parity_reports_numbers(fake, tmp_path):
    fake.price_overrides["AAPL"] = 100.0  # the latest trade: every order's reference price
    fake.fill_prices["AAPL"] = {"buy": 100.2, "sell": 99.7}
    loop = make_loop(fake, tmp_path)
    loop.run(until=until(fake, 8))
    write_monitor(loop.journal, tmp_path / "monitor.html", drift_bps=1000.0)
    page = read((tmp_path / "monitor.html").read_text())
    parity = parity_report(loop.journal, CostConfig(**loop.journal.meta("costs")).costs())
    assert_table_is_the_parity_report(page, parity)
    assert page.parity["AAPL"]["difference"] < 0 and page.parity["AAPL"]["mean_bps"] >= 20.0  # paid 20-30 bps
    assert page.parity["AAPL"]["model_bps"] == pytest.approx(5.0, rel=1e-12)


def test_the_drift_banner_shows_only_above_the_threshold(tmp_path):
    journal = hand_journal(tmp_path, DRIFTING, FIVE_BPS)
    shown = read(render_monitor(journal, drift_bps=14.99))
    assert "15.00 bps" in shown.banners["drift"] and "SYN" in shown.banners["drift"]
    assert shown.parity["SYN"]["excess_bps"] == pytest.approx(15.0)
    hidden = read(render_monitor(journal, drift_bps=15.01))
    assert "drift" not in hidden.banners and hidden.parity["SYN"]["excess_bps"] == pytest.approx(15.0)


def test_a_run_that_recorded_no_cost_model_shows_a_line_saying_why(tmp_path):
    journal = hand_journal(tmp_path, DRIFTING, None)
    page = read(render_monitor(journal))
    assert page.parity is None and "drift" not in page.banners
    assert page.reason.startswith("no parity with the simulator: this run recorded no cost model when it started")


def test_a_recorded_cost_model_that_is_not_a_costs_section_shows_a_line_saying_why(tmp_path):
    journal = hand_journal(tmp_path, DRIFTING, {**FIVE_BPS, "spread": 1.0})
    page = read(render_monitor(journal))
    assert page.parity is None and "spread" in page.reason
    assert page.reason.startswith("no parity with the simulator: the cost model the run recorded")


def test_monitor_drift_bps_is_validated_in_one_line_naming_it():
    assert PaperConfig.from_dict({"monitor": {"drift_bps": 2.5}}).monitor.drift_bps == 2.5
    assert PaperConfig().monitor.drift_bps == 10.0
    with pytest.raises(ValueError, match=r"^paper config: monitor\.drift_bps=-1\.0 must be in \[0, inf\)$"):
        PaperConfig.from_dict({"monitor": {"drift_bps": -1}})


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                    "(apt-get install -y chromium); .ci/run installs it")
def test_the_page_with_the_parity_panel_renders_in_a_headless_browser(tmp_path):
    journal = hand_journal(tmp_path, DRIFTING, FIVE_BPS)
    path = write_monitor(journal, tmp_path / "monitor.html", drift_bps=10.0)
    common = [str(CHROMIUM), *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1500"]
    dom = subprocess.run([*common, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = read(dom.stdout)
    assert page.ready == "1"  # the page's script (with the buy-and-hold read-out) ran in the browser
    assert_table_is_the_parity_report(page, parity_report(journal, CostConfig(**FIVE_BPS).costs()))
    assert "15.00 bps" in page.banners["drift"]
    assert len(page.lines["buy-and-hold-line"]) == len(page.lines["equity-line"]) == 4
