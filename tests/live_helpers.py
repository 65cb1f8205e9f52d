"""Shared pieces of the live-trading tests: a small policy, the fake Alpaca market, a loop wired to them."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from envs.layout import ObservationLayout
from features import DatasetConfig, SplitConfig, build_market_data, synthetic_bars
from features.preprocessing import Preprocessing
from live import Journal, LiveLoop, LivePolicy, Order, PaperConfig, SimBroker
from live.alpaca_broker import AlpacaBroker

from fake_alpaca_trading import API_KEY, SECRET_KEY, FakeAlpaca, FakeServer, daily_bars, market_close, session_days

WINDOW = 8
HISTORY = 200  # bars per decision in the Alpaca tests (the parity tests use the settled default)


class MeanReversion:
    """A deterministic policy with its own preprocessing: long after a down bar, flat after an up bar.

    It reads the last bar's scaled ``ret_1`` from the observation, as any saved policy reads its window.
    """

    name = "mean_reversion"

    def __init__(self, preprocessing: Preprocessing) -> None:
        self.preprocessing = preprocessing
        self.layout = ObservationLayout(preprocessing.window, len(preprocessing.feature_names))
        self.column = preprocessing.feature_names.index("ret_1")
        self.center = float(preprocessing.scaler.center[self.column])
        self.seen: list[np.ndarray] = []

    def reset(self) -> None:
        self.seen = []

    def act(self, observation: np.ndarray) -> int:
        self.seen.append(np.array(observation))
        scaled = float(self.layout.features(observation)[-1, self.column])
        return 1 if scaled * float(self.preprocessing.scaler.scale[self.column]) + self.center < 0 else 0


def mean_reversion_replay(run_dir: Path, n_bars: int, config: PaperConfig,
                          symbols: tuple[str, ...] = ("SYN", "SYN2")) -> tuple[SimBroker, Journal]:
    """A finished ``--broker sim`` replay of :class:`MeanReversion` on AR(1) symbols (``n_bars`` each, seeds 3, 4, ...;
    a 70/10/20 split, test replayed) into ``run_dir``: its broker and its journal (open).

    :param run_dir: the run folder (created).
    :param n_bars: bars per symbol.
    :param config: the paper config (costs, risk).
    :param symbols: the symbols.
    """
    bars = {s: synthetic_bars(n_bars, phi=-0.3, seed=3 + k) for k, s in enumerate(symbols)}
    data = build_market_data(bars, DatasetConfig(window=8, split=SplitConfig(train=0.7, validation=0.1, test=0.2)))
    pre = Preprocessing.of(data)
    broker = SimBroker(data, list(symbols), "test", config.costs.costs(), min_bars=pre.min_bars)
    journal = Journal(run_dir / "journal.sqlite", durable=False)
    loop = LiveLoop(LivePolicy(MeanReversion(pre), pre, "discrete", False, "mean_reversion"), broker, journal,
                    list(symbols), config, run_name=run_dir.name, run_dir=run_dir, write_monitor=False)
    assert loop.run() == "replay finished"
    return broker, journal


@functools.lru_cache(maxsize=4)
def market(symbols: tuple[str, ...] = ("AAPL",), n_days: int = 420, start: str = "2023-01-03") -> tuple[dict, list]:
    """Synthetic daily bars per symbol, stamped like Alpaca's, and their trading days."""
    days = session_days(start, n_days)
    bars = {s: daily_bars(days, seed=i, start_price=100.0 + 50 * i) for i, s in enumerate(symbols)}
    return bars, days


def preprocessing_for(bars: dict[str, pd.DataFrame], train_bars: int = 250) -> Preprocessing:
    """The preprocessing of a dataset built on the first ``train_bars`` bars (what a trained policy carries)."""
    data = build_market_data({s: f.iloc[:train_bars] for s, f in bars.items()}, DatasetConfig(window=WINDOW))
    return Preprocessing.of(data)


def live_policy(bars: dict[str, pd.DataFrame]) -> LivePolicy:
    pre = preprocessing_for(bars)
    return LivePolicy(MeanReversion(pre), pre, "discrete", False, "mean_reversion")


def start_fake(symbols: tuple[str, ...] = ("AAPL",), day_index: int = 320, cash: float = 100_000.0) -> FakeServer:
    """A fake Alpaca whose clock stands just after the close of trading day ``day_index``."""
    bars, days = market(symbols)
    now = market_close(days[day_index]) + pd.Timedelta(seconds=30)
    return FakeServer(FakeAlpaca(bars, "1Day", now, cash=cash))


def broker_for(fake: FakeAlpaca, **options: Any) -> AlpacaBroker:
    settings = dict(api_key=API_KEY, secret_key=SECRET_KEY, trading_url=fake.url, data_url=fake.url, feed="iex",
                    read_timeout=2.0, max_retries=3, backoff_base=0.5, sleep=fake.advance, sleep_chunk=1e9)
    settings.update(options)
    return AlpacaBroker(**settings)


def paper_config(**sections: dict) -> PaperConfig:
    base: dict[str, dict] = {"loop": {"history_bars": HISTORY, "poll_seconds": 10.0, "bar_delay_seconds": 5.0},
                             "risk": {"max_daily_loss": 0.5}, "alerts": {"daily_loss": 0.5}}
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return PaperConfig.from_dict(base)


