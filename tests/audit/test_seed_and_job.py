"""Demo usage seeding and the audit.snapshot job."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.audit import repository as repo
from booking.audit import service
from booking.audit.jobs import audit_snapshot
from booking.audit.rules import AsOf
from booking.audit.seed import seed_usage
from booking.core.clock import set_clock
from scheduling.runner import registered_jobs
from tests.audit import world as w


async def _scalar(session: AsyncSession, sql: str, **params: Any) -> Any:
    return (await session.execute(text(sql), params)).scalar_one()


async def test_seed_usage_gives_mianyang_a_drill_down(session: AsyncSession, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKING_DEMO_SCALE", "0.05")
    result = await seed_usage(session, rng_seed=7)
    assert result.records > 100 and result.instruments_added > 0
    ext = await _scalar(session, """
        SELECT count(*) FROM service_records r JOIN instruments i ON i.id = r.instrument_id
        WHERE i.city_code = '510700' AND r.is_external""")
    assert ext > 0
    # Records only after the instrument was registered, external ones only after it opened to outside users.
    bad = await _scalar(session, """
        SELECT count(*) FROM service_records r
        WHERE r.ended_at < (SELECT min(valid_from) FROM instrument_history h WHERE h.instrument_id = r.instrument_id)
           OR (r.is_external AND r.ended_at < (SELECT min(valid_from) FROM instrument_history h
                                               WHERE h.instrument_id = r.instrument_id
                                                 AND h.sharing_mode = 'external'))
           OR (r.is_external AND r.user_institution_id = r.provider_institution_id)""")
    assert bad == 0
    # The trigger-kept summary equals a rebuild from the raw rows.
    before = (await session.execute(text(
        "SELECT sum(records), sum(hours), sum(external_hours), sum(rating_sum) FROM audit_usage_monthly"))).one()
    await repo.rebuild_usage_summary(session)
    after = (await session.execute(text(
        "SELECT sum(records), sum(hours), sum(external_hours), sum(rating_sum) FROM audit_usage_monthly"))).one()
    assert tuple(before) == tuple(after) and before[0] == result.records
    # A second run does nothing.
    assert (await seed_usage(session, rng_seed=7)).records == 0
    d = service.definitions()
    today = service.today()
    head = (await repo.sharing_counts(session, AsOf(today), today, d, repo.Filters(), None))[0]
    assert head["registered"] > 0 and head["shared"] > 0 and head["open"] > 0


class TestSnapshotJob:
    async def test_registered_and_idempotent(self, session: AsyncSession) -> None:
        from scheduling.runner import load_jobs

        load_jobs()
        assert "audit.snapshot" in {j.name for j in registered_jobs()}
        await w.build(session)
        first = await audit_snapshot(session, w.NOW)
        assert first > 0
        assert await audit_snapshot(session, w.NOW) == 0
        months = await _scalar(session, "SELECT count(DISTINCT month) FROM audit_monthly_figures")
        assert months == 17  # 2025-01 .. 2026-05

    async def test_spans_open_and_close(self, session: AsyncSession) -> None:
        world = await w.build(session)
        await service.snapshot(session, date(2026, 6, 10))
        await session.execute(text("DELETE FROM opening_windows WHERE instrument_id = :i"), {"i": world.ids["A1"]})
        set_clock(lambda: w.local(2026, 6, 13))
        await service.snapshot(session, date(2026, 6, 13))
        spans = (await session.execute(text(
            "SELECT valid_from, valid_to FROM audit_published_spans WHERE instrument_id = :i"),
            {"i": world.ids["A1"]})).all()
        assert spans == [(date(2026, 6, 10), date(2026, 6, 12))]
        d = service.definitions()
        f = repo.Filters(instrument_id=world.ids["A1"])
        rows, _ = await repo.instruments_behind(session, AsOf(date(2026, 6, 11)), date(2026, 6, 13), d, f, "open",
                                                sort="id", limit=5, offset=0)
        assert len(rows) == 1
        rows, _ = await repo.instruments_behind(session, AsOf(date(2026, 6, 12)), date(2026, 6, 13), d, f, "open",
                                                sort="id", limit=5, offset=0)
        assert len(rows) == 1
        rows, _ = await repo.instruments_behind(session, AsOf(date(2026, 6, 13)), date(2026, 6, 13), d, f, "open",
                                                sort="id", limit=5, offset=0)
        assert rows == []
