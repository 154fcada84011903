"""Pure audit definitions: the as-of instant, month windows, value bands, rates, the projection, and input checks.

As of date D means "at the end of D in Asia/Shanghai": the instant T = D+1 00:00 local. A figure as of D uses the
effective-dated instrument state holding just before T, and only the facts the platform knew before T (a service
record from when it was stored, never before the service ended; a rating from when it was given). Facts are never
back-dated, so the same question asked later gets the same answer.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from booking.core.clock import LOCAL_TZ
from booking.core.errors import Problem
from booking.core.settings import Settings

CENT = Decimal("0.01")


def local_midnight(day: date) -> datetime:
    """The UTC instant at which `day` starts in Asia/Shanghai."""
    return datetime.combine(day, time(0), tzinfo=LOCAL_TZ).astimezone(UTC)


def month_floor(day: date) -> date:
    return day.replace(day=1)


def add_months(day: date, months: int) -> date:
    """Same day n months later, clipped to the month's last day (2026-03-31 − 1 month = 2026-02-28)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def month_end(month_start: date) -> date:
    return add_months(month_start, 1) - timedelta(days=1)


@dataclass(frozen=True)
class AsOf:
    day: date  # D

    @property
    def end(self) -> datetime:
        """T: the first instant after D."""
        return local_midnight(self.day + timedelta(days=1))

    @property
    def t_month(self) -> date:
        """The month holding T; facts known before it are in the summary."""
        return month_floor(self.day + timedelta(days=1))


@dataclass(frozen=True)
class Window:
    """Services that ended in [lo, hi), split into whole months (read from the summary) and the rest (raw rows)."""

    lo: datetime
    hi: datetime
    full_lo: date  # first whole month inside the window
    full_hi: date  # first month after the last whole month inside the window

    @property
    def full_lo_ts(self) -> datetime:
        return local_midnight(self.full_lo)

    @property
    def full_hi_ts(self) -> datetime:
        return local_midnight(self.full_hi)


def window(lo_day: date, hi_day: date) -> Window:
    """Services that ended on local days lo_day ≤ d < hi_day."""
    full_lo = lo_day if lo_day.day == 1 else add_months(month_floor(lo_day), 1)
    full_hi = month_floor(hi_day)
    if full_hi < full_lo:
        full_hi = full_lo
    return Window(local_midnight(lo_day), local_midnight(hi_day), full_lo, full_hi)


def shared_window(asof: AsOf, lookback_months: int) -> Window:
    """The months before D in which an external service makes an instrument "actually shared"."""
    hi = asof.day + timedelta(days=1)
    return window(add_months(hi, -lookback_months), hi)


def year_window(asof: AsOf, year: int) -> Window:
    """Calendar year `year` up to D (the whole year when D is later)."""
    hi = min(date(year + 1, 1, 1), asof.day + timedelta(days=1))
    return window(date(year, 1, 1), hi)


def year_fraction(asof: AsOf, year: int) -> Decimal:
    """How much of `year` the window covers: quotas and thresholds are pro-rated for a year still running."""
    start = date(year, 1, 1)
    days_in_year = (date(year + 1, 1, 1) - start).days
    covered = (min(date(year + 1, 1, 1), asof.day + timedelta(days=1)) - start).days
    return (Decimal(max(covered, 0)) / Decimal(days_in_year)).quantize(Decimal("0.0001"))


# ---- definitions -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Definitions:
    threshold: Decimal
    target: int
    target_date: date
    data_start: date
    lookahead_days: int
    lookback_months: int
    usable_statuses: tuple[str, ...]
    quota_general: Decimal
    quota_special: Decimal
    saturated_hours: Decimal
    idle_ratio: Decimal
    evaluation_min_large: int
    band_edges: tuple[Decimal, ...]
    trend_months: int

    @classmethod
    def from_settings(cls, s: Settings) -> Definitions:
        edges = sorted({e for e in s.audit_value_band_edges_cny if e > s.large_instrument_threshold_cny})
        return cls(
            threshold=s.large_instrument_threshold_cny, target=s.sharing_target_units, target_date=s.audit_target_date,
            data_start=s.audit_data_start, lookahead_days=s.audit_open_lookahead_days,
            lookback_months=s.audit_shared_lookback_months, usable_statuses=tuple(s.audit_usable_statuses),
            quota_general=s.audit_quota_general_hours, quota_special=s.audit_quota_special_hours,
            saturated_hours=s.audit_saturated_hours, idle_ratio=s.audit_idle_ratio,
            evaluation_min_large=s.audit_evaluation_min_large, band_edges=tuple(edges),
            trend_months=s.audit_trend_months,
        )

    def texts(self) -> dict[str, str]:
        """The definitions in words, shown beside the figures and written into every export."""
        from instruments.models import STATUS_LABELS

        wan = _wan(self.threshold)
        statuses = "、".join(STATUS_LABELS.get(s, s) for s in self.usable_statuses)
        return {
            "registered": f"已登记大型仪器：截至统计日在平台登记、未退役、原值 ≥ {wan} 万元的仪器，每台(套)计一条",
            "open": (f"开放共享：已登记大型仪器中，共享模式为“外部共享”、运行状态为{statuses}之一，"
                     f"且已发布统计日之后 {self.lookahead_days} 天内的开放时段（每周开放时段或指定日期开放）"),
            "shared": (f"实际共享：已登记大型仪器中，统计日前 {self.lookback_months} 个月内至少完成一次"
                       "外部用户服务（以服务记录为准）"),
            "as_of": ("统计日口径：按统计日（北京时间）结束时的仪器状态（共享模式、运行状态、原值、所属单位、市州的"
                      "生效历史）和当时平台已有的服务记录计算；之后的变更不影响该日的数字"),
            "effective_hours": "有效工作机时：服务记录机时之和（含开机预热、测样和必要的数据处理）",
            "external_hours": "对外服务机时：外部用户服务记录的机时之和",
            "share_rate": "共享率 = 对外服务机时 ÷ 有效工作机时（有效工作机时为 0 时不计算）",
            "income": "服务收入 / 对外服务收入：服务记录收费金额之和 / 其中外部用户部分",
            "quota": (f"定额机时：通用仪器 {self.quota_general} 小时/年，专用仪器 {self.quota_special} 小时/年；"
                      "年度未结束时按已过天数折算"),
            "saturated": f"饱和：年有效工作机时 ≥ {self.saturated_hours} 小时（年度未结束时按已过天数折算）",
            "idle": f"闲置：年有效工作机时低于定额机时的 {format((self.idle_ratio * 100).normalize(), 'f')}%",
            "evaluation": f"评价范围：在平台登记原值 ≥ {wan} 万元仪器不少于 {self.evaluation_min_large} 台(套)的单位",
            "target": (f"目标：{self.target_date.year} 年共享大型科研仪器 {self.target} 台(套)以上"
                       "（川办发〔2025〕34号）"),
            "data_start": f"平台数据起始日：{self.data_start.isoformat()}，不能查询更早的统计日",
            "attribution": "机时、收入等按仪器在统计日所属的单位和市州归属；统计对象为统计日的已登记大型仪器",
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold_cny": str(self.threshold), "target": self.target, "target_date": self.target_date.isoformat(),
            "data_start": self.data_start.isoformat(), "open_lookahead_days": self.lookahead_days,
            "shared_lookback_months": self.lookback_months, "usable_statuses": list(self.usable_statuses),
            "quota_general_hours": str(self.quota_general), "quota_special_hours": str(self.quota_special),
            "saturated_hours": str(self.saturated_hours), "idle_ratio": str(self.idle_ratio),
            "evaluation_min_large": self.evaluation_min_large,
            "value_band_edges_cny": [str(e) for e in self.band_edges],
            "texts": self.texts(),
        }


