"""Scale, measured (issue 23 item 7): a 154-symbol universe of hourly bars, built from the cache and downloaded.

Run ``python -m benchmarks.bench_universe`` (``--symbols`` 154, ``--years`` 5 from ``--first-year`` 2020,
``--seed`` 0, ``--rate-limit`` 200 requests a minute; ``--skip-build`` / ``--skip-download``). Everything is
written under ``--workdir`` (default: a new folder under the system's temp directory), deleted at the end
unless ``--keep``. Not a test: it prints a Markdown table.

The universe is the seed universe (``configs/universes/seed.yaml``: 140 US stocks and ETFs, 10 crypto pairs)
plus synthetic US tickers up to ``--symbols``, written as a universe file of its own. Bars (not timed) are a
seeded random walk per symbol: US stocks only inside the NYSE's sessions (``calendar_for("us_equity")``: its
holidays and early closes), stamped at the start of each hour of the UTC grid that overlaps a session as
Alpaca stamps them (7 bars a regular session, 4 on an early close); crypto pairs every hour, 24/7.

- **build**: the cache is written with the project's own writer (:func:`features.parquet_cache.write_cached_bars`
  and the download's ``meta.json``), then ``python -m experiments.build_dataset --config CFG --universe U
  --output DIR`` runs in a child process (the config: ``source: parquet``, ``timeframe: 1Hour``, its
  ``cache_dir``; every other setting the default). Reported: its wall time, its peak RSS (``os.wait4``'s
  ``ru_maxrss`` of that child), the saved dataset's size on disk and the ratio. Targets: under 60 s and a
  peak RSS under 3x the dataset's size on disk.
- **download**: the same bars served by the local fake of Alpaca's data API (``tests/fake_alpaca_data.py``,
  ``full_api``, pages of 10,000 bars, the server's own limit at ``--rate-limit``) in its own process, fetched
  by :func:`features.bulk_download.bulk_download` (what ``python -m experiments.fetch_bars`` runs) into an
  empty cache under a :class:`TokenBucket` of ``--rate-limit`` requests a minute. The client's overhead is the
  share of wall time the fetching thread spends neither waiting for the limiter, nor on the server (each HTTP
  exchange as the client times it, its body read included), nor in retry backoff, plus the wait for the last
  units to be stored: ``(wall - limiter - server - backoff) / wall`` (``DownloadResult.overhead_share``).
  Shown beside it: the same with the server's own time (its handlers, timed in the fake's process: a bound from
  above, as it counts the transfer, the fake's thread per request and any wait for the client's GIL as the
  client's); the wall time over the rate limit's floor (the time a token bucket needs to hand out that many
  requests); the client's CPU time (fetching and store threads: parsing and writing overlap the waits) over
  wall. Target: overhead under 5%.
"""

from __future__ import annotations

import argparse
import bisect
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from features.bulk_download import CacheMeta, write_metadata
from features.calendars import calendar_for
from features.parquet_cache import is_crypto_symbol, write_cached_bars
from features.universe import load_universe

ROOT = Path(__file__).resolve().parents[1]
SEED_UNIVERSE = ROOT / "configs" / "universes" / "seed.yaml"
TIMEFRAME = "1Hour"
HOUR_NS = 3_600 * 1_000_000_000
BUILD_SECONDS_TARGET = 60.0
RSS_RATIO_TARGET = 3.0
OVERHEAD_TARGET = 0.05
PAGE_BARS = 10_000


# ----------------------------------------------------------------------------------------------------
# The universe and its bars


def universe_symbols(n_symbols: int) -> tuple[list[str], dict[str, Any]]:
    """The seed universe's symbols plus synthetic US tickers up to ``n_symbols``, and the universe file's content.

    :param n_symbols: how many symbols (at least the seed universe's, else its first ``n_symbols``).
    """
    seed = load_universe(SEED_UNIVERSE)
    raw = yaml.safe_load(SEED_UNIVERSE.read_text())
    symbols = seed.symbols()
    extra = [f"ZSY{chr(ord('A') + i // 26)}{chr(ord('A') + i % 26)}" for i in range(max(0, n_symbols - len(symbols)))]
    if extra:
        raw["categories"]["synthetic"] = {"asset_class": "us_equity", "symbols": extra,
                                          "description": "synthetic tickers that bring the benchmark to its size"}
    elif n_symbols < len(symbols):
        raise ValueError(f"--symbols={n_symbols} is below the seed universe's {len(symbols)}; pass at least that")
    raw["name"] = f"bench_{n_symbols}"
    return symbols + extra, raw


