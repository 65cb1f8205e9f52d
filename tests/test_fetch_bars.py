"""The bulk download (``python -m experiments.fetch_bars``) against the local fake of Alpaca's data API.

154 symbols (144 stock tickers and 10 crypto pairs) are served on 127.0.0.1 by ``fake_alpaca_data.py``
with ``full_api``: several symbols per request, pages of ``PAGE`` bars, times filtered by start/end. The
rate limiter's clock is a :class:`FakeClock` whose ``sleep`` moves it on (the backoff sleeps on it too),
and the fake stamps every request with the same clock, so requests per window are counted without any
real sleeping.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from fake_alpaca_data import API_KEY, SECRET_KEY, FakeAlpacaData, Fault, crypto_wire_bars, serve

from experiments.common import run_cli
from experiments.fetch_bars import main
from features.alpaca_source import _bars_frame
from features.bulk_download import (
    PAGES_PER_UNIT,
    CacheMeta,
    FetchSettings,
    TokenBucket,
    _store,
    _WrittenFrames,
    chunk_length,
    merge_ranges,
    metadata_path,
    missing_ranges,
)
from features.parquet_cache import cache_path, read_cached_bars, write_cached_bars

pytestmark = [
    pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
    pytest.mark.timeout(60),
]

STOCKS = [f"S{i:03d}" for i in range(144)]
PAIRS = [f"C{i}/USD" for i in range(10)]
SYMBOLS = STOCKS + PAIRS
DELISTED = "S143"
DELISTED_LAST = "2024-01-03T20:30:00Z"
START, END = "2024-01-01", "2024-01-14 23:00"
PAGE = 500
LIMIT = 10  # requests a minute, client and server alike: the download needs several minutes of fake time
ARGS = ["--timeframe", "1Hour", "--start", START, "--end", END, "--symbols-per-request", "50",
        "--chunk-days", "7", "--no-progress"]


class FakeClock:
    """Seconds that move only when something sleeps on them."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def stock_wire_bars(base: float, last: str | None = None) -> list[dict]:
    """Hourly bars of a US session (14:30 to 20:30 UTC), weekdays only, as Alpaca sends them."""
    days = pd.bdate_range("2024-01-01", "2024-01-12", tz="UTC")
    stamps = [d + pd.Timedelta(hours=14, minutes=30) + pd.Timedelta(hours=h) for d in days for h in range(7)]
    bars = []
    for i, stamp in enumerate(stamps):
        text = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        if last is not None and text > last:
            break
        close = base + 0.25 * i
        bars.append({"t": text, "o": close - 0.1, "h": close + 0.5, "l": close - 0.5, "c": close,
                     "v": 1000 + i, "n": 10 + i, "vw": close})
    return bars


def make_fake(clock: FakeClock) -> FakeAlpacaData:
    """154 symbols, Alpaca's whole bars API, requests stamped on ``clock`` and limited to LIMIT a minute."""
    fake = FakeAlpacaData()
    fake.full_api, fake.page_size, fake.clock, fake.rate_limit = True, PAGE, clock, (LIMIT, 60.0)
    fake.bars = {s: stock_wire_bars(10.0 + i, DELISTED_LAST if s == DELISTED else None)
                 for i, s in enumerate(STOCKS)}
    # 2024-01-01 00:00 to 2024-01-14 23:00: every hour, both weekends included
    fake.crypto_bars = {p: crypto_wire_bars(14 * 24, base=100.0 * (i + 1), start="2024-01-01")
                        for i, p in enumerate(PAIRS)}
    return fake


def settings_for(clock: FakeClock, limiter: TokenBucket | None = None) -> FetchSettings:
    """The CLI's settings with the fake clock: its limiter and its backoff sleep."""
    limiter = limiter or TokenBucket(LIMIT, burst=2, clock=clock, sleep=clock.sleep)
    return FetchSettings(limiter=limiter, sleep=clock.sleep, backoff_base=1.0)


def fetch(fake, cache, clock, extra=(), limiter=None, symbols=SYMBOLS) -> pd.DataFrame:
    argv = ["--symbols", *symbols, *ARGS, "--url-override", fake.url, "--cache-dir", str(cache), *extra]
    return main(argv, settings=settings_for(clock, limiter))


