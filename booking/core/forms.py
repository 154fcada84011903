"""HTML form helpers: validate a form with the same pydantic model the API uses, collect errors by field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from booking.core.errors import Problem, RuleViolation
from booking.core.validation import problems_from_errors

M = TypeVar("M", bound=BaseModel)


def parse_form(model: type[M], data: Mapping[str, Any], *, blank_is_none: bool = True) -> M:
    cleaned: dict[str, Any] = {}
    known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    for key, value in data.items():
        # Forms carry UI-only fields (csrf_token, password confirmation, submit buttons): keep the model's own.
        if key not in known:
            continue
        if blank_is_none and isinstance(value, str) and value.strip() == "":
            continue
        cleaned[key] = value
    try:
        return model.model_validate(cleaned)
    except ValidationError as exc:
        raise RuleViolation("输入有误", problems=problems_from_errors(exc.errors())) from None


def errors_by_field(problems: Iterable[Problem]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in problems:
        key = p.field or "_form"
        out[key] = f"{out[key]}；{p.message}" if key in out else p.message
    return out


def form_values(form: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in form.items() if k not in ("csrf_token", "password", "new_password",
                                                        "current_password", "password_confirm")}


# Free-text notes on actions (a decision's reason, a rating's comment): the columns hold 500 characters.
NOTE_MAX = 500


def form_note(form: Mapping[str, Any], name: str, *, max_length: int = NOTE_MAX) -> str | None:
    """An optional note from a form, trimmed; longer than the column holds is refused (naming the field), never
    cut silently."""
    value = str(form.get(name) or "").strip()
    if len(value) > max_length:
        raise RuleViolation("内容过长", problems=[Problem(name, "string_too_long",
                                                      f"太长（最多 {max_length} 个字符，现有 {len(value)} 个）")])
    return value or None


def form_count(form: Mapping[str, Any], name: str, *, label: str, maximum: int = 100_000) -> int:
    """An optional whole count from a form (blank is 0); anything else than 0..maximum is refused."""
    raw = str(form.get(name) or "").strip()
    if not raw:
        return 0
    if not (raw.isascii() and raw.isdigit()) or int(raw) > maximum:
        raise RuleViolation(f"{label}有误", problems=[Problem(name, "invalid_count",
                                                          f"{label}应为 0 到 {maximum} 之间的整数")])
    return int(raw)
