"""Per-request context (request id, client address) carried in context variables for logs and the activity log."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
client_addr_var: ContextVar[str | None] = ContextVar("client_addr", default=None)
