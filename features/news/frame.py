"""The validated news frame every news source returns, and reading a user's own CSV/Parquet of headlines.

A news frame has one row per (article, symbol it names), sorted by publication time, with columns:

- ``published_at``: UTC ``datetime64[ns, UTC]``, when the article was published;
- ``id``: the article id (a string; Alpaca's integer ids become their decimal text);
- ``symbol``: one symbol the article names, as the caller asked for it (a crypto pair keeps its slash,
  ``BTC/USD``, although Alpaca's news API spells it ``BTCUSD``: :func:`select_symbols`);
- ``headline``: non-empty text;
- ``summary``: text, ``""`` when there is none;
- ``source``: who published it (``"benzinga"``), ``""`` when unknown.

An article that names three symbols is three rows with the same id; each (id, symbol) pair appears once.

Publication times given as text are read as ISO 8601 (``2024-01-02T14:30:00Z``, ``2024-01-02 10:00-05:00``,
``2024-01-02``) unless their format is declared (``time_format``, a strptime format such as
``"%d/%m/%Y %H:%M"``); then every row must match it. Any other spelling is refused, never guessed: in
``03/04/2020`` the day and the month cannot be told apart. A time without an offset (ISO or declared
format without ``%z``) is UTC. A time before 1970 or more than a day in the future is refused.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from ..parquet_cache import CRYPTO_SEPARATOR, is_crypto_symbol

NEWS_COLUMNS: tuple[str, ...] = ("published_at", "id", "symbol", "headline", "summary", "source")

# Column names accepted in a user's file, first match wins.
_TIME_ALIASES: tuple[str, ...] = ("published_at", "created_at", "timestamp", "time", "datetime", "date")
_SYMBOL_ALIASES: tuple[str, ...] = ("symbol", "symbols", "ticker", "tickers")
_HEADLINE_ALIASES: tuple[str, ...] = ("headline", "title")

#: Publication times outside [EARLIEST_TIME, now + LATEST_AHEAD] are refused (a typo, or a misread format).
EARLIEST_TIME = pd.Timestamp("1970-01-01", tz="UTC")
LATEST_AHEAD = pd.Timedelta(days=1)
_ISO_EXAMPLE = "2024-01-02T14:30:00Z"


class NewsValidationError(ValueError):
    """News that breaks the frame's contract; the message names the file (or source) and the row."""


def empty_news() -> pd.DataFrame:
    """A news frame with no rows (the right columns and dtypes)."""
    frame = pd.DataFrame({name: pd.Series([], dtype=object) for name in NEWS_COLUMNS})
    frame["published_at"] = pd.DatetimeIndex([], tz="UTC").as_unit("ns")
    return _typed(frame)


