"""A scheduler process for the two-process test: runs one job against DATABASE_URL at a frozen instant.

Usage: python -m tests.scheduling.job_worker JOB NOW_ISO START_AT_EPOCH RUNS {runner|bare}

`runner` goes through `run_job_once` (advisory lock per job); `bare` calls the job's function in a plain unit of
work without that lock, to show that the row locks alone already keep two processes from doing an item twice.
Prints one line per run: the number processed, or "skipped" when the other process held the job's lock.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime


async def main(name: str, now: datetime, start_at: float, runs: int, mode: str) -> None:
    from booking.core.clock import set_clock
    from booking.core.db import dispose_engine, init_engine, unit_of_work
    from scheduling.runner import load_jobs, registered_jobs, run_job_once

    set_clock(lambda: now)
    init_engine()
    load_jobs()
    job = {j.name: j for j in registered_jobs()}[name]
    # Warm the pool before the start line so both processes hit the rows at the same moment.
    async with unit_of_work():
        pass
    await asyncio.sleep(max(0.0, start_at - time.time()))
    try:
        for _ in range(runs):
            if mode == "runner":
                done = await run_job_once(job, now)
            else:
                async with unit_of_work() as session:
                    done = await job.fn(session, now)
            print("skipped" if done is None else done, flush=True)
    finally:
        await dispose_engine()


if __name__ == "__main__":
    job_name, now_iso, start, count, how = sys.argv[1:6]
    asyncio.run(main(job_name, datetime.fromisoformat(now_iso), float(start), int(count), how))
