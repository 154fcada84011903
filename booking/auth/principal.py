"""Who is acting, with their grants; the pure permission questions every policy asks."""

from __future__ import annotations

from dataclasses import dataclass, field

from booking.accounts.models import Role, RoleGrant, User


@dataclass(frozen=True)
class Principal:
    user: User
    grants: tuple[RoleGrant, ...] = field(default_factory=tuple)
    via: str = "session"  # session | access | personal

    @property
    def id(self) -> int:
        assert self.user.id is not None
        return self.user.id

    @property
    def roles(self) -> set[str]:
        return {Role.researcher.value} | {g.role for g in self.grants}

    def has(self, role: Role | str) -> bool:
        return str(role) in self.roles

    @property
    def is_admin(self) -> bool:
        return self.has(Role.platform_admin)

    @property
    def admin_institution_ids(self) -> set[int]:
        return {g.institution_id for g in self.grants
                if g.role == Role.institution_admin and g.institution_id is not None}

    @property
    def managed_institution_ids(self) -> set[int]:
        """Institutions where the user manages at least one facility, or administers the institution."""
        return {g.institution_id for g in self.grants
                if g.role in (Role.facility_manager, Role.institution_admin) and g.institution_id is not None}

    def manages_facility(self, institution_id: int, facility_id: int | None) -> bool:
        """Managers act on instruments of their facilities; an institution-wide grant covers every facility."""
        if self.is_admin or institution_id in self.admin_institution_ids:
            return True
        for g in self.grants:
            if g.role == Role.facility_manager and g.institution_id == institution_id and (
                g.facility_id is None or g.facility_id == facility_id
            ):
                return True
        return False

    def manages_institution(self, institution_id: int) -> bool:
        return self.is_admin or institution_id in self.managed_institution_ids

    def administers_institution(self, institution_id: int) -> bool:
        return self.is_admin or institution_id in self.admin_institution_ids

    @property
    def is_auditor(self) -> bool:
        return self.has(Role.auditor)

    @property
    def is_provincial_auditor(self) -> bool:
        return any(g.role == Role.auditor and g.city_code is None for g in self.grants)

    @property
    def auditor_city_codes(self) -> set[str]:
        return {g.city_code for g in self.grants if g.role == Role.auditor and g.city_code is not None}

    def may_audit_city(self, city_code: str) -> bool:
        return self.is_admin or self.is_provincial_auditor or city_code in self.auditor_city_codes
