"""Authentication use cases: login (with throttling), sessions, bearer tokens, password change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import User
from booking.activity.service import record
from booking.auth import repository as repo
from booking.auth.models import ApiToken, LoginFailure, WebSession
from booking.auth.principal import Principal
from booking.core.clock import utcnow
from booking.core.errors import NotFound, Problem, RuleViolation, TooManyRequests, Unauthorized
from booking.core.passwords import password_problems
from booking.core.security import (
    dummy_verify,
    hash_password,
    new_token,
    token_digest,
    verify_password,
)
from booking.core.settings import get_settings


@dataclass
class InvalidCredentials(Unauthorized):
    """Raised after recording the failure; the boundary commits it anyway so throttling sees it."""

    detail: str = "邮箱或密码不正确"
    commit_anyway: bool = True


async def _check_throttle(session: AsyncSession, email: str, address: str) -> None:
    settings = get_settings()
    now = utcnow()
    window = timedelta(seconds=settings.login_window_s)
    since = now - window
    for kind, limit, kwargs in (
        ("account", settings.login_max_failures_per_account, {"email": email}),
        ("address", settings.login_max_failures_per_address, {"address": address}),
    ):
        count, oldest = await repo.recent_failures(session, since=since, **kwargs)
        if count >= limit and oldest is not None:
            retry = max(1, int((oldest + window - now).total_seconds()) + 1)
            target = "该账号" if kind == "account" else "该地址"
            raise TooManyRequests(
                f"{target}登录失败次数过多，请 {retry} 秒后再试",
                problems=[Problem("username" if kind == "account" else None, f"throttled_{kind}",
                                  f"{target}登录失败次数过多")],
                retry_after_s=retry,
            )


async def authenticate(session: AsyncSession, email: str, password: str, address: str) -> User:
    email = email.strip().lower()
    await _check_throttle(session, email, address)
    user = (await session.scalars(select(User).where(User.email == email))).first()
    if user is None:
        dummy_verify(password)
    if user is None or not user.is_active or not verify_password(password, user.password_hash):
        session.add(LoginFailure(email=email[:254], address=address[:64]))
        record(session, actor_id=user.id if user else None, action="auth.login_failed", target_type="user",
               target_id=user.id if user else None, after={"email": email, "address": address})
        raise InvalidCredentials()
    await repo.clear_failures(session, email)
    return user


async def start_web_session(session: AsyncSession, user: User, *, user_agent: str | None,
                            address: str | None) -> str:
    token = new_token()
    settings = get_settings()
    session.add(WebSession(
        digest=token_digest(token), user_id=user.id,
        expires_at=utcnow() + timedelta(seconds=settings.session_max_age_s),
        user_agent=(user_agent or "")[:300], address=(address or "")[:64],
    ))
    record(session, actor_id=user.id, action="auth.login", target_type="user", target_id=user.id,
           after={"via": "web", "address": address})
    return token


async def end_web_session(session: AsyncSession, token: str, actor_id: int | None) -> None:
    await repo.delete_session(session, token_digest(token))
    if actor_id is not None:
        record(session, actor_id=actor_id, action="auth.logout", target_type="user", target_id=actor_id)


async def issue_access_token(session: AsyncSession, user: User) -> tuple[str, int]:
    settings = get_settings()
    token = "bka_" + new_token()
    session.add(ApiToken(
        user_id=user.id, kind="access", name="OAuth2 password grant",
        digest=token_digest(token), prefix=token[:12],
        expires_at=utcnow() + timedelta(seconds=settings.access_token_max_age_s),
    ))
    record(session, actor_id=user.id, action="auth.token_issued", target_type="user", target_id=user.id,
           after={"kind": "access"})
    return token, settings.access_token_max_age_s


async def create_personal_token(session: AsyncSession, actor: Principal, name: str,
                                expires_in_days: int | None) -> tuple[ApiToken, str]:
    name = name.strip()
    if not name or len(name) > 100:
        raise RuleViolation("令牌名称无效", problems=[Problem("name", "invalid", "名称必填，最多 100 个字符")])
    token = "bkp_" + new_token()
    expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    row = ApiToken(user_id=actor.id, kind="personal", name=name, digest=token_digest(token),
                   prefix=token[:12], expires_at=expires)
    session.add(row)
    await session.flush()
    record(session, actor_id=actor.id, action="token.created", target_type="api_token", target_id=row.id,
           after={"name": name, "prefix": row.prefix, "expires_at": expires})
    return row, token


async def revoke_personal_token(session: AsyncSession, actor: Principal, token_id: int) -> ApiToken:
    row = await session.get(ApiToken, token_id)
    if row is None or row.user_id != actor.id or row.kind != "personal":
        raise NotFound("令牌不存在")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        record(session, actor_id=actor.id, action="token.revoked", target_type="api_token", target_id=row.id,
               after={"prefix": row.prefix})
    return row


async def revoke_bearer(session: AsyncSession, token: str, actor_id: int) -> None:
    found = await repo.token_with_user(session, token_digest(token), utcnow())
    if found:
        found[0].revoked_at = utcnow()
        record(session, actor_id=actor_id, action="auth.logout", target_type="api_token", target_id=found[0].id)


async def principal_from_session_token(session: AsyncSession, token: str) -> Principal | None:
    found = await repo.session_user_grants(session, token_digest(token), utcnow())
    if found is None:
        return None
    user, grants = found
    return Principal(user=user, grants=tuple(grants), via="session")


async def principal_from_bearer(session: AsyncSession, token: str) -> Principal | None:
    found = await repo.token_user_grants(session, token_digest(token), utcnow())
    if found is None:
        return None
    api_token, user, grants = found
    return Principal(user=user, grants=tuple(grants), via=api_token.kind)


async def change_password(session: AsyncSession, actor: Principal, current: str, new: str,
                          keep_session_token: str | None = None) -> None:
    user = actor.user
    problems: list[Problem] = []
    if not verify_password(current, user.password_hash):
        problems.append(Problem("current_password", "wrong_password", "当前密码不正确"))
    problems += password_problems(new, field="new_password", email=user.email)
    if current == new:
        problems.append(Problem("new_password", "unchanged", "新密码不能与当前密码相同"))
    if problems:
        raise RuleViolation("密码修改失败", problems=problems)
    db_user = await session.get(User, user.id)
    assert db_user is not None
    db_user.password_hash = hash_password(new)
    db_user.password_changed_at = utcnow()
    # A password change signs out every other session and revokes access tokens (not personal tokens,
    # which the user manages explicitly).
    await repo.delete_sessions_of(session, user.id,
                                  keep_digest=token_digest(keep_session_token) if keep_session_token else None)
    await repo.revoke_access_tokens_of(session, user.id, utcnow())
    record(session, actor_id=user.id, action="user.password_changed", target_type="user", target_id=user.id)


def session_expiry() -> datetime:
    return utcnow() + timedelta(seconds=get_settings().session_max_age_s)
