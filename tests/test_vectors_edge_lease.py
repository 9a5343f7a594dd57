"""The embedded shard's lease: one process at a time, handed over on request, bounded waits."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from core.collection import Collection
from core.storage.errors import StoreBusy
from core.storage.vectors_edge import EdgeVectorStore
from core.synthetic import encode, photo

ROOT = Path(__file__).resolve().parents[1]


def _unit(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _holder_process(path: Path, hold_s: float) -> subprocess.Popen:
    """Another process that opens the shard and stays inside one long operation."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from core.storage.vectors_edge import EdgeVectorStore
        store = EdgeVectorStore(Path({str(path)!r}), 8)
        with store._session():
            print("holding", flush=True)
            time.sleep({hold_s})
        store.close()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


def test_waiter_gets_store_busy_naming_the_holder_after_its_timeout(tmp_path: Path) -> None:
    holder = _holder_process(tmp_path / "v", hold_s=30)
    try:
        waiter = EdgeVectorStore(tmp_path / "v", 8, lock_timeout_s=1)
        start = time.monotonic()
        with pytest.raises(StoreBusy, match=f"pid.{{0,4}}{holder.pid}") as raised:
            waiter.count()
        assert 0.9 <= time.monotonic() - start < 5
        assert "LOCK_TIMEOUT_S" in str(raised.value)
    finally:
        holder.kill()
        holder.wait()


def test_idle_holder_hands_the_shard_over_to_a_waiting_process(tmp_path: Path) -> None:
    first = EdgeVectorStore(tmp_path / "v", 8, idle_release_s=3600)  # would keep it for an hour
    ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(5)]
    first.upsert(ids, _unit(5), [{} for _ in ids])
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from core.storage.vectors_edge import EdgeVectorStore
        print(EdgeVectorStore(Path({str(tmp_path / "v")!r}), 8, lock_timeout_s=10).count())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "5"  # the other process saw every acknowledged point
    assert first.count() == 5  # and the first one takes the shard back when it needs it
    first.close()


def test_points_survive_a_killed_process(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, numpy as np
        from pathlib import Path
        from core.storage.vectors_edge import EdgeVectorStore
        store = EdgeVectorStore(Path({str(tmp_path / "v")!r}), 8)
        v = np.eye(8, dtype=np.float32)
        store.upsert([f"00000000-0000-0000-0000-{{i:012d}}" for i in range(8)], v, [{{}}] * 8)
        os.kill(os.getpid(), 9)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == -9
    store = EdgeVectorStore(tmp_path / "v", 8)
    assert store.count() == 8
    hit = store.search(np.eye(8, dtype=np.float32)[3], 1)[0]
    assert hit.id.endswith("000000000003") and hit.score == pytest.approx(1.0)
    store.close()


def _held(store_path: Path) -> bool:
    """Whether some process holds the shard, asked without announcing a wait (no hand-over follows)."""
    with open(store_path / "shard.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


def test_a_resting_store_hands_the_shard_back_at_once_and_takes_it_again_when_asked(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path / "v", 8, idle_release_s=3600)  # would keep it for an hour
    ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(5)]
    store.upsert(ids, _unit(5), [{} for _ in ids])
    assert _held(tmp_path / "v")
    store.rest()
    assert not _held(tmp_path / "v")
    assert store.count() == 5 and _held(tmp_path / "v")
    store.close()


def test_the_first_full_read_of_the_vectors_hands_the_shard_back(collection: Collection) -> None:
    """A full scan maps every page of the shard (half a GiB at 100k images); the analysis after it never
    reads them, so the snapshot does not keep them for the idle delay."""
    collection.ingest_uploads([(f"p{i}.jpg", encode(photo(i))) for i in range(3)])
    collection.backends.vectors.count()
    assert _held(collection.backends.vectors.path)
    assert len(collection.snapshot().ids) == 3
    assert not _held(collection.backends.vectors.path)


def test_a_kept_open_store_outlasts_its_idle_delay_yet_yields_to_a_waiting_process(tmp_path: Path) -> None:
    """A first snapshot reads the catalog (47 s at a million images) between its first page of
    vectors and the rest: idle that long, the shard was handed back and loaded again, mapping in its
    whole vector file a second time while the catalog's rows were in memory."""
    store = EdgeVectorStore(tmp_path / "v", 8, idle_release_s=0.2)
    ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(5)]
    store.upsert(ids, _unit(5), [{} for _ in ids])
    with store.kept_open():
        time.sleep(0.6)
        assert _held(tmp_path / "v")  # idle three times its delay, still loaded
        holder = _holder_process(tmp_path / "v", hold_s=0.1)  # waits for it, and gets it
        holder.wait(timeout=10)
        assert holder.returncode == 0 and not _held(tmp_path / "v")
        assert store.count() == 5  # loaded again when asked
    time.sleep(0.6)
    assert not _held(tmp_path / "v")  # out of kept_open, idle time counts again
    store.close()


def _resident_vector_files_mb(shard: Path) -> float:
    """Resident size of this process's mappings of the shard's vector storage files."""
    resident, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                inside = len(fields) == 6 and fields[5].startswith(str(shard)) and "vector_storage" in fields[5]
            elif inside and fields[0] == "Rss:":
                resident += int(fields[1])
    return resident / 1024


@pytest.mark.skipif(sys.platform != "linux", reason="reads the resident size from /proc")
def test_loading_a_shard_leaves_its_vectors_on_disk_until_a_search_reads_them(tmp_path: Path) -> None:
    dim, n = 2048, 10_000  # an 80 MB vector file
    vectors = _unit(n, dim)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(n)]
    store = EdgeVectorStore(tmp_path / "v", dim)
    for s in range(0, n, 2_000):
        store.upsert(ids[s:s + 2_000], vectors[s:s + 2_000], [{}] * 2_000)
    store.close()

    reopened = EdgeVectorStore(tmp_path / "v", dim)
    assert reopened.count() == n  # loads the shard
    assert _resident_vector_files_mb(tmp_path.resolve()) < 8  # warmed, the whole 80 MB file would be resident
    hits = reopened.search(vectors[1234], 3, exact=True)
    assert hits[0].id == ids[1234] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert _resident_vector_files_mb(tmp_path.resolve()) > 40  # an exact search read them all
    reopened.close()
