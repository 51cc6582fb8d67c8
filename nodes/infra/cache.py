"""A small bounded LRU mapping."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


class BoundedCache:
    """An LRU mapping of at most ``maxsize`` entries (thread-safe)."""

    def __init__(self, maxsize: int) -> None:
        assert maxsize > 0, f"maxsize must be positive, got {maxsize}"
        self.maxsize = maxsize
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