def _wan(value: Decimal) -> str:
    return format((value / Decimal(10000)).normalize(), "f")


@dataclass(frozen=True)
class Band:
    key: str
    label: str
    lo: Decimal
    hi: Decimal | None


def value_bands(d: Definitions) -> list[Band]:
    edges = [d.threshold, *d.band_edges]
    bands: list[Band] = []
    for i, lo in enumerate(edges):
        hi = edges[i + 1] if i + 1 < len(edges) else None
        label = f"{_wan(lo)}–{_wan(hi)} 万元" if hi is not None else f"≥ {_wan(lo)} 万元"
        bands.append(Band(key=f"b{i}", label=label, lo=lo, hi=hi))
    return bands


# ---- rates -------------------------------------------------------------------------------------------------------

def share_rate(external_hours: Decimal | None, hours: Decimal | None) -> Decimal | None:
    """共享率 as a fraction with 4 decimals; None (shown as —) when there were no effective hours."""
    if not hours:
        return None
    return (Decimal(external_hours or 0) / Decimal(hours)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def ratio(part: Decimal | int | None, whole: Decimal | int | None) -> Decimal | None:
    if not whole:
        return None
    return (Decimal(part or 0) / Decimal(whole)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def mean_rating(rating_sum: int | None, rating_count: int | None) -> Decimal | None:
    if not rating_count:
        return None
    return (Decimal(rating_sum or 0) / Decimal(rating_count)).quantize(CENT, rounding=ROUND_HALF_UP)


# ---- projection --------------------------------------------------------------------------------------------------

# Shown to auditors as is (the UI is Chinese): an ordinary least-squares line through the monthly trend points
# (x = days since the first point, y = shared units), evaluated at the target date.
PROJECTION_METHOD = ("按月趋势做最小二乘线性拟合（自变量为距首个趋势点的天数，因变量为实际共享台套数），"
                     "外推到目标日")


def project(points: list[tuple[date, int]], target: date) -> int | None:
    """Least-squares line through (day, value) points, evaluated at `target`; None with fewer than two points."""
    if len(points) < 2:
        return None
    x0 = points[0][0]
    xs = [Decimal((p[0] - x0).days) for p in points]
    ys = [Decimal(p[1]) for p in points]
    n = Decimal(len(points))
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    value = my + slope * (Decimal((target - x0).days) - mx)
    return max(0, int(value.to_integral_value(rounding=ROUND_HALF_UP)))


# ---- input checks ------------------------------------------------------------------------------------------------

def as_of_problems(day: date, today: date, data_start: date, field: str = "as_of") -> list[Problem]:
    if day > today:
        return [Problem(field, "future", f"统计日 {day.isoformat()} 晚于今天（{today.isoformat()}），不能统计未来")]
    if day < data_start:
        return [Problem(field, "before_data_start",
                        f"统计日 {day.isoformat()} 早于平台数据起始日 {data_start.isoformat()}")]
    return []


def year_problems(year: int, asof: AsOf, data_start: date, field: str = "year") -> list[Problem]:
    if year > asof.day.year:
        return [Problem(field, "future", f"年度 {year} 晚于统计日所在年度 {asof.day.year}")]
    if year < data_start.year:
        return [Problem(field, "before_data_start", f"年度 {year} 早于平台数据起始年度 {data_start.year}")]
    return []


def parse_day(raw: str | None, field: str) -> tuple[date | None, list[Problem]]:
    if raw is None or raw == "":
        return None, []
    try:
        if len(raw) != 10:
            raise ValueError
        return date.fromisoformat(raw), []
    except ValueError:
        return None, [Problem(field, "date_parsing", f"日期格式不正确（应为 YYYY-MM-DD）：{raw[:20]}")]
