"""Pure checks and small pure helpers for the catalogue. Every check returns all the problems it finds."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from booking.accounts.rules import phone_problems
from booking.core.errors import Problem
from booking.core.regions import CITIES
from instruments.models import HISTORY_FIELDS, MAX_ORIGINAL_VALUE, SharingMode
from instruments.reference import COUNTRIES

# Characters a spreadsheet treats as the start of a formula (OWASP CSV injection), plus tab and carriage return.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ReferenceData:
    """What the checks compare against, loaded once per request or per import."""

    category_codes: frozenset[str] = field(default_factory=frozenset)
    chain_names: frozenset[str] = field(default_factory=frozenset)
    # Facilities of the instrument's institution.
    facility_ids: frozenset[int] = field(default_factory=frozenset)


# ---- classification codes ---------------------------------------------------------------------------------------


def category_prefix(code: str | None) -> str | None:
    """The prefix a category filter matches: '01', '0102' and '010201' are themselves; a 6-digit code with
    trailing '00' pairs ('010000', '010200') means the 大类 or 中类. None if the code is malformed."""
    if not code or not re.fullmatch(r"\d{2}|\d{4}|\d{6}", code):
        return None
    if len(code) == 6:
        if code.endswith("0000"):
            return code[:2]
        if code.endswith("00"):
            return code[:4]
    if len(code) == 4 and code.endswith("00"):
        return code[:2]
    return code


def category_level(code: str) -> int:
    if code.endswith("0000"):
        return 1
    if code.endswith("00"):
        return 2
    return 3


def category_parent(code: str) -> str | None:
    level = category_level(code)
    if level == 1:
        return None
    if level == 2:
        return code[:2] + "0000"
    return code[:4] + "00"


def category_code_problems(code: str, existing: frozenset[str] | set[str]) -> list[Problem]:
    if not re.fullmatch(r"\d{6}", code):
        return [Problem("code", "invalid_format", "分类编码应为 6 位数字")]
    problems: list[Problem] = []
    if code[:2] == "00" or (category_level(code) >= 2 and code[2:4] == "00"):
        problems.append(Problem("code", "invalid_format", "大类和中类编码不能为 00"))
    if code in existing:
        problems.append(Problem("code", "duplicate", f"分类编码 {code} 已存在"))
    parent = category_parent(code)
    if parent is not None and parent not in existing:
        problems.append(Problem("code", "unknown_parent", f"上级分类 {parent} 不存在，请先添加上级分类"))
    return problems


# ---- the instrument record --------------------------------------------------------------------------------------


EARLIEST_START_DATE = date(1900, 1, 1)


def instrument_problems(
    values: Mapping[str, Any], ref: ReferenceData, *, today: date, institution_city: str | None = None
) -> list[Problem]:
    """Cross-field checks and checks against reference data. `values` is the complete record after the change
    (enum members or their string values both work)."""
    problems: list[Problem] = []
    code = values.get("category_code")
    if code is not None and code not in ref.category_codes:
        problems.append(Problem("category_code", "unknown_category", f"未知的设备分类编码 {code}"))
    city = values.get("city_code")
    if city is not None and city not in CITIES:
        problems.append(
            Problem("city_code", "unknown_city", f"未知的市州代码 {city}（应为四川省 21 个市州之一）")
        )
    county = values.get("county_code")
    if county and city in CITIES and county[:4] != city[:4]:
        problems.append(
            Problem("county_code", "county_outside_city", f"区县代码 {county} 不属于 {CITIES[city]}")
        )
    country = values.get("country_code")
    if country and country not in COUNTRIES:
        problems.append(Problem("country_code", "unknown_country", f"未知的产地国别代码 {country}"))
    start = values.get("start_date")
    if start is not None and start > today:
        problems.append(Problem("start_date", "future_date", "启用日期不能晚于今天"))
    elif start is not None and start < EARLIEST_START_DATE:
        # Not a date any instrument in use has; spreadsheets cannot show dates before 1900 either.
        problems.append(Problem("start_date", "too_early", f"启用日期不能早于 {EARLIEST_START_DATE:%Y-%m-%d}"))
    value = values.get("original_value")
    if value is not None and (Decimal(value) < 0 or Decimal(value) > MAX_ORIGINAL_VALUE):
        problems.append(Problem("original_value", "out_of_range", "原值应在 0 到 100 亿元之间"))
    problems += phone_problems(values.get("contact_phone"), field="contact_phone")
    prices = [values.get(k) for k in ("fee_internal", "fee_external")]
    if values.get("fee_unit") and all(p is None for p in prices):
        problems.append(Problem("fee_internal", "price_required", "设置了收费方式时，至少填写内部或外部单价"))
    if not values.get("fee_unit") and any(p is not None for p in [*prices, values.get("fee_minimum")]):
        problems.append(
            Problem(
                "fee_unit", "unit_required", "填写了单价或最低收费时，须选择收费方式（按小时/按样品/按次）"
            )
        )
    if values.get("accepts_vouchers") and str(values.get("sharing_mode")) != SharingMode.external:
        problems.append(
            Problem("accepts_vouchers", "vouchers_need_external", "只有外部共享的仪器可以接受创新券")
        )
    facility = values.get("facility_id")
    if facility is not None and facility not in ref.facility_ids:
        problems.append(Problem("facility_id", "wrong_facility", "所选实验室/平台不存在或不属于该单位"))
    unknown_chains = [c for c in values.get("chains") or [] if c not in ref.chain_names]
    if unknown_chains:
        problems.append(Problem("chains", "unknown_chain", f"未知的产业链标签：{'、'.join(unknown_chains)}"))
    return problems


def is_large(value: Decimal | int | float | None, threshold: Decimal) -> bool:
    return value is not None and Decimal(value) >= threshold


def history_changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether a change touches a field the audit counts by (so the effective-dated history gets a new row)."""
    return any(str(before.get(f)) != str(after.get(f)) for f in HISTORY_FIELDS)


# ---- search text ------------------------------------------------------------------------------------------------


MAX_SEARCH_TERMS = 5


def search_terms(q: str | None, max_terms: int = MAX_SEARCH_TERMS) -> list[str]:
    """Whitespace-separated terms, each matched as a substring (AND). More than MAX_SEARCH_TERMS are refused by the
    API (instruments.service.build_filters) and cut with a note on the page, never dropped silently."""
    if not q:
        return []
    return [t for t in q.split() if t][:max_terms]


def has_bigram(terms: list[str]) -> bool:
    """A term of two or more characters gives the bigram index something to look up."""
    return any(len(t) >= 2 for t in terms)


def frequent_key(term: str) -> str | None:
    """How search_frequent_terms would hold a term: lowercased, as the searched text is. None when the term cannot
    be there: shorter than two characters, with a character outside the Basic Multilingual Plane, or with one whose
    lowercase Python and the database might not agree on (only ASCII and caseless characters qualify)."""
    if len(term) < 2:
        return None
    for ch in term:
        if ord(ch) > 0xFFFF or ch.isspace() or not (ch.isascii() or ch.lower() == ch == ch.upper()):
            return None
    return term.lower()


def like_pattern(term: str) -> str:
    escaped = term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# ---- spreadsheets -----------------------------------------------------------------------------------------------


def neutralise_cell(value: str) -> str:
    """Text a spreadsheet would run as a formula gets a leading apostrophe, so it is shown, not evaluated."""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def unneutralise_cell(value: str) -> str:
    """The inverse on import, so an exported file imports back unchanged."""
    if value.startswith("'") and value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
    return value