def bar_stamps(symbol: str, first: pd.Timestamp, last: pd.Timestamp) -> np.ndarray:
    """UTC nanosecond starts of ``symbol``'s hourly bars from ``first``'s day to ``last``'s day (inclusive).

    Crypto: every hour. US stocks: each hour of the UTC grid whose bar overlaps an NYSE session.

    :param symbol: a ticker or a crypto pair.
    :param first: first day.
    :param last: last day.
    """
    if is_crypto_symbol(symbol):
        return pd.date_range(first, last + pd.Timedelta(hours=23), freq="h", tz="UTC").as_unit("ns").asi8
    opens, closes = calendar_for("us_equity").session_bounds(first, last)
    starts = (opens // HOUR_NS * HOUR_NS)[:, None] + HOUR_NS * np.arange(8)[None, :]
    return starts[starts < closes[:, None]]


def symbol_bars(symbol: str, index: int, first: pd.Timestamp, last: pd.Timestamp, seed: int) -> pd.DataFrame:
    """A seeded random walk of hourly bars (open, high, low, close, volume, vwap) for one symbol.

    :param symbol: a ticker or a crypto pair.
    :param index: its position in the universe (part of its seed).
    :param first: first day.
    :param last: last day.
    :param seed: the benchmark's seed.
    """
    stamps = bar_stamps(symbol, first, last)
    rng = np.random.default_rng([seed, index])
    crypto = is_crypto_symbol(symbol)
    n = len(stamps)
    sigma = 0.008 if crypto else 0.004
    start_price = float(rng.uniform(20.0, 500.0)) * (100.0 if crypto and index % 3 == 0 else 1.0)
    close = start_price * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))
    open_ = np.concatenate([[start_price], close[:-1]]) * np.exp(rng.normal(0.0, sigma / 4, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, sigma / 2, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, sigma / 2, n)))
    decimals = 4 if crypto else 2
    open_, close = np.round(open_, decimals), np.round(close, decimals)
    high = np.maximum(np.round(high, decimals), np.maximum(open_, close))
    low = np.minimum(np.round(low, decimals), np.minimum(open_, close))
    volume = rng.lognormal(2.0 if crypto else 10.0, 1.0, n)
    volume = np.round(volume, 4) if crypto else np.floor(volume) + 1.0
    vwap = np.round((high + low + close) / 3.0, decimals + 2)
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": volume, "vwap": vwap},
                        index=pd.DatetimeIndex(pd.to_datetime(stamps, utc=True), name="timestamp"))


def write_cache(root: Path, symbols: list[str], first: pd.Timestamp, last: pd.Timestamp, seed: int) -> int:
    """Write every symbol's bars to the Parquet cache under ``root`` as a finished download leaves it
    (``data.parquet`` and ``meta.json``); the number of bars written.

    :param root: the cache root.
    :param symbols: the universe.
    :param first: first day.
    :param last: last day.
    :param seed: the benchmark's seed.
    """
    from tqdm.auto import tqdm

    covered = [(first.tz_localize("UTC"), (last + pd.Timedelta(days=1)).tz_localize("UTC"))]
    total = 0
    for i, symbol in enumerate(tqdm(symbols, desc="writing the bar cache", unit="symbol")):
        bars = symbol_bars(symbol, i, first, last, seed)
        write_cached_bars(bars, symbol, TIMEFRAME, root=root, merge=False)
        write_metadata(CacheMeta(symbol, TIMEFRAME, None if is_crypto_symbol(symbol) else "all", None,
                                 covered, len(bars)), root)
        total += len(bars)
    return total


