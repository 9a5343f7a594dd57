"""Pages: how the facade hands out long lists (duplicate groups, anomaly rows, search hits, images).

A caller asks for ``limit`` items from ``offset`` of a list sorted by the server, and gets them with
the list's ``total``, so a page never costs a whole collection to build or to send.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from core.errors import InvalidRequest

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000  # a bigger list is an export: use the whole-view calls or the CLI's CSV


@dataclass(frozen=True)
class Page(Generic[T]):
    """Items ``offset`` to ``offset + len(items)`` of ``total``, in the server's order."""

    items: tuple[T, ...]
    offset: int
    limit: int
    total: int

    @property
    def next_offset(self) -> int | None:
        """Where the next page starts, or ``None`` after the last one."""
        end = self.offset + len(self.items)
        return end if end < self.total else None


def check_page(offset: int, limit: int, max_limit: int = MAX_LIMIT) -> None:
    """Reject an unusable offset or limit before any work, naming the field."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidRequest("offset", f"must be a whole number, 0 or more (got {offset!r})")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= max_limit:
        raise InvalidRequest("limit", f"must be a whole number from 1 to {max_limit} (got {limit!r})")


def page_of(items: Sequence[T], offset: int, limit: int) -> Page[T]:
    """The page of an already sorted list (checked first)."""
    check_page(offset, limit)
    return Page(tuple(items[offset:offset + limit]), offset, limit, len(items))
