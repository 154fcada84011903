"""Load-or-404 and check-or-403 dependencies for institution resources, so handlers get a ready object and the
permission decision is made before any input is parsed."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from booking.accounts.models import Institution
from booking.accounts.service import get_institution
from booking.auth.deps import ApiUser, WebUser
from booking.auth.principal import Principal
from booking.core.db import SessionDep
from booking.core.errors import Forbidden


def _check_admin(principal: Principal, inst: Institution) -> Institution:
    if not principal.administers_institution(inst.id):  # type: ignore[arg-type]
        raise Forbidden("只有本单位管理员或平台管理员可以管理该单位")
    return inst


async def _api_administered(institution_id: int, session: SessionDep, principal: ApiUser) -> Institution:
    return _check_admin(principal, await get_institution(session, institution_id))


async def _web_administered(institution_id: int, session: SessionDep, principal: WebUser) -> Institution:
    return _check_admin(principal, await get_institution(session, institution_id))


ApiAdministeredInstitution = Annotated[Institution, Depends(_api_administered)]
WebAdministeredInstitution = Annotated[Institution, Depends(_web_administered)]