def run(fake, cache, clock, capsys, extra=(), limiter=None, symbols=SYMBOLS) -> tuple[int, str]:
    """Run the command as a user would (one-line errors), return (exit code, stderr)."""
    argv = ["--symbols", *symbols, *ARGS, "--url-override", fake.url, "--cache-dir", str(cache), *extra]
    code = run_cli(lambda a: main(a, settings=settings_for(clock, limiter)), argv)
    return code, capsys.readouterr().err


def first_pages(requests: list[dict]) -> list[dict]:
    """The requests that open a (symbols, range) download: no page token."""
    return [r for r in requests if "page_token" not in r["query"]]


@pytest.fixture(scope="module")
def network():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        mp.setenv("no_proxy", "127.0.0.1,localhost")
        mp.setenv("APCA_API_KEY_ID", API_KEY)
        mp.setenv("APCA_API_SECRET_KEY", SECRET_KEY)
        yield


@pytest.fixture
def served(network):
    clock = FakeClock()
    with serve(make_fake(clock)) as fake:
        yield fake, clock


@pytest.fixture(scope="module")
def full(network, tmp_path_factory):
    """One uninterrupted download of the 154 symbols: (fake, clock, cache, table)."""
    clock = FakeClock()
    cache = tmp_path_factory.mktemp("full")
    with serve(make_fake(clock)) as fake:
        table = fetch(fake, cache, clock)
        yield fake, clock, cache, table


def test_every_symbol_is_downloaded_several_per_request_with_pagination(full):
    fake, _, cache, table = full
    assert len(table) == 155 and table.loc["TOTAL", "bars"] == table["bars"].iloc[:-1].sum()
    for symbol in SYMBOLS:
        wire = (fake.bars if symbol in fake.bars else fake.crypto_bars)[symbol]
        bars = read_cached_bars(symbol, "1Hour", cache)
        assert list(bars.index) == [pd.Timestamp(b["t"]) for b in wire]
        assert table.loc[symbol, "bars"] == len(wire)
    assert len({r["query"]["symbols"] for r in fake.requests}) == 4  # 50 + 50 + 44 stocks, 10 pairs
    assert max(len(r["query"]["symbols"].split(",")) for r in fake.requests) == 50
    assert any("page_token" in r["query"] for r in fake.requests)
    assert len(fake.requests) < 60


def test_limiter_keeps_every_minute_under_the_limit_and_alpaca_never_answers_429(full):
    fake, clock, _, _ = full
    times = [r["t"] for r in fake.requests]
    assert max(sum(t <= u < t + 60.0 for u in times) for t in times) <= LIMIT
    assert sum(clock.slept) > 60.0  # the limiter did wait (on the fake clock)
    # nothing was answered 429: every request got its data the first time
    assert len(fake.requests) == len({(r["query"]["symbols"], r["query"]["start"], r["query"].get("page_token"))
                                      for r in fake.requests})


def test_stock_bars_are_asked_adjusted_and_the_cache_records_it(full):
    fake, _, cache, _ = full
    stock_requests = [r for r in fake.requests if r["path"] == "/v2/stocks/bars"]
    assert stock_requests and all(r["query"]["adjustment"] == "all" for r in stock_requests)
    meta = json.loads(metadata_path("S000", "1Hour", cache).read_text())
    assert meta["adjustment"] == "all" and meta["bars"] == 70
    assert meta["covered"] == [["2024-01-01T00:00:00+00:00", "2024-01-14T23:00:01+00:00"]]
    assert json.loads(metadata_path("C0/USD", "1Hour", cache).read_text())["adjustment"] is None


def test_crypto_bars_on_weekends_are_kept(full):
    _, _, cache, table = full
    bars = read_cached_bars("C3/USD", "1Hour", cache)
    assert len(bars) == 14 * 24 and (bars.index.day_of_week >= 5).sum() == 4 * 24
    assert table.loc["C3/USD", "gaps"] == 0


def test_delisted_symbol_is_reported_with_its_last_timestamp(full):
    _, _, _, table = full
    assert table.loc[DELISTED, "last"] == pd.Timestamp(DELISTED_LAST)
    assert "delisted" in table.loc[DELISTED, "note"]
    assert table.loc["S000", "note"] == ""


def test_rerunning_a_finished_download_sends_no_request(full, capsys):
    fake, clock, cache, table = full
    before = len(fake.requests)
    again = fetch(fake, cache, clock)
    assert len(fake.requests) == before
    assert "no request sent" in capsys.readouterr().out
    pd.testing.assert_frame_equal(again, table)


