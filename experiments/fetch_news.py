"""Fetch news headlines for symbols into the news cache and score them.

    python -m experiments.fetch_news --symbols AAPL MSFT --start 2024-01-01 [--end 2024-06-30]
                                     [--scorer lexicon|finbert] [--model ProsusAI/finbert|DIR]
    python -m experiments.fetch_news --symbols BTC/USD ETH/USD --start 2024-01-01
    python -m experiments.fetch_news --universe configs/universes/seed.yaml --categories etfs --start 2024-01-01

Downloads from Alpaca (keys from APCA_API_KEY_ID / APCA_API_SECRET_KEY) only the date ranges the cache
(--cache-dir, default data/news) lacks, then scores every article once (scores are cached per article,
scorer and model) and prints a per-symbol summary. A dataset built with the same cache and
`news: {source: alpaca, scorer: ...}` then reads both caches without downloading or scoring again.
A crypto pair is given as Alpaca's bars spell it (BTC/USD): the news API is asked for BTCUSD, the
articles are cached under articles/BTC~USD.parquet (the bars cache's name) and keep the name BTC/USD.
--source csv/parquet --path FILE scores your own headlines instead; their times must be ISO 8601
unless --time-format declares another format (e.g. "%d/%m/%Y %H:%M"; times without %z are UTC).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from experiments.common import UsageError, add_universe_arguments, cli, make_parser, symbols_from_args
from features.alpaca_source import AlpacaDataError
from features.news import NewsConfig, download_news_to_cache, load_news, make_scorer, score_articles

PROG = "python -m experiments.fetch_news"


def build_parser():
    parser = make_parser(PROG, __doc__)
    add = parser.add_argument
    add("--symbols", nargs="+", default=None, metavar="SYMBOL", help="tickers or crypto pairs, e.g. AAPL MSFT BTC/USD (default: none; required unless --universe)")
    add_universe_arguments(parser)
    add("--start", required=True, help="earliest publication time (date or ISO time; naive = UTC)")
    add("--end", default=None, help="latest publication time (default: now)")
    add("--source", choices=["alpaca", "parquet", "csv"], default="alpaca",
        help="alpaca: download into the cache; parquet: the cache (or --path); csv: --path")
    add("--path", type=Path, default=None, help="your own CSV/Parquet file of headlines (with --source csv/parquet)")
    add("--time-format", default=None,
        help="strptime format of the times in --path, e.g. '%%d/%%m/%%Y %%H:%%M' (default: ISO 8601 only)")
    add("--url-override", default=None, help="base URL of Alpaca's data API, e.g. a proxy (default: Alpaca's)")
    add("--cache-dir", type=Path, default=Path("data/news"), help="news and score cache root")
    add("--scorer", choices=["lexicon", "finbert"], default="lexicon", help="sentiment scorer")
    add("--model", default=None,
        help="finbert: a Hugging Face hub name or a local model directory (default: ProsusAI/finbert)")
    add("--text", choices=["headline", "headline_summary"], default="headline", help="what is scored")
    add("--device", default="auto", help="finbert: auto, cpu, cuda, cuda:1")
    add("--batch-size", type=int, default=32, help="finbert: headlines per forward pass")
    add("--no-score", action="store_true", help="only fetch; do not score")
    add("--no-progress", action="store_true", help="hide the progress bars")
    add("--seed", type=int, default=0, help="unused (nothing here is random); accepted like every entry point")
    return parser


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = build_parser().parse_args(argv)
    args.symbols = symbols_from_args(args, None)
    if not args.symbols:
        raise UsageError("no symbols given", "pass --symbols AAPL MSFT ... or --universe FILE [--categories ...]")
    from tqdm.auto import tqdm

    settings = NewsConfig(source=args.source, path=str(args.path) if args.path else None,
                          cache_dir=str(args.cache_dir), scorer=args.scorer, model=args.model, text=args.text,
                          device=args.device, batch_size=args.batch_size, time_format=args.time_format)
    started = time.perf_counter()
    if args.source == "alpaca":
        bar = tqdm(args.symbols, desc="fetching news", unit="symbol", disable=args.no_progress)
        for symbol in bar:
            bar.set_postfix_str(symbol)
            try:
                download_news_to_cache([symbol], args.start, args.end, args.cache_dir, url_override=args.url_override)
            except AlpacaDataError as error:
                raise UsageError(str(error), "fix that and run again; ranges already fetched stay cached") from None
    news = load_news(args.symbols, args.start, args.end, source="parquet" if args.source == "alpaca" else args.source,
                     cache_dir=args.cache_dir, path=args.path, time_format=args.time_format)
    fetched = time.perf_counter() - started
    print(f"{len(news)} article rows for {len(args.symbols)} symbol(s) in {fetched:.1f} s "
          f"(cache: {args.cache_dir / 'articles'})")
    if args.no_score or not len(news):
        return news

    scorer = make_scorer(settings)
    with tqdm(total=news["id"].nunique(), desc=f"scoring ({settings.scorer})", unit="headline",
              disable=args.no_progress) as bar:
        scored = score_articles(news, scorer, settings.cache_dir, settings.text, progress=bar.update)
    print(f"scored with {settings.scorer} ({settings.model}) in {time.perf_counter() - started - fetched:.1f} s; "
          f"scores cached under {args.cache_dir / 'scores' / scorer.name}")
    print(summary(scored, args.symbols).to_string())
    return scored


def summary(scored: pd.DataFrame, symbols: list[str]) -> pd.DataFrame:
    """Articles, first and last publication time and the mean score per symbol."""
    rows = []
    for symbol in symbols:
        part = scored[scored["symbol"].str.upper() == symbol.upper()]
        rows.append({
            "symbol": symbol,
            "articles": len(part),
            "first": part["published_at"].min() if len(part) else None,
            "last": part["published_at"].max() if len(part) else None,
            "mean_score": round(float(part["score"].mean()), 3) if len(part) else None,
            "positive_share": round(float((part["score"] > 0).mean()), 3) if len(part) else None,
        })
    return pd.DataFrame(rows).set_index("symbol")


if __name__ == "__main__":
    cli(main)
