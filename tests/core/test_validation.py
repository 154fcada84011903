"""Pydantic's errors become Chinese field problems: never pydantic's English message."""

from __future__ import annotations

import re
from datetime import date, time
from decimal import Decimal
from typing import Any

import pytest
from pydantic import AwareDatetime, BaseModel, Field, ValidationError

from booking.core.validation import problems_from_errors

CJK = re.compile(r"[\u4e00-\u9fff]")


class Form(BaseModel):
    at: time | None = None
    day: date | None = None
    when: AwareDatetime | None = None
    count: int | None = None
    price: Decimal | None = Field(default=None, max_digits=6, decimal_places=2)
    ratio: float | None = None
    flag: bool | None = None
    name: str | None = Field(default=None, max_length=3)
    step: int | None = Field(default=None, multiple_of=15)


@pytest.mark.parametrize(
    ("data", "field", "expected"),
    [
        ({"at": "25:00"}, "at", "时刻格式不正确"),
        ({"at": "上午"}, "at", "时刻格式不正确"),
        ({"at": 3.5e12}, "at", None),
        ({"day": "2026-13-01"}, "day", "日期格式不正确"),
        ({"when": "2026-12-01T10:00"}, "when", "时区"),
        ({"when": "明天"}, "when", "时间格式不正确"),
        ({"count": "三"}, "count", "应为整数"),
        ({"count": 1.5}, "count", "应为整数"),
        ({"price": "1234567"}, "price", None),
        ({"ratio": "x"}, "ratio", "应为数字"),
        ({"flag": "也许"}, "flag", "应为是/否"),
        ({"name": "四个汉字"}, "name", "太长"),
        ({"step": 10}, "step", "15 的倍数"),
    ],
)
def test_messages_are_chinese(data: dict[str, Any], field: str, expected: str | None) -> None:
    with pytest.raises(ValidationError) as caught:
        Form.model_validate(data)
    [problem] = problems_from_errors(caught.value.errors())
    assert problem.field == field
    assert CJK.search(problem.message), problem.message
    assert not re.search(r"\b(Input|should|valid|value)\b", problem.message), problem.message
    if expected:
        assert expected in problem.message


def test_an_unknown_error_type_is_not_shown_in_english() -> None:
    [problem] = problems_from_errors([{"type": "some_new_type", "loc": ("body", "x"), "msg": "Input is odd"}])
    assert problem.field == "x" and problem.message == "取值无效"


def test_our_own_value_errors_keep_their_message() -> None:
    [problem] = problems_from_errors([{"type": "value_error", "loc": ("x",), "msg": "Value error, 结束应晚于开始"}])
    assert problem.message == "结束应晚于开始"


def test_field_path_of_a_time_in_a_list() -> None:
    class Windows(BaseModel):
        windows: list[time]

    with pytest.raises(ValidationError) as caught:
        Windows.model_validate({"windows": ["09:00", "24:30"]})
    [problem] = problems_from_errors(caught.value.errors())
    assert problem.field == "windows.1" and "时刻格式不正确" in problem.message


def test_a_custom_error_with_a_chinese_message_keeps_it() -> None:
    [problem] = problems_from_errors([{"type": "phone", "loc": ("phone",), "msg": "电话号码格式不正确"}])
    assert problem.message == "电话号码格式不正确"
