"""API shapes for notifications."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from booking.core.pagination import Page


class NotificationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    title: str
    body: str
    link: str | None
    created_at: datetime
    read_at: datetime | None


class NotificationPage(Page[NotificationPublic]):
    unread: int


class ReadAllResult(BaseModel):
    updated: int
    unread: int
