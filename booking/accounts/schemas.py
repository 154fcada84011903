"""API shapes for accounts. Input models validate lengths and formats; rules.py holds the cross-field checks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from booking.accounts.models import InstitutionKind
from booking.accounts.rules import city_problems, credit_code_problems, phone_problems
from booking.core.emails import Email
from booking.core.passwords import password_problems


def _raise_first(problems: list) -> None:  # type: ignore[type-arg]
    # Pydantic reports each field's problems together with every other field's, so a form shows them all.
    if problems:
        raise PydanticCustomError(problems[0].code, "；".join(p.message for p in problems))


def _check_password(value: str) -> str:
    _raise_first(password_problems(value))
    return value


def _check_phone(value: str | None) -> str | None:
    _raise_first(phone_problems(value))
    return value


def _check_city(value: str | None) -> str | None:
    _raise_first(city_problems(value))
    return value


def _check_credit_code(value: str | None) -> str | None:
    _raise_first(credit_code_problems(value))
    return value.upper() if value else value


class InstitutionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=2, max_length=200, description="单位名称")
    kind: InstitutionKind = Field(description="单位类型")
    credit_code: str | None = Field(default=None, max_length=18, description="统一社会信用代码")
    city_code: str = Field(min_length=6, max_length=6, description="市州代码（GB/T 2260）")
    address: str | None = Field(default=None, max_length=300)

    _credit = field_validator("credit_code")(_check_credit_code)
    _city = field_validator("city_code")(_check_city)


class InstitutionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=2, max_length=200)
    kind: InstitutionKind | None = None
    credit_code: str | None = Field(default=None, max_length=18)
    city_code: str | None = Field(default=None, min_length=6, max_length=6)
    address: str | None = Field(default=None, max_length=300)

    _credit = field_validator("credit_code")(_check_credit_code)
    _city = field_validator("city_code")(_check_city)


class InstitutionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    kind: str
    credit_code: str | None
    city_code: str
    city_name: str
    address: str | None


class FacilityCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=2, max_length=200)
    description: str | None = Field(default=None, max_length=500)


class FacilityPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    institution_id: int
    name: str
    description: str | None


# A person's name: surrounding spaces dropped first, so a name of spaces only is refused as empty.
PersonName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Email = Field(max_length=254)
    password: str = Field(max_length=128)
    name: PersonName
    phone: str | None = Field(default=None, max_length=20)
    institution_id: int
    locale: str = Field(default="zh-CN", pattern="^(zh-CN|en)$")

    _password = field_validator("password")(_check_password)
    _phone = field_validator("phone")(_check_phone)


class ProfileUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: PersonName | None = None
    phone: str | None = Field(default=None, max_length=20)
    locale: str | None = Field(default=None, pattern="^(zh-CN|en)$")

    _phone = field_validator("phone")(_check_phone)


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The policy check runs in the service, together with the current-password check, so both are reported.
    current_password: str = Field(max_length=128)
    new_password: str = Field(max_length=128)


class GrantPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    role: str
    institution_id: int | None
    facility_id: int | None
    city_code: str | None


class UserPublic(BaseModel):
    id: int
    email: str
    name: str
    phone: str | None
    institution_id: int | None
    locale: str
    roles: list[str]
    grants: list[GrantPublic]


class UserCreate(BaseModel):
    """Admin-created account (CLI or API), optionally with a role."""

    model_config = ConfigDict(extra="forbid")
    email: Email = Field(max_length=254)
    password: str = Field(max_length=128)
    name: PersonName
    phone: str | None = Field(default=None, max_length=20)
    institution_id: int | None = None

    _password = field_validator("password")(_check_password)
    _phone = field_validator("phone")(_check_phone)


class RoleRequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(pattern="^(facility_manager|institution_admin|auditor)$")
    institution_id: int | None = None
    facility_id: int | None = None
    city_code: str | None = Field(default=None, min_length=6, max_length=6)
    reason: str = Field(min_length=2, max_length=500)

    _city = field_validator("city_code")(_check_city)


class RoleRequestPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    user_id: int
    role: str
    institution_id: int | None
    facility_id: int | None
    city_code: str | None
    reason: str
    status: str
    decided_by: int | None
    decided_at: datetime | None
    decision_note: str | None
    created_at: datetime


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(default=None, max_length=500)


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class TokenPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="只显示这一次 / shown once")


class AccessToken(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int