def folder_bytes(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------------
# (a) The dataset built from the cache


def run_measured(command: list[str], log: Path) -> tuple[float, int, int]:
    """Run ``command`` in a child process (output to ``log``); its wall seconds, peak RSS (bytes), exit code.

    :param command: the argv.
    :param log: where its stdout and stderr go.
    """
    with open(log, "w") as out:
        began = time.perf_counter()
        child = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - began
    child.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss * 1024, child.returncode  # Linux: ru_maxrss is in KiB


def build_row(work: Path, symbols: list[str], universe: dict[str, Any], first: pd.Timestamp, last: pd.Timestamp,
              seed: int) -> dict[str, Any]:
    """Write the cache (untimed), then time ``experiments.build_dataset`` on it in a child process.

    :param work: the working folder.
    :param symbols: the universe's symbols.
    :param universe: the universe file's content.
    :param first: first day.
    :param last: last day.
    :param seed: the benchmark's seed.
    """
    cache = work / "cache"
    bars = write_cache(cache, symbols, first, last, seed)
    universe_path, config_path, output = work / "universe.yaml", work / "dataset.yaml", work / "dataset"
    universe_path.write_text(yaml.safe_dump(universe, sort_keys=False))
    config_path.write_text(yaml.safe_dump({"dataset": {"source": "parquet", "timeframe": TIMEFRAME,
                                                       "cache_dir": str(cache)}}))
    command = [sys.executable, "-m", "experiments.build_dataset", "--config", str(config_path),
               "--universe", str(universe_path), "--output", str(output)]
    print("timing:", " ".join(command))
    wall, rss, code = run_measured(command, work / "build.log")
    if code != 0:
        tail = (work / "build.log").read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"experiments.build_dataset exited with {code}: {' | '.join(tail)}")
    manifest = json.loads((output / "manifest.json").read_text())
    size = folder_bytes(output)
    return {"bars": bars, "symbols": len(manifest["symbols"]), "features": len(manifest["feature_names"]),
            "wall_s": wall, "rss": rss, "dataset_bytes": size, "cache_bytes": folder_bytes(cache),
            "ratio": rss / size}


# ----------------------------------------------------------------------------------------------------
# (b) The download from the fake data API


def _wire_bars(frame: pd.DataFrame) -> list[dict]:
    """Bars as Alpaca sends them (``t`` in ISO 8601 with ``Z``, ``o h l c v n vw``)."""
    stamps = frame.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    columns = [frame[c].tolist() for c in ("open", "high", "low", "close", "volume", "vwap")]
    return [{"t": t, "o": o, "h": h, "l": l, "c": c, "v": v, "n": 100, "vw": vw}
            for t, o, h, l, c, v, vw in zip(stamps, *columns)]


def _indexed_pages(make_handler: Callable[[Any], type]) -> Callable[[Any], type]:
    """The fake's handler with the same pages found by bisection instead of a scan of every bar of the symbols
    asked (the fake's own ``page`` lists all their bars at each page: about 1.6 s a page at this size, which
    would make the server, not the rate limit, set the pace).

    :param make_handler: ``fake_alpaca_data.make_data_handler``.
    """
    from fake_alpaca_data import _wire_time

    def make(fake: Any) -> type:
        times: dict[tuple[int, str], list[str]] = {}

        class Handler(make_handler(fake)):
            def handle(self) -> None:
                began = time.perf_counter()  # the request read, answered and flushed
                try:
                    super().handle()
                finally:
                    fake.served_s = getattr(fake, "served_s", 0.0) + time.perf_counter() - began

            def page(self, pairs: list[str], offset: int, limit: int, series: dict | None = None,
                     query: dict | None = None) -> dict:
                series = fake.crypto_bars if series is None else series
                if not fake.full_api or query is None:
                    return super().page(pairs, offset, limit, series, query)
                first, last = _wire_time(query.get("start"), "0"), _wire_time(query.get("end"), "9")
                spans = []
                for pair in pairs:
                    stamps = times.setdefault((id(series), pair), [bar["t"] for bar in series[pair]])
                    spans.append((pair, bisect.bisect_left(stamps, first), bisect.bisect_right(stamps, last)))
                size = min(limit, fake.page_size)
                bars, skip, need = {}, offset, size
                for pair, lo, hi in spans:
                    if need == 0:
                        break
                    if skip >= hi - lo:
                        skip -= hi - lo
                        continue
                    take = min(hi - lo - skip, need)
                    bars[pair] = series[pair][lo + skip : lo + skip + take]
                    skip, need = 0, need - take
                total = sum(hi - lo for _, lo, hi in spans)
                return {"bars": bars, "next_page_token": str(offset + size) if offset + size < total else None}

        return Handler

    return make


