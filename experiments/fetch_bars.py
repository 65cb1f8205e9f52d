"""Download the bars of many symbols (stocks and crypto) into the Parquet cache: a download you can leave running.

    python -m experiments.fetch_bars --universe configs/universes/seed.yaml --timeframe 1Hour --start 2019-01-01
    python -m experiments.fetch_bars --universe configs/universes/seed.yaml --categories etfs crypto \\
                                     --timeframe 1Day --start 2019-01-01 --end 2024-12-31
    python -m experiments.fetch_bars --symbols AAPL BTC/USD --timeframe 1Hour --start 2024-01-01

Several symbols go in one request (stocks together, crypto pairs together), within Alpaca's rate limit
(--rate-limit requests a minute, 200 on the free plan; a 429 is still retried with backoff). It is
resumable: the ranges already downloaded are recorded per symbol and timeframe in the cache's meta.json
(beside data.parquet), so a killed download continues where it stopped, a covered range is never asked
twice, and rerunning a finished download sends no request. Stock bars are adjusted for splits and
dividends (--adjustment all, recorded in meta.json); a cache written with another adjustment is refused.
Stock bars need APCA_API_KEY_ID / APCA_API_SECRET_KEY; crypto needs no keys. --start/--end are inclusive
bar times (naive = UTC); without --end it stops at the last finished bar 15 minutes ago. Ends with a table
per symbol: bars, first and last timestamp, gaps (features.bars.find_gaps) and the totals.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from experiments.common import (
    UsageError,
    add_universe_arguments,
    cli,
    make_parser,
    positive_int,
    symbols_from_args,
)
from features.alpaca_source import AlpacaDataError
from features.bulk_download import (
    DEFAULT_BURST,
    DEFAULT_RATE_LIMIT,
    DEFAULT_SYMBOLS_PER_REQUEST,
    DownloadResult,
    FetchSettings,
    TokenBucket,
    bulk_download,
    summary_table,
    time_span,
)

PROG = "python -m experiments.fetch_bars"


def build_parser():
    """The command line of :func:`main`."""
    parser = make_parser(PROG, __doc__)
    add = parser.add_argument
    add("--symbols", nargs="+", default=None, metavar="SYMBOL",
        help="tickers and crypto pairs, e.g. AAPL BTC/USD (default: none; required unless --universe)")
    add_universe_arguments(parser)
    add("--timeframe", required=True, help="bar length in Alpaca's spelling: 1Min, 15Min, 1Hour, 1Day, ...")
    add("--start", required=True, help="first bar time, inclusive (date or ISO time; naive = UTC)")
    add("--end", default=None, help="last bar time, inclusive (default: the last finished bar 15 minutes ago)")
    add("--cache-dir", type=Path, default=Path("data/historical"), help="bars cache root")
    add("--adjustment", choices=["all", "split", "dividend", "raw"], default="all",
        help="corporate-action adjustment of stock bars (recorded in the cache; never mixed)")
    add("--feed", default=None, help="stock feed: iex, sip, delayed_sip (default: Alpaca's for your plan)")
    add("--rate-limit", type=positive_int, default=DEFAULT_RATE_LIMIT,
        help="the most requests in any minute (Alpaca's free plan: 200)")
    add("--symbols-per-request", type=positive_int, default=DEFAULT_SYMBOLS_PER_REQUEST,
        help="symbols asked together in one request")
    add("--chunk-days", type=float, default=None,
        help="days of bars per request and resume step (default: about 40 pages of 10,000 bars of 24/7 trading)")
    add("--max-retries", type=int, default=4, help="retries of a request after a 429, a 5xx or a timeout")
    add("--url-override", default=None, help="base URL of Alpaca's data API, e.g. a proxy (default: Alpaca's)")
    add("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None, *, settings: FetchSettings | None = None) -> pd.DataFrame:
    """Download, then print and return the summary table.

    :param argv: the arguments (see ``--help``).
    :param settings: tests: a prepared :class:`FetchSettings` (its limiter, sleep); the flags' keys, server,
        adjustment, feed and retries are written into it.
    """
    args = build_parser().parse_args(argv)
    symbols = symbols_from_args(args, None)
    if not symbols:
        raise UsageError("no symbols given", "pass --symbols AAPL BTC/USD ... or --universe FILE [--categories ...]")
    if settings is None:
        settings = FetchSettings(limiter=TokenBucket(args.rate_limit, burst=DEFAULT_BURST))
    settings.url_override, settings.adjustment, settings.feed = args.url_override, args.adjustment, args.feed
    settings.max_retries = args.max_retries
    span = time_span(args.start, args.end, args.timeframe)
    from tqdm.auto import tqdm

    bar = tqdm(total=0, desc=f"{args.timeframe} bars", unit="symbol-range", disable=args.no_progress)

    def planned(pieces: int) -> None:
        bar.total = pieces
        bar.refresh()

    def advance(done: int, label: str) -> None:
        bar.set_postfix_str(label, refresh=False)
        bar.update(done)

    try:
        result = bulk_download(symbols, args.timeframe, args.start, args.end, root=args.cache_dir,
                               settings=settings, symbols_per_request=args.symbols_per_request,
                               chunk_days=args.chunk_days, progress=advance, on_plan=planned)
    except AlpacaDataError as error:
        raise UsageError(str(error), "run the same command again to resume: the ranges already downloaded "
                                     "are kept and will not be asked again") from None
    finally:
        bar.close()
    print(_result_line(result, args.cache_dir))
    table = summary_table(symbols, args.timeframe, span, args.cache_dir)
    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(table.to_string())
    return table


def _result_line(result: DownloadResult, cache_dir: Path) -> str:
    if result.units_total == 0:
        return f"everything was already downloaded (cache: {cache_dir}); no request sent"
    return (f"{result.units_fetched} requests' worth of bars ({result.requests} HTTP requests) in "
            f"{result.wall_s:.1f} s: {result.limiter_s:.1f} s waiting for the rate limit, "
            f"{result.request_s:.1f} s on the server, {result.backoff_s:.1f} s in retry backoff "
            f"(cache: {cache_dir})")


if __name__ == "__main__":
    cli(main)
