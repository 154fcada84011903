"""JSON API for managers: opening hours, blackouts, rules, qualifications, no-show blocks; admins: holidays."""

from __future__ import annotations

from datetime import date, time
from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import Response

from booking.auth.deps import ApiAdmin, ApiUser
from booking.core.db import SessionDep
from scheduling import editor
from scheduling import qualifications as quals
from scheduling.models import HolidayOverride, InstrumentRules, OpeningWindow, ScheduleOverride
from scheduling.schemas import (
    AffectedBooking,
    BlackoutCreated,
    BlackoutIn,
    BlackoutPublic,
    BlockPublic,
    ClosurePublic,
    HolidayDay,
    HolidayOverrideIn,
    HolidayOverridePublic,
    HolidayYear,
    LiftBlockIn,
    OverrideIn,
    OverridePublic,
    QualificationIn,
    QualificationPublic,
    RulesIn,
    RulesPublic,
    ScheduleChange,
    ScheduleOut,
    Span,
    WindowIn,
    WindowPublic,
    WindowsIn,
)

router = APIRouter(prefix="/api/v1", tags=["schedule"])


def window_public(w: OpeningWindow) -> WindowPublic:
    return WindowPublic(id=w.id, weekday=w.weekday, start=w.start_time, end=w.end_time,  # type: ignore[arg-type]
                        valid_from=w.valid_from, valid_to=w.valid_to)


def override_public(o: ScheduleOverride) -> OverridePublic:
    return OverridePublic(id=o.id, day=o.day, reason=o.reason,  # type: ignore[arg-type]
                          windows=[Span(start=time.fromisoformat(a), end=time.fromisoformat(b)) for a, b in o.windows])


def affected_public(items: list[editor.Affected]) -> list[AffectedBooking]:
    return [AffectedBooking(
        booking_id=a.booking.id, status=a.booking.status, start=a.booking.start_at, end=a.booking.end_at,  # type: ignore[arg-type]
        user_id=a.booking.user_id, user_name=a.user.name if a.user else "",
        closures=[ClosurePublic(start=c.interval.start, end=c.interval.end, reason=c.reason) for c in a.closures],
    ) for a in items]


def rules_public(row: InstrumentRules) -> RulesPublic:
    return RulesPublic.model_validate(row)


async def _schedule(session: SessionDep, principal: ApiUser, instrument_id: int) -> ScheduleOut:
    s = await editor.get_schedule(session, principal, instrument_id)
    return ScheduleOut(instrument_id=instrument_id, windows=[window_public(w) for w in s.windows],
                       overrides=[override_public(o) for o in s.overrides],
                       blackouts=[BlackoutPublic.model_validate(b) for b in s.blackouts])


async def _change(session: SessionDep, principal: ApiUser, instrument_id: int, result: editor.ChangeResult
                  ) -> ScheduleChange:
    current = await _schedule(session, principal, instrument_id)
    return ScheduleChange(**current.model_dump(), affected=affected_public(result.affected), notified=result.notified)


@router.get("/instruments/{instrument_id}/schedule", response_model=ScheduleOut,
            summary="Managers: weekly windows, date overrides and blackouts of an instrument")
async def get_schedule(session: SessionDep, principal: ApiUser, instrument_id: int) -> ScheduleOut:
    return await _schedule(session, principal, instrument_id)


@router.put("/instruments/{instrument_id}/schedule/windows", response_model=ScheduleChange,
            summary="Replace the weekly opening windows; lists (and notifies) bookings now outside them")
async def replace_windows(session: SessionDep, principal: ApiUser, instrument_id: int, data: WindowsIn
                          ) -> ScheduleChange:
    result = await editor.replace_windows(session, principal, instrument_id, data.windows)
    return await _change(session, principal, instrument_id, result)


@router.post("/instruments/{instrument_id}/schedule/windows", response_model=ScheduleChange,
             status_code=status.HTTP_201_CREATED, summary="Add one weekly opening window")
async def add_window(session: SessionDep, principal: ApiUser, instrument_id: int, data: WindowIn) -> ScheduleChange:
    result = await editor.add_window(session, principal, instrument_id, data)
    return await _change(session, principal, instrument_id, result)


@router.delete("/instruments/{instrument_id}/schedule/windows/{window_id}", response_model=ScheduleChange)
async def delete_window(session: SessionDep, principal: ApiUser, instrument_id: int, window_id: int
                        ) -> ScheduleChange:
    result = await editor.delete_window(session, principal, instrument_id, window_id)
    return await _change(session, principal, instrument_id, result)


@router.put("/instruments/{instrument_id}/schedule/overrides", response_model=ScheduleChange,
            summary="Set a date's own opening windows (empty list = closed that day)")
async def set_override(session: SessionDep, principal: ApiUser, instrument_id: int, data: OverrideIn
                       ) -> ScheduleChange:
    _, result = await editor.set_override(session, principal, instrument_id, data)
    return await _change(session, principal, instrument_id, result)


