"""Domain errors carry their HTTP status and are mapped to responses once, in booking.core.handlers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One problem with the input: which field, a machine-readable code, a Chinese message."""

    field: str | None
    code: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "code": self.code, "message": self.message}


@dataclass
class DomainError(Exception):
    detail: str = ""
    problems: list[Problem] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    # Some failures are themselves facts to keep (a failed login feeds throttling): the boundary commits them.
    commit_anyway: bool = False

    status: int = 400
    title: str = "请求无效"
    type_slug: str = "bad-request"

    def __post_init__(self) -> None:
        super().__init__(self.detail or self.title)


@dataclass
class NotFound(DomainError):
    status: int = 404
    title: str = "未找到"
    type_slug: str = "not-found"


@dataclass
class Unauthorized(DomainError):
    status: int = 401
    title: str = "需要登录"
    type_slug: str = "unauthorized"


@dataclass
class Forbidden(DomainError):
    status: int = 403
    title: str = "没有权限"
    type_slug: str = "forbidden"


@dataclass
class Conflict(DomainError):
    status: int = 409
    title: str = "冲突"
    type_slug: str = "conflict"


@dataclass
class Gone(DomainError):
    status: int = 410
    title: str = "已失效"
    type_slug: str = "gone"


@dataclass
class RuleViolation(DomainError):
    status: int = 422
    title: str = "输入有误"
    type_slug: str = "validation-error"


@dataclass
class TooManyRequests(DomainError):
    retry_after_s: int = 60
    status: int = 429
    title: str = "请求过于频繁"
    type_slug: str = "too-many-requests"


@dataclass
class ServiceUnavailable(DomainError):
    status: int = 503
    title: str = "服务暂不可用"
    type_slug: str = "service-unavailable"


def invalid(field_name: str | None, code: str, message: str) -> RuleViolation:
    """Shorthand for a single-problem 422."""
    return RuleViolation(detail=message, problems=[Problem(field_name, code, message)])
