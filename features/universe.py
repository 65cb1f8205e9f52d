"""Universes as files: named categories of symbols in one YAML, deduplicated, selectable by category.

A universe file (``configs/universes/seed.yaml`` is the shipped one)::

    name: seed                      # optional (default: the file's stem)
    description: ...                # optional
    categories:
      information_technology: {asset_class: us_equity, symbols: [AAPL, MSFT, NVDA]}
      etfs: {asset_class: us_equity, symbols: [SPY, QQQ, XLK]}
      crypto: {asset_class: crypto, symbols: [BTC/USD, ETH/USD]}
      mega_caps: {asset_class: us_equity, symbols: [AAPL, MSFT]}   # repeats: kept once

A symbol may appear in several categories of the same asset class: it is kept once, where it first appears
(:meth:`Universe.category_of`), and :attr:`Universe.duplicates` records every category it appeared in.
Symbols are spelled as Alpaca spells them: US equities upper-case letters with ``.`` or ``-`` for share
classes (``BRK.B``); crypto pairs ``BASE/QUOTE`` (``BTC/USD``).

Every mistake in the file (not a mapping, an unknown key, an empty category, an unknown asset class, a
malformed symbol, one symbol in two categories of different asset classes, a duplicated key) and every
unknown category or symbol asked for raises :class:`UniverseError`, one line naming the file and the key.
Nothing here writes files.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

#: The asset classes a universe may hold (Alpaca's names).
ASSET_CLASSES: tuple[str, ...] = ("us_equity", "crypto")
#: Top-level keys of a universe file.
TOP_KEYS: tuple[str, ...] = ("name", "description", "categories")
#: Keys of one category.
CATEGORY_KEYS: tuple[str, ...] = ("asset_class", "symbols", "description")

_SYMBOL_PATTERNS: dict[str, re.Pattern[str]] = {
    "us_equity": re.compile(r"[A-Z](?:[A-Z.\-]{0,8}[A-Z])?"),
    "crypto": re.compile(r"[A-Z0-9]{1,15}/[A-Z0-9]{2,10}"),
}
_SYMBOL_EXPECTED: dict[str, str] = {
    "us_equity": "upper-case letters, '.' or '-' inside (e.g. AAPL, BRK.B)",
    "crypto": "BASE/QUOTE in upper case (e.g. BTC/USD)",
}


class UniverseError(ValueError):
    """A universe file or a request of it that is wrong; one line naming the file and the key."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (PyYAML keeps the last silently)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


@dataclasses.dataclass(frozen=True)
class Category:
    """One named category of a universe.

    :param name: the category's key in the file.
    :param asset_class: ``us_equity`` or ``crypto``.
    :param symbols: its symbols in file order (a symbol may also be in other categories).
    :param description: free text, may be empty.
    """

    name: str
    asset_class: str
    symbols: tuple[str, ...]
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Universe:
    """Named categories of symbols, read from a YAML file (see the module docstring).

    :param path: the file it was read from (named in every error).
    :param name: the universe's name.
    :param categories: the categories by name, in file order.
    :param description: free text, may be empty.
    """

    path: Path
    name: str
    categories: dict[str, Category]
    description: str = ""

    @property
    def category_names(self) -> list[str]:
        """The categories' names in file order."""
        return list(self.categories)

    @property
    def duplicates(self) -> dict[str, tuple[str, ...]]:
        """Each symbol listed in more than one category -> those categories, in file order (first one kept)."""
        seen: dict[str, list[str]] = {}
        for category in self.categories.values():
            for symbol in category.symbols:
                seen.setdefault(symbol, []).append(category.name)
        return {symbol: tuple(names) for symbol, names in seen.items() if len(names) > 1}

    def symbols(self, categories: Iterable[str] | None = None) -> list[str]:
        """The symbols of ``categories`` (None: all), each once, in file order.

        :param categories: category names; an unknown one raises :class:`UniverseError` listing the known.
        """
        chosen = set(self.check_categories(categories))
        result: dict[str, None] = {}
        for category in self.categories.values():
            if category.name in chosen:
                result.update(dict.fromkeys(category.symbols))
        return list(result)

    def check_categories(self, categories: Iterable[str] | None) -> list[str]:
        """``categories`` (None: every category) after checking each is in the file.

        :param categories: category names asked for.
        """
        if categories is None:
            return self.category_names
        asked = list(categories)
        unknown = [name for name in asked if name not in self.categories]
        if unknown:
            raise UniverseError(f"{self.path}: unknown categor{'y' if len(unknown) == 1 else 'ies'} "
                                f"{', '.join(map(repr, unknown))} asked for; known categories: "
                                f"{', '.join(self.category_names)}")
        if not asked:
            raise UniverseError(f"{self.path}: no category asked for; known categories: {', '.join(self.category_names)}")
        return asked

    def describe(self, categories: Iterable[str] | None = None) -> str:
        """One line for the user: the chosen symbols' count, per category, and which repeats were kept once.

        Each symbol is counted in the first chosen category (in file order) that lists it.

        :param categories: the categories chosen (None: all).
        """
        chosen = set(self.check_categories(categories))
        counted: dict[str, str] = {}
        for category in self.categories.values():
            if category.name in chosen:
                for symbol in category.symbols:
                    counted.setdefault(symbol, category.name)
        per_category = [f"{name} {list(counted.values()).count(name)}" for name in self.categories if name in chosen]
        repeats = {symbol: [c for c in names if c in chosen] for symbol, names in self.duplicates.items()}
        repeats = {symbol: names for symbol, names in repeats.items() if len(names) > 1}
        note = (f"; {len(repeats)} listed in several categories, kept once in the first: "
                + ", ".join(f"{s} ({'/'.join(n)})" for s, n in repeats.items())) if repeats else ""
        return (f"universe {self.name} ({self.path}): {len(counted)} symbol{'' if len(counted) == 1 else 's'} from {', '.join(per_category)}{note}: "
                f"{' '.join(counted)}")

    def category_of(self, symbol: str) -> str:
        """The first category (in file order) that lists ``symbol``.

        :param symbol: a symbol of the universe; another raises :class:`UniverseError`.
        """
        for category in self.categories.values():
            if symbol in category.symbols:
                return category.name
        raise UniverseError(f"{self.path}: symbol {symbol!r} is in no category of universe {self.name!r}")

    def asset_class(self, symbol: str) -> str:
        """``us_equity`` or ``crypto``: the asset class of ``symbol``'s categories.

        :param symbol: a symbol of the universe; another raises :class:`UniverseError`.
        """
        return self.categories[self.category_of(symbol)].asset_class

    def __len__(self) -> int:
        return len(self.symbols())

    def __contains__(self, symbol: object) -> bool:
        return any(symbol in category.symbols for category in self.categories.values())


