"""Handing back a shared mapping's pages: resident memory drops, no data changes."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import pytest

from core.storage.mapped_pages import drop_mapped_pages

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="madvise and /proc/self/maps are Linux's")
SIZE = 64 * 2**20


def _resident_file_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("RssFile:"))
    return int(line.split()[1]) / 1024


def test_dropping_a_shared_mapping_frees_its_pages_and_keeps_what_was_written(tmp_path: Path) -> None:
    folder = tmp_path / "shard"
    folder.mkdir()
    path = folder / "vectors.bin"
    path.write_bytes(bytes(range(256)) * (SIZE // 256))
    other = tmp_path / "elsewhere.bin"
    other.write_bytes(b"\x01" * SIZE)
    with open(path, "r+b") as f, open(other, "r+b") as g:
        mapped = mmap.mmap(f.fileno(), SIZE, flags=mmap.MAP_SHARED)
        kept = mmap.mmap(g.fileno(), SIZE, flags=mmap.MAP_SHARED)
        before = _resident_file_mb()
        assert sum(mapped[i + 1] for i in range(0, SIZE, 4096)) and sum(kept[i] for i in range(0, SIZE, 4096))
        mapped[5:9] = b"edit"  # a dirty page of the mapping
        touched = _resident_file_mb()
        assert touched - before > 100  # both files' pages are resident now

        assert drop_mapped_pages(folder) >= SIZE
        dropped = _resident_file_mb()
        assert touched - dropped > 56  # the shard folder's pages went; the other file's stayed
        assert dropped - before > 56
        assert mapped[5:9] == b"edit" and mapped[SIZE - 1] == 255  # the data, mapped again on access
        mapped.close()
        kept.close()
    assert path.read_bytes()[:12] == bytes(range(5)) + b"edit" + bytes(range(9, 12))