def serve_fake(conn: Any, symbols: list[str], first: str, last: str, seed: int, rate_limit: int) -> None:
    """The fake data API in its own process: serves the universe's bars and sends its URL on ``conn``, then
    sends the number of requests it answered when anything arrives on ``conn``.

    :param conn: one end of a pipe.
    :param symbols: the universe.
    :param first: first day.
    :param last: last day.
    :param seed: the benchmark's seed.
    :param rate_limit: the server's requests a minute (beyond them: HTTP 429).
    """
    sys.path.insert(0, str(ROOT / "tests"))
    import fake_alpaca_data
    from fake_alpaca_data import FakeAlpacaData, serve

    fake_alpaca_data.make_data_handler = _indexed_pages(fake_alpaca_data.make_data_handler)
    fake = FakeAlpacaData()
    fake.full_api, fake.page_size = True, PAGE_BARS
    fake.clock, fake.rate_limit = time.monotonic, (rate_limit, 60.0)
    start, end = pd.Timestamp(first), pd.Timestamp(last)
    fake.bars, fake.crypto_bars = {}, {}
    for i, symbol in enumerate(symbols):
        series = fake.crypto_bars if is_crypto_symbol(symbol) else fake.bars
        series[symbol] = _wire_bars(symbol_bars(symbol, i, start, end, seed))
    with serve(fake):
        conn.send(fake.url)
        conn.recv()
        conn.send((len(fake.requests), getattr(fake, "served_s", 0.0)))


def download_row(work: Path, symbols: list[str], first: pd.Timestamp, last: pd.Timestamp, seed: int,
                 rate_limit: int) -> dict[str, Any]:
    """Download the universe from the fake (in its own process) into an empty cache; timings and counts.

    :param work: the working folder.
    :param symbols: the universe.
    :param first: first day.
    :param last: last day.
    :param seed: the benchmark's seed.
    :param rate_limit: requests a minute, client and server alike.
    """
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_alpaca_data import API_KEY, SECRET_KEY

    from features.bulk_download import DEFAULT_BURST, FetchSettings, TokenBucket, bulk_download

    os.environ.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
                      APCA_API_KEY_ID=API_KEY, APCA_API_SECRET_KEY=SECRET_KEY)
    context = multiprocessing.get_context("spawn")
    here, there = context.Pipe()
    server = context.Process(target=serve_fake, args=(there, symbols, str(first.date()), str(last.date()), seed,
                                                      rate_limit), daemon=True)
    print("starting the fake data API (it builds its bars first) ...")
    server.start()
    try:
        url = here.recv()
        settings = FetchSettings(url_override=url, limiter=TokenBucket(rate_limit, burst=DEFAULT_BURST))
        cache = work / "download"
        print(f"downloading {len(symbols)} symbols at {rate_limit} requests a minute ...")
        cpu_before = time.process_time()
        result = bulk_download(symbols, TIMEFRAME, str(first.date()), f"{last.date()} 23:59", root=cache,
                               settings=settings)
        cpu = time.process_time() - cpu_before
        here.send("done")
        served, served_s = here.recv()
    finally:
        server.terminate()
        server.join(timeout=10)
    import pyarrow.parquet as pq

    bars = sum(pq.ParquetFile(p).metadata.num_rows for p in cache.rglob("data.parquet"))
    bucket = TokenBucket(rate_limit, burst=DEFAULT_BURST)  # the floor: a full bucket, then its refill rate
    floor_s = max(0, result.requests - bucket.burst) / bucket.rate
    return {"bars": bars, "symbols": len(symbols), "units": result.units_fetched, "requests": result.requests,
            "served": served, "wall_s": result.wall_s, "limiter_s": result.limiter_s,
            "server_s": result.request_s, "backoff_s": result.backoff_s, "overhead": result.overhead_share,
            "served_s": served_s, "floor_s": floor_s,
            "strict": max(0.0, result.wall_s - result.limiter_s - served_s - result.backoff_s) / result.wall_s,
            "cpu_share": cpu / result.wall_s}


