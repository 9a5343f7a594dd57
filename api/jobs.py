"""Upload jobs: a large batch is ingested in the background while the client polls for progress.

Jobs live in this process's memory (a restart forgets them, the images they stored stay); each is
visible to the user who started it and to admins.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from core import IngestReport


@dataclass
class Job:
    id: str
    owner: str
    total: int
    done: int = 0
    state: str = "running"  # running | finished | failed
    result: dict | None = None
    error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def to_json(self) -> dict:
        with self.lock:
            return {"id": self.id, "state": self.state, "done": self.done, "total": self.total,
                    "result": self.result, "error": self.error}


class Jobs:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, owner: str, total: int, work: Callable[[Callable[[int, int], None]], IngestReport]) -> Job:
        """Run ``work(progress)`` in a thread; its report becomes the job's result."""
        job = Job(id=uuid.uuid4().hex, owner=owner, total=total)
        with self._lock:
            self._jobs[job.id] = job

        def progress(done: int, _total: int) -> None:
            with job.lock:
                job.done = done

        def run() -> None:
            try:
                report = work(progress)
            except Exception as exc:  # the job reports it; the thread must not die silently
                with job.lock:
                    job.state, job.error = "failed", str(exc)
                return
            with job.lock:
                job.state, job.done, job.result = "finished", job.total, report.to_json()

        threading.Thread(target=run, name=f"upload-job-{job.id[:8]}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)
