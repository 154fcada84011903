"""API shapes for the catalogue. Input models enforce formats and the national length limits; rules.py holds the
cross-field checks and the checks against reference data."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from booking.core.emails import Email
from booking.core.validation import DB_INT_MAX
from instruments.models import (
    MAX_FEE,
    MAX_ORIGINAL_VALUE,
    CustomsStatus,
    FeeUnit,
    FundingSource,
    InstrumentStatus,
    SharingMode,
    Source,
    UsageKind,
)

SubjectCode = Annotated[str, StringConstraints(pattern=r"^\d{3}(\d{2}){0,2}$")]
ChainName = Annotated[str, StringConstraints(min_length=1, max_length=50, strip_whitespace=True)]


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"))


Money = Annotated[Decimal, Field(ge=0, le=MAX_FEE, decimal_places=2), AfterValidator(_cents)]
Value = Annotated[Decimal, Field(ge=0, le=MAX_ORIGINAL_VALUE, decimal_places=2), AfterValidator(_cents)]
CODE6 = r"^\d{6}$"
URL = r"^https?://[^\s]+$"


class _InstrumentFields(BaseModel):
    """Every writable field. Create requires the national essentials; update makes everything optional."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name_en: str | None = Field(default=None, max_length=300, description="英文名称")
    source: Source | None = Field(default=None, description="仪器来源")
    usage_kind: UsageKind | None = Field(default=None, description="仪器类别（通用/专用）")
    country_code: str | None = Field(
        default=None, pattern=r"^[A-Z]{2}$", description="产地国别（GB/T 2659 两字母代码）"
    )
    model: str | None = Field(default=None, max_length=200, description="规格型号")
    manufacturer: str | None = Field(default=None, max_length=200, description="生产制造商")
    start_date: date | None = Field(default=None, description="启用日期")
    specs: str | None = Field(default=None, max_length=500, description="主要技术指标（≤500字）")
    functions: str | None = Field(default=None, max_length=300, description="主要功能（≤300字）")
    subjects: list[SubjectCode] | None = Field(
        default=None, max_length=4, description="主要学科领域（GB/T 13745，最多4个）"
    )
    service_content: str | None = Field(default=None, max_length=200, description="服务内容（≤200字）")
    achievements: str | None = Field(default=None, max_length=2000, description="典型成果")
    sharing_rules: str | None = Field(default=None, max_length=500, description="对外开放共享规定（≤500字）")
    fee_text: str | None = Field(default=None, max_length=500, description="参考收费标准")
    county_code: str | None = Field(default=None, pattern=CODE6, description="区县代码")
    street: str | None = Field(default=None, max_length=300, description="安放地址")
    contact_name: str | None = Field(default=None, max_length=50, description="联系人")
    contact_phone: str | None = Field(default=None, max_length=20, description="联系电话")
    contact_email: Email | None = Field(default=None, max_length=254, description="电子邮箱")
    funding_source: FundingSource | None = Field(default=None, description="主要购置经费来源")
    department: str | None = Field(default=None, max_length=200, description="所属单位内部门")
    customs_status: CustomsStatus | None = Field(default=None, description="海关监管情况")
    facility_id: int | None = Field(default=None, ge=1, le=DB_INT_MAX, description="所属实验室/平台")
    fee_unit: FeeUnit | None = Field(default=None, description="收费方式")
    fee_internal: Money | None = Field(default=None, description="内部单价（元）")
    fee_external: Money | None = Field(default=None, description="外部单价（元）")
    fee_minimum: Money | None = Field(default=None, description="最低收费（元）")
    photo_url: str | None = Field(default=None, max_length=500, pattern=URL, description="照片网址")
    chains: list[ChainName] | None = Field(default=None, max_length=20, description="产业链标签")


class InstrumentCreate(_InstrumentFields):
    institution_id: int | None = Field(
        default=None, ge=1, le=DB_INT_MAX, description="所属单位；管理员只管理一个单位时可省略"
    )
    asset_number: str = Field(min_length=1, max_length=64, description="所在单位仪器内部编码")
    name: str = Field(min_length=2, max_length=200, description="中文名称")
    category_code: str = Field(pattern=CODE6, description="设备分类编码（6位）")
    original_value: Value = Field(description="原值（元）")
    city_code: str | None = Field(
        default=None, pattern=CODE6, description="所在市州代码；省略时取单位所在市州"
    )
    sharing_mode: SharingMode = Field(description="共享模式")
    status: InstrumentStatus = Field(default=InstrumentStatus.normal, description="运行状态")
    qualification_required: bool = False
    accepts_vouchers: bool = False
    restricted: bool = False


