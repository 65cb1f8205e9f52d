"""The on-disk bars cache: one Parquet file per symbol and timeframe, written atomically.

Layout: ``{root}/{SYMBOL}/{TIMEFRAME}/data.parquet`` (e.g. ``data/historical/AAPL/1Day/data.parquet``).
A crypto pair is spelt with a slash by Alpaca (``BTC/USD``); its directory name spells the slash as
``~`` (``data/historical/BTC~USD/1Hour/data.parquet``), which no ticker contains, so the mapping is
reversible: :func:`symbol_dir_name` and :func:`symbol_from_dir_name`. A ticker with ``~`` is refused.
Every function here takes and prints the symbol as Alpaca spells it; only the path uses ``~``.
Bars are kept as given: crypto trades 24/7, and its weekend and night bars are stored like any other.
Every frame is checked with :func:`features.bars.validate_bars` on the way in and on the way out, and
a write never leaves a half-written ``data.parquet`` behind: it goes to a temporary file in the same
directory that replaces the old file in one ``os.replace``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from .bars import BarsValidationError, Timeframe, validate_bars

DEFAULT_CACHE_ROOT = Path("data/historical")
CACHE_FILE_NAME = "data.parquet"
_TEMP_PREFIX = ".data-"
_TEMP_SUFFIX = ".parquet.tmp"
CRYPTO_SEPARATOR = "/"  # Alpaca's spelling of a crypto pair: BASE/QUOTE
DIR_SEPARATOR = "~"  # the same separator in a cache directory name: BASE~QUOTE


def is_crypto_symbol(symbol: str) -> bool:
    """Whether ``symbol`` is a crypto pair in Alpaca's spelling (it has a slash: ``"BTC/USD"``).

    :param symbol: a ticker or a crypto pair.
    """
    return isinstance(symbol, str) and CRYPTO_SEPARATOR in symbol


def symbol_dir_name(symbol: str) -> str:
    """The cache directory name of a symbol: the ticker itself, or ``BASE~QUOTE`` for ``BASE/QUOTE``.

    :param symbol: a ticker (``"AAPL"``, ``"BRK.B"``) or a crypto pair (``"BTC/USD"``).
    :return: a name with no path separator (``"AAPL"``, ``"BTC~USD"``).
    :raises ValueError: a name that cannot be mapped reversibly: a ticker with ``~``, a pair that is not
        ``BASE/QUOTE``, or a part that is not a usable name.
    """
    if not is_crypto_symbol(symbol):
        _check_symbol(symbol)
        if DIR_SEPARATOR in symbol:
            raise ValueError(
                f"symbol={symbol!r} cannot be cached: '{DIR_SEPARATOR}' is reserved in cache directory "
                f"names for the '/' of crypto pairs (BTC/USD is cached as BTC{DIR_SEPARATOR}USD)"
            )
        return symbol
    parts = symbol.split(CRYPTO_SEPARATOR)
    bad_part = any(not part or part != part.strip() or DIR_SEPARATOR in part for part in parts)
    if len(parts) != 2 or bad_part:
        raise ValueError(
            f"symbol={symbol!r} is not a crypto pair; expected 'BASE/QUOTE' with one '/' and no "
            f"'{DIR_SEPARATOR}' or surrounding spaces (e.g. 'BTC/USD')"
        )
    for part in parts:
        try:
            _check_symbol(part)
        except ValueError:
            raise ValueError(
                f"symbol={symbol!r} cannot be used as a cache directory name: its part {part!r} may not "
                f"contain path separators ('\\'), NUL, or be '.' or '..'"
            ) from None
    return DIR_SEPARATOR.join(parts)


def symbol_from_dir_name(name: str) -> str:
    """The symbol, as Alpaca spells it, of a cache directory name (the inverse of :func:`symbol_dir_name`).

    :param name: a cache directory name (``"AAPL"``, ``"BTC~USD"``).
    :return: ``"AAPL"``, ``"BTC/USD"``.
    :raises ValueError: a name :func:`symbol_dir_name` never writes.
    """
    symbol = name.replace(DIR_SEPARATOR, CRYPTO_SEPARATOR)
    try:
        valid = symbol_dir_name(symbol) == name
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(
            f"cache directory name {name!r} is not a symbol's: expected a ticker ('AAPL') or a crypto "
            f"pair with '{DIR_SEPARATOR}' for its '/' ('BTC{DIR_SEPARATOR}USD')"
        )
    return symbol


def cached_symbols(timeframe: str, root: str | Path = DEFAULT_CACHE_ROOT) -> list[str]:
    """The symbols with cached bars of one timeframe, as Alpaca spells them (``"BTC/USD"``), sorted.

    :param timeframe: bar length in Alpaca's spelling (``"1Day"``, ``"1Hour"``, ``"15Min"``).
    :param root: root directory of the cache.
    :return: the symbols whose ``root/NAME/TIMEFRAME/data.parquet`` exists; empty when none (or no root).
    :raises ValueError: a directory with such a file whose name no symbol maps to (it names the path).
    """
    tf = str(Timeframe.parse(timeframe))
    root = Path(root)
    if not root.is_dir():
        return []
    symbols = []
    for directory in sorted(root.iterdir()):
        if (directory / tf / CACHE_FILE_NAME).is_file():
            try:
                symbols.append(symbol_from_dir_name(directory.name))
            except ValueError as exc:
                raise ValueError(f"{exc} (in the bars cache: {directory})") from None
    return sorted(symbols)


def cache_path(symbol: str, timeframe: str, root: str | Path = DEFAULT_CACHE_ROOT) -> Path:
    """Where the bars of one symbol and timeframe are cached.

    :param symbol: the ticker or crypto pair as Alpaca spells it (``"AAPL"``, ``"BRK.B"``, ``"BTC/USD"``);
        the directory name is :func:`symbol_dir_name` of it (``BTC~USD``), so apart from a crypto pair's
        one ``/`` it may not contain path separators or ``~``, or be ``"."``/``".."``.
    :param timeframe: bar length in Alpaca's spelling (``"1Day"``, ``"1Hour"``, ``"15Min"``).
    :param root: root directory of the cache.
    :return: ``root/NAME/TIMEFRAME/data.parquet``.
    """
    name = symbol_dir_name(symbol)
    tf = Timeframe.parse(timeframe)
    return Path(root) / name / str(tf) / CACHE_FILE_NAME


def read_cached_bars(symbol: str, timeframe: str, root: str | Path = DEFAULT_CACHE_ROOT) -> pd.DataFrame:
    """Read validated bars from the cache.

    :param symbol: the ticker.
    :param timeframe: bar length in Alpaca's spelling (``"1Day"``, ``"1Hour"``, ``"15Min"``).
    :param root: root directory of the cache.
    :return: a validated bars frame (UTC ``timestamp`` index, float64 columns).
    :raises FileNotFoundError: nothing is cached for this symbol and timeframe.
    :raises ValueError: the file cannot be read as Parquet, or its bars fail validation.
    """
    path = cache_path(symbol, timeframe, root)
    if not path.is_file():
        raise FileNotFoundError(
            f"{symbol}: no cached {timeframe} bars at {path}; download them first with "
            f"load_bars([{symbol!r}], {timeframe!r}, start=..., source='alpaca', cache_dir={str(root)!r}) "
            f"(needs APCA_API_KEY_ID / APCA_API_SECRET_KEY), or use source='embedded'"
        )
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
        raise ValueError(
            f"{symbol}: cached bars file {path} is unreadable ({type(exc).__name__}: {exc}); "
            f"delete it and download again with source='alpaca'"
        ) from exc
    try:
        return validate_bars(frame, symbol)
    except BarsValidationError as exc:
        raise BarsValidationError(f"{exc} (in cached file {path})") from exc


def write_cached_bars(
    bars: pd.DataFrame,
    symbol: str,
    timeframe: str,
    root: str | Path = DEFAULT_CACHE_ROOT,
    merge: bool = True,
) -> Path:
    """Validate bars and write them to the cache atomically.

    :param bars: a bars frame (index of timestamps, columns open, high, low, close, volume [, vwap]).
    :param symbol: the ticker.
    :param timeframe: bar length in Alpaca's spelling (``"1Day"``, ``"1Hour"``, ``"15Min"``).
    :param root: root directory of the cache.
    :param merge: if True, combine with the bars already cached (the new bars win where timestamps are
        equal; the result is sorted); if False, replace the cached file.
    :return: the path of the written file.
    :raises ValueError: the bars (or, when merging, the cached file) fail validation or are unreadable;
        the cached file is then left as it was.
    """
    path = cache_path(symbol, timeframe, root)
    frame = validate_bars(bars, symbol)
    if merge and path.is_file():
        try:
            existing = read_cached_bars(symbol, timeframe, root)
        except ValueError as exc:
            raise ValueError(f"{exc}; pass merge=False to overwrite it") from exc
        combined = pd.concat([existing, frame])
        combined = combined[~combined.index.duplicated(keep="last")].sort_index(kind="stable")
        frame = validate_bars(combined, symbol)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    temp_path = Path(temp_name)
    try:
        frame.to_parquet(temp_path, engine="pyarrow", index=True)
        # Flush to disk before the rename so a crash cannot leave a renamed but empty file.
        with open(temp_path, "r+b") as handle:
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    return path


def _check_symbol(symbol: str) -> None:
    if not isinstance(symbol, str) or not symbol.strip():
        raise ValueError(f"symbol={symbol!r} is not a ticker; expected a non-empty string such as 'AAPL'")
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    unsafe = any(sep in symbol for sep in separators) or "\x00" in symbol
    if unsafe or symbol in (".", "..") or symbol != symbol.strip():
        raise ValueError(
            f"symbol={symbol!r} cannot be used as a cache directory name: it may not contain path "
            f"separators ('/', '\\'), NUL, surrounding spaces, or be '.' or '..'"
        )
