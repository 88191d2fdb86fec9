"""Configuration from environment variables (all documented in the README)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from precall.dispatcher.db import session_limits
from precall.errors import ConfigError

PushProvider = Literal["fcm", "log"]
SmsProvider = Literal["twilio", "log"]


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default).strip().lower()
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}")
    return value


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw} is outside {low:g}..{high:g}")
    return value


def database_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    url = env.get("DATABASE_URL", "").strip()
    if not url:
        raise ConfigError("DATABASE_URL is not set (e.g. postgresql://user@host:5432/app)")
    return url


# Default per-country SMS price estimates (the product spec's figures); override with
# PRECALL_SMS_PRICES="US=0.0075:USD,FR=0.065:EUR,...".
DEFAULT_SMS_PRICES: dict[str, tuple[Decimal, str]] = {
    "US": (Decimal("0.0075"), "USD"),
    "CA": (Decimal("0.0075"), "USD"),
    "FR": (Decimal("0.065"), "EUR"),
}


def _prices(raw: str | None) -> dict[str, tuple[Decimal, str]]:
    if not raw:
        return dict(DEFAULT_SMS_PRICES)
    prices: dict[str, tuple[Decimal, str]] = {}
    for item in raw.split(","):
        try:
            country, rest = item.split("=")
            amount, currency = rest.split(":")
            prices[country.strip().upper()] = (Decimal(amount.strip()), currency.strip().upper())
        except ValueError:
            raise ConfigError(f"PRECALL_SMS_PRICES item {item!r} is not COUNTRY=AMOUNT:CURRENCY") from None
    return prices


@dataclass(frozen=True)
class Config:
    database_url: str
    cron_database_url: str | None = None
    push_provider: PushProvider = "fcm"
    sms_provider: SmsProvider = "twilio"
    google_application_credentials: str | None = None
    fcm_base_url: str = "https://fcm.googleapis.com"
    fcm_timeout_s: float = 5.0
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from: str | None = None
    twilio_base_url: str = "https://api.twilio.com"
    twilio_status_callback_url: str | None = None
    twilio_timeout_s: float = 10.0
    poll_interval_s: float = 5.0
    claim_batch: int = 100
    max_in_flight: int = 64
    pool_min: int = 1
    pool_max: int = 10
    statement_timeout_ms: int = 5000
    lock_timeout_ms: int = 2000
    fallback_wait_s: float = 30.0
    call_webhook_url: str | None = None
    webhook_secret: str | None = None
    worker_name: str | None = None
    fcm_rate_per_s: float | None = None
    twilio_rate_per_s: float | None = None
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    sms_prices: dict[str, tuple[Decimal, str]] = field(default_factory=lambda: dict(DEFAULT_SMS_PRICES))

    @property
    def session_options(self) -> str:
        return session_limits(self.statement_timeout_ms, self.lock_timeout_ms)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        return cls(
            database_url=database_url(env),
            cron_database_url=env.get("PRECALL_CRON_DATABASE_URL") or None,
            push_provider=_choice(env, "PRECALL_PUSH_PROVIDER", "fcm", ("fcm", "log")),  # type: ignore[arg-type]
            sms_provider=_choice(env, "PRECALL_SMS_PROVIDER", "twilio", ("twilio", "log")),  # type: ignore[arg-type]
            google_application_credentials=env.get("GOOGLE_APPLICATION_CREDENTIALS") or None,
            fcm_base_url=env.get("PRECALL_FCM_BASE_URL") or "https://fcm.googleapis.com",
            fcm_timeout_s=_number(env, "PRECALL_FCM_TIMEOUT_S", 5.0, 0.1, 60),
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID") or None,
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            twilio_from=env.get("PRECALL_TWILIO_FROM") or None,
            twilio_base_url=env.get("PRECALL_TWILIO_BASE_URL") or "https://api.twilio.com",
            twilio_status_callback_url=env.get("PRECALL_TWILIO_STATUS_CALLBACK_URL") or None,
            twilio_timeout_s=_number(env, "PRECALL_TWILIO_TIMEOUT_S", 10.0, 0.1, 60),
            poll_interval_s=_number(env, "PRECALL_POLL_INTERVAL_S", 5.0, 0.2, 300),
            claim_batch=int(_number(env, "PRECALL_CLAIM_BATCH", 100, 1, 5000)),
            max_in_flight=int(_number(env, "PRECALL_MAX_IN_FLIGHT", 64, 1, 10000)),
            pool_min=int(_number(env, "PRECALL_DB_POOL_MIN", 1, 1, 100)),
            pool_max=int(_number(env, "PRECALL_DB_POOL_MAX", 10, 1, 500)),
            statement_timeout_ms=int(_number(env, "PRECALL_DB_STATEMENT_TIMEOUT_MS", 5000, 100, 3_600_000)),
            lock_timeout_ms=int(_number(env, "PRECALL_DB_LOCK_TIMEOUT_MS", 2000, 100, 3_600_000)),
            fallback_wait_s=_number(env, "PRECALL_FALLBACK_WAIT_S", 30.0, 1, 600),
            call_webhook_url=env.get("PRECALL_CALL_WEBHOOK_URL") or None,
            webhook_secret=env.get("PRECALL_WEBHOOK_SECRET") or None,
            worker_name=env.get("PRECALL_WORKER_NAME") or None,
            fcm_rate_per_s=_number(env, "PRECALL_FCM_RATE_PER_S", 0, 0, 100_000) or None,
            twilio_rate_per_s=_number(env, "PRECALL_TWILIO_RATE_PER_S", 0, 0, 10_000) or None,
            metrics_port=int(_number(env, "PRECALL_METRICS_PORT", 0, 0, 65535)) or None,
            metrics_addr=env.get("PRECALL_METRICS_ADDR") or "127.0.0.1",
            sms_prices=_prices(env.get("PRECALL_SMS_PRICES")),
        )
