"""Pure checks on account data, each returning every problem found."""

from __future__ import annotations

import re

from booking.core.errors import Problem
from booking.core.regions import CITIES

_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_LANDLINE = re.compile(r"^0\d{2,3}-?\d{7,8}(-\d{1,6})?$")
_CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def normalise_phone(phone: str) -> str:
    return re.sub(r"[\s()]", "", phone.strip()).removeprefix("+86")


def phone_problems(phone: str | None, field: str = "phone") -> list[Problem]:
    if not phone:
        return []
    value = normalise_phone(phone)
    if not (_MOBILE.match(value) or _LANDLINE.match(value)):
        return [Problem(field, "invalid_phone", "电话号码格式不正确（手机 11 位，或座机如 028-85551234）")]
    return []


def credit_code_problems(code: str | None, field: str = "credit_code") -> list[Problem]:
    """统一社会信用代码 (GB 32100-2015): 18 characters with a mod-31 check character."""
    if not code:
        return []
    value = code.strip().upper()
    if len(value) != 18 or any(ch not in _CREDIT_ALPHABET for ch in value):
        return [Problem(field, "invalid_credit_code", "统一社会信用代码应为 18 位数字或大写字母")]
    total = sum(_CREDIT_ALPHABET.index(ch) * w for ch, w in zip(value[:17], _CREDIT_WEIGHTS, strict=True))
    expected = _CREDIT_ALPHABET[(31 - total % 31) % 31]
    if value[17] != expected:
        return [Problem(field, "credit_code_checksum", "统一社会信用代码校验位不正确")]
    return []


def city_problems(city_code: str | None, field: str = "city_code") -> list[Problem]:
    if city_code is None:
        return []
    if city_code not in CITIES:
        return [Problem(field, "unknown_city", f"未知的市州代码 {city_code}（应为四川省 21 个市州之一）")]
    return []


def credit_code_check_char(first17: str) -> str:
    total = sum(_CREDIT_ALPHABET.index(ch) * w for ch, w in zip(first17, _CREDIT_WEIGHTS, strict=True))
    return _CREDIT_ALPHABET[(31 - total % 31) % 31]
