"""The catalogue: one row per 台(套) with the national platform's fields, classification codes as data,
industrial-chain tags, per-instrument access grants for restricted instruments, and effective-dated history.

Codes stored in the database are short English identifiers (stable for the API); the Chinese labels the
national platform uses live in the *_LABELS maps and are what pages, imports and exports show.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field, SQLModel

from booking.core.base import fk_column, now, ts_column


class SharingMode(StrEnum):
    internal = "internal"
    external = "external"
    none = "none"


class InstrumentStatus(StrEnum):
    normal = "normal"
    standby = "standby"
    remote = "remote"
    occasional_fault = "occasional_fault"
    frequent_fault = "frequent_fault"
    awaiting_repair = "awaiting_repair"
    awaiting_scrap = "awaiting_scrap"


class Source(StrEnum):
    purchased = "purchased"
    developed = "developed"
    donated = "donated"
    other = "other"


class UsageKind(StrEnum):
    general = "general"
    special = "special"


class FundingSource(StrEnum):
    central = "central"
    local = "local"
    own = "own"
    other = "other"


class CustomsStatus(StrEnum):
    none = "none"
    supervised = "supervised"
    released = "released"


class FeeUnit(StrEnum):
    hour = "hour"
    sample = "sample"
    use = "use"


SHARING_MODE_LABELS: dict[str, str] = {"internal": "内部共享", "external": "外部共享", "none": "不共享"}
STATUS_LABELS: dict[str, str] = {
    "normal": "正常",
    "standby": "待机",
    "remote": "远程服务中",
    "occasional_fault": "偶有故障",
    "frequent_fault": "故障频繁",
    "awaiting_repair": "待修",
    "awaiting_scrap": "待报废",
}
SOURCE_LABELS: dict[str, str] = {"purchased": "购置", "developed": "研制", "donated": "赠送", "other": "其他"}
USAGE_KIND_LABELS: dict[str, str] = {"general": "通用", "special": "专用"}
FUNDING_LABELS: dict[str, str] = {
    "central": "中央财政",
    "local": "地方财政",
    "own": "单位自有",
    "other": "其他",
}
CUSTOMS_LABELS: dict[str, str] = {
    "none": "非海关监管",
    "supervised": "海关监管期内",
    "released": "已解除海关监管",
}
FEE_UNIT_LABELS: dict[str, str] = {"hour": "按小时", "sample": "按样品", "use": "按次"}

# The most an instrument's 原值 may plausibly be: anything above is a typing error, not an instrument.
MAX_ORIGINAL_VALUE = Decimal("10000000000")
MAX_FEE = Decimal("10000000")


def _in(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Category(SQLModel, table=True):
    """设备分类编码: 大类(2) 中类(2) 小类(2); the migration seeds the known codes, admins add more."""

    __tablename__ = "instrument_categories"
    __table_args__ = (
        CheckConstraint("code ~ '^[0-9]{6}$'", name="code_format"),
        CheckConstraint("level IN (1, 2, 3)", name="level"),
    )

    code: str = Field(sa_column=Column(String(6), primary_key=True))
    name: str = Field(sa_column=Column(String(100), nullable=False))
    level: int = Field(sa_column=Column(SmallInteger, nullable=False))
    parent_code: str | None = Field(
        default=None,
        sa_column=Column(String(6), ForeignKey("instrument_categories.code"), nullable=True, index=True),
    )
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))


class Chain(SQLModel, table=True):
    """An industrial-chain tag ("15+N" chains and the six 优势产业): an admin-editable list."""

    __tablename__ = "chains"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(50), nullable=False, unique=True))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))


class Instrument(SQLModel, table=True):
    __tablename__ = "instruments"
    __table_args__ = (
        UniqueConstraint("institution_id", "asset_number", name="uq_instruments_institution_asset_number"),
        CheckConstraint(_in("sharing_mode", [m.value for m in SharingMode]), name="sharing_mode"),
        CheckConstraint(_in("status", [s.value for s in InstrumentStatus]), name="status"),
        CheckConstraint(_in("source", [s.value for s in Source]), name="source"),
        CheckConstraint(_in("usage_kind", [s.value for s in UsageKind]), name="usage_kind"),
        CheckConstraint(_in("funding_source", [s.value for s in FundingSource]), name="funding_source"),
        CheckConstraint(_in("customs_status", [s.value for s in CustomsStatus]), name="customs_status"),
        CheckConstraint(_in("fee_unit", [s.value for s in FeeUnit]), name="fee_unit"),
        CheckConstraint(
            f"original_value >= 0 AND original_value <= {MAX_ORIGINAL_VALUE}", name="original_value"
        ),
        CheckConstraint("fee_internal >= 0 AND fee_external >= 0 AND fee_minimum >= 0", name="fees"),
        CheckConstraint("county_code ~ '^[0-9]{6}$'", name="county_code_format"),
        CheckConstraint("(retired_at IS NULL) = (retired_reason IS NULL)", name="retired_reason"),
        CheckConstraint("cardinality(subjects) <= 4", name="subjects"),
    )

    id: int | None = Field(default=None, primary_key=True)
    institution_id: int = Field(sa_column=fk_column("institutions.id"))
    facility_id: int | None = Field(default=None, sa_column=fk_column("facilities.id", nullable=True))
    asset_number: str = Field(sa_column=Column(String(64), nullable=False))
    name: str = Field(sa_column=Column(String(200), nullable=False, index=True))
    name_en: str | None = Field(default=None, sa_column=Column(String(300)))
    category_code: str = Field(
        sa_column=Column(String(6), ForeignKey("instrument_categories.code"), nullable=False, index=True)
    )
    source: str | None = Field(default=None, sa_column=Column(Text))
    usage_kind: str | None = Field(default=None, sa_column=Column(Text))
    original_value: Decimal = Field(sa_column=Column(Numeric(14, 2), nullable=False, index=True))
    country_code: str | None = Field(default=None, sa_column=Column(String(3)))
    model: str | None = Field(default=None, sa_column=Column(String(200)))
    manufacturer: str | None = Field(default=None, sa_column=Column(String(200)))
    start_date: date | None = Field(default=None, sa_column=Column(Date))
    specs: str | None = Field(default=None, sa_column=Column(String(500)))
    functions: str | None = Field(default=None, sa_column=Column(String(300)))
    subjects: list[str] = Field(
        default_factory=list, sa_column=Column(ARRAY(String(7)), nullable=False, server_default=text("'{}'"))
    )
    service_content: str | None = Field(default=None, sa_column=Column(String(200)))
    achievements: str | None = Field(default=None, sa_column=Column(String(2000)))
    sharing_rules: str | None = Field(default=None, sa_column=Column(String(500)))
    fee_text: str | None = Field(default=None, sa_column=Column(String(500)))
    city_code: str = Field(sa_column=Column(String(6), ForeignKey("cities.code"), nullable=False, index=True))
    county_code: str | None = Field(default=None, sa_column=Column(String(6)))
    street: str | None = Field(default=None, sa_column=Column(String(300)))
    contact_name: str | None = Field(default=None, sa_column=Column(String(50)))
    contact_phone: str | None = Field(default=None, sa_column=Column(String(20)))
    contact_email: str | None = Field(default=None, sa_column=Column(String(254)))
    sharing_mode: str = Field(sa_column=Column(Text, nullable=False, index=True))
    status: str = Field(sa_column=Column(Text, nullable=False, index=True))
    funding_source: str | None = Field(default=None, sa_column=Column(Text))
    department: str | None = Field(default=None, sa_column=Column(String(200)))
    customs_status: str | None = Field(default=None, sa_column=Column(Text))
    # What booking needs beyond the national record.
    fee_unit: str | None = Field(default=None, sa_column=Column(Text))
    fee_internal: Decimal | None = Field(default=None, sa_column=Column(Numeric(12, 2)))
    fee_external: Decimal | None = Field(default=None, sa_column=Column(Numeric(12, 2)))
    fee_minimum: Decimal | None = Field(default=None, sa_column=Column(Numeric(12, 2)))
    photo_url: str | None = Field(default=None, sa_column=Column(String(500)))
    qualification_required: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    accepts_vouchers: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    # Military-civil facilities: visible only to platform admins, the owner's managers and granted users.
    restricted: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    retired_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    retired_reason: str | None = Field(default=None, sa_column=Column(String(500)))
    created_by: int | None = Field(default=None, sa_column=fk_column("users.id", nullable=True, index=False))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
    updated_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))


# ---- the search index ------------------------------------------------------------------------------------------
# Two tables that triggers maintain in the writing transaction (see the search migration); the application only
# reads them, so they are plain tables rather than mapped classes.
#
# instrument_search: one narrow row (about 450 bytes, against about 1.3 kB in instruments) per *live* instrument
# with what search filters, counts, facets and sorts on. Retired instruments have no row. search_text is the
# lowercased text searched: names, model, manufacturer and functions, then the institution's name on the last
# line. bigrams holds its overlapping two-character pieces as int4 codes (text_bigram_codes), GIN-indexed: a
# trigram index cannot serve the two-character Chinese queries (质谱, 核磁) that are the common case.
instrument_search = Table(
    "instrument_search",
    SQLModel.metadata,
    Column("instrument_id", Integer, ForeignKey("instruments.id", ondelete="CASCADE"), primary_key=True),
    Column("institution_id", Integer, nullable=False, index=True),
    Column("institution_kind", Text, nullable=False),
    Column("city_code", String(6), nullable=False, index=True),
    Column("category_code", String(6), nullable=False, index=True),
    Column("sharing_mode", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("original_value", Numeric(14, 2), nullable=False),
    Column("accepts_vouchers", Boolean, nullable=False),
    Column("restricted", Boolean, nullable=False),
    Column("name", String(200), nullable=False),
    Column("search_text", Text, nullable=False),
    Column("bigrams", ARRAY(Integer), nullable=False),
)
# A short pending list (256 kB, not 4 MB): every search scans it, and the planner shuns a GIN index with a long one;
# merging 256 kB at a time still keeps bulk inserts about twice as fast as inserting every entry in place.
Index(
    "ix_instrument_search_bigrams",
    instrument_search.c.bigrams,
    postgresql_using="gin",
    postgresql_with={"gin_pending_list_limit": "256"},
)
Index("ix_instrument_search_name", instrument_search.c.name, instrument_search.c.instrument_id)
Index("ix_instrument_search_value", instrument_search.c.original_value, instrument_search.c.instrument_id)
# The few restricted instruments, for the viewers who may see some of them.
Index(
    "ix_instrument_search_restricted",
    instrument_search.c.institution_id,
    postgresql_where=instrument_search.c.restricted,
)

# instrument_facet_counts: how many live instruments fall in each cell of the cube over the five facets, split by
# restricted. `dims` says which facets a row is broken down by (16 city, 8 institution kind, 4 category, 2 sharing
# mode, 1 status; the others hold ''), so every combination of facet filters reads a handful of rows: a page
# without a text query or other filters counts its facets and total here instead of over up to 100,000 rows.
FACET_DIMS: dict[str, int] = {
    "city_code": 16,
    "institution_kind": 8,
    "category_code": 4,
    "sharing_mode": 2,
    "status": 1,
}


def _facet_cell_counted() -> list[Column[Any] | CheckConstraint]:
    """The five facets as the last key columns of a table of counts, then the count: shared by the facet cube and
    the frequent terms' kept counts."""
    return [
        *(
            Column(name, String(6) if name in ("city_code", "category_code") else Text, primary_key=True)
            for name in FACET_DIMS
        ),
        Column("n", Integer, nullable=False),
        CheckConstraint("n >= 0", name="n"),
    ]