def _read_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of the universe file ``path``."""
    if not path.exists():
        raise FileNotFoundError(f"universe file {path} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"universe file {path} is a directory, not a YAML file")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise UniverseError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(data, dict):
        raise UniverseError(f"{path}: the top level must be a mapping with 'categories:', got {_describe(data)}")
    _check_keys(data, TOP_KEYS, f"{path}")
    return data


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:57] + '...' if len(text) > 60 else text}"


def _check_keys(data: dict[Any, Any], valid: tuple[str, ...], where: str) -> None:
    unknown = [key for key in data if key not in valid]
    if unknown:
        raise UniverseError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(valid)}")


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UniverseError(f"{where}: expected text, got {_describe(value)}")
    return value


def _symbol(value: Any, asset_class: str, where: str) -> str:
    """``value`` if it is a well-formed symbol of ``asset_class``."""
    if isinstance(value, bool):  # YAML reads unquoted ON, OFF, YES, NO as booleans
        raise UniverseError(f"{where}: symbol {value!r} is a boolean (YAML reads unquoted ON/OFF/YES/NO "
                            "as true/false); quote the ticker, e.g. 'ON'")
    if not isinstance(value, str) or not _SYMBOL_PATTERNS[asset_class].fullmatch(value):
        raise UniverseError(f"{where}: malformed {asset_class} symbol {value!r}; expected "
                            f"{_SYMBOL_EXPECTED[asset_class]}")
    return value


def _category(name: Any, spec: Any, path: Path) -> Category:
    """One category of the file, checked."""
    where = f"{path}: categories.{name}"
    if not isinstance(name, str) or not name:
        raise UniverseError(f"{path}: categories: a category name must be text, got {_describe(name)}")
    if not isinstance(spec, dict):
        raise UniverseError(f"{where}: expected a mapping with asset_class and symbols, got {_describe(spec)}")
    _check_keys(spec, CATEGORY_KEYS, where)
    asset_class = spec.get("asset_class")
    if asset_class not in ASSET_CLASSES:
        raise UniverseError(f"{where}.asset_class: unknown asset class {asset_class!r}; known: {', '.join(ASSET_CLASSES)}")
    symbols = spec.get("symbols")
    if symbols is None or symbols == []:
        raise UniverseError(f"{where}.symbols: the category is empty; list at least one symbol (or remove it)")
    if not isinstance(symbols, list):
        raise UniverseError(f"{where}.symbols: expected a list of symbols, got {_describe(symbols)}")
    checked = [_symbol(value, asset_class, f"{where}.symbols") for value in symbols]
    twice = sorted({symbol for symbol in checked if checked.count(symbol) > 1})
    if twice:
        raise UniverseError(f"{where}.symbols: {', '.join(twice)} listed twice in the same category; list it once")
    return Category(name=name, asset_class=asset_class, symbols=tuple(checked),
                    description=_text(spec.get("description"), f"{where}.description"))


def _check_asset_classes(categories: dict[str, Category], path: Path) -> None:
    """A symbol in several categories must have one asset class in all of them."""
    first: dict[str, Category] = {}
    for category in categories.values():
        for symbol in category.symbols:
            earlier = first.setdefault(symbol, category)
            if earlier.asset_class != category.asset_class:
                raise UniverseError(f"{path}: categories.{category.name}.symbols: {symbol} is {category.asset_class} "
                                    f"here but {earlier.asset_class} in categories.{earlier.name}; a symbol has one "
                                    "asset class")


def load_universe(path: str | Path) -> Universe:
    """Read and check the universe file ``path`` (see the module docstring).

    :param path: the YAML file.
    :raises UniverseError: a one-line message naming the file and the key that is wrong.
    """
    path = Path(path)
    data = _read_mapping(path)
    specs = data.get("categories")
    if not isinstance(specs, dict) or not specs:
        raise UniverseError(f"{path}: categories: expected a non-empty mapping of category name -> "
                            f"{{asset_class, symbols}}, got {_describe(specs)}")
    categories = {name: _category(name, spec, path) for name, spec in specs.items()}
    _check_asset_classes(categories, path)
    name = _text(data.get("name"), f"{path}: name") or path.stem
    return Universe(path=path, name=name, categories=categories,
                    description=_text(data.get("description"), f"{path}: description"))
