"""A cache on Redis (``REDIS_URL``), shared by every app replica and CLI run.

Redis is optional: the app must keep working, only slower, while it is down. So every call has a
short socket timeout and no retries, a failure turns :attr:`RedisCache.healthy` False (the Home page
says so) and for ``retry_after_s`` seconds later calls do not even try, so a dead server costs one
timeout, not one per lookup. After that the next call tries again and, if Redis is back, the cache
is healthy again. ``get`` then answers ``None`` and ``set`` drops the value, as the interface asks.

Values without a TTL stay until Redis evicts them: run it with ``maxmemory`` and
``maxmemory-policy allkeys-lru`` (compose.yaml does), the same bounded LRU as the in-process cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.storage.cache import Cache

T = TypeVar("T")


class RedisCache(Cache):
    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "visual-anomaly:",
        timeout_s: float = 0.5,
        retry_after_s: float = 5.0,
    ) -> None:
        self.namespace = namespace
        self.retry_after_s = retry_after_s
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        kwargs = self.client.connection_pool.connection_kwargs
        self._where = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
        self._mutex = threading.Lock()
        self._down_since: float | None = None
        self._checked_at = float("-inf")
        self.last_error: str | None = None

    def _key(self, key: str) -> str:
        return self.namespace + key

    def _try(self, work: Callable[[], T]) -> T | None:
        """Run one Redis call unless Redis failed moments ago; a failure returns ``None``."""
        with self._mutex:
            if self._down_since is not None and time.monotonic() - self._down_since < self.retry_after_s:
                return None
        try:
            result = work()
        except (redis.RedisError, OSError) as exc:
            with self._mutex:
                self._down_since = self._checked_at = time.monotonic()
                self.last_error = f"{type(exc).__name__}: {exc}"
            return None
        with self._mutex:
            self._checked_at = time.monotonic()
            self._down_since = None
            self.last_error = None
        return result

    def get(self, key: str) -> bytes | None:
        value = self._try(lambda: self.client.get(self._key(key)))
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        if ttl_s is not None and ttl_s <= 0:  # expired on arrival, as in the in-process cache
            self.delete(key)
            return
        self._try(lambda: self.client.set(self._key(key), value, ex=ttl_s))

    def delete(self, key: str) -> None:
        self._try(lambda: self.client.delete(self._key(key)))

    @property
    def healthy(self) -> bool:
        """Whether Redis answered lately; asks it again when the last answer is ``retry_after_s`` old."""
        with self._mutex:
            stale = time.monotonic() - self._checked_at >= self.retry_after_s
        if stale:
            self._try(self.client.ping)
        with self._mutex:
            return self._down_since is None

    def describe(self) -> str:
        state = "" if self._down_since is None else f" (unreachable: {self.last_error})"
        return f"Redis at {self._where}{state}"

    def close(self) -> None:
        self.client.close()
