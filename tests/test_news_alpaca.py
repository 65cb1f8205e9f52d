"""Alpaca news downloads against a local HTTP server that speaks the v1beta1 news wire format.

The real alpaca-py ``NewsClient`` is pointed at the server with ``url_override``; nothing inside
alpaca-py is mocked. alpaca-py 0.44 calls ``GET {base}/v1beta1/news?symbols=...&start=...&end=...
&sort=asc&limit=50[&page_token=...]`` and follows ``next_page_token``; the server pages by 3 to make
pagination visible. A crypto pair is tagged and asked for as Alpaca's news API spells it, without the
slash (``BTCUSD``; :func:`crypto_articles`): the server matches the query's symbols against the articles'
tags as they are spelt, so ``BTC/USD`` finds nothing. Faults (a 429 with Retry-After, a 500, an answer that never comes, the request's
headers echoed back) are served on cue; ``sleep=waits.append`` records backoff waits instead of sleeping.
"""

from __future__ import annotations

import json
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from fake_alpaca_data import serve_handler
from features import load_news
from features.alpaca_source import AlpacaDataError
from features.news import download_news_to_cache, fetch_alpaca_news, news_cache_path, read_cached_news
from features.news.alpaca import write_cached_news

pytestmark = [
    pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
    pytest.mark.timeout(60),
]

API_KEY = "PKNEWSTEST1"
SECRET_KEY = "news-secret-xyz"
PAGE_SIZE = 3


def wire_article(i: int, created: str, symbols: list[str], headline: str | None = None) -> dict:
    """One article as Alpaca sends it."""
    return {
        "id": 1000 + i,
        "headline": headline if headline is not None else f"Headline {i}: profit rises",
        "author": "Reporter",
        "created_at": created,
        "updated_at": created,
        "summary": f"Summary {i}",
        "content": "",
        "url": f"https://example.invalid/{i}",
        "images": [],
        "symbols": symbols,
        "source": "benzinga",
    }


def default_articles() -> list[dict]:
    days = pd.date_range("2024-01-02 14:30", periods=7, freq="D", tz="UTC")
    articles = [wire_article(i, day.strftime("%Y-%m-%dT%H:%M:%SZ"), ["AAPL"]) for i, day in enumerate(days)]
    articles.append(wire_article(7, "2024-01-03T18:00:00Z", ["AAPL", "MSFT"], "Apple and Microsoft sign deal"))
    articles.append(wire_article(8, "2024-01-04T12:00:00Z", ["MSFT"], "Microsoft losses widen"))
    return articles


def crypto_articles() -> list[dict]:
    """Crypto articles tagged as Alpaca's news API tags them (``BTCUSD``, ``ETHUSD``: no slash), over a
    weekend: Friday 2024-01-05 21:00 UTC, Saturday 10:30 and 22:30, Sunday 12:00 (also naming AAPL) and a
    Monday ETH-only one. Not among the defaults: add them (``fake.articles += crypto_articles()``)."""
    spec = [
        ("2024-01-05T21:00:00Z", ["BTCUSD"], "Bitcoin gains as funds buy"),
        ("2024-01-06T10:30:00Z", ["BTCUSD"], "Bitcoin rallies on Saturday"),
        ("2024-01-06T22:30:00Z", ["BTCUSD", "ETHUSD"], "Crypto losses widen late Saturday"),
        ("2024-01-07T12:00:00Z", ["AAPL", "BTCUSD"], "Apple and bitcoin in the news"),
        ("2024-01-08T09:00:00Z", ["ETHUSD"], "Ether upgrade ships"),
    ]
    return [wire_article(1000 + i, created, symbols, headline) for i, (created, symbols, headline) in enumerate(spec)]


@dataclass
class Fault:
    status: int = 500
    payload: dict = field(default_factory=lambda: {"message": "internal server error"})
    headers: dict = field(default_factory=dict)
    hang: bool = False
    echo_headers: bool = False


class FakeNews:
    """The articles served and every request seen; ``faults`` are used up one per request."""

    def __init__(self) -> None:
        self.articles = default_articles()
        self.requests: list[dict] = []
        self.faults: list[Fault | None] = []
        self.fault_always: Fault | None = None
        self.denied = {"DENIED"}
        self.url = ""
        self.release = threading.Event()
        self._lock = threading.Lock()

    def next_fault(self) -> Fault | None:
        with self._lock:
            return self.faults.pop(0) if self.faults else self.fault_always

    def news_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"] == "/v1beta1/news"]


