"""Turn pydantic validation errors into field problems with Chinese messages."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from booking.core.errors import Problem

# The largest value an `integer` column (every id) holds: a bound for ids taken as input.
DB_INT_MAX = 2**31 - 1

_MESSAGES: dict[str, str] = {
    "missing": "必填",
    "string_too_short": "太短（至少 {min_length} 个字符）",
    "string_too_long": "太长（最多 {max_length} 个字符）",
    "string_pattern_mismatch": "格式不正确",
    "string_type": "应为文本",
    "int_parsing": "应为整数",
    "int_type": "应为整数",
    "float_parsing": "应为数字",
    "decimal_parsing": "应为数字",
    "decimal_max_places": "小数位数过多（最多 {decimal_places} 位）",
    "decimal_max_digits": "数值位数过多",
    "bool_parsing": "应为是/否",
    "greater_than": "应大于 {gt}",
    "greater_than_equal": "应不小于 {ge}",
    "less_than": "应小于 {lt}",
    "less_than_equal": "应不大于 {le}",
    "literal_error": "取值无效（可选：{expected}）",
    "enum": "取值无效（可选：{expected}）",
    "date_parsing": "日期格式不正确（应为 YYYY-MM-DD）",
    "date_from_datetime_parsing": "日期格式不正确（应为 YYYY-MM-DD）",
    "datetime_parsing": "时间格式不正确（应为带时区的 ISO 8601）",
    "datetime_from_date_parsing": "时间格式不正确（应为带时区的 ISO 8601）",
    "timezone_aware": "时间必须带时区偏移（例如 +08:00）",
    "value_error": "{msg}",
    "assertion_error": "{msg}",
    "json_invalid": "JSON 格式不正确",
    "model_attributes_type": "格式不正确",
    "dict_type": "应为对象",
    "list_type": "应为列表",
    "too_long": "条目过多（最多 {max_length} 项）",
    "too_short": "条目过少（至少 {min_length} 项）",
    "extra_forbidden": "不允许的字段",
    "url_parsing": "网址格式不正确",
    "time_parsing": "时刻格式不正确（应为 HH:MM，00:00–23:59）",
    "time_type": "时刻格式不正确（应为 HH:MM，00:00–23:59）",
    "date_type": "日期格式不正确（应为 YYYY-MM-DD）",
    "datetime_type": "时间格式不正确（应为带时区的 ISO 8601）",
    "datetime_object_invalid": "时间无效",
    "date_past": "日期应早于今天",
    "date_future": "日期应晚于今天",
    "datetime_past": "时间应早于现在",
    "datetime_future": "时间应晚于现在",
    "time_delta_parsing": "时长格式不正确",
    "float_type": "应为数字",
    "decimal_type": "应为数字",
    "decimal_whole_digits": "整数位数过多",
    "finite_number": "应为有限的数字",
    "int_from_float": "应为整数",
    "bool_type": "应为是/否",
    "string_unicode": "文本编码不正确",
    "string_sub_type": "应为文本",
    "multiple_of": "应为 {multiple_of} 的倍数",
    "uuid_parsing": "格式不正确",
    "set_type": "应为列表",
    "tuple_type": "应为列表",
    "is_instance_of": "格式不正确",
}
# Any other error type: our own validators' custom errors carry Chinese messages and are shown as they are;
# pydantic's own messages are English and never shown to users.
_FALLBACK = "取值无效"
_CJK = re.compile(r"[\u4e00-\u9fff]")


def field_path(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie", "form")]
    return ".".join(parts) or "body"


def problems_from_errors(errors: Sequence[Any]) -> list[Problem]:
    problems: list[Problem] = []
    for err in errors:
        kind = err.get("type", "value_error")
        ctx = dict(err.get("ctx") or {})
        msg = str(err.get("msg", ""))
        if kind == "value_error" and msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if kind == "value_error" and "email" in msg.lower():
            msg = "邮箱格式不正确"
        template = _MESSAGES.get(kind)
        if template is None:
            text = msg if _CJK.search(msg) else _FALLBACK
        else:
            try:
                text = template.format(msg=msg, **ctx)
            except (KeyError, IndexError):
                text = msg if _CJK.search(msg) else _FALLBACK
        problems.append(Problem(field_path(err.get("loc", ())), kind, text))
    return problems
