"""Server-side background jobs of the app (a training round, a pool build): one at a time per app, each
in a worker thread that owns the job from start to finish, whether or not a page is watching.

    from racq.ui.jobs import Jobs
    jobs = Jobs()                                   # the app keeps one in its AppContext (ctx.jobs)
    job = jobs.start("round", lambda j: train(progress=j.on_event))
    jobs.current()                                  # the running job, else the last one (or None)
    job.wait(60); job.status                        # 'done' | 'failed' once the thread has ended

Why not in the page's handler: Gradio cancels a generator when its page disconnects, so anything the
handler would do after the job (loading the new stage into the app) would be lost with a closed tab.
Handlers only watch a job (racq.ui.feedback polls it for the progress bar and the log).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger(__name__)


@dataclass
class Job:
    """A background job with what the screen shows about it."""

    kind: str
    status: str = "running"  # running | done | failed
    step: int = 0
    total: int = 0
    lines: list[str] = field(default_factory=list)
    result: object = None
    error: str | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    def log(self, msg: str) -> None:
        self.lines.append(f"{time.strftime('%H:%M:%S')}  {msg}")
        del self.lines[:-300]

    def text(self) -> str:
        return "\n".join(list(self.lines))

    def on_event(self, ev: dict) -> None:
        """racq.annotation.retrain progress events -> bar and log."""
        if ev.get("event") == "message":
            self.log(ev["message"])
            return
        self.step, self.total = ev.get("step", self.step), ev.get("max_steps") or self.total
        if ev.get("event") == "log" and ev.get("loss") is not None:
            self.log(f"step {self.step}/{self.total}  loss {ev['loss']:.4f}")

    def on_pool(self, done: int, total: int, msg: str) -> None:
        self.step, self.total = done, total
        self.log(msg)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker thread has ended (or timeout); True when it has."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self.status != "running"


def run_job(job: Job, fn: Callable[[Job], object]) -> None:
    """Run fn(job) and record how it ended. BaseException too (KeyboardInterrupt, SystemExit, a
    GeneratorExit thrown in): a job whose thread has ended is never left 'running'. Not re-raised: in
    a worker thread that would only print a second traceback."""
    try:
        job.result = fn(job)
        job.status = "done"
    except BaseException as e:  # noqa: BLE001 - shown on the screen; a round marks itself failed in the DB
        job.error, job.status = f"{type(e).__name__}: {e}", "failed"
        job.log(f"failed: {job.error}")
        log.error("%s job failed: %s", job.kind, job.error, exc_info=not isinstance(e, Exception))
    finally:
        if job.status == "running":  # unreachable unless the recording itself failed
            job.error, job.status = job.error or "the job ended without recording a result", "failed"


class Jobs:
    """One job at a time; the last one stays readable after it ends (a page opened later shows it)."""

    def __init__(self):
        self._job: Job | None = None
        self._guard = threading.Lock()

    def start(self, kind: str, fn: Callable[[Job], object]) -> Job:
        """Run fn(job) in a daemon thread, unless a job is running: then that job is returned."""
        with self._guard:
            if self._job is not None and self._job.status == "running":
                return self._job
            job = self._job = Job(kind)
            job.thread = threading.Thread(target=run_job, args=(job, fn), name=f"racq-{kind}", daemon=True)
            job.thread.start()
        return job

    def current(self) -> Job | None:
        return self._job