def make_handler(fake: FakeNews) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            fake.requests.append({"path": parts.path, "query": query})
            fault = fake.next_fault()
            if fault is not None:
                return self.misbehave(fault)
            if (self.headers.get("APCA-API-KEY-ID"), self.headers.get("APCA-API-SECRET-KEY")) != (API_KEY, SECRET_KEY):
                return self.reply(401, {"message": "unauthorized."})
            if parts.path != "/v1beta1/news":
                return self.reply(404, {"message": "Not Found"})
            wanted = set(query.get("symbols", "").split(","))
            if wanted & fake.denied:
                return self.reply(403, {"message": "forbidden"})
            start = pd.Timestamp(query["start"]) if "start" in query else None
            end = pd.Timestamp(query["end"]) if "end" in query else None
            matches = [
                a for a in fake.articles
                if wanted & set(a["symbols"])
                and (start is None or pd.Timestamp(a["created_at"]) >= start)
                and (end is None or pd.Timestamp(a["created_at"]) <= end)
            ]
            matches.sort(key=lambda a: (a["created_at"], a["id"]), reverse=query.get("sort", "desc") == "desc")
            limit = min(int(query.get("limit", 50)), PAGE_SIZE)
            offset = int(query.get("page_token", "0"))
            page = matches[offset:offset + limit]
            token = str(offset + limit) if offset + limit < len(matches) else None
            self.reply(200, {"news": page, "next_page_token": token})

        def misbehave(self, fault: Fault) -> None:
            if fault.hang:
                fake.release.wait(timeout=60)
                self.close_connection = True
                return
            payload = dict(fault.payload)
            if fault.echo_headers:
                payload["message"] = f"{payload.get('message', '')}; you sent {dict(self.headers)}"
            self.reply(fault.status, payload, fault.headers)

        def reply(self, status: int, payload: dict, headers: dict | None = None) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    return Handler


@contextmanager
def serve_news(fake: FakeNews) -> Iterator[FakeNews]:
    """Serve ``fake`` on 127.0.0.1 (a free port; its URL goes into ``fake.url``) until the block ends.

    :param fake: the articles to serve, and where the requests are recorded.
    """
    with serve_handler(fake, make_handler(fake)) as served:
        yield served


def no_proxy_no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reach 127.0.0.1 directly, and start with no Alpaca keys in the environment."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)


@pytest.fixture
def fake_news(monkeypatch):
    no_proxy_no_keys(monkeypatch)
    with serve_news(FakeNews()) as fake:
        yield fake


@pytest.fixture
def keys(fake_news) -> dict:
    return {"api_key": API_KEY, "secret_key": SECRET_KEY, "url_override": fake_news.url}


@pytest.fixture
def waits() -> list[float]:
    return []


def test_pagination_collects_every_article_as_one_row_per_symbol(fake_news, keys):
    news = fetch_alpaca_news("AAPL", "2024-01-01", "2024-02-01", **keys)

    assert len(fake_news.requests) == 3  # 8 AAPL articles, 3 a page
    assert [r["query"].get("page_token") for r in fake_news.requests] == [None, "3", "6"]
    query = fake_news.requests[0]["query"]
    assert query["symbols"] == "AAPL" and query["sort"] == "asc"
    assert pd.Timestamp(query["start"]) == pd.Timestamp("2024-01-01", tz="UTC")
    assert pd.Timestamp(query["end"]) == pd.Timestamp("2024-02-01", tz="UTC")
    assert len(news) == 8 and set(news["symbol"]) == {"AAPL"}  # the AAPL+MSFT article gives its AAPL row
    assert news["published_at"].is_monotonic_increasing
    assert str(news["published_at"].dtype) == "datetime64[ns, UTC]"
    assert news["id"].iloc[0] == "1000" and news["source"].iloc[0] == "benzinga"
    assert news.loc[news["id"] == "1007", "headline"].item() == "Apple and Microsoft sign deal"


def test_load_news_has_one_row_per_requested_symbol_an_article_names(fake_news, keys, tmp_path):
    news = load_news(["AAPL", "MSFT"], "2024-01-01", "2024-01-31", cache_dir=tmp_path, **keys)
    shared = news[news["id"] == "1007"]
    assert sorted(shared["symbol"]) == ["AAPL", "MSFT"]
    assert len(news) == 8 + 2


