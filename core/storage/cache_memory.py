"""An in-process cache: the embedded default. Bounded by total bytes, least recently used first out."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from core.storage.cache import Cache


class MemoryCache(Cache):
    name = "memory"
    in_process = True

    def __init__(self, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._size = 0
        self._mutex = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._mutex:
            item = self._items.get(key)
            if item is None:
                return None
            value, expires = item
            if expires is not None and expires < time.monotonic():
                self._drop(key)
                return None
            self._items.move_to_end(key)
            return value

    def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        if len(value) > self.max_bytes:
            return
        expires = None if ttl_s is None else time.monotonic() + ttl_s
        with self._mutex:
            self._drop(key)
            self._items[key] = (value, expires)
            self._size += len(value)
            while self._size > self.max_bytes:
                self._drop(next(iter(self._items)))

    def delete(self, key: str) -> None:
        with self._mutex:
            self._drop(key)

    def _drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._size -= len(item[0])

    def describe(self) -> str:
        return f"in-process memory (up to {self.max_bytes // (1024 * 1024)} MB)"
