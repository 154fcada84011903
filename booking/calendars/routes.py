"""Subscribable feeds at plain URLs (calendar clients send no bearer token or cookie), and the /calendar page."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from booking.auth.deps import CsrfDep, WebUser, load_web_principal
from booking.calendars import service
from booking.core.db import SessionDep, refusable
from booking.core.errors import DomainError
from booking.core.web import render

ICS = "text/calendar; charset=utf-8"

# Feeds: no session, no CSRF; the secret in the URL (my feed) or nothing at all (public busy time) decides.
feeds = APIRouter(include_in_schema=True, tags=["calendars"])
router = APIRouter(include_in_schema=False, dependencies=[Depends(load_web_principal), CsrfDep])


@feeds.get("/calendar/my/{token}.ics", response_class=Response, responses={200: {"content": {"text/calendar": {}}}},
           summary="My bookings as a subscribable feed (secret URL from POST /api/v1/me/calendar-token)")
async def my_calendar(session: SessionDep, token: str) -> Response:
    text = await service.my_feed(session, token)
    # A secret URL must not be cached by shared caches or leak through referrers.
    return Response(text, media_type=ICS, headers={"Cache-Control": "private, max-age=300",
                                                   "Referrer-Policy": "no-referrer"})


@feeds.get("/calendar/instruments/{instrument_id}.ics", response_class=Response,
           responses={200: {"content": {"text/calendar": {}}}},
           summary="One instrument's busy times (public, no personal data)")
async def instrument_calendar(session: SessionDep, instrument_id: int) -> Response:
    # Anonymous on purpose: a calendar client subscribes without credentials, so restricted instruments are 404.
    text = await service.instrument_busy_feed(session, None, instrument_id)
    return Response(text, media_type=ICS, headers={"Cache-Control": "public, max-age=300"})


async def _page(request: Request, session: SessionDep, principal: WebUser, **extra: object) -> Response:
    token = await service.token_status(session, principal)
    return render(request, "calendars/calendar.html", {"token": token, **extra})


@router.get("/calendar")
async def calendar_page(request: Request, session: SessionDep, principal: WebUser) -> Response:
    return await _page(request, session, principal)


@router.post("/calendar/token")
async def create_token(request: Request, session: SessionDep, principal: WebUser) -> Response:
    created = await service.create_token(session, principal)
    return await _page(request, session, principal, new_url=created.url,
                       flash="订阅地址已生成。请立即复制到日历应用中，它只显示这一次。")


@router.post("/calendar/token/revoke")
async def revoke_token(request: Request, session: SessionDep, principal: WebUser) -> Response:
    try:
        async with refusable(session):  # a refused revocation leaves nothing behind the page's commit
            await service.revoke_token(session, principal)
    except DomainError as exc:
        return await _page(request, session, principal, flash=exc.detail, flash_kind="error")
    return await _page(request, session, principal, flash="订阅地址已撤销，使用它的日历将不再更新。")