instrument_facet_counts = Table(
    "instrument_facet_counts",
    SQLModel.metadata,
    Column("dims", SmallInteger, primary_key=True),
    Column("restricted", Boolean, primary_key=True),
    *_facet_cell_counted(),
)


class InstrumentChain(SQLModel, table=True):
    __tablename__ = "instrument_chains"

    instrument_id: int = Field(
        sa_column=Column(Integer, ForeignKey("instruments.id", ondelete="CASCADE"), primary_key=True)
    )
    chain_id: int = Field(
        sa_column=Column(Integer, ForeignKey("chains.id", ondelete="CASCADE"), primary_key=True, index=True)
    )


class InstrumentAccess(SQLModel, table=True):
    """Users explicitly authorised to see (and later book) a restricted instrument."""

    __tablename__ = "instrument_access"

    instrument_id: int = Field(
        sa_column=Column(Integer, ForeignKey("instruments.id", ondelete="CASCADE"), primary_key=True)
    )
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    )
    granted_by: int | None = Field(default=None, sa_column=fk_column("users.id", nullable=True, index=False))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))


class InstrumentHistory(SQLModel, table=True):
    """Effective-dated values of the fields the audit counts by; exactly one open row per live instrument."""

    __tablename__ = "instrument_history"
    __table_args__ = (
        CheckConstraint("valid_to IS NULL OR valid_to >= valid_from", name="valid_range"),
        Index(
            "uq_instrument_history_open",
            "instrument_id",
            unique=True,
            postgresql_where=text("valid_to IS NULL"),
        ),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    instrument_id: int = Field(sa_column=fk_column("instruments.id", ondelete="CASCADE"))
    valid_from: datetime = Field(sa_column=ts_column())
    valid_to: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    sharing_mode: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(sa_column=Column(Text, nullable=False))
    original_value: Decimal = Field(sa_column=Column(Numeric(14, 2), nullable=False))
    institution_id: int = Field(sa_column=Column(Integer, nullable=False))
    city_code: str = Field(sa_column=Column(String(6), nullable=False))


HISTORY_FIELDS = ("sharing_mode", "status", "original_value", "institution_id", "city_code")


# ---- frequent terms ------------------------------------------------------------------------------------------
# For the terms in search_frequent_terms (those found in thousands of instruments), triggers on instrument_search keep
# their postings and their facet counts (see the frequent-terms migration): a one-term search for such a term reads
# its page from the postings' index and its total and facets from a few thousand counts instead of gathering and
# grouping every match. `term` is lowercased; `bigram` is its code when it is two characters; `pattern` its LIKE
# pattern.
search_frequent_terms = Table(
    "search_frequent_terms",
    SQLModel.metadata,
    Column("id", Integer, primary_key=True),
    Column("term", Text, nullable=False, unique=True),
    Column("bigram", Integer, nullable=True, unique=True),
    Column("bigrams", ARRAY(Integer), nullable=False),
    Column("pattern", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
search_term_postings = Table(
    "search_term_postings",
    SQLModel.metadata,
    Column("instrument_id", Integer, primary_key=True, autoincrement=False),
    Column("term_id", Integer, primary_key=True, autoincrement=False),
    Column("name_hit", Boolean, nullable=False),
    Column("restricted", Boolean, nullable=False),
    Column("original_value", Numeric(14, 2), nullable=False),
    Column("city_code", String(6), nullable=False),
    Column("institution_kind", Text, nullable=False),
    Column("category_code", String(6), nullable=False),
    Column("sharing_mode", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("accepts_vouchers", Boolean, nullable=False),
    # The instrument's industrial chains (instrument_chains), sorted: kept by triggers on both tables.
    Column("chain_ids", ARRAY(Integer), nullable=False),
)
Index(
    "ix_search_term_postings_page",
    search_term_postings.c.term_id,
    search_term_postings.c.name_hit.desc(),
    search_term_postings.c.instrument_id.desc(),
)
Index(
    "ix_search_term_postings_value",
    search_term_postings.c.term_id,
    search_term_postings.c.original_value,
    search_term_postings.c.instrument_id,
)
# The kept counts are split by value class: width_bucket(original_value, VALUE_CLASS_BOUNDS), frozen in revision 0010.
# The bounds are round sums in 万元 (10, 20, 50, 100, 200, 500, 1000万) and include the national large threshold
# (50万元), so the 大型 filter and common value bounds sum whole classes; a bound inside a class has only that
# class's postings on one side of it counted. Class 0 is below the first bound, class k from bound k on. (Each
# class splits the cells further: for 分析 at 100,000 instruments 13,400 rows of counts instead of 9,900 split by
# large alone, which every plain search of the term sums; ten classes would make it 16,000.)
VALUE_CLASS_BOUNDS = tuple(Decimal(v) for v in (100000, 200000, 500000, 1000000, 2000000, 5000000, 10000000))


# Key order: the term (and chain) first, then restricted, value class and vouchers, then the five facets.
def _kept_counts(name: str, *leading: str) -> Table:
    return Table(
        name,
        SQLModel.metadata,
        *(Column(column, Integer, primary_key=True, autoincrement=False) for column in leading),
        Column("restricted", Boolean, primary_key=True),
        Column("value_class", SmallInteger, primary_key=True, autoincrement=False),
        Column("vouchers", Boolean, primary_key=True),
        *_facet_cell_counted(),
    )


search_term_counts = _kept_counts("search_term_counts", "term_id")
# The same counts per (term, industrial chain): a posting counts once in each of its chains.
search_term_chain_counts = _kept_counts("search_term_chain_counts", "term_id", "chain_id")
# The same counts per facet value alone (category: its 大类, the first two digits), which is all a search without a
# facet filter or a chain needs: a few hundred rows per term instead of every cell.
search_term_marginals = Table(
    "search_term_marginals",
    SQLModel.metadata,
    Column("term_id", Integer, primary_key=True, autoincrement=False),
    Column("restricted", Boolean, primary_key=True),
    Column("value_class", SmallInteger, primary_key=True, autoincrement=False),
    Column("vouchers", Boolean, primary_key=True),
    Column("facet", Text, primary_key=True),
    Column("value", Text, primary_key=True),
    Column("n", Integer, nullable=False),
    CheckConstraint("n >= 0", name="n"),
)
