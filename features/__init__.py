"""Bars in, numpy datasets out: loading, validation, causal features, labels, splits and scaling.

Public API::

    load_bars(symbols, timeframe="1Day", start=None, end=None, source="embedded") -> dict[str, DataFrame]
    build_features(bars) -> DataFrame
    make_labels(bars, profit=0.05, stop=0.02, horizon=8) -> Series
    build_dataset(config) -> MarketData
    load_dataset(path) -> MarketData
    load_news(symbols, start, end, source="alpaca") -> DataFrame   (see features.news)
"""

from .asset_map import AssetMap
from .bars import BarsValidationError, Timeframe, find_gaps, large_overnight_moves, validate_bars
from .dataset import DatasetConfig, build_dataset, build_market_data, load_dataset
from .embedded import DEFAULT_SYMBOLS, SKFOLIO_SYMBOLS, embedded_symbols, is_close_only, skfolio_symbols
from .feature_builder import FeatureConfig, build_features, feature_names, warmup_bars
from .labels import LabelConfig, make_labels
from .loading import load_bars
from .market_data import MarketData
from .news import NEWS_FEATURES, NewsConfig, load_news
from .panel import Panel, PanelError
from .scaling import FeatureScaler
from .splits import SplitConfig
from .synthetic import synthetic_bars

__all__ = [
    "Panel",
    "PanelError",
    "SKFOLIO_SYMBOLS",
    "is_close_only",
    "skfolio_symbols",
    "AssetMap",
    "BarsValidationError",
    "DEFAULT_SYMBOLS",
    "DatasetConfig",
    "FeatureConfig",
    "FeatureScaler",
    "LabelConfig",
    "MarketData",
    "NEWS_FEATURES",
    "NewsConfig",
    "SplitConfig",
    "Timeframe",
    "build_dataset",
    "build_features",
    "build_market_data",
    "embedded_symbols",
    "feature_names",
    "find_gaps",
    "large_overnight_moves",
    "load_bars",
    "load_dataset",
    "load_news",
    "make_labels",
    "synthetic_bars",
    "validate_bars",
    "warmup_bars",
]
