"""Small pieces every entry point shares: dataset selection, run directories, seeding."""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from features.dataset import DatasetConfig, build_dataset, load_dataset
from features.market_data import MarketData


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dataset`` (a saved dataset directory) and ``--config`` (YAML with a ``dataset:`` section)."""
    parser.add_argument("--dataset", type=Path, default=None,
                        help="saved dataset directory (from experiments.build_dataset); default: build from --config")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML config; its 'dataset:' section defines the data (default: embedded AAPL/IBM/MSFT/GOOG daily)")


def dataset_from_args(args: argparse.Namespace) -> MarketData:
    """Load ``--dataset`` if given, else build the dataset of ``--config`` (defaults: embedded data)."""
    if getattr(args, "dataset", None) is not None:
        return load_dataset(args.dataset)
    config = DatasetConfig.from_yaml(args.config) if getattr(args, "config", None) else DatasetConfig()
    return build_dataset(config)


def run_directory(runs_dir: Path, name: str | None, prefix: str) -> Path:
    """``runs_dir/<name>``, or ``runs_dir/<prefix>_<timestamp>`` when no name is given."""
    name = name or f"{prefix}_{time.strftime('%Y%m%d_%H%M%S')}"
    path = Path(runs_dir) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and (if installed) torch."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass
