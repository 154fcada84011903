"""The home page: what the platform is, and the next step for the signed-in user's role."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from booking.accounts import repository as accounts_repo
from booking.auth.deps import CsrfDep, WebPrincipal, load_web_principal
from booking.core.db import SessionDep
from booking.core.web import render

router = APIRouter(include_in_schema=False, dependencies=[Depends(load_web_principal), CsrfDep])


@router.get("/")
async def home(request: Request, session: SessionDep, principal: WebPrincipal) -> Response:
    counts = await accounts_repo.counts(session)
    return render(request, "home.html", {"counts": counts})
