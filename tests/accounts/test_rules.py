"""Pure account rules, table-driven."""

from __future__ import annotations

import pytest

from booking.accounts.rules import city_problems, credit_code_check_char, credit_code_problems, phone_problems
from booking.core.passwords import password_problems


def _valid_credit_code(first17: str) -> str:
    return first17 + credit_code_check_char(first17)


class TestPhoneProblems:
    @pytest.mark.parametrize(
        ("phone", "ok"),
        [
            ("13800138000", True),
            ("+86 138 0013 8000", True),
            ("028-85551234", True),
            ("02885551234", True),
            ("0816-2419000", True),
            ("12345", False),
            ("23800138000", False),
            ("1380013800a", False),
            ("", True),
            (None, True),
        ],
    )
    def test_formats(self, phone: str | None, ok: bool) -> None:
        assert (phone_problems(phone) == []) is ok


class TestCreditCode:
    @pytest.mark.parametrize(
        ("code", "expected"),
        [
            (_valid_credit_code("12510000450717640"), None),
            (_valid_credit_code("91510100MA61234567"[:17]), None),
            ("12345", "invalid_credit_code"),
            ("12510000450717640I", "invalid_credit_code"),
            ("125100004507176400", "credit_code_checksum"),
        ],
    )
    def test_checks(self, code: str, expected: str | None) -> None:
        problems = credit_code_problems(code)
        if expected is None:
            assert problems == [] or problems[0].code != "invalid_credit_code"
            if problems:  # only possible when the made-up prefix's check char collides; make sure it's consistent
                pytest.fail(f"valid code refused: {problems}")
        else:
            assert [p.code for p in problems] == [expected]


class TestCityProblems:
    @pytest.mark.parametrize(("code", "ok"), [("510100", True), ("513400", True), ("510200", False),
                                              ("110000", False), (None, True)])
    def test_only_the_21_cities(self, code: str | None, ok: bool) -> None:
        assert (city_problems(code) == []) is ok


class TestPasswordProblems:
    @pytest.mark.parametrize(
        ("password", "codes"),
        [
            ("correct-horse-battery", []),
            ("short", ["too_short"]),
            ("password123", ["too_common"]),
            ("1234567890", ["too_common"]),
            ("aaaaaaaaaaaa", ["too_common"]),
            ("x" * 129, ["too_long", "too_common"]),
        ],
    )
    def test_policy(self, password: str, codes: list[str]) -> None:
        assert [p.code for p in password_problems(password)] == codes

    def test_all_problems_at_once(self) -> None:
        assert {p.code for p in password_problems("123456")} == {"too_short", "too_common"}

    def test_same_as_email_name(self) -> None:
        assert "same_as_email" in {p.code for p in password_problems("zhangsan2027", email="zhangsan2027@x.cn")}