@router.delete("/instruments/{instrument_id}/schedule/overrides/{override_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_override(session: SessionDep, principal: ApiUser, instrument_id: int, override_id: int) -> Response:
    await editor.delete_override(session, principal, instrument_id, override_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/instruments/{instrument_id}/schedule/blackouts", response_model=BlackoutCreated,
             status_code=status.HTTP_201_CREATED,
             summary="Add a blackout; lists the active bookings it collides with and notifies their users")
async def create_blackout(session: SessionDep, principal: ApiUser, instrument_id: int, data: BlackoutIn
                          ) -> BlackoutCreated:
    result = await editor.create_blackout(session, principal, instrument_id, data)
    return BlackoutCreated(blackout=BlackoutPublic.model_validate(result.blackout),
                           colliding=affected_public(result.colliding), notified=result.notified)


@router.delete("/instruments/{instrument_id}/schedule/blackouts/{blackout_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_blackout(session: SessionDep, principal: ApiUser, instrument_id: int, blackout_id: int) -> Response:
    await editor.delete_blackout(session, principal, instrument_id, blackout_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/instruments/{instrument_id}/rules", response_model=RulesPublic, summary="Managers: booking rules")
async def get_rules(session: SessionDep, principal: ApiUser, instrument_id: int) -> RulesPublic:
    return rules_public((await editor.get_schedule(session, principal, instrument_id)).rules)


@router.put("/instruments/{instrument_id}/rules", response_model=RulesPublic,
            summary="Managers: replace the booking rules (every problem reported at once)")
async def put_rules(session: SessionDep, principal: ApiUser, instrument_id: int, data: RulesIn) -> RulesPublic:
    return rules_public(await editor.update_rules(session, principal, instrument_id, data))


def _qual_public(v: quals.QualificationView) -> QualificationPublic:
    q = v.qualification
    return QualificationPublic(id=q.id, instrument_id=q.instrument_id, user_id=q.user_id, user_name=v.user.name,  # type: ignore[arg-type]
                               user_email=v.user.email, valid_until=q.valid_until, expired=v.expired,
                               granted_by=q.granted_by, created_at=q.created_at)


@router.get("/instruments/{instrument_id}/qualifications", response_model=list[QualificationPublic])
async def list_qualifications(session: SessionDep, principal: ApiUser, instrument_id: int
                              ) -> list[QualificationPublic]:
    return [_qual_public(v) for v in await quals.list_qualifications(session, principal, instrument_id)]


@router.post("/instruments/{instrument_id}/qualifications", response_model=QualificationPublic,
             status_code=status.HTTP_201_CREATED, summary="Qualify a user (by id or email) until a date, or renew")
async def grant_qualification(session: SessionDep, principal: ApiUser, instrument_id: int, data: QualificationIn
                              ) -> QualificationPublic:
    return _qual_public(await quals.grant_qualification(session, principal, instrument_id, data))


@router.delete("/instruments/{instrument_id}/qualifications/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_qualification(session: SessionDep, principal: ApiUser, instrument_id: int, user_id: int) -> Response:
    await quals.revoke_qualification(session, principal, instrument_id, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/instruments/{instrument_id}/blocks", response_model=list[BlockPublic],
            summary="Active no-show blocks of users who booked this instrument")
async def list_blocks(session: SessionDep, principal: ApiUser, instrument_id: int) -> list[BlockPublic]:
    rows = await quals.blocks_for_instrument(session, principal, instrument_id)
    return [BlockPublic(id=b.id, user_id=u.id, user_name=u.name, user_email=u.email, reason=b.reason,  # type: ignore[arg-type]
                        created_at=b.created_at) for b, u in rows]


@router.post("/users/{user_id}/lift-block", response_model=BlockPublic, summary="Managers: lift a no-show block")
async def lift_block(session: SessionDep, principal: ApiUser, user_id: int, data: LiftBlockIn) -> BlockPublic:
    block = await quals.lift(session, principal, user_id, data.reason)
    from booking.accounts.models import User

    user = await session.get(User, user_id)
    assert user is not None
    return BlockPublic(id=block.id, user_id=user_id, user_name=user.name, user_email=user.email,  # type: ignore[arg-type]
                       reason=block.reason, created_at=block.created_at, lifted_at=block.lifted_at,
                       lift_reason=block.lift_reason)


def _holiday_public(r: HolidayOverride) -> HolidayOverridePublic:
    return HolidayOverridePublic(day=r.day, kind=r.kind, name=r.name, created_by=r.created_by,  # type: ignore[arg-type]
                                 created_at=r.created_at)


@router.get("/admin/holidays", response_model=HolidayYear,
            summary="Admins: the holiday package's data for a year beside the administrator's overrides")
async def holidays(session: SessionDep, principal: ApiAdmin,
                   year: Annotated[int, Query(ge=2000, le=2100)]) -> HolidayYear:
    v = await editor.holiday_year(session, principal, year)
    return HolidayYear(year=v.year, package_has_schedule=v.package_has_schedule,
                       package=[HolidayDay(day=d, kind=k, name=n) for d, k, n in v.package],  # type: ignore[arg-type]
                       overrides=[_holiday_public(r) for r in v.overrides],
                       effective=[HolidayDay(day=d, kind=k, name=n) for d, k, n in v.effective])  # type: ignore[arg-type]


@router.post("/admin/holidays", response_model=HolidayOverridePublic, status_code=status.HTTP_201_CREATED,
             summary="Admins: close or open a day for every instrument that follows the holiday calendar")
async def set_holiday(session: SessionDep, principal: ApiAdmin, data: HolidayOverrideIn) -> HolidayOverridePublic:
    return _holiday_public(await editor.set_holiday_override(session, principal, data))


@router.delete("/admin/holidays/{day}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_holiday(session: SessionDep, principal: ApiAdmin, day: date) -> Response:
    await editor.delete_holiday_override(session, principal, day)
    return Response(status_code=status.HTTP_204_NO_CONTENT)



