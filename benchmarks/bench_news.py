"""News sentiment timings: scoring throughput (headlines/s) of both scorers, the score cache, the causal merge.

Run ``python -m benchmarks.bench_news`` (``--repeats`` per row, default 3; ``--base`` adds a model of
FinBERT's size). No weights are downloaded: "finbert tiny" is a random 2-layer BERT (hidden 32) built from
a config, "finbert base-size" a random BERT-base (12 layers, hidden 768, FinBERT's architecture; its
speed, not its answers), both saved to a temporary directory and loaded through ``FinbertScorer`` like
``ProsusAI/finbert``. Headlines are synthetic, 6-14 words. Each row is the median of the repeats after
one untimed warm-up; CUDA rows appear when torch sees a GPU. Not a test: it prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from features import synthetic_bars
from features.news import FinbertScorer, LexiconScorer, news_features, score_articles

WORDS = (
    "apple microsoft shares stock quarter results revenue guidance analysts market company deal chip cloud "
    "profit loss gains strong weak record decline lawsuit growth beat miss upgrade downgrade improvement "
    "losses surge plunge rally default risk investors billion million earnings outlook not no"
).split()


def synthetic_headlines(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(6, 15)))).capitalize() for _ in range(n)]


def save_bert(directory: Path, hidden: int, layers: int, heads: int, vocab_size: int | None = None) -> Path:
    """A random BERT sentiment classifier (labels positive/negative/neutral) and a word-list tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    labels = ("positive", "negative", "neutral")
    config = BertConfig(vocab_size=vocab_size or len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden, num_labels=3,
                        id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)})
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(directory)
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    return directory


def time_call(call: Callable[[], object], repeats: int) -> list[float]:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per row (median reported)")
    parser.add_argument("--headlines", type=int, default=20_000, help="headlines for the lexicon and tiny model")
    parser.add_argument("--base", action="store_true", help="also time a BERT-base-sized model (FinBERT's size)")
    parser.add_argument("--base-headlines", type=int, default=256, help="headlines for the base-size model on CPU")
    args = parser.parse_args(argv)
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    rows: list[tuple[str, int, float]] = []  # (what, items, median seconds)

    def add(what: str, items: int, call: Callable[[], object], repeats: int | None = None) -> None:
        seconds = statistics.median(time_call(call, repeats or args.repeats))
        rows.append((what, items, seconds))
        print(f"  {what:<48} {items:>8,} in {seconds:8.3f} s  = {items / seconds:>12,.0f} /s", flush=True)

    texts = synthetic_headlines(args.headlines)
    print(f"news benchmark: torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"CUDA {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}")

    start = time.perf_counter()
    lexicon = LexiconScorer()
    print(f"  lexicon dictionary loaded in {time.perf_counter() - start:.2f} s "
          f"({len(lexicon.positive)} positive, {len(lexicon.negative)} negative words)")
    add("lexicon score (headlines)", len(texts), lambda: lexicon.score(texts))

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        tiny = save_bert(Path(tmp) / "tiny", hidden=32, layers=2, heads=2)
        default_threads = torch.get_num_threads()
        settings = [("cpu", n) for n in sorted({1, default_threads})] + [("cuda", None)] * ("cuda" in devices)
        for device, threads in settings:
            for batch in (32, 128):
                scorer = FinbertScorer(str(tiny), device=device, batch_size=batch, torch_threads=threads)
                where = f"cpu {threads} thread(s)" if device == "cpu" else device
                add(f"finbert tiny, {where}, batch {batch}", len(texts), lambda s=scorer: s.score(texts))
        if args.base:
            base = save_bert(Path(tmp) / "base", hidden=768, layers=12, heads=12, vocab_size=30_522)
            for device, threads in settings:
                count = args.base_headlines if device == "cpu" else max(args.base_headlines, 4096)
                some = texts[:count]
                scorer = FinbertScorer(str(base), device=device, batch_size=32 if device == "cpu" else 256,
                                       torch_threads=threads)
                where = f"cpu {threads} thread(s)" if device == "cpu" else device
                add(f"finbert base-size, {where}, batch {scorer.batch_size}", len(some),
                    lambda s=scorer, t=some: s.score(t), repeats=1 if device == "cpu" else None)

        news = pd.DataFrame({"published_at": pd.date_range("2015-01-01", periods=len(texts), freq="37min", tz="UTC"),
                             "id": [str(i) for i in range(len(texts))], "symbol": "AAA", "headline": texts,
                             "summary": "", "source": ""})
        cache = Path(tmp) / "cache"
        score_articles(news, lexicon, cache)
        add("score_articles, all from the cache", len(news), lambda: score_articles(news, lexicon, cache))

    bars = synthetic_bars(2_520, start="2015-01-01")  # ten years of daily bars
    scored = news.assign(score=np.random.default_rng(0).uniform(-1, 1, len(news)))
    add(f"news_features, daily ({len(scored):,} articles), bars", len(bars),
        lambda: news_features(bars, scored, "1Day"))
    hourly = synthetic_bars(20_000, start="2015-01-01", freq="h")
    add(f"news_features, hourly ({len(scored):,} articles), bars", len(hourly),
        lambda: news_features(hourly, scored, "1Hour"))


if __name__ == "__main__":
    main()
