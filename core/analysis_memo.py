"""Values computed once per (collection version, name), without one lock around every computation.

The first caller of a key computes its value; callers of the same key meanwhile wait for that
result, or, inside ``waiting(False)``, get :class:`~core.errors.Busy` at once, so a page can say
"being computed" instead of hanging behind a graph or UMAP build that takes minutes at 1M images.
Callers of other keys, and of older versions, are not held up at all. The mutex here guards only
the table of futures, never a computation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from core.errors import Busy

T = TypeVar("T")
Key = tuple[int, str]

RETRY_AFTER_S = 5.0
_wait_for_others: ContextVar[bool] = ContextVar("wait_for_others", default=True)


@contextmanager
def waiting(wait: bool) -> Iterator[None]:
    """Within this block, with ``wait=False``, a value that another caller is computing raises
    ``Busy`` instead of being waited for (values nobody computes yet are computed here, as usual)."""
    token = _wait_for_others.set(wait)
    try:
        yield
    finally:
        _wait_for_others.reset(token)


class ComputedOnce:
    """A table of futures by key, bounded: only the newest version's values are kept (older ones
    while still being computed), and at most ``max_values`` of those, least recently used out."""

    def __init__(self, max_values: int | None = None) -> None:
        self.max_values = max_values
        self._futures: dict[Key, Future] = {}
        self._mutex = threading.Lock()
        self._newest = -1

    def get(self, version: int, name: str, compute: Callable[[], T]) -> T:
        key = (version, name)
        while True:
            with self._mutex:
                future = self._futures.pop(key, None)
                owner = future is None
                if owner:
                    future = Future()
                self._futures[key] = future  # (re)inserted last: the most recently used
                if owner:
                    self._prune(version)
            if owner:
                return self._compute(key, future, compute)
            if not future.done() and not _wait_for_others.get():
                raise Busy(f"the {name.split(':')[0]} of collection version {version}",
                           "being computed for another request", RETRY_AFTER_S)
            try:
                return future.result()
            except Busy:
                continue  # its first caller would not wait for another value: compute it here instead

    def peek(self, version: int, name: str) -> object | None:
        """The value if it has been computed, without computing or waiting."""
        with self._mutex:
            future = self._futures.get((version, name))
        if future is None or not future.done() or future.exception() is not None:
            return None
        return future.result()

    def _compute(self, key: Key, future: Future, compute: Callable[[], T]) -> T:
        try:
            value = compute()
        except BaseException as exc:
            with self._mutex:
                if self._futures.get(key) is future:
                    del self._futures[key]
            future.set_exception(exc)
            raise
        future.set_result(value)
        return value

    def _prune(self, version: int) -> None:
        self._newest = max(self._newest, version)
        done = [k for k, f in self._futures.items() if f.done()]
        for key in done:
            if key[0] < self._newest:
                del self._futures[key]
        if self.max_values is not None:
            for key in [k for k in done if k in self._futures][: max(0, len(self._futures) - self.max_values)]:
                del self._futures[key]

    def __len__(self) -> int:
        with self._mutex:
            return len(self._futures)
