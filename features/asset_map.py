"""A persisted symbol -> integer id map, stable when symbols are added (ids are never reused or moved)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from .atomic_io import write_text_atomic


class AssetMap:
    """Symbol to asset id. New symbols get the next free id; existing ids never change."""

    def __init__(self, ids: dict[str, int] | None = None) -> None:
        self._ids: dict[str, int] = {}
        for symbol, asset_id in (ids or {}).items():
            if not isinstance(asset_id, int) or asset_id < 0:
                raise ValueError(f"asset map: id of {symbol!r} must be a non-negative int, got {asset_id!r}")
            self._ids[str(symbol)] = asset_id
        if len(set(self._ids.values())) != len(self._ids):
            raise ValueError(f"asset map: ids must be unique, got {self._ids}")

    def add(self, symbols: Iterable[str]) -> "AssetMap":
        """Give each unseen symbol the next id (in the order given); return self."""
        for symbol in symbols:
            if symbol not in self._ids:
                self._ids[symbol] = max(self._ids.values(), default=-1) + 1
        return self

    def id_of(self, symbol: str) -> int:
        try:
            return self._ids[symbol]
        except KeyError:
            raise KeyError(f"symbol {symbol!r} is not in the asset map; known: {sorted(self._ids)}") from None

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def size(self) -> int:
        """Embedding table size needed: largest id + 1."""
        return max(self._ids.values(), default=-1) + 1

    def to_dict(self) -> dict[str, int]:
        return dict(sorted(self._ids.items(), key=lambda item: item[1]))

    @classmethod
    def load(cls, path: str | Path) -> "AssetMap":
        """Read a map written by :meth:`save`; a missing file gives an empty map."""
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"asset map file {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"asset map file {path} must hold a JSON object symbol -> id")
        return cls(data)

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path