# ----------------------------------------------------------------------------------------------------
# The table


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def print_table(build: dict[str, Any] | None, download: dict[str, Any] | None, years: int, rate_limit: int) -> None:
    """The Markdown table of both rows.

    :param build: :func:`build_row`'s figures, or None.
    :param download: :func:`download_row`'s figures, or None.
    :param years: years of bars.
    :param rate_limit: requests a minute.
    """
    print()
    print("| row | bars | symbols | wall s | measured | target | result |")
    print("|---|---:|---:|---:|---|---|---|")
    if build is not None:
        mb = 1e6
        print(f"| build dataset from cache ({years} y hourly, {build['features']} features) | {build['bars']:,} | "
              f"{build['symbols']} | {build['wall_s']:.1f} | peak RSS {build['rss'] / mb:,.0f} MB; dataset "
              f"{build['dataset_bytes'] / mb:,.0f} MB on disk (cache {build['cache_bytes'] / mb:,.0f} MB); "
              f"ratio {build['ratio']:.2f}x | < {BUILD_SECONDS_TARGET:.0f} s, < {RSS_RATIO_TARGET:.0f}x | "
              f"{verdict(build['wall_s'] < BUILD_SECONDS_TARGET)} time, "
              f"{verdict(build['ratio'] < RSS_RATIO_TARGET)} memory |")
    if download is not None:
        d = download
        over_floor = max(0.0, d["wall_s"] - d["floor_s"]) / d["wall_s"]
        print(f"| download from fake API ({years} y hourly, {rate_limit} req/min) | {d['bars']:,} | {d['symbols']} | "
              f"{d['wall_s']:.1f} | {d['units']} units, {d['requests']} requests ({d['served']} served); waits: "
              f"limiter {d['limiter_s']:.1f} s, server {d['server_s']:.1f} s as the client sees it ({d['served_s']:.1f} s in "
              f"the server's handlers), backoff {d['backoff_s']:.1f} s; **overhead {d['overhead']:.1%}** (with the "
              f"server's handler time instead: {d['strict']:.1%}); wall over the rate limit's floor "
              f"({d['floor_s']:.1f} s): {over_floor:.1%}; client CPU (both threads) {d['cpu_share']:.0%} of wall | "
              f"overhead < {OVERHEAD_TARGET:.0%} | {verdict(d['overhead'] < OVERHEAD_TARGET)} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--symbols", type=int, default=154, help="universe size (seed universe + synthetic tickers)")
    parser.add_argument("--years", type=int, default=5, help="years of hourly bars")
    parser.add_argument("--first-year", type=int, default=2020, help="the bars start on January 1st of this year")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random walks")
    parser.add_argument("--rate-limit", type=int, default=200, help="download: requests a minute (client and server)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the caches and the dataset go (default: a new temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep --workdir afterwards")
    parser.add_argument("--skip-build", action="store_true", help="skip the dataset build row")
    parser.add_argument("--skip-download", action="store_true", help="skip the download row")
    args = parser.parse_args(argv)
    if args.years < 1 or args.rate_limit < 1:
        parser.error("--years and --rate-limit must be at least 1")
    first = pd.Timestamp(f"{args.first_year}-01-01")
    last = pd.Timestamp(f"{args.first_year + args.years - 1}-12-31")
    symbols, universe = universe_symbols(args.symbols)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-universe-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{len(symbols)} symbols, hourly bars {first.date()} .. {last.date()}, working in {work}")
    try:
        build = None if args.skip_build else build_row(work, symbols, universe, first, last, args.seed)
        download = None if args.skip_download else download_row(work, symbols, first, last, args.seed,
                                                                 args.rate_limit)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(build, download, args.years, args.rate_limit)


if __name__ == "__main__":
    main()
