"""Pure rules, table-driven."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from instruments.columns import COLUMNS, CellError, read_cell, wan, write_cell
from instruments.rules import (
    ReferenceData,
    category_code_problems,
    category_prefix,
    frequent_key,
    has_bigram,
    history_changed,
    instrument_problems,
    is_large,
    like_pattern,
    neutralise_cell,
    search_terms,
    unneutralise_cell,
)

TODAY = date(2027, 3, 1)
REF = ReferenceData(
    category_codes=frozenset({"010000", "010200", "010201"}),
    chain_names=frozenset({"电子信息"}),
    facility_ids=frozenset({7}),
)
VALID: dict[str, Any] = {
    "category_code": "010200",
    "city_code": "510700",
    "county_code": "510703",
    "country_code": "DE",
    "start_date": date(2020, 1, 1),
    "original_value": Decimal("600000"),
    "contact_phone": "0816-2345678",
    "fee_unit": "hour",
    "fee_internal": Decimal("100"),
    "sharing_mode": "external",
    "accepts_vouchers": True,
    "facility_id": 7,
    "chains": ["电子信息"],
}


class TestCategoryPrefix:
    @pytest.mark.parametrize(
        ("code", "prefix"),
        [
            ("01", "01"),
            ("0102", "0102"),
            ("010201", "010201"),
            ("010000", "01"),
            ("010200", "0102"),
            ("0100", "01"),
            ("990000", "99"),
            ("", None),
            ("1", None),
            ("010", None),
            ("01020", None),
            ("abcdef", None),
            ("0102011", None),
        ],
    )
    def test_prefix(self, code: str, prefix: str | None) -> None:
        assert category_prefix(code) == prefix


class TestCategoryCodeProblems:
    @pytest.mark.parametrize(
        ("code", "codes"),
        [
            ("010202", set()),
            ("010200", {"010000", "010200"}),
            ("01020", set()),
            ("000000", set()),
            ("010002", {"010000"}),
        ],
    )
    def test_problems(self, code: str, codes: set[str]) -> None:
        assert category_code_problems(code, codes)

    @pytest.mark.parametrize(
        ("code", "codes"),
        [
            ("020000", set()),
            ("010300", {"010000"}),
            ("010201", {"010000", "010200"}),
        ],
    )
    def test_ok(self, code: str, codes: set[str]) -> None:
        assert category_code_problems(code, codes) == []


class TestInstrumentProblems:
    def test_valid_record_has_none(self) -> None:
        assert instrument_problems(VALID, REF, today=TODAY) == []

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"category_code": "020000"}, "category_code"),
            ({"city_code": "110100"}, "city_code"),
            ({"county_code": "510104"}, "county_code"),
            ({"country_code": "ZZ"}, "country_code"),
            ({"start_date": date(2027, 3, 2)}, "start_date"),
            ({"start_date": date(1, 1, 1)}, "start_date"),  # the XLSX export could not write it back
            ({"start_date": date(1899, 12, 31)}, "start_date"),
            ({"original_value": Decimal("-0.01")}, "original_value"),
            ({"original_value": Decimal("10000000000.01")}, "original_value"),
            ({"contact_phone": "8888"}, "contact_phone"),
            ({"fee_internal": None}, "fee_internal"),
            ({"fee_unit": None}, "fee_unit"),
            ({"sharing_mode": "internal"}, "accepts_vouchers"),
            ({"facility_id": 8}, "facility_id"),
            ({"chains": ["电子信息", "无此链"]}, "chains"),
        ],
    )
    def test_one_problem(self, change: dict[str, Any], field: str) -> None:
        problems = instrument_problems({**VALID, **change}, REF, today=TODAY)
        assert [p.field for p in problems] == [field]

    def test_every_problem_at_once(self) -> None:
        bad = {
            **VALID,
            "category_code": "1",
            "city_code": "1",
            "start_date": date(2030, 1, 1),
            "chains": ["x"],
        }
        fields = {p.field for p in instrument_problems(bad, REF, today=TODAY)}
        assert fields == {"category_code", "city_code", "start_date", "chains"}

    def test_start_date_today_is_fine(self) -> None:
        assert instrument_problems({**VALID, "start_date": TODAY}, REF, today=TODAY) == []


class TestSmallHelpers:
    @pytest.mark.parametrize(
        ("value", "large"),
        [
            (Decimal("499999.99"), False),
            (Decimal("500000"), True),
            (None, False),
            (2_000_000, True),
        ],
    )
    def test_is_large(self, value: Any, large: bool) -> None:
        assert is_large(value, Decimal("500000")) is large

    @pytest.mark.parametrize(
        ("before", "after", "result"),
        [
            ({"status": "normal"}, {"status": "normal"}, False),
            ({"status": "normal"}, {"status": "standby"}, True),
            ({"original_value": Decimal("1.00")}, {"original_value": Decimal("1.00")}, False),
            ({"city_code": "510100"}, {"city_code": "510700"}, True),
        ],
    )
    def test_history_changed(self, before: dict[str, Any], after: dict[str, Any], result: bool) -> None:
        assert history_changed(before, after) is result

    @pytest.mark.parametrize(
        ("q", "terms", "bigram"),
        [
            ("质谱", ["质谱"], True),
            (" 质谱  安捷伦 ", ["质谱", "安捷伦"], True),
            ("谱", ["谱"], False),
            ("", [], False),
            (None, [], False),
            ("a b c d e f g", ["a", "b", "c", "d", "e"], False),
        ],
    )
    def test_search_terms(self, q: str | None, terms: list[str], bigram: bool) -> None:
        assert search_terms(q) == terms
        assert has_bigram(terms) is bigram

    @pytest.mark.parametrize(
        ("term", "pattern"),
        [
            ("质谱", "%质谱%"),
            ("LC_MS", "%lc\\_ms%"),
            ("50%", "%50\\%%"),
            ("a\\b", "%a\\\\b%"),
        ],
    )
    def test_like_pattern(self, term: str, pattern: str) -> None:
        assert like_pattern(term) == pattern

    @pytest.mark.parametrize(
        ("term", "key"),
        [
            ("质谱", "质谱"),
            ("分析仪", "分析仪"),
            ("LC-MS", "lc-ms"),
            ("Ms", "ms"),
            ("50%", "50%"),
            ("谱", None),  # one character: nothing to keep
            ("", None),
            ("质 谱", None),  # whitespace splits terms; it is never inside one
            ("\U00020000谱", None),  # outside the Basic Multilingual Plane
            ("Éa", None),  # a cased letter beyond ASCII: Python and the database may lowercase it differently
            ("ΣΑ", None),
        ],
    )
    def test_frequent_key(self, term: str, key: str | None) -> None:
        assert frequent_key(term) == key

    @pytest.mark.parametrize(
        ("raw", "shown"),
        [
            ("=1+1", "'=1+1"),
            ("+86", "'+86"),
            ("-2", "'-2"),
            ("@A1", "'@A1"),
            ("\tx", "'\tx"),
            ("质谱", "质谱"),
            ("a=b", "a=b"),
            ("", ""),
        ],
    )
    def test_neutralise_round_trip(self, raw: str, shown: str) -> None:
        assert neutralise_cell(raw) == shown
        assert unneutralise_cell(shown) == raw


COL = {c.field: c for c in COLUMNS}


class TestCells:
    @pytest.mark.parametrize(
        ("field", "raw", "value"),
        [
            ("original_value", "52.5", Decimal("525000.00")),
            ("original_value", 52.345678, Decimal("523456.78")),
            ("original_value", 60.01 + 8.53, Decimal("685400.00")),  # a formula's 68.53999999999999, shown 68.54
            ("fee_internal", 0.1 + 0.2, Decimal("0.30")),  # 0.30000000000000004
            ("original_value", "1,200", Decimal("12000000.00")),
            ("category_code", 10200, "010200"),
            ("category_code", "10200", "010200"),
            ("sharing_mode", "外部共享", "external"),
            ("sharing_mode", "external", "external"),
            ("status", "远程服务中", "remote"),
            ("city_code", "绵阳市", "510700"),
            ("city_code", 510700, "510700"),
            ("country_code", "德国", "DE"),
            ("country_code", "us", "US"),
            ("start_date", "2020/5/1", date(2020, 5, 1)),
            ("start_date", "2020年5月1日", date(2020, 5, 1)),
            ("accepts_vouchers", "是", True),
            ("accepts_vouchers", "否", False),
            ("chains", "电子信息；装备制造", ["电子信息", "装备制造"]),
            ("subjects", "150;14010", ["150", "14010"]),
            ("name", "  质谱仪 ", "质谱仪"),
            ("name", "'=1+1", "=1+1"),
            ("name", "   ", None),
            ("fee_internal", "120.5", Decimal("120.50")),
        ],
    )
    def test_read(self, field: str, raw: Any, value: Any) -> None:
        assert read_cell(COL[field], raw) == value

    @pytest.mark.parametrize(
        ("field", "raw"),
        [
            ("original_value", "五十万"),
            ("original_value", "52.1234567"),
            ("category_code", "01-02"),
            ("sharing_mode", "公开"),
            ("city_code", "北京市"),
            ("country_code", "火星"),
            ("start_date", "去年"),
            ("accepts_vouchers", "也许"),
            ("fee_internal", "1.005"),
            ("original_value", "NaN"),
            ("original_value", "1e30"),  # refused, not an arithmetic overflow (a 500)
            ("original_value", "1e999999"),
            ("original_value", "1e9999999999"),
            ("original_value", 1e30),
            ("fee_internal", "1e30"),
            ("original_value", "1e-9999999999"),  # not silently 0.00
        ],
    )
    def test_read_rejects(self, field: str, raw: Any) -> None:
        with pytest.raises(CellError):
            read_cell(COL[field], raw)

    @pytest.mark.parametrize(
        ("cny", "shown"),
        [
            (Decimal("500000"), Decimal("50.00")),
            (Decimal("523456.78"), Decimal("52.345678")),
            (Decimal("1234.5"), Decimal("0.12345")),
        ],
    )
    def test_wan_is_exact(self, cny: Decimal, shown: Decimal) -> None:
        assert wan(cny) == shown
        assert read_cell(COL["original_value"], str(wan(cny))) == cny

    def test_write_labels(self) -> None:
        assert write_cell(COL["sharing_mode"], "none") == "不共享"
        assert write_cell(COL["restricted"], True) == "是"
        assert write_cell(COL["city_code"], "513400") == "凉山彝族自治州"
