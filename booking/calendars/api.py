"""Calendar feeds and the personal feed token (JSON API part)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from fastapi.responses import Response
from pydantic import BaseModel

from booking.auth.deps import ApiUser
from booking.calendars import service
from booking.core.db import SessionDep

router = APIRouter(prefix="/api/v1", tags=["calendars"])

ICS = "text/calendar; charset=utf-8"


class CalendarTokenCreated(BaseModel):
    url: str
    created_at: datetime


@router.post("/me/calendar-token", response_model=CalendarTokenCreated, status_code=status.HTTP_201_CREATED,
             summary="Create my secret 'my bookings' feed URL (shown once; replaces any earlier one)")
async def create_calendar_token(session: SessionDep, principal: ApiUser) -> CalendarTokenCreated:
    created = await service.create_token(session, principal)
    return CalendarTokenCreated(url=created.url, created_at=created.token.created_at)


@router.delete("/me/calendar-token", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke my feed URL")
async def revoke_calendar_token(session: SessionDep, principal: ApiUser) -> Response:
    await service.revoke_token(session, principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/facilities/{facility_id}/calendar.ics", response_class=Response,
            responses={200: {"content": {"text/calendar": {}}}},
            summary="Managers: every booking of a facility's instruments as an iCalendar feed")
async def facility_calendar(session: SessionDep, principal: ApiUser, facility_id: int) -> Response:
    text = await service.facility_feed(session, principal, facility_id)
    return Response(text, media_type=ICS)
