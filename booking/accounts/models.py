"""People and organisations: institutions (units), facilities inside them, users and their role grants."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from booking.core.base import fk_column, now, ts_column


class InstitutionKind(StrEnum):
    university = "高校"
    institute = "科研院所"
    enterprise = "企业"
    pilot_platform = "中试平台"
    new_rd = "新型研发机构"
    medical = "医疗机构"
    other = "其他"


class Role(StrEnum):
    researcher = "researcher"
    facility_manager = "facility_manager"
    institution_admin = "institution_admin"
    auditor = "auditor"
    platform_admin = "platform_admin"


# Roles granted for one institution (the others are platform-wide or, for auditors, per 市州).
INSTITUTION_ROLES = frozenset({Role.facility_manager.value, Role.institution_admin.value})

ROLE_LABELS: dict[str, str] = {
    Role.researcher: "研究人员",
    Role.facility_manager: "仪器管理员",
    Role.institution_admin: "单位管理员",
    Role.auditor: "审计（科技厅/市州科技局）",
    Role.platform_admin: "平台管理员",
}


def _in_list(column: str, values: list[str]) -> str:
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


class City(SQLModel, table=True):
    """The 21 市(州); reference data seeded by the migration so foreign keys can point at it."""

    __tablename__ = "cities"
    code: str = Field(sa_column=Column(String(6), primary_key=True))
    name: str = Field(sa_column=Column(Text, nullable=False))


class Institution(SQLModel, table=True):
    __tablename__ = "institutions"
    __table_args__ = (
        CheckConstraint(_in_list("kind", [k.value for k in InstitutionKind]), name="kind"),
        CheckConstraint("credit_code ~ '^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$'",
                        name="credit_code_format"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(200), nullable=False, unique=True))
    kind: str = Field(sa_column=Column(Text, nullable=False))
    credit_code: str | None = Field(default=None, sa_column=Column(String(18), unique=True))
    city_code: str = Field(sa_column=Column(String(6), ForeignKey("cities.code"), nullable=False, index=True))
    address: str | None = Field(default=None, sa_column=Column(String(300)))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))


class Facility(SQLModel, table=True):
    """A lab, key laboratory or pilot platform inside an institution; managers are scoped to facilities."""

    __tablename__ = "facilities"
    __table_args__ = (UniqueConstraint("institution_id", "name", name="uq_facilities_institution_name"),)

    id: int | None = Field(default=None, primary_key=True)
    institution_id: int = Field(sa_column=fk_column("institutions.id", ondelete="CASCADE"))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    description: str | None = Field(default=None, sa_column=Column(String(500)))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("email = lower(email)", name="email_lowercase"),
        CheckConstraint("locale IN ('zh-CN', 'en')", name="locale"),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(sa_column=Column(String(254), nullable=False, unique=True))
    name: str = Field(sa_column=Column(String(100), nullable=False))
    phone: str | None = Field(default=None, sa_column=Column(String(20)))
    institution_id: int | None = Field(default=None, sa_column=fk_column("institutions.id", nullable=True))
    locale: str = Field(default="zh-CN", sa_column=Column(String(8), nullable=False, server_default="zh-CN"))
    password_hash: str = Field(sa_column=Column(Text, nullable=False))
    is_active: bool = Field(default=True, nullable=False)
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
    password_changed_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))


class RoleGrant(SQLModel, table=True):
    """A role held by a user, with its scope. Every user is implicitly a researcher."""

    __tablename__ = "role_grants"
    __table_args__ = (
        CheckConstraint(_in_list("role", [r.value for r in Role if r != Role.researcher]), name="role"),
        CheckConstraint(
            "(role NOT IN ('facility_manager', 'institution_admin') OR institution_id IS NOT NULL)",
            name="institution_scope",
        ),
        CheckConstraint("(role = 'facility_manager' OR facility_id IS NULL)", name="facility_scope"),
        CheckConstraint("(role = 'auditor' OR city_code IS NULL)", name="city_scope"),
        Index(
            "uq_role_grants_scope",
            "user_id", "role", "institution_id", "facility_id", "city_code",
            unique=True, postgresql_nulls_not_distinct=True,
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=fk_column("users.id", ondelete="CASCADE"))
    role: str = Field(sa_column=Column(Text, nullable=False))
    institution_id: int | None = Field(default=None, sa_column=fk_column("institutions.id", nullable=True))
    # NULL facility for a manager means every facility of the institution.
    facility_id: int | None = Field(default=None, sa_column=fk_column("facilities.id", nullable=True))
    # NULL city for an auditor means provincial (科技厅); a code means that 市州科技局 only.
    city_code: str | None = Field(default=None, sa_column=Column(String(6), ForeignKey("cities.code")))
    granted_by: int | None = Field(default=None, sa_column=fk_column("users.id", nullable=True, index=False))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))


class RoleRequest(SQLModel, table=True):
    """A user's request to be elevated to manager, institution admin or auditor; an admin decides."""

    __tablename__ = "role_requests"
    __table_args__ = (
        CheckConstraint(
            _in_list("role", [Role.facility_manager.value, Role.institution_admin.value, Role.auditor.value]),
            name="role",
        ),
        CheckConstraint("status IN ('pending', 'approved', 'rejected')", name="status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=fk_column("users.id", ondelete="CASCADE"))
    role: str = Field(sa_column=Column(Text, nullable=False))
    institution_id: int | None = Field(default=None, sa_column=fk_column("institutions.id", nullable=True))
    facility_id: int | None = Field(default=None, sa_column=fk_column("facilities.id", nullable=True))
    city_code: str | None = Field(default=None, sa_column=Column(String(6), ForeignKey("cities.code")))
    reason: str = Field(sa_column=Column(String(500), nullable=False))
    status: str = Field(default="pending", sa_column=Column(Text, nullable=False, server_default="pending"))
    decided_by: int | None = Field(default=None, sa_column=fk_column("users.id", nullable=True, index=False))
    decided_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    decision_note: str | None = Field(default=None, sa_column=Column(String(500)))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
