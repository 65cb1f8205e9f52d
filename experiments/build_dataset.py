"""Build the dataset (features, labels, splits, scaler) and print a summary.

    python -m experiments.build_dataset [--config configs/dataset.yaml] [--output runs/datasets/default]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from features.bars import find_gaps, large_overnight_moves
from features.dataset import DatasetConfig, build_market_data
from features.loading import load_bars


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m experiments.build_dataset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML file with a 'dataset:' section (default: built-in defaults, embedded data)")
    parser.add_argument("--output", type=Path, default=Path("runs/datasets/default"),
                        help="directory to write the dataset to (default: runs/datasets/default)")
    args = parser.parse_args(argv)

    config = DatasetConfig.from_yaml(args.config) if args.config else DatasetConfig()
    started = time.perf_counter()
    bars = load_bars(list(config.symbols), config.timeframe, config.start, config.end, config.source, config.cache_dir)
    for symbol, frame in bars.items():
        gaps = find_gaps(frame, config.timeframe)
        moves = large_overnight_moves(frame)
        note = f"; {len(moves)} overnight move(s) > 40% at {[str(t.date()) for t in moves.index]}" if len(moves) else ""
        print(f"{symbol:<8} {len(frame):>6} bars {frame.index[0].date()} .. {frame.index[-1].date()}, "
              f"{len(gaps)} gaps (not filled){note}")
    data = build_market_data(bars, config)
    data.save(args.output)
    elapsed = time.perf_counter() - started
    print(data.summary())
    print(f"features: {', '.join(data.feature_names)}")
    print(f"dataset written to {args.output} in {elapsed:.2f} s (config hash {data.hashes['config'][:12]}, "
          f"source hash {data.hashes['source'][:12]})")
    return args.output


if __name__ == "__main__":
    main()
