"""Train one supervised classifier and write runs/<name>/ (TensorBoard events, model/ bundle, metrics.json).

    python -m experiments.train_supervised --model lstm --run-name sup_lstm
    tensorboard --logdir runs
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any, Sequence

from configs.loader import CONFIG_DIR
from supervised.evaluation import format_metrics_table
from supervised.experiment import load_supervised_config, prepare_data, prepare_run_dir, run_supervised
from supervised.models import MODEL_KINDS

DEFAULT_CONFIG = CONFIG_DIR / "supervised.yaml"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model", required=True, choices=MODEL_KINDS, help="architecture to train")
    add("--config", default=str(DEFAULT_CONFIG), help="YAML config (dataset/train/models/evaluation sections)")
    add("--dataset", default=None, help="saved dataset directory; default: build the config's dataset")
    add("--run-name", default=None, help="output directory under --runs-dir (default: sup_<model>_<time>)")
    add("--runs-dir", default="runs", help="root directory of all runs")
    add("--epochs", type=int, default=None, help="override train.epochs")
    add("--seed", type=int, default=None, help="override train.seed")
    add("--overwrite", action="store_true", help="replace an existing run directory of the same name")
    add("--no-progress", action="store_true", help="hide the tqdm progress bars")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run from command-line arguments; returns the metrics written to metrics.json."""
    args = parse_args(argv)
    config = load_supervised_config(args.config)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    train_config = dataclasses.replace(config.train, **overrides)
    run_name = args.run_name or f"sup_{args.model}_{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = prepare_run_dir(args.runs_dir, run_name, overwrite=args.overwrite)
    data = prepare_data(config, args.dataset)
    print(data.summary())
    metrics = run_supervised(
        data,
        config.model(args.model),
        train_config,
        run_dir,
        evaluation=config.evaluation,
        progress=not args.no_progress,
    )
    training = metrics["training"]
    print(
        f"\n{args.model}: best epoch {training['best_epoch']}/{training['epochs_run']}, "
        f"{training['n_parameters']} parameters, trained in {training['train_seconds']:.1f}s"
    )
    print(format_metrics_table(metrics))
    print(f"\nwrote {run_dir}/ (metrics.json, model/, TensorBoard events)")
    return metrics


if __name__ == "__main__":
    main()
