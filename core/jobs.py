"""Background ingest jobs: a large upload is ingested in a thread while the caller polls its progress.

Where a job's state lives decides who can answer for it. Each state change is written to the cache
(``job:<id>``, kept :data:`JOB_TTL_S` after the last change): with Redis (``REDIS_URL``) every API
worker and replica answers for every job, whichever one started it. With the in-process cache (no
Redis) only the process that started a job knows it; the others answer "no such job" and say why.
The process running a job also keeps it in memory, so it answers for its own jobs while Redis is
down. A restart loses running jobs; the images they stored stay, and sending the batch again reports
them as already present.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from core.ingest import IngestReport, Progress
from core.storage.cache import Cache

JOB_TTL_S = 24 * 3600
_WRITE_EVERY_S = 0.5  # progress reaches the cache at most this often (and always at the end)


@dataclass(frozen=True)
class JobState:
    """One job as its poller sees it."""

    id: str
    owner: str  # the user who started it: they and admins may read it
    total: int  # files
    done: int = 0
    state: str = "running"  # running | finished | failed
    result: dict | None = None  # finished: the ingest report, as `ingest --json`
    error: str | None = None  # failed: why
    updated_at: float = 0.0

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("owner", "updated_at")}


class Jobs:
    """The jobs of one collection, shared by every view of it (see the module docstring)."""

    def __init__(self, cache: Cache, shared: bool) -> None:
        self.cache = cache
        self.shared = shared  # True when the cache is one every process sees (Redis)
        self._local: dict[str, JobState] = {}
        self._lock = threading.Lock()

    def _save(self, job: JobState) -> JobState:
        job = replace(job, updated_at=time.time())
        with self._lock:
            self._local[job.id] = job
        self.cache.set(f"job:{job.id}", json.dumps(asdict(job)).encode(), JOB_TTL_S)
        return job

    def start(self, owner: str, total: int, work: Callable[[Progress], IngestReport]) -> JobState:
        """Run ``work(progress)`` in a thread; its report becomes the job's result."""
        self._forget_expired()
        job = self._save(JobState(id=uuid.uuid4().hex, owner=owner, total=total))
        written = [time.monotonic()]

        def progress(done: int, _total: int) -> None:
            if time.monotonic() - written[0] >= _WRITE_EVERY_S:
                written[0] = time.monotonic()
                self._save(replace(self._local[job.id], done=done))

        def run() -> None:
            try:
                report = work(progress)
            except Exception as exc:  # the job reports it; the thread must not die silently
                self._save(replace(job, state="failed", error=str(exc)))
                return
            self._save(replace(job, state="finished", done=total, result=report.to_json()))

        threading.Thread(target=run, name=f"ingest-job-{job.id[:8]}", daemon=True).start()
        return job

    def get(self, job_id: str) -> JobState | None:
        """This process's copy of its own job, else the cache's (another worker's job, with Redis)."""
        with self._lock:
            found = self._local.get(job_id)
        if found is not None:
            return found
        raw = self.cache.get(f"job:{job_id}")
        return None if raw is None else JobState(**json.loads(raw))

    def _forget_expired(self) -> None:
        cutoff = time.time() - JOB_TTL_S
        with self._lock:
            for job_id in [i for i, j in self._local.items() if j.state != "running" and j.updated_at < cutoff]:
                del self._local[job_id]