def validate_news(
    news: pd.DataFrame,
    where: str = "news",
    *,
    line_offset: int | None = None,
    time_format: str | None = None,
    column_names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Check a news frame and return a clean copy: typed, sorted, one row per (id, symbol).

    Text times are ISO 8601, or all in ``time_format`` when it is given; naive times are UTC (see the
    module docstring). Rejected, naming ``where``, the column and the first bad row: a missing column, a
    missing or unparseable publication time, a time before 1970 or more than a day ahead of now, an
    empty headline, a missing id or symbol. Rows that repeat an (id, symbol) pair keep the last one (a
    re-download of an updated article).

    :param news: frame with the :data:`NEWS_COLUMNS` (``summary`` and ``source`` may be absent).
    :param where: the file or source, for messages.
    :param line_offset: when ``news`` was read from a CSV, the file line of row 0 (2 with a header), so
        messages also give the line; None for other sources.
    :param time_format: the strptime format of text times (see :func:`check_time_format`); None: ISO 8601.
    :param column_names: the user's name of a column where it differs (``{"published_at": "date"}``), for
        messages.
    :return: the validated frame (RangeIndex, sorted by ``published_at``, ``id``, ``symbol``).
    """
    if not isinstance(news, pd.DataFrame):
        raise NewsValidationError(f"{where}: news must be a pandas DataFrame, got {type(news).__name__}")
    frame = news.copy()
    frame.columns = [str(c) for c in frame.columns]
    missing = [c for c in ("published_at", "id", "symbol", "headline") if c not in frame.columns]
    if missing:
        raise NewsValidationError(
            f"{where}: missing column(s) {missing}; expected {list(NEWS_COLUMNS)} (summary and source optional), "
            f"got {list(frame.columns)}"
        )
    for column in ("summary", "source"):
        if column not in frame.columns:
            frame[column] = ""
    frame = frame[list(NEWS_COLUMNS)].reset_index(drop=True)

    names = dict(column_names or {})

    def first_bad(bad: np.ndarray, what: str, column: str, values: pd.Series | None = None, hint: str = "") -> None:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = (frame[column] if values is None else values).iloc[row]
            line = f" (line {row + line_offset})" if line_offset is not None else ""
            raise NewsValidationError(
                f"{where}: {what} at row {row}{line}, column '{names.get(column, column)}' (value {value!r}; "
                f"{int(bad.sum())} bad row(s) in all){hint}"
            )

    raw_times = frame["published_at"]
    first_bad(_blank(raw_times), "missing publication time", "published_at")
    times = _parse_times(raw_times, time_format)
    unparsed = times.isna().to_numpy()
    if unparsed.any():
        row = int(np.flatnonzero(unparsed)[0])
        if _out_of_range(raw_times.iloc[row], time_format):
            first_bad(unparsed, "publication time out of range", "published_at",
                      hint=f"; expected {EARLIEST_TIME.year} .. a day from now")
        first_bad(unparsed, "unparseable publication time", "published_at", hint=_format_hint(time_format))
    earliest, latest = EARLIEST_TIME, pd.Timestamp.now(tz="UTC") + LATEST_AHEAD
    first_bad(((times < earliest) | (times > latest)).to_numpy(), "publication time out of range", "published_at",
              times, f"; expected {earliest.date()} .. {latest.floor('s')} (now + {LATEST_AHEAD})")
    frame["published_at"] = times
    for column, what in (("headline", "empty headline"), ("id", "missing article id"), ("symbol", "missing symbol")):
        first_bad(_blank(frame[column]), what, column)
    frame = _typed(frame)
    frame = frame.drop_duplicates(subset=["id", "symbol"], keep="last")
    return frame.sort_values(["published_at", "id", "symbol"], kind="stable").reset_index(drop=True)


def read_news_file(
    path: str | Path, symbols: Iterable[str] | None = None, time_format: str | None = None
) -> pd.DataFrame:
    """Read a user's CSV or Parquet file of headlines into a validated news frame.

    Columns: a time (``published_at``, or ``created_at``/``timestamp``/``time``/``datetime``/``date``;
    ISO 8601 unless ``time_format`` is given; naive times are UTC), a symbol (``symbol``/``ticker``, or ``symbols``/``tickers`` holding several
    separated by commas, spaces or semicolons, one row each), ``headline`` (or ``title``), and optionally
    ``id``, ``summary``, ``source``. Without an ``id`` column an article's id is a digest of its time and
    headline (stable across reads, so scores stay cached).

    :param path: a ``.csv`` (``.csv.gz``) or ``.parquet`` file.
    :param symbols: keep only these symbols (case-insensitive match, stored as given here); None keeps all.
    :param time_format: the strptime format of the file's times (e.g. ``"%d/%m/%Y %H:%M"``; every row must
        match it); None: ISO 8601 only. A format without ``%z`` reads UTC times. A Parquet column that
        already holds datetimes is used as it is.
    :raises FileNotFoundError: no such file.
    :raises NewsValidationError: a bad row, naming the file, the row and (for CSV) the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"news file {path} does not exist; pass the CSV/Parquet file of your headlines")
    is_csv = path.name.lower().endswith((".csv", ".csv.gz", ".txt"))
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False) if is_csv else pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many unrelated types for a bad file
        kind = "CSV" if is_csv else "Parquet"
        raise NewsValidationError(f"{path}: cannot be read as {kind} ({type(exc).__name__}: {exc})") from exc
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    where = str(path)
    renames = {}
    for target, aliases in (("published_at", _TIME_ALIASES), ("headline", _HEADLINE_ALIASES)):
        found = next((a for a in aliases if a in raw.columns), None)
        if found is None:
            raise NewsValidationError(
                f"{where}: no {target} column; expected one of {list(aliases)}, got {list(raw.columns)}"
            )
        renames[found] = target
    symbol_column = next((a for a in _SYMBOL_ALIASES if a in raw.columns), None)
    if symbol_column is None:
        raise NewsValidationError(
            f"{where}: no symbol column; expected one of {list(_SYMBOL_ALIASES)}, got {list(raw.columns)}"
        )
    frame = raw.rename(columns=renames)
    if "id" not in frame.columns:
        frame["id"] = [
            _derived_id(t, h) for t, h in zip(frame["published_at"].astype(str), frame["headline"].astype(str))
        ]
    frame["id"] = frame["id"].astype(object).map(lambda v: "" if _is_missing(v) else str(v))
    frame["symbol"] = frame[symbol_column]
    # Validated as the file's own rows (so messages give its row and line), then split per symbol.
    validated = validate_news(frame, where, line_offset=2 if is_csv else None, time_format=time_format,
                              column_names={target: found for found, target in renames.items()})
    if symbol_column in ("symbols", "tickers"):
        validated["symbol"] = [_split_symbols(v) for v in validated["symbol"]]
        validated = validate_news(validated.explode("symbol", ignore_index=True).dropna(subset=["symbol"]), where)
    if symbols is not None:
        validated = select_symbols(validated, symbols)
    return validated