def make_loop(fake: FakeAlpaca, run_dir: Path, symbols: tuple[str, ...] = ("AAPL",), config: PaperConfig | None = None,
              crash: Any = None, broker: Any = None, **options: Any) -> LiveLoop:
    bars, _ = market(symbols)
    journal = Journal(run_dir / "journal.sqlite", durable=False)  # a killed process loses nothing either way
    return LiveLoop(live_policy(bars), broker or broker_for(fake), journal, list(symbols),
                    config or paper_config(), run_name="paper_test", run_dir=run_dir, crash=crash,
                    write_monitor=options.pop("write_monitor", False), **options)


def broker_orders(fake: FakeAlpaca) -> list[dict[str, Any]]:
    return fake.order_list()


def assert_journal_matches_broker(loop: LiveLoop, fake: FakeAlpaca) -> None:
    """The journal and the fake broker agree: every broker order is journalled with its fills, positions and
    cash are the same, and no (symbol, bar, intent) has two orders."""
    journal = loop.journal
    orders = fake.order_list()
    cids = [o["client_order_id"] for o in orders]
    assert len(cids) == len(set(cids)), f"duplicate client_order_id at the broker: {cids}"
    for order in orders:
        row = journal.order(order["client_order_id"])
        assert row is not None, f"broker order {order['client_order_id']} is not in the journal"
        assert row["status"] == order["status"], (row["status"], order["status"])
        assert abs(row["filled_qty"] - float(order["filled_qty"])) < 1e-9
    booked = {}
    for fill in journal.fills():
        booked[fill["symbol"]] = booked.get(fill["symbol"], 0.0) + fill["units"]
    for symbol, sleeve in journal.sleeves().items():
        held = fake.positions.get(symbol, {}).get("qty", 0.0)
        assert abs(sleeve.units - held) < 1e-9, (symbol, sleeve.units, held)
        assert abs(booked.get(symbol, 0.0) - held) < 1e-9, (symbol, booked.get(symbol), held)
    cash = sum(s.cash for s in journal.sleeves().values()) + float(journal.meta("cash_offset", 0.0))
    assert abs(cash - fake.cash) < 1e-6, (cash, fake.cash)


# ----- fixtures shared by the loop tests (import them by name: ``from live_helpers import fake, server``) -----
@pytest.fixture
def server(monkeypatch, request) -> Any:
    """A fake Alpaca server on 127.0.0.1 for ``request.param`` symbols (default AAPL), closed after the test."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    srv = start_fake(getattr(request, "param", ("AAPL",)))
    yield srv
    srv.close()


@pytest.fixture
def fake(server) -> FakeAlpaca:
    return server.fake


def until(fake: FakeAlpaca, n_days: int, symbols: tuple[str, ...] = ("AAPL",)) -> pd.Timestamp:
    """20 s after the market close ``n_days`` sessions after the fake's today."""
    _, days = market(symbols)
    today = fake.now.tz_convert("America/New_York").date()
    return market_close(days[days.index(today) + n_days]) + pd.Timedelta(seconds=20)


def hand_journal(tmp_path: Path, fills: list[tuple[str, float, float, float]], costs: dict | None = None) -> Journal:
    """A journal with one SYN order per ``(side, qty, reference, price)``, each filled at once at ``price`` with no
    commission, and a mark per fill bar (daily bars from 2024-01-02); ``costs``: the cost model the run recorded
    (None: none recorded)."""
    journal = Journal(tmp_path / "journal.sqlite", durable=False)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    journal.set_meta("identity", {"run": "hand", "symbols": ["SYN"]})
    if costs is not None:
        journal.set_meta("costs", costs)
    journal.open_sleeves({"SYN": 100_000.0}, start)
    journal.record_equity("SYN", start, 100.0, 100_000.0, 0.0, 100_000.0, 0.0)
    for k, (side, qty, reference, price) in enumerate(fills):
        bar = start + pd.Timedelta(days=k + 1)
        cid = f"hand-{k}"
        journal.record_intent(cid, "SYN", bar, "rebalance", side, qty, 1.0, reference, str(bar.date()), bar)
        journal.apply_order(Order(f"id-{k}", cid, "SYN", side, qty, "filled", qty, price, bar, bar), bar, bar)
        sleeve = journal.sleeves()["SYN"]
        journal.record_equity("SYN", bar, price, sleeve.cash, sleeve.units, sleeve.cash + sleeve.units * price, 0.0)
    return journal


def two_symbol_classifier(root: Path) -> tuple[dict[str, pd.DataFrame], Any, Any]:
    """Two AR(1) symbols (300 bars, a 30-bar test split) saved as ``root/dataset``, and a small MLP trained on them
    for one epoch (seeded): the data and the training result of the paper-trading resume and retraining tests.

    :return: the bars, the data and the training result.
    :param root: the folder the dataset is saved in.
    """
    import torch

    from features import LabelConfig, SplitConfig, synthetic_bars
    from supervised.models import ModelConfig
    from supervised.trainer import TrainConfig, train_classifier

    bars = {"SYN": synthetic_bars(300, phi=-0.3, seed=3), "SYN2": synthetic_bars(300, phi=-0.3, seed=4)}
    data = build_market_data(bars, DatasetConfig(window=8, labels=LabelConfig(profit=0.02, stop=0.02, horizon=4),
                                                 split=SplitConfig(train=0.8, validation=0.1, test=0.1)))
    data.save(root / "dataset")
    torch.manual_seed(0)
    result = train_classifier(data, ModelConfig(kind="mlp", hidden_size=8, dropout=0.0),
                              TrainConfig(epochs=1, batch_size=128, num_threads=1), progress=False)
    return bars, data, result