def test_cache_is_reused_and_extended_without_downloading_the_covered_range(fake_news, keys, tmp_path):
    first = load_news("AAPL", "2024-01-02", "2024-01-05", cache_dir=tmp_path, **keys)
    assert len(first) == 4 and news_cache_path("AAPL", tmp_path).is_file()
    count = len(fake_news.requests)

    again = load_news("AAPL", "2024-01-02", "2024-01-05", cache_dir=tmp_path, **keys)
    assert len(fake_news.requests) == count  # nothing downloaded
    pd.testing.assert_frame_equal(again, first)

    longer = load_news("AAPL", "2024-01-02", "2024-01-10", cache_dir=tmp_path, **keys)
    new_requests = fake_news.requests[count:]
    assert new_requests and all(pd.Timestamp(r["query"]["start"]) >= pd.Timestamp("2024-01-05", tz="UTC")
                                for r in new_requests)
    assert len(longer) == 8
    _, coverage = read_cached_news("AAPL", tmp_path)
    assert coverage == [(pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-10", tz="UTC"))]


def test_a_covered_range_needs_neither_keys_nor_network(fake_news, keys, tmp_path):
    load_news("AAPL", "2024-01-02", "2024-01-08", cache_dir=tmp_path, **keys)
    offline = load_news("AAPL", "2024-01-03", "2024-01-06", cache_dir=tmp_path)  # no keys, no url
    assert len(offline) == 4 and offline["published_at"].min() >= pd.Timestamp("2024-01-03", tz="UTC")
    cached = load_news("AAPL", "2024-01-03", "2024-01-06", source="parquet", cache_dir=tmp_path)
    pd.testing.assert_frame_equal(cached, offline)


def test_a_re_downloaded_article_replaces_the_cached_one(fake_news, keys, tmp_path):
    load_news("AAPL", "2024-01-02", "2024-01-04", cache_dir=tmp_path, **keys)
    fake_news.articles[0]["headline"] = "Headline 0: corrected"
    cached, _ = read_cached_news("AAPL", tmp_path)
    write_cached_news(cached, "AAPL", tmp_path, coverage=[])  # as if that range were still unsettled
    news = load_news("AAPL", "2024-01-02", "2024-01-04", cache_dir=tmp_path, **keys)
    assert (news["id"] == "1000").sum() == 1 and len(news) == len(cached)
    assert news.loc[news["id"] == "1000", "headline"].item() == "Headline 0: corrected"


def test_uncovered_range_without_keys_names_the_environment_variables(fake_news, tmp_path):
    with pytest.raises(ValueError, match="APCA_API_KEY_ID"):
        load_news("AAPL", "2024-01-02", "2024-01-04", cache_dir=tmp_path)


def test_an_empty_answer_is_cached_as_covered(fake_news, keys, tmp_path):
    news = load_news("NONEWS", "2024-01-02", "2024-01-04", cache_dir=tmp_path, **keys)
    assert len(news) == 0 and list(news.columns)[:3] == ["published_at", "id", "symbol"]
    count = len(fake_news.requests)
    load_news("NONEWS", "2024-01-02", "2024-01-04", cache_dir=tmp_path, **keys)
    assert len(fake_news.requests) == count


def test_failure_on_one_symbol_keeps_the_symbols_before_it(fake_news, keys, tmp_path):
    with pytest.raises(AlpacaDataError, match="HTTP 403") as caught:
        download_news_to_cache(["AAPL", "DENIED"], "2024-01-02", "2024-01-05", tmp_path, **keys)
    assert caught.value.symbol == "DENIED" and caught.value.status_code == 403
    assert news_cache_path("AAPL", tmp_path).is_file()
    assert not news_cache_path("DENIED", tmp_path).exists()
    assert [p.name for p in (tmp_path / "articles").iterdir()] == ["AAPL.parquet"]  # no temp files left


def test_429_with_retry_after_is_honoured_then_succeeds(fake_news, keys, waits, caplog):
    fake_news.faults = [Fault(429, {"message": "too many requests"}, {"Retry-After": "2"})]
    with caplog.at_level(logging.WARNING):
        news = fetch_alpaca_news("AAPL", "2024-01-01", "2024-02-01", sleep=waits.append, **keys)
    assert len(news) == 8 and waits == [2.0]
    assert "AAPL: news request failed (HTTP 429, Retry-After 2)" in caplog.text


def test_500_on_a_later_page_is_retried_and_the_pages_join(fake_news, keys, waits):
    fake_news.faults = [None, Fault(500)]
    news = fetch_alpaca_news("AAPL", "2024-01-01", "2024-02-01", sleep=waits.append, **keys)
    assert len(news) == 8 and waits == [1.0]
    assert [r["query"].get("page_token") for r in fake_news.requests] == [None, "3", "3", "6"]


def test_500_forever_fails_after_the_bounded_retries(fake_news, keys, waits):
    fake_news.fault_always = Fault(503, {"message": "unavailable"})
    with pytest.raises(AlpacaDataError, match=r"HTTP 503 on all 3 attempts") as caught:
        fetch_alpaca_news("AAPL", "2024-01-01", "2024-02-01", max_retries=2, sleep=waits.append, **keys)
    assert waits == [1.0, 2.0] and caught.value.attempts == 3


def test_a_server_that_hangs_times_out_and_is_retried(fake_news, keys, waits):
    fake_news.faults = [Fault(hang=True)]
    news = fetch_alpaca_news("AAPL", "2024-01-01", "2024-02-01", read_timeout=0.2, sleep=waits.append, **keys)
    assert len(news) == 8 and waits == [1.0]


def test_a_server_that_always_hangs_is_a_clear_timeout(fake_news, keys, waits):
    fake_news.fault_always = Fault(hang=True)
    with pytest.raises(AlpacaDataError, match=r"did not answer: timed out after 0.2 s \(read_timeout\)"):
        fetch_alpaca_news("AAPL", "2024-01-01", "2024-02-01", read_timeout=0.2, max_retries=1,
                          sleep=waits.append, **keys)


def test_keys_never_appear_in_errors_or_logs(fake_news, keys, waits, caplog):
    fake_news.fault_always = Fault(500, echo_headers=True)
    with caplog.at_level(logging.DEBUG), pytest.raises(AlpacaDataError) as caught:
        fetch_alpaca_news("AAPL", "2024-01-01", "2024-02-01", max_retries=1, sleep=waits.append, **keys)
    error = caught.value
    for text in (str(error), error.server_message, caplog.text, repr(error.__cause__)):
        assert API_KEY not in text and SECRET_KEY not in text
    assert "***" in str(error)


def test_wrong_keys_are_a_clear_refusal(fake_news, tmp_path):
    with pytest.raises(AlpacaDataError, match=r"refused the news request .* HTTP 401.*APCA_API_KEY_ID"):
        fetch_alpaca_news("AAPL", "2024-01-01", "2024-01-05", api_key="x", secret_key="y", url_override=fake_news.url)


def test_fetch_news_cli_fetches_scores_and_reuses_both_caches(fake_news, tmp_path, monkeypatch, capsys):
    from experiments.common import run_cli
    from experiments.fetch_news import main

    monkeypatch.setenv("APCA_API_KEY_ID", API_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_KEY)
    argv = ["--symbols", "AAPL", "MSFT", "--start", "2024-01-01", "--end", "2024-01-31", "--url-override",
            fake_news.url, "--cache-dir", str(tmp_path), "--no-progress"]
    assert run_cli(main, argv) == 0
    out = capsys.readouterr().out
    assert "10 article rows for 2 symbol(s)" in out and "scored with lexicon (loughran-mcdonald)" in out
    assert (tmp_path / "scores" / "lexicon" / "loughran-mcdonald.parquet").is_file()
    count = len(fake_news.requests)
    assert run_cli(main, argv) == 0
    assert len(fake_news.requests) == count


def test_fetch_news_cli_errors_are_one_line(fake_news, tmp_path, monkeypatch, capsys):
    from experiments.common import run_cli
    from experiments.fetch_news import main

    monkeypatch.setenv("APCA_API_KEY_ID", API_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_KEY)
    argv = ["--symbols", "DENIED", "--start", "2024-01-01", "--end", "2024-01-31", "--url-override", fake_news.url,
            "--cache-dir", str(tmp_path), "--no-progress"]
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: DENIED: Alpaca refused the news request") and "\n" not in err