def news_api_symbol(symbol: str) -> str:
    """How Alpaca's news API spells a symbol, in its ``symbols`` parameter and in its articles' ``symbols``
    lists: a crypto pair without its slash (``"BTC/USD"`` -> ``"BTCUSD"``), a ticker as it is.

    :param symbol: a ticker (``"AAPL"``) or a crypto pair as Alpaca's trading and bars APIs spell it
        (``"BTC/USD"``, :func:`features.parquet_cache.is_crypto_symbol`).
    """
    return symbol.replace(CRYPTO_SEPARATOR, "") if is_crypto_symbol(symbol) else symbol


def select_symbols(news: pd.DataFrame, symbols: Iterable[str]) -> pd.DataFrame:
    """Rows of ``news`` whose symbol is one of ``symbols`` (case-insensitive), spelled as in ``symbols``.

    A crypto pair is also matched in the news API's spelling (:func:`news_api_symbol`): rows of
    ``BTCUSD`` are kept as ``BTC/USD`` when ``BTC/USD`` is asked for. An article given under both
    spellings is one row.

    :param news: a news frame.
    :param symbols: the symbols to keep, as the caller spells them.
    :raises ValueError: two different symbols asked for share a spelling (``BTCUSD`` and ``BTC/USD``).
    """
    wanted: dict[str, str] = {}
    for symbol in map(str, symbols):
        for key in dict.fromkeys((symbol.upper(), news_api_symbol(symbol).upper())):
            other = wanted.get(key)
            if other is not None and other.upper() != symbol.upper():
                raise ValueError(
                    f"symbols {other!r} and {symbol!r} are both spelt {key!r} by Alpaca's news API, so their "
                    f"articles cannot be told apart; ask for one of them"
                )
            wanted[key] = symbol
    upper = news["symbol"].astype(str).str.upper()
    keep = upper.isin(list(wanted))
    kept = news[keep].copy()
    kept["symbol"] = upper[keep].map(wanted).astype(object)
    if "id" in kept.columns:
        kept = kept.drop_duplicates(subset=["id", "symbol"], keep="last")
    return kept.reset_index(drop=True)


