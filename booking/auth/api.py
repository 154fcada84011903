"""JSON API for authentication: OAuth2 password grant, registration, personal access tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from booking.accounts import service as accounts
from booking.accounts.schemas import AccessToken, RegisterRequest, TokenCreate, TokenCreated, TokenPublic
from booking.auth import repository as repo
from booking.auth import service
from booking.auth.deps import ApiUser, oauth2_scheme
from booking.core.db import SessionDep
from booking.core.pagination import Page

router = APIRouter(prefix="/api/v1", tags=["auth"])


@router.post("/auth/token", response_model=AccessToken, summary="OAuth2 password grant (username = email)")
async def token(
    request: Request, session: SessionDep, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> AccessToken:
    address = request.client.host if request.client else "unknown"
    user = await service.authenticate(session, form.username, form.password, address)
    access_token, expires_in = await service.issue_access_token(session, user)
    return AccessToken(access_token=access_token, expires_in=expires_in)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke the bearer token used")
async def logout(principal: ApiUser, session: SessionDep,
                 token: Annotated[str | None, Depends(oauth2_scheme)]) -> None:
    if token:
        await service.revoke_bearer(session, token, principal.id)


@router.post("/auth/register", status_code=status.HTTP_201_CREATED, summary="Register a researcher account")
async def register(session: SessionDep, data: RegisterRequest) -> dict[str, int | str]:
    user = await accounts.register(session, data)
    return {"id": user.id, "email": user.email}  # type: ignore[dict-item]


@router.get("/me/tokens", response_model=Page[TokenPublic])
async def list_tokens(principal: ApiUser, session: SessionDep) -> Page[TokenPublic]:
    rows = await repo.list_tokens(session, principal.id)
    items = [TokenPublic.model_validate(r) for r in rows]
    return Page(items=items, total=len(items), limit=len(items), offset=0)


@router.post("/me/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
async def create_token(principal: ApiUser, session: SessionDep, data: TokenCreate) -> TokenCreated:
    row, secret = await service.create_personal_token(session, principal, data.name, data.expires_in_days)
    return TokenCreated(**TokenPublic.model_validate(row).model_dump(), token=secret)


@router.delete("/me/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_token(principal: ApiUser, session: SessionDep, token_id: int) -> None:
    await service.revoke_personal_token(session, principal, token_id)


