"""Email address type used by every schema.

email-validator refuses special-use domains such as `.local`; the demo accounts (and many intranet deployments)
use `.local`, so that one name is allowed. Every other check (syntax, length, other reserved names) still applies.
"""

from __future__ import annotations

from typing import Annotated

import email_validator
from pydantic import AfterValidator, EmailStr

if "local" in email_validator.SPECIAL_USE_DOMAIN_NAMES:
    email_validator.SPECIAL_USE_DOMAIN_NAMES.remove("local")


def _lower(value: str) -> str:
    return value.lower()


Email = Annotated[EmailStr, AfterValidator(_lower)]
