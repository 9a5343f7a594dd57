"""The cache interface: bytes by key with a time to live. Implementations: in-process (default),
Redis. A cache may lose anything at any time, so callers always know how to recompute."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Cache(ABC):
    name: str
    # True where the cache lives in this process: there a value the analysis already holds would
    # be a second copy of it (a million images' neighbour graph is 240 MB), so it keeps those itself
    in_process: bool = False

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The value, or ``None`` when it is absent, expired or the cache cannot be reached."""

    @abstractmethod
    def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        """Store a value; a cache that cannot be reached drops it without raising."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @property
    def healthy(self) -> bool:
        """False while the cache cannot be reached (the app then says it runs slower)."""
        return True

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Release connections; the default has none."""
