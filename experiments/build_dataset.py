"""Build the dataset (features, labels, splits, scaler) and print a summary.

    python -m experiments.build_dataset [--config configs/supervised.yaml] [--output runs/datasets/default]
    python -m experiments.build_dataset --config configs/supervised.yaml --universe configs/universes/seed.yaml \
                                        --categories information_technology      # the config's data, these symbols

The dataset is written to a temporary folder beside --output and moved into place when complete; an
existing --output is kept unless --overwrite (then replaced only once the new dataset is complete).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from experiments.common import (
    add_universe_arguments,
    cli,
    load_dataset_config,
    make_parser,
    staged_run_directory,
    symbols_from_args,
)
from features.bars import find_gaps, large_overnight_moves
from features.calendars import asset_class_of
from features.dataset import build_market_data
from features.loading import load_bars


def main(argv: list[str] | None = None) -> Path:
    parser = make_parser("python -m experiments.build_dataset", __doc__)
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML file with a 'dataset:' section (default: built-in defaults, embedded data)")
    parser.add_argument("--output", type=Path, default=Path("runs/datasets/default"),
                        help="directory to write the dataset to")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --output once the new dataset is complete")
    parser.add_argument("--symbols", nargs="+", default=None, metavar="SYMBOL",
                        help="symbols to build (default: those of --config's dataset section)")
    add_universe_arguments(parser)
    args = parser.parse_args(argv)

    config = load_dataset_config(args.config)
    symbols = symbols_from_args(args, None)
    if symbols:
        config = dataclasses.replace(config, symbols=tuple(symbols))
    output = Path(args.output)
    with staged_run_directory(output.parent, output.name, args.overwrite, flag="--output") as run:
        started = time.perf_counter()
        bars = load_bars(list(config.symbols), config.timeframe, config.start, config.end, config.source,
                         config.cache_dir)
        for symbol, frame in bars.items():
            gaps = find_gaps(frame, config.timeframe, asset_class_of(symbol))  # missing sessions of its calendar
            moves = large_overnight_moves(frame)
            note = f"; {len(moves)} overnight move(s) > 40% at {[str(t.date()) for t in moves.index]}" if len(moves) else ""
            print(f"{symbol:<8} {len(frame):>6} bars {frame.index[0].date()} .. {frame.index[-1].date()}, "
                  f"{len(gaps)} gaps (not filled){note}")
        data = build_market_data(bars, config)
        data.save(run.path)
        elapsed = time.perf_counter() - started
    print(data.summary())
    print(f"features: {', '.join(data.feature_names)}")
    print(f"dataset written to {run.final} in {elapsed:.2f} s (config hash {data.hashes['config'][:12]}, "
          f"source hash {data.hashes['source'][:12]})")
    return run.final


if __name__ == "__main__":
    cli(main)
