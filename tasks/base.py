"""One job class for every action: claim the record, log into numbered rows, honour cancel, record the end.

A job takes the primary key of its ``Job`` row and re-reads it.  Jobs on
one target (a container, a template) are serialised by a lock on the node;
jobs on different targets run side by side in the worker's processes.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import re
import socket
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from celery import Task
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone

from engine.errors import Cancelled, EngineError
from webui.live import publish, publish_job_lines
from webui.models import Job, JobLine

log = logging.getLogger(__name__)
PROGRESS_INTERVAL = 0.25  # seconds between progress writes (and live pushes)
CANCEL_POLL_INTERVAL = 0.5


FINISH_PATIENCE = 120.0  # seconds a job's end waits for PostgreSQL to come back before it gives up


def reconnecting(patience: float = 0.0):
    """Run a job's write to its record again on a new connection if PostgreSQL dropped the old one.

    A job holds its connection for its whole run; a PostgreSQL restarted meanwhile leaves it dead, and
    Celery checks connections only between tasks, so the job's next log line, and then its end, would fail
    and leave the row ``running`` under a live worker forever.  Outside a transaction the write is tried
    again on a fresh connection, for ``patience`` seconds if the server is still coming back (a job's end
    must not be lost); inside one it is not (the transaction is gone with the connection).
    """

    def wrap(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            deadline = time.monotonic() + patience
            while True:
                try:
                    return fn(*args, **kwargs)
                except (OperationalError, InterfaceError):
                    if connection.in_atomic_block:
                        raise
                    connection.close()
                    try:
                        return fn(*args, **kwargs)
                    except (OperationalError, InterfaceError):
                        if connection.in_atomic_block or time.monotonic() >= deadline:
                            raise
                        log.warning("the database does not answer; the job's record waits for it")
                        time.sleep(1.0)

        return wrapper

    return wrap


class JobCancelled(Cancelled):
    """The job's cancel flag was found set between two steps of the job's own code."""


class JobContext:
    """What a running job uses to talk to its record: log lines, progress, the cancel flag."""

    def __init__(self, job: Job):
        self.job = job
        self.seq = JobLine.objects.filter(job=job).count()
        self._last_progress = 0.0
        self._last_cancel_check = 0.0
        self.cancel_event = threading.Event()  # for engine calls that take one (downloads)

    @property
    def params(self) -> dict:
        return self.job.params

    def log(self, text: str) -> None:
        rows = []
        for line in str(text).splitlines() or [""]:
            self.seq += 1
            rows.append(JobLine(job=self.job, seq=self.seq, text=line))
        reconnecting()(JobLine.objects.bulk_create)(rows)
        publish_job_lines(self.job.pk, [{"seq": r.seq, "time": r.time.isoformat(), "text": r.text} for r in rows])

    def progress(self, done: int | float, total: int | float | None, text: str = "", force: bool = False) -> None:
        """Record how far the job is; throttled, so engines may call it for every chunk."""
        now = time.monotonic()
        self.check_cancel()
        if not force and now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        fraction = min(1.0, done / total) if total else None
        self._record_progress(fraction, text)
        self.job.progress, self.job.progress_text = fraction, text[:255]
        publish([self.job.path], {"type": "job", "job": self.job.summary()})

    @reconnecting()
    def _record_progress(self, fraction: float | None, text: str) -> None:
        Job.objects.filter(pk=self.job.pk).update(progress=fraction, progress_text=text[:255])

    def check_cancel(self) -> None:
        now = time.monotonic()
        if now - self._last_cancel_check >= CANCEL_POLL_INTERVAL:
            self._last_cancel_check = now
            if self._cancel_requested():
                self.cancel_event.set()
        if self.cancel_event.is_set():
            raise JobCancelled()

    @reconnecting()
    def _cancel_requested(self) -> bool:
        return Job.objects.filter(pk=self.job.pk, cancel_requested=True).exists()


def worker_alive(worker: str) -> bool:
    """Whether the ``host:pid`` that claimed a job is a live process of this host."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EngineLogToJob(logging.Handler):
    """Puts what the engine logs at WARNING and above, while a job runs, into that job's log.

    The engine reports things a user should see but that do not fail the
    operation (NAT on without forwarding, an interrupted create cleaned up)
    through ``logging``; without this they reached only the agent's own log.
    Records from other threads are left alone: they belong to no job.
    """

    def __init__(self, ctx: JobContext):
        super().__init__(logging.WARNING)
        self.ctx = ctx
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        try:
            self.ctx.log(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - logging must never fail the job
            self.handleError(record)

    @contextmanager
    def installed(self):
        engine_log = logging.getLogger("engine")
        engine_log.addHandler(self)
        try:
            yield
        finally:
            engine_log.removeHandler(self)


class JobTask(Task):
    """Base of every job.  Subclasses set ``name`` and implement ``perform(ctx)``; ``after(ctx)`` always runs."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = False  # a job whose worker died is marked failed, never run twice

    def run(self, job_id: int) -> None:
        close_old_connections()
        try:
            job = Job.objects.select_related("node", "user").get(pk=job_id)
        except Job.DoesNotExist:
            log.warning("job %s vanished before it ran", job_id)
            return
        if job.status == Job.Status.RUNNING:
            if worker_alive(job.worker):
                # Redis hands an unacknowledged message out again after the broker's visibility timeout,
                # so a job longer than that is delivered twice: the copy leaves the running one alone.
                log.warning(
                    "job %s delivered again while %s still runs it (broker visibility timeout); ignored",
                    job_id,
                    job.worker,
                )
                return
            # Delivered again after the worker that ran it died: say so rather than run it twice.
            self._finish(
                job,
                Job.Status.ERROR,
                "the node agent stopped while this job ran; check the target's state before retrying",
            )
            return
        if job.status != Job.Status.QUEUED:
            return  # cancelled while queued
        with self._serialised(job):
            claimed = Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
                status=Job.Status.RUNNING, started=timezone.now(), worker=f"{socket.gethostname()}:{os.getpid()}"
            )
            if not claimed:
                return
            job.refresh_from_db()
            publish([job.path], {"type": "job", "job": job.summary()})
            ctx = JobContext(job)
            status, message = Job.Status.OK, "OK"
            try:
                ctx.log(f"starting {job.kind} {job.target}".rstrip())
                with EngineLogToJob(ctx).installed():
                    message = self.perform(ctx) or "OK"
            except Cancelled:
                status, message = Job.Status.CANCELLED, "cancelled"
            except EngineError as exc:
                status, message = Job.Status.ERROR, str(exc)
            except Exception as exc:  # noqa: BLE001 - recorded in the job, with its traceback
                ctx.log(traceback.format_exc())
                status, message = Job.Status.ERROR, f"internal error: {exc}"
            finally:
                try:
                    self.after(ctx)
                except Exception:  # noqa: BLE001 - the job's own outcome matters more
                    log.exception("after-job step of %s failed", job)
            ctx.log(f"TASK {'OK' if status == Job.Status.OK else message}")
            self._finish(job, status, message)

    def perform(self, ctx: JobContext) -> str | None:
        raise NotImplementedError

    def after(self, ctx: JobContext) -> None:
        """Runs whatever the outcome: mirror the node's state back into the database."""

    @staticmethod
    @reconnecting(FINISH_PATIENCE)
    def _finish(job: Job, status: str, message: str) -> None:
        Job.objects.filter(pk=job.pk).update(
            status=status,
            message=message,
            ended=timezone.now(),
            progress=1.0 if status == Job.Status.OK else job.progress,
        )
        job.refresh_from_db()
        publish([job.path], {"type": "job", "job": job.summary()})

    @contextmanager
    def _serialised(self, job: Job):
        from tasks.runtime import node_engine

        directory = Path(node_engine().layout.run) / "jobs"
        directory.mkdir(parents=True, exist_ok=True)
        # One container, or one template (node-level jobs are keyed by their target).
        scope = job.path if job.path.startswith("/ct/") else f"{job.path}:{job.target}"
        key = re.sub(r"[^A-Za-z0-9_.-]", "_", scope)
        fd = os.open(directory / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
