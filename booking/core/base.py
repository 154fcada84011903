"""Shared model helpers: the metadata naming convention and timestamptz columns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Integer, func
from sqlmodel import SQLModel

from booking.core.clock import utcnow
from booking.core.db import NAMING_CONVENTION

SQLModel.metadata.naming_convention = NAMING_CONVENTION


def ts_column(*, nullable: bool = False, default_now: bool = False, index: bool = False) -> Any:
    """A timestamptz column. Times are stored as UTC instants and converted to Asia/Shanghai at the edge."""
    kwargs: dict[str, Any] = {"nullable": nullable, "index": index}
    if default_now:
        kwargs["server_default"] = func.now()
    return Column(DateTime(timezone=True), **kwargs)


def fk_column(target: str, *, nullable: bool = False, ondelete: str | None = None, index: bool = True,
              big: bool = False) -> Any:
    return Column(BigInteger if big else Integer, ForeignKey(target, ondelete=ondelete),
                  nullable=nullable, index=index)


def now() -> datetime:
    return utcnow()
