"""Typed settings, validated at start-up. Policy numbers live here, not in code."""

from __future__ import annotations

import os
import secrets
from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "please-change", ""}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BOOKING_", extra="ignore")

    # DATABASE_URL is the conventional unprefixed name; BOOKING_DATABASE_URL also works.
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    data_dir: Path = Path("booking-data")
    db_pool_size: int = 10
    db_max_overflow: int = 20
    db_connect_timeout_s: float = 3.0
    # Waiting for a free pooled connection is load, not an outage (an unreachable database fails at connect, within
    # db_connect_timeout_s), so a burst may queue longer before it is answered 503.
    db_pool_timeout_s: float = 30.0
    # A pooled connection idle longer than this is pinged before use (busy connections are not: a ping is a round
    # trip, a third of a simple request's cost). Keep it below any firewall's or NAT's idle timeout.
    db_ping_after_idle_s: float = 30.0
    db_command_timeout_s: float = 30.0

    secret_key: str = ""
    https: bool = False
    session_max_age_s: int = 14 * 24 * 3600
    access_token_max_age_s: int = 24 * 3600
    environment: str = "development"
    base_url: str = "http://127.0.0.1:8000"
    log_json: bool = True
    log_level: str = "INFO"
    # FastAPI's own OpenTelemetry spans, metrics and logs (for an operator who configures an OpenTelemetry provider).
    # Off by default: the service exports Prometheus metrics (/metrics) and logs every request itself, and with
    # telemetry on FastAPI looks for a configured provider on every request, 0.04 ms of a 0.6 ms search.
    otel_telemetry: bool = False

    # Failed-login throttling.
    login_window_s: int = 15 * 60
    login_max_failures_per_account: int = 5
    login_max_failures_per_address: int = 30

    # Booking policy.
    no_show_limit: int = 3
    no_show_window_days: int = 90
    check_in_early_min: int = 30
    reminder_before_h: int = 24
    alternatives_count: int = 3
    # Conflict-resolving scheduler (scheduling.equivalence / waitlist / flexible).
    # Ranking of alternatives: minutes of time shift a move to another instrument is worth (same 市州 / other).
    alternatives_same_city_penalty_min: int = 60
    alternatives_other_city_penalty_min: int = 240
    alternatives_max_equivalents: int = 20
    # A conflict storm (hundreds of losers for one slot) computes the alternatives once per this many seconds.
    alternatives_cache_s: float = 2.0
    # How long a freed slot is held for the next user on the waitlist before it passes on.
    waitlist_hold_minutes: int = 30
    # Offers that would expire sooner than this (the slot starts too soon) are not made.
    waitlist_min_hold_minutes: int = 5
    flexible_max_window_days: int = 92
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "noreply@instruments.sc.local"
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout_s: float = 10.0
    # Outbox retries: attempt n+1 is due base * (2^n - 1) seconds after the row was written.
    email_max_attempts: int = 5
    email_retry_base_s: int = 60

    # Catalogue / audit policy.
    large_instrument_threshold_cny: Decimal = Decimal("500000")
    sharing_target_units: int = 10000
    # Search: a term (2..search_frequent_term_length characters) found in at least this many live instruments gets
    # kept postings and facet counts (the `promote_frequent_terms` job); below it the bigram index gathers its
    # matches within the search time budget.
    search_frequent_term_rows: int = Field(default=4000, ge=1)
    search_frequent_terms_max: int = Field(default=2000, ge=0)
    search_frequent_term_length: int = Field(default=8, ge=2, le=50)
    # Audit definitions (issue 6): shown on the audit pages beside the figures they define.
    audit_target_date: date = date(2027, 12, 31)
    audit_data_start: date = date(2025, 1, 1)  # the earliest as-of date the platform's data supports
    audit_open_lookahead_days: int = Field(default=30, ge=1, le=366)
    audit_shared_lookback_months: int = Field(default=12, ge=1, le=60)
    audit_usable_statuses: list[str] = ["normal", "standby", "remote", "occasional_fault"]
    audit_quota_general_hours: Decimal = Decimal("1400")
    audit_quota_special_hours: Decimal = Decimal("800")
    audit_saturated_hours: Decimal = Decimal("1200")
    audit_idle_ratio: Decimal = Decimal("0.10")  # idle: 有效工作机时 below this share of the quota
    audit_evaluation_min_large: int = Field(default=5, ge=1)
    audit_value_band_edges_cny: list[Decimal] = [Decimal("1000000"), Decimal("2000000"), Decimal("5000000"),
                                                 Decimal("10000000")]
    audit_trend_months: int = Field(default=24, ge=2, le=120)

    @field_validator("database_url")
    @classmethod
    def _normalise_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://"):
            if value.startswith(prefix):
                return "postgresql+asyncpg://" + value[len(prefix):]
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("DATABASE_URL must be a PostgreSQL URL (postgresql://...)")
        return value

    @model_validator(mode="after")
    def _check_secret(self) -> Settings:
        if self.secret_key.lower() in _PLACEHOLDER_SECRETS:
            if self.environment == "production":
                raise ValueError("BOOKING_SECRET_KEY must be set to a real secret in production")
            # Development and demo: a stable per-data-dir secret so sessions survive restarts
            # and every worker process signs with the same key.
            self.secret_key = _local_secret(self.data_dir)
        elif len(self.secret_key) < 32:
            raise ValueError("BOOKING_SECRET_KEY must be at least 32 characters")
        return self


def _local_secret(data_dir: Path) -> str:
    path = data_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        # Write a temporary file, then hard-link it into place: link() fails if another worker
        # won the race, so every process ends up signing with the same key.
        tmp = path.with_suffix(f".{secrets.token_hex(4)}")
        tmp.write_text(key)
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