def test_killed_download_resumes_with_only_what_is_missing_and_ends_with_the_same_cache(full, served, tmp_path):
    _, _, full_cache, _ = full
    fake, clock = served

    class Killed(Exception):
        pass

    class KillAfter(TokenBucket):
        def acquire(self) -> None:
            if self.acquired >= 13:
                raise Killed("killed")
            super().acquire()

    with pytest.raises(Killed):
        fetch(fake, tmp_path, clock, limiter=KillAfter(LIMIT, burst=2, clock=clock, sleep=clock.sleep))
    covered = {s: merge_ranges([(pd.Timestamp(a), pd.Timestamp(b)) for a, b in
                                json.loads(metadata_path(s, "1Hour", tmp_path).read_text())["covered"]])
               for s in SYMBOLS if metadata_path(s, "1Hour", tmp_path).exists()}
    assert 0 < len(covered) < len(SYMBOLS)  # killed part way
    killed_requests = len(fake.requests)

    fetch(fake, tmp_path, clock)
    resumed = fake.requests[killed_requests:]
    for request in first_pages(resumed):
        span = (pd.Timestamp(request["query"]["start"]), pd.Timestamp(request["query"]["end"]))
        for symbol in request["query"]["symbols"].split(","):
            assert missing_ranges(span, covered.get(symbol, [])) == [span], (symbol, span)
    assert len(resumed) < 45
    for symbol in SYMBOLS:
        pd.testing.assert_frame_equal(read_cached_bars(symbol, "1Hour", tmp_path),
                                      read_cached_bars(symbol, "1Hour", full_cache))
        assert metadata_path(symbol, "1Hour", tmp_path).read_text() == \
            metadata_path(symbol, "1Hour", full_cache).read_text()


def test_a_429_is_waited_out_then_the_download_succeeds(served, tmp_path, capsys):
    fake, clock = served
    fake.faults = [None, Fault(status=429, payload={"message": "too many requests."}, headers={"Retry-After": "7"})]
    code, err = run(fake, tmp_path, clock, capsys, symbols=STOCKS[:3] + PAIRS[:2])
    assert code == 0, err
    assert 7.0 in clock.slept
    assert len(read_cached_bars("S002", "1Hour", tmp_path)) == 70


def test_a_500_in_the_middle_is_retried_and_the_download_completes(served, tmp_path, capsys):
    fake, clock = served
    fake.faults = [None, None, None, Fault(status=500), Fault(status=503)]
    code, err = run(fake, tmp_path, clock, capsys, symbols=STOCKS[:3] + PAIRS[:2])
    assert code == 0, err
    assert [w for w in clock.slept if w in (1.0, 2.0)][:2] == [1.0, 2.0]  # the backoff, not the limiter
    assert len(read_cached_bars("C1/USD", "1Hour", tmp_path)) == 14 * 24


def test_500s_that_outlast_the_retries_are_one_line_and_the_rerun_resumes(served, tmp_path, capsys):
    fake, clock = served
    symbols = STOCKS[:3] + PAIRS[:2]
    fake.faults, fake.fault_always = [None], Fault(status=500)
    code, err = run(fake, tmp_path, clock, capsys, extra=["--max-retries", "2"], symbols=symbols)
    assert code == 2 and err.count("\n") == 1
    assert "HTTP 500" in err and "run the same command again to resume" in err
    done = [s for s in symbols if metadata_path(s, "1Hour", tmp_path).exists()]
    assert done == STOCKS[:3]  # the stocks' first week (the first request) was kept

    fake.fault_always, before = None, len(fake.requests)
    code, err = run(fake, tmp_path, clock, capsys, symbols=symbols)
    assert code == 0, err
    starts = {r["query"]["start"][:10] for r in first_pages(fake.requests[before:])
              if r["path"] == "/v2/stocks/bars"}
    assert starts == {"2024-01-08"}  # the stocks' first week is not asked again
    assert len(read_cached_bars("S001", "1Hour", tmp_path)) == 70


def test_a_cache_written_with_another_adjustment_is_a_one_line_error_naming_the_file(served, tmp_path, capsys):
    fake, clock = served
    assert run(fake, tmp_path, clock, capsys, extra=["--adjustment", "raw"], symbols=["S000"])[0] == 0
    before = len(fake.requests)
    code, err = run(fake, tmp_path, clock, capsys, symbols=["S000", "S001"])
    assert code == 2 and err.count("\n") == 1
    assert str(metadata_path("S000", "1Hour", tmp_path)) in err and "adjustment='raw'" in err
    assert len(fake.requests) == before  # refused before any request