def select_time(news: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.DataFrame:
    """Rows published in ``[start, end]`` (either bound may be None)."""
    keep = np.ones(len(news), dtype=bool)
    if start is not None:
        keep &= (news["published_at"] >= start).to_numpy()
    if end is not None:
        keep &= (news["published_at"] <= end).to_numpy()
    return news[keep].reset_index(drop=True)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["published_at"] = pd.DatetimeIndex(frame["published_at"]).tz_convert("UTC").as_unit("ns")
    for column in ("id", "symbol", "headline", "summary", "source"):
        values = frame[column].astype(object)
        values = values.where(~pd.isna(values), "")
        frame[column] = values.map(lambda v: str(v).strip()).astype(object)
    return frame


def _blank(values: pd.Series) -> np.ndarray:
    text = values.astype(object)
    return (pd.isna(text) | text.map(lambda v: isinstance(v, str) and not v.strip())).to_numpy(bool)


def check_time_format(time_format: str | None, name: str = "news.time_format") -> str | None:
    """``time_format`` itself when it is None or a strptime format that reads a full date; else ``ValueError``.

    :param time_format: e.g. ``"%d/%m/%Y %H:%M"`` or ``"%m/%d/%Y %I:%M %p %z"``.
    :param name: the setting's name, for the message.
    """
    if time_format is None:
        return None
    if not isinstance(time_format, str) or "%" not in time_format:
        raise ValueError(f"{name}={time_format!r} must be a strptime format such as '%d/%m/%Y %H:%M'")
    moment = datetime(2001, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    try:
        parsed = pd.to_datetime(pd.Series([moment.strftime(time_format)]), format=time_format, utc=True).iloc[0]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}={time_format!r} is not a strptime format pandas can read ({str(exc).splitlines()[0]})") from None
    if (parsed.year, parsed.month, parsed.day) != (2001, 2, 3):
        raise ValueError(
            f"{name}={time_format!r} does not give a full date; it needs the year, month and day "
            f"(e.g. '%d/%m/%Y %H:%M')"
        )
    return time_format


def _parse_times(values: pd.Series, time_format: str | None = None) -> pd.Series:
    """UTC times of ``values`` (NaT where a text does not parse): datetimes as they are (naive = UTC),
    text as ISO 8601 or, when declared, ``time_format``; never a guessed format."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    text = values.astype(object).map(lambda v: str(v).strip())
    return pd.to_datetime(text, utc=True, errors="coerce", format=time_format or "ISO8601")


def _out_of_range(value: object, time_format: str | None) -> bool:
    """Whether ``value`` (one that did not parse among the others) is a well-formed time outside the range
    of nanosecond timestamps, such as the year 3000."""
    try:
        stamp = pd.to_datetime(pd.Series([str(value).strip()]), utc=True, format=time_format or "ISO8601").iloc[0]
    except (ValueError, TypeError, OverflowError):
        return False
    return not pd.isna(stamp) and not EARLIEST_TIME <= stamp <= pd.Timestamp.now(tz="UTC") + LATEST_AHEAD


def _format_hint(time_format: str | None) -> str:
    if time_format is not None:
        return f": it does not match news.time_format={time_format!r}; every row must"
    return (
        f": expected ISO 8601 (e.g. {_ISO_EXAMPLE!r}); other spellings are not guessed ('03/04/2020' may be "
        f"3 April or 4 March), so declare the file's format with news.time_format (load_news time_format=, fetch_news --time-format), "
        f"e.g. '%d/%m/%Y %H:%M' (times without %z are UTC)"
    )


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT


def _split_symbols(value: object) -> list[str]:
    if _is_missing(value):
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part for part in str(value).replace(";", ",").replace(" ", ",").split(",") if part.strip()]


def _derived_id(time_text: str, headline: str) -> str:
    return "h" + hashlib.sha256(f"{time_text.strip()}\n{headline.strip()}".encode()).hexdigest()[:16]


__all__ = [
    "NEWS_COLUMNS", "NewsValidationError", "check_time_format", "empty_news", "news_api_symbol", "read_news_file",
    "select_symbols", "validate_news",
]
