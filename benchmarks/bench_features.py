"""Feature pipeline timings on the default embedded data (AAPL, IBM, MSFT, GOOG daily, 11,958 bars).

Run ``python -m benchmarks.bench_features`` (``--repeats`` per row, default 5). Each row is the median
(and the fastest) of the repeats, after one untimed warm-up call. "cold" loading clears the in-process
cache of the parsed CSV files, so it includes reading the gzipped CSV from the installed package;
"cached" reuses it, as every later call in a process does. Not a test: it prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from features import (
    DEFAULT_SYMBOLS,
    DatasetConfig,
    build_dataset,
    build_features,
    embedded,
    load_bars,
    load_dataset,
    make_labels,
)


def clear_embedded_cache() -> None:
    embedded._bokeh_stocks.cache_clear()
    embedded._arch_index.cache_clear()


def time_call(call: Callable[[], object], repeats: int, before: Callable[[], None] | None = None) -> list[float]:
    """Seconds of each of ``repeats`` calls (``before`` runs untimed ahead of each), after one warm-up."""
    if before:
        before()
    call()
    times = []
    for _ in range(repeats):
        if before:
            before()
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row (median reported)")
    args = parser.parse_args(argv)
    symbols = list(DEFAULT_SYMBOLS)
    rows: list[tuple[str, str, list[float]]] = []

    def add(stage: str, unit: str, call: Callable[[], object], before: Callable[[], None] | None = None) -> None:
        rows.append((stage, unit, time_call(call, args.repeats, before)))

    add("load_bars, cold (parse CSV)", f"{len(symbols)} symbols", lambda: load_bars(symbols), clear_embedded_cache)
    add("load_bars, cached", f"{len(symbols)} symbols", lambda: load_bars(symbols))
    bars = load_bars(symbols)
    n_bars = sum(len(frame) for frame in bars.values())

    for symbol, frame in bars.items():
        add(f"build_features {symbol}", f"{len(frame)} bars", lambda f=frame: build_features(f, timeframe="1Day"))
    add("build_features, total", f"{n_bars} bars", lambda: [build_features(f, timeframe="1Day") for f in bars.values()])
    add("make_labels, total", f"{n_bars} bars", lambda: [make_labels(f) for f in bars.values()])

    add("build_dataset(), cold", f"{n_bars} bars", build_dataset, clear_embedded_cache)
    add("build_dataset(), cached", f"{n_bars} bars", build_dataset)
    data = build_dataset(DatasetConfig())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dataset"
        add("MarketData.save", f"{data.features.nbytes / 1e6:.1f} MB features", lambda: data.save(path))
        data.save(path)
        size = sum(p.stat().st_size for p in path.iterdir()) / 1e6
        add("load_dataset", f"{size:.1f} MB on disk", lambda: load_dataset(path))

    print(f"features pipeline, default embedded data ({', '.join(symbols)}), median of {args.repeats} repeats")
    width = max(len(r[0]) for r in rows)
    print(f"{'stage':<{width}}  {'size':>18}  {'median ms':>9}  {'min ms':>8}")
    for stage, size, times in rows:
        print(f"{stage:<{width}}  {size:>18}  {1e3 * statistics.median(times):9.2f}  {1e3 * min(times):8.2f}")

if __name__ == "__main__":
    main()