class InstrumentUpdate(_InstrumentFields):
    institution_id: int | None = Field(default=None, ge=1, le=DB_INT_MAX)
    asset_number: str | None = Field(default=None, min_length=1, max_length=64)
    name: str | None = Field(default=None, min_length=2, max_length=200)
    category_code: str | None = Field(default=None, pattern=CODE6)
    original_value: Value | None = None
    city_code: str | None = Field(default=None, pattern=CODE6)
    sharing_mode: SharingMode | None = None
    status: InstrumentStatus | None = None
    qualification_required: bool | None = None
    accepts_vouchers: bool | None = None
    restricted: bool | None = None


class RetireRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reason: str = Field(min_length=2, max_length=500, description="退役原因")


class AccessGrant(BaseModel):
    """The user to authorise: by id or by email (exactly one)."""

    model_config = ConfigDict(extra="forbid")
    user_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    email: str | None = Field(default=None, max_length=254)

    @model_validator(mode="after")
    def _one_of(self) -> AccessGrant:
        if (self.user_id is None) == (self.email is None):
            raise ValueError("请填写用户编号或邮箱（只填一个）")
        return self


class InstitutionRef(BaseModel):
    id: int
    name: str
    kind: str


class NamedRef(BaseModel):
    id: int
    name: str


class CategoryRef(BaseModel):
    code: str
    name: str | None


class InstrumentItem(BaseModel):
    """One search result: enough to list and link, not the whole record."""

    id: int
    name: str
    name_en: str | None
    model: str | None
    manufacturer: str | None
    institution: InstitutionRef
    city_code: str
    city_name: str
    category_code: str
    category_name: str | None
    sharing_mode: str
    status: str
    original_value: Decimal
    large: bool
    accepts_vouchers: bool
    restricted: bool
    url: str


class FacetCount(BaseModel):
    value: str
    label: str
    count: int


class SearchResult(BaseModel):
    items: list[InstrumentItem]
    total: int
    limit: int
    offset: int
    facets: dict[str, list[FacetCount]]


class Fees(BaseModel):
    unit: str | None
    internal: Decimal | None
    external: Decimal | None
    minimum: Decimal | None
    text: str | None


class Contact(BaseModel):
    name: str | None
    phone: str | None
    email: str | None


class InstrumentPublic(BaseModel):
    """The full record. `contact` is null for anonymous readers."""

    id: int
    url: str
    asset_number: str
    name: str
    name_en: str | None
    institution: InstitutionRef
    facility: NamedRef | None
    department: str | None
    category: CategoryRef
    category_path: list[CategoryRef]
    source: str | None
    usage_kind: str | None
    original_value: Decimal
    large: bool
    country_code: str | None
    model: str | None
    manufacturer: str | None
    start_date: date | None
    specs: str | None
    functions: str | None
    subjects: list[str]
    service_content: str | None
    achievements: str | None
    sharing_rules: str | None
    fees: Fees
    city_code: str
    city_name: str
    county_code: str | None
    street: str | None
    contact: Contact | None
    sharing_mode: str
    status: str
    funding_source: str | None
    customs_status: str | None
    photo_url: str | None
    qualification_required: bool
    accepts_vouchers: bool
    restricted: bool
    chains: list[str]
    retired_at: datetime | None
    retired_reason: str | None
    created_at: datetime
    updated_at: datetime


class CategoryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    code: str = Field(pattern=CODE6, description="6位分类编码：大类(2)中类(2)小类(2)")
    name: str = Field(min_length=2, max_length=100)


class CategoryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    code: str
    name: str
    level: int
    parent_code: str | None


def _not_all_digits(name: str) -> str:
    # The search takes a chain by id or by name (chain=12): a name of digits only would read as an id.
    if name.isdigit():
        raise ValueError("产业链名称不能全是数字（会与标签编号混淆）")
    return name


class ChainCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: Annotated[str, Field(min_length=2, max_length=50), AfterValidator(_not_all_digits)]


class ChainPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str


class ImportError_(BaseModel):
    row: int
    column: str | None
    message: str


class ImportResult(BaseModel):
    rows: int
    created: int
    updated: int
    unchanged: int
