"""Extraction jobs: one queue per device, each job watchable and cancellable by id.

A job's id is its run id, so the same request while a job runs joins that job instead of starting
another. Jobs outlive the callers that started them; finished jobs are kept (the last
`KEEP_FINISHED`) so a caller can still read how they ended.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from neuronmap.errors import NeuronMapError, NotFound
from neuronmap.lake import PointInfo
from neuronmap_extractor.extraction import Prepared, Progress

KEEP_FINISHED = 1000
TERMINAL = ("complete", "failed", "cancelled")


@dataclass(frozen=True)
class JobView:
    """An immutable snapshot of a job, as watchers see it."""

    job_id: str
    run_id: str
    state: str  # queued | loading | running | complete | failed | cancelled
    progress: Progress
    points: tuple[PointInfo, ...] = ()
    message: str = ""
    warnings: tuple[str, ...] = ()
    cached: bool = False
    uri: str = ""
    error_code: str = ""
    resumed: bool = False
    version: int = 0

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL


@dataclass
class Job:
    """A job and the condition its watchers wait on; change it only through `update`."""

    prepared: Prepared
    view: JobView
    cancel: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def update(self, **changes: object) -> JobView:
        with self.changed:
            self.view = replace(self.view, version=self.view.version + 1, **changes)  # type: ignore[arg-type]
            self.changed.notify_all()
            return self.view


Runner = Callable[[Job], None]


class JobQueue:
    """Runs jobs one at a time on a worker thread (one device, one job)."""

    def __init__(self, runner: Runner, name: str = "device") -> None:
        self._runner = runner
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._finished: collections.deque[str] = collections.deque()
        self._pending: collections.deque[Job] = collections.deque()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name=f"jobs-{name}", daemon=True)
        self._worker.start()

    def submit(self, prepared: Prepared, warnings: tuple[str, ...] = ()) -> tuple[Job, bool]:
        """Queues a job for the prepared request; returns (job, joined) where joined means it was running."""
        with self._lock:
            existing = self._jobs.get(prepared.run_id)
            if existing is not None and not existing.view.finished:
                return existing, True
            view = JobView(
                job_id=prepared.run_id,
                run_id=prepared.run_id,
                state="queued",
                progress=Progress(prompts_total=len(prepared.request.prompts)),
                warnings=warnings,
            )
            job = Job(prepared=prepared, view=view)
            self._jobs[job.view.job_id] = job
            self._pending.append(job)
            self._wake.notify()
            return job, False

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(
                f"no job {job_id} on this extractor (finished jobs are kept until {KEEP_FINISHED} more end)"
            )
        return job

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def cancel(self, job_id: str) -> JobView:
        job = self.get(job_id)
        job.cancel.set()
        with self._lock:
            if job in self._pending:
                self._pending.remove(job)
                self._finish(job)
                return job.update(state="cancelled", message="cancelled before it started")
        return job.view

    def watch(self, job_id: str, keep_going: Callable[[], bool], poll: float = 0.5) -> Iterator[JobView]:
        """Yields the job's view now and after every change, until it ends or keep_going() is false."""
        job = self.get(job_id)
        seen = -1
        while keep_going():
            with job.changed:
                if job.view.version == seen:
                    job.changed.wait(timeout=poll)
                view = job.view
            if view.version != seen:
                seen = view.version
                yield view
                if view.finished:
                    return

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for job in self._jobs.values():
                job.cancel.set()
            self._wake.notify_all()
        self._worker.join(timeout=30)

    def _finish(self, job: Job) -> None:
        self._finished.append(job.view.job_id)
        while len(self._finished) > KEEP_FINISHED:
            self._jobs.pop(self._finished.popleft(), None)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                job = self._pending.popleft()
            try:
                self._runner(job)
            except NeuronMapError as error:
                state = "cancelled" if error.code == "CANCELLED" else "failed"
                job.update(state=state, message=str(error), error_code=error.code)
            except Exception as error:  # a job's failure must not stop the queue
                job.update(state="failed", message=f"{type(error).__name__}: {error}", error_code="INTERNAL")
            if not job.view.finished:
                job.update(state="failed", message="the job ended without a result", error_code="INTERNAL")
            with self._lock:
                self._finish(job)
