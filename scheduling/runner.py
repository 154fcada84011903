"""The background job runner (APScheduler 3.x), run by `booking scheduler` or inside `booking serve`.

Jobs are thin: each run opens its own unit of work, takes a PostgreSQL advisory lock named after the job (so it
runs once even when several scheduler processes run), and calls one service over a range ("everything due up to
now and not yet processed"), which makes it idempotent and lets it catch up after downtime.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from booking.core.clock import utcnow
from booking.core.db import unit_of_work
from booking.core.locks import try_xact_lock

log = logging.getLogger("booking.jobs")

JobFn = Callable[[AsyncSession, datetime], Awaitable[int]]


@dataclass(frozen=True)
class Job:
    name: str
    fn: JobFn
    every_s: int
    description: str


_jobs: dict[str, Job] = {}


def register_job(name: str, fn: JobFn, every_s: int, description: str) -> None:
    _jobs[name] = Job(name, fn, every_s, description)


def registered_jobs() -> list[Job]:
    return sorted(_jobs.values(), key=lambda j: j.name)


async def run_job_once(job: Job, now: datetime | None = None) -> int | None:
    """Run one job under its advisory lock. Returns how many items it processed, or None if another process
    held the lock."""
    async with unit_of_work() as session:
        if not await try_xact_lock(session, f"job:{job.name}"):
            log.info("job %s skipped: running elsewhere", job.name)
            return None
        processed = await job.fn(session, now or utcnow())
    if processed:
        log.info("job %s processed %d item(s)", job.name, processed)
    return processed


def load_jobs() -> None:
    """Import the modules that register jobs (kept here so importing the runner alone has no side effects)."""
    import importlib

    for module in ("booking.jobs", "scheduling.jobs", "booking.audit.jobs"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


async def _watch_parent(parent_pid: int, stop: asyncio.Event, every_s: float = 2.0) -> None:
    """Stop when the process that started this one is gone (it was killed without stopping us first): the
    runner is then re-parented, and its parent id changes."""
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.warning("parent process %s is gone: stopping the job runner", parent_pid)
            stop.set()
            return
        await asyncio.sleep(every_s)


async def run_forever(parent_pid: int | None = None) -> None:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    load_jobs()
    scheduler = AsyncIOScheduler(timezone="UTC")
    for job in registered_jobs():
        # coalesce + max_instances=1: a late or overlapping run is merged, never stacked; the job itself
        # catches up over the whole missed range.
        scheduler.add_job(run_job_once, "interval", seconds=job.every_s, args=[job], id=job.name,
                          coalesce=True, max_instances=1, next_run_time=utcnow())
        log.info("scheduled %s every %ss: %s", job.name, job.every_s, job.description)
    if not _jobs:
        log.info("no jobs registered")
    scheduler.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_watch_parent(parent_pid, stop)) if parent_pid is not None else None
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    scheduler.shutdown(wait=True)
