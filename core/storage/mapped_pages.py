"""Handing back the pages of memory-mapped files that a full read has touched (Linux).

Qdrant Edge maps its vector file into the process: a full scroll touches every page of it (2 GB at a
million images; shards made before vectors were kept cold also populate it when they load), counted
in the process's resident memory beside the array the analysis reads the vectors into. Those pages
are the page cache's, not the process's: unmapping them here keeps them cached, and the next access
maps them again.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from pathlib import Path

_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
if _LIBC is not None:
    _LIBC.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def drop_mapped_pages(directory: Path) -> int:
    """Unmap the resident pages of every *shared* mapping of a file under ``directory``; returns the
    bytes of address space advised (0 where this is not Linux).

    MADV_DONTNEED on a shared file mapping changes no data: dirty pages stay dirty in the page cache
    and reach the file as they would have. Private mappings, whose written pages it would discard,
    are left alone.
    """
    if _LIBC is None:
        return 0
    prefix = str(directory.resolve()) + "/"
    advised = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or not fields[5].startswith(prefix) or fields[1][3] != "s":
                continue
            start, end = (int(address, 16) for address in fields[0].split("-"))
            if _LIBC.madvise(start, end - start, mmap.MADV_DONTNEED) == 0:
                advised += end - start
    return advised
