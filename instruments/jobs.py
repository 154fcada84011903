"""The catalogue's background job: keeping postings and counts for the search terms that became common."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from booking.core.db import unit_of_work
from instruments import service


async def promote_frequent_terms(session: AsyncSession, now: datetime) -> int:
    """Find the terms common enough now (read in the runner's transaction) and add them a batch at a time, each
    batch in its own transaction: adding holds the lock every catalogue writer takes, and the first run on a large
    catalogue adds hundreds of terms, so writers wait a second or two between batches instead of a minute for all
    of them. Idempotent: terms already added are skipped; a later run picks up where a failed one stopped."""
    added = 0
    for terms in service.frequent_term_batches(await service.frequent_term_candidates(session)):
        async with unit_of_work() as batch:
            added += await service.add_frequent_terms(batch, terms)
    if added:
        async with unit_of_work() as batch:
            await service.analyze_frequent_terms(batch)
    return added
