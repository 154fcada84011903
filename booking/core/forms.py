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
