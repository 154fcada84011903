"""The job runner started by `booking demo` stops by itself once the demo process is gone."""

from __future__ import annotations

import asyncio
import os

from scheduling.runner import _watch_parent


async def test_stops_when_the_parent_is_gone() -> None:
    stop = asyncio.Event()
    await asyncio.wait_for(_watch_parent(os.getppid() + 1_000_000, stop, every_s=0.01), timeout=2)
    assert stop.is_set()


async def test_keeps_running_while_the_parent_lives() -> None:
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_parent(os.getppid(), stop, every_s=0.01))
    await asyncio.sleep(0.1)
    assert not stop.is_set() and not watcher.done()
    stop.set()
    await asyncio.wait_for(watcher, timeout=2)