def test_cached_bars_without_metadata_are_refused_not_mixed(served, tmp_path, capsys):
    fake, clock = served
    frame = pd.DataFrame({"open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [1.0]},
                         index=pd.DatetimeIndex([pd.Timestamp("2024-01-02 15:30", tz="UTC")], name="timestamp"))
    write_cached_bars(frame, "S000", "1Hour", root=tmp_path)
    code, err = run(fake, tmp_path, clock, capsys, symbols=["S000"])
    assert code == 2 and err.count("\n") == 1
    assert str(cache_path("S000", "1Hour", tmp_path)) in err and "adjustment is unknown" in err
    assert fake.requests == []


def test_bad_bars_from_the_server_are_a_one_line_error_and_nothing_after_them_is_recorded(served, tmp_path, capsys):
    fake, clock = served
    fake.bars["S001"][3]["l"] = fake.bars["S001"][3]["h"] + 1.0  # low above high
    code, err = run(fake, tmp_path, clock, capsys, symbols=STOCKS[:3])
    assert code == 2 and err.count("\n") == 1 and "S001" in err
    assert not metadata_path("S001", "1Hour", tmp_path).exists()
    assert not cache_path("S001", "1Hour", tmp_path).exists()


def test_a_page_that_is_not_bars_is_a_one_line_error_naming_the_request(served, tmp_path, capsys):
    fake, clock = served
    fake.faults = [Fault(status=200, payload={"message": "maintenance"})]  # a 200 whose body holds no bars
    code, err = run(fake, tmp_path, clock, capsys, symbols=STOCKS[:3])
    assert code == 2 and err.count("\n") == 1
    assert "S000..S002 (3 symbols)" in err and "no 'bars' mapping" in err
    assert not metadata_path("S000", "1Hour", tmp_path).exists()


def test_stock_chunks_are_longer_than_crypto_chunks_yet_stay_within_the_pages_of_a_unit():
    stocks, crypto = chunk_length("1Hour", 50, crypto=False), chunk_length("1Hour", 50, crypto=True)
    assert stocks > 2 * crypto
    extended_hours_bars = stocks.days * 5 / 7 * 16 * 50  # 04:00-20:00 New York on weekdays, 50 symbols
    assert extended_hours_bars <= PAGES_PER_UNIT * 10_000
    assert chunk_length("1Hour", 50, 7, crypto=False) == chunk_length("1Hour", 50, 7) == pd.Timedelta(days=7)


def test_a_cache_file_changed_between_two_units_is_read_back_not_overwritten(tmp_path):
    meta = CacheMeta("S000", "1Hour", "all")
    bars = _bars_frame(stock_wire_bars(10.0), "S000")
    first, second = bars.iloc[:20], bars.iloc[20:]
    written = _WrittenFrames()
    _store(meta, first, (bars.index[0], bars.index[20]), tmp_path, written)
    edited = pd.concat([read_cached_bars("S000", "1Hour", tmp_path), first.iloc[:1].set_axis(
        [first.index[0] - pd.Timedelta(days=1)]).rename_axis("timestamp")]).sort_index()
    write_cached_bars(edited, "S000", "1Hour", root=tmp_path, merge=False)  # someone else's bar, before them
    _store(meta, second, (bars.index[20], bars.index[-1] + pd.Timedelta(hours=1)), tmp_path, written)
    cached = read_cached_bars("S000", "1Hour", tmp_path)
    assert len(cached) == len(bars) + 1 and cached.index[0] == first.index[0] - pd.Timedelta(days=1)
    assert meta.bars == len(cached)


def test_token_bucket_bounds_every_window_and_waits_only_when_empty():
    clock = FakeClock()
    bucket = TokenBucket(200, burst=10, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(1000):
        bucket.acquire()
        times.append(clock.now)
    assert times[:10] == [0.0] * 10  # the burst goes at once
    assert max(sum(t <= u < t + 60.0 for u in times) for t in times[::7]) <= 200
    assert max(sum(t <= u <= t + 60.0 for u in times) for t in times[::7]) <= 200
    assert times[-1] == pytest.approx((1000 - 10) * 60.0 / 190)


def test_help_describes_the_command():
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run_cli(main, ["--help"]) == 0
    text = out.getvalue()
    for flag in ("--universe", "--categories", "--symbols", "--timeframe", "--rate-limit", "--adjustment",
                 "--cache-dir", "resum"):
        assert flag in text
