"""precall's settings: the one reader of the environment (systemd's NOTIFY_SOCKET aside), typed,
every variable documented in the README's configuration table.

`Config` is the dispatcher's (and the CLI's sending commands'), `ApiConfig` the API's; the small
readers below serve the CLI. `unknown_variables()` names PRECALL_* variables nobody reads (a
typo such as PRECALL_FCM_RATE_PER_SEC would otherwise be silently ignored)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from precall.errors import ConfigError

PushProvider = Literal["fcm", "log"]
SmsProvider = Literal["twilio", "log"]
AndroidMessage = Literal["notification", "data"]


def receipt_secrets(env: Mapping[str, str]) -> tuple[str, str | None]:
    """PRECALL_RECEIPT_SECRET (required: every push carries a receipt token made with it) and
    PRECALL_RECEIPT_SECRET_PREVIOUS (still accepted while a rotation is under way)."""
    secret = env.get("PRECALL_RECEIPT_SECRET") or ""
    previous = env.get("PRECALL_RECEIPT_SECRET_PREVIOUS") or None
    if not secret:
        raise ConfigError("PRECALL_RECEIPT_SECRET is not set: pushes carry receipt tokens signed with it "
                          "(32+ random characters, e.g. `openssl rand -hex 32`; the same value for the API and "
                          "the dispatchers)")
    for name, value in (("PRECALL_RECEIPT_SECRET", secret), ("PRECALL_RECEIPT_SECRET_PREVIOUS", previous)):
        if value is not None and len(value) < 32:
            raise ConfigError(f"{name} must be at least 32 characters")
    return secret, previous


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


def session_limits(statement_timeout_ms: int, lock_timeout_ms: int) -> str:
    """libpq `options` bounding every statement and lock wait of a connection from its start (no
    extra round trip): a row a DBA holds locked makes a write-back fail in 2 s and retry, instead
    of stopping the dispatcher's loop behind it. Behind PgBouncer add `options` to its
    ignore_startup_parameters and set the two limits on the database role instead."""
    return f"-c statement_timeout={statement_timeout_ms} -c lock_timeout={lock_timeout_ms}"


def statement_timeout_ms(env: Mapping[str, str]) -> int:
    """PRECALL_DB_STATEMENT_TIMEOUT_MS, for the API's and the dispatcher's connections alike."""
    return int(_number(env, "PRECALL_DB_STATEMENT_TIMEOUT_MS", 5000, 100, 3_600_000))


def lock_timeout_ms(env: Mapping[str, str]) -> int:
    """PRECALL_DB_LOCK_TIMEOUT_MS, for the API's and the dispatcher's connections alike."""
    return int(_number(env, "PRECALL_DB_LOCK_TIMEOUT_MS", 2000, 100, 3_600_000))


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
    # 200: with the direct FCM transport, 64 in flight capped one dispatcher at ~580 previews/s
    # (each send holds its slot ~110 ms: 50 ms at FCM plus its write-back); 200 sent ~1,100/s on
    # the same 2 cores (bench/throughput.py, BENCHMARKS.md).
    max_in_flight: int = 200
    pool_min: int = 1
    pool_max: int = 10
    statement_timeout_ms: int = 5000
    lock_timeout_ms: int = 2000
    fallback_wait_s: float | None = None  # deprecated: precall.settings.fallback_wait
    call_webhook_url: str | None = None
    webhook_secret: str | None = None
    worker_name: str | None = None
    fcm_rate_per_s: float | None = None
    twilio_rate_per_s: float | None = None
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    sms_prices: dict[str, tuple[Decimal, str]] = field(default_factory=lambda: dict(DEFAULT_SMS_PRICES))
    receipt_secret: str | None = None  # required by from_env(); tests may leave it out
    android_message: AndroidMessage = "notification"
    # direct: FCM v1 requests over aiohttp with firebase-admin's credentials and error mapping
    # (dispatcher/providers/fcm_direct.py); sdk: firebase-admin's send_each_async.
    fcm_transport: str = "direct"

    @property
    def session_options(self) -> str:
        return session_limits(self.statement_timeout_ms, self.lock_timeout_ms)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        secret, _ = receipt_secrets(env)
        return cls(
            database_url=database_url(env),
            receipt_secret=secret,
            android_message=_choice(env, "PRECALL_ANDROID_MESSAGE", "notification",  # type: ignore[arg-type]
                                    ("notification", "data")),
            push_provider=_choice(env, "PRECALL_PUSH_PROVIDER", "fcm", ("fcm", "log")),  # type: ignore[arg-type]
            fcm_transport=_choice(env, "PRECALL_FCM_TRANSPORT", "direct", ("direct", "sdk")),
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
            max_in_flight=int(_number(env, "PRECALL_MAX_IN_FLIGHT", 200, 1, 10000)),
            pool_min=int(_number(env, "PRECALL_DB_POOL_MIN", 1, 1, 100)),
            pool_max=int(_number(env, "PRECALL_DB_POOL_MAX", 10, 1, 500)),
            statement_timeout_ms=statement_timeout_ms(env),
            lock_timeout_ms=lock_timeout_ms(env),
            fallback_wait_s=_number(env, "PRECALL_FALLBACK_WAIT_S", 0, 1, 600) if env.get("PRECALL_FALLBACK_WAIT_S") else None,
            call_webhook_url=env.get("PRECALL_CALL_WEBHOOK_URL") or None,
            webhook_secret=env.get("PRECALL_WEBHOOK_SECRET") or None,
            worker_name=env.get("PRECALL_WORKER_NAME") or None,
            fcm_rate_per_s=_number(env, "PRECALL_FCM_RATE_PER_S", 0, 0, 100_000) or None,
            twilio_rate_per_s=_number(env, "PRECALL_TWILIO_RATE_PER_S", 0, 0, 10_000) or None,
            metrics_port=int(_number(env, "PRECALL_METRICS_PORT", 0, 0, 65535)) or None,
            metrics_addr=env.get("PRECALL_METRICS_ADDR") or "127.0.0.1",
            sms_prices=_prices(env.get("PRECALL_SMS_PRICES")),
        )


def _public_key(raw: str | None) -> str | None:
    """PRECALL_JWT_PUBLIC_KEY holds the PEM itself or a path to it."""
    if not raw:
        return None
    if "-----BEGIN" in raw:
        return raw.replace("\\n", "\n")
    path = Path(raw)
    if not path.is_file():
        raise ConfigError(f"PRECALL_JWT_PUBLIC_KEY is neither a PEM nor a readable file: {raw!r}")
    return path.read_text()


def _algorithm_for(pem: str) -> str:
    """RS256 for an RSA key, ES256/ES384/ES512 for an EC key by its curve, EdDSA for Ed25519."""
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ConfigError(f"PRECALL_JWT_PUBLIC_KEY is not a PEM public key: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if key.curve.name in by_curve:
            return by_curve[key.curve.name]
        raise ConfigError(f"PRECALL_JWT_PUBLIC_KEY: EC curve {key.curve.name} has no JWT algorithm")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ConfigError(f"PRECALL_JWT_PUBLIC_KEY: {type(key).__name__} keys are not supported (RSA, EC, Ed25519)")


@dataclass(frozen=True)
class ApiConfig:
    database_url: str
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    twilio_auth_token: str | None = None
    twilio_status_callback_url: str | None = None
    twilio_inbound_url: str | None = None
    receipt_secret: str | None = None
    receipt_secret_previous: str | None = None
    # The call webhook's secret: the call system signs its outcome reports with it.
    webhook_secret: str | None = None
    sms_prices: dict[str, tuple[Decimal, str]] = field(default_factory=lambda: dict(DEFAULT_SMS_PRICES))
    pool_max: int = 10
    # Every API statement and lock wait is bounded: one user's row held by a DBA must not hold
    # the pool (and every other user's request) with it.
    statement_timeout_ms: int = 5000
    lock_timeout_ms: int = 2000
    # No route takes more than a few hundred bytes; 64 KiB leaves room and bounds memory.
    max_body_bytes: int = 65536
    read_timeout_s: float = 10.0
    # A token valid for longer than this (exp − now) is refused: a leaked one must not last a year.
    jwt_max_lifetime_s: int = 86400

    @property
    def jwt_algorithms(self) -> list[str]:
        """Only the algorithm of the configured key's type: a token may not choose another."""
        if not self.jwt_public_key:
            return ["HS256"]
        return [_algorithm_for(self.jwt_public_key)]

    @property
    def jwt_key(self) -> str:
        key = self.jwt_public_key or self.jwt_secret
        assert key is not None
        return key

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiConfig:
        env = os.environ if env is None else env
        secret = env.get("PRECALL_JWT_SECRET") or None
        public_key = _public_key(env.get("PRECALL_JWT_PUBLIC_KEY"))
        if not secret and not public_key:
            raise ConfigError("set PRECALL_JWT_SECRET (HS256) or PRECALL_JWT_PUBLIC_KEY (RS256/ES256 PEM) for the API")
        if secret and public_key:
            raise ConfigError("set only one of PRECALL_JWT_SECRET and PRECALL_JWT_PUBLIC_KEY")
        if secret and len(secret) < 32:
            raise ConfigError("PRECALL_JWT_SECRET must be at least 32 characters (HS256 wants 256 bits)")
        if public_key:
            _algorithm_for(public_key)  # one line now, not a 401 per request later
        pool_max = int(_number(env, "PRECALL_API_DB_POOL_MAX", 10, 1, 500))
        receipt_secret, receipt_previous = receipt_secrets(env)
        return cls(
            receipt_secret=receipt_secret,
            receipt_secret_previous=receipt_previous,
            twilio_inbound_url=env.get("PRECALL_TWILIO_INBOUND_URL") or None,
            webhook_secret=env.get("PRECALL_WEBHOOK_SECRET") or None,
            sms_prices=_prices(env.get("PRECALL_SMS_PRICES")),
            database_url=database_url(env),
            jwt_secret=secret,
            jwt_public_key=public_key,
            jwt_audience=env.get("PRECALL_JWT_AUDIENCE") or None,
            jwt_issuer=env.get("PRECALL_JWT_ISSUER") or None,
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            twilio_status_callback_url=env.get("PRECALL_TWILIO_STATUS_CALLBACK_URL") or None,
            pool_max=pool_max,
            statement_timeout_ms=statement_timeout_ms(env),
            lock_timeout_ms=lock_timeout_ms(env),
            max_body_bytes=int(_number(env, "PRECALL_API_MAX_BODY_BYTES", 65536, 1, 64 << 20)),
            read_timeout_s=_number(env, "PRECALL_API_READ_TIMEOUT_S", 10, 0.1, 600),
            jwt_max_lifetime_s=int(_number(env, "PRECALL_JWT_MAX_LIFETIME_S", 86400, 1, 366 * 86400)),
        )


# -- small readers for the CLI ---------------------------------------------------------------------

def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def database_url_or_none(env: Mapping[str, str] | None = None) -> str | None:
    return _env(env).get("DATABASE_URL", "").strip() or None


def cron_database_url(env: Mapping[str, str] | None = None) -> str | None:
    """PRECALL_CRON_DATABASE_URL: where pg_cron lives, when not derivable from DATABASE_URL."""
    return _env(env).get("PRECALL_CRON_DATABASE_URL") or None


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """PRECALL_STATE_DIR: where `precall demo` keeps its cluster (default .precall)."""
    return Path(_env(env).get("PRECALL_STATE_DIR") or ".precall")


def fr_typography(env: Mapping[str, str] | None = None) -> bool:
    """PRECALL_FR_TYPOGRAPHY=1: narrow no-break spaces in French push text."""
    return _env(env).get("PRECALL_FR_TYPOGRAPHY") == "1"


def log_level(default: str, env: Mapping[str, str] | None = None) -> str:
    """PRECALL_LOG_LEVEL, else the command's default."""
    return _env(env).get("PRECALL_LOG_LEVEL") or default


def api_listen(env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """PRECALL_API_HOST (127.0.0.1) and PRECALL_API_PORT (8080)."""
    e = _env(env)
    return e.get("PRECALL_API_HOST") or "127.0.0.1", int(_number(e, "PRECALL_API_PORT", 8080, 1, 65535))


def api_workers(env: Mapping[str, str] | None = None) -> int:
    """PRECALL_API_WORKERS (1): `precall api`'s processes."""
    return int(_number(_env(env), "PRECALL_API_WORKERS", 1, 1, 64))


RATE_VARIABLES = {"push": "PRECALL_FCM_RATE_PER_S", "sms": "PRECALL_TWILIO_RATE_PER_S"}


def rate_per_s(channel: str, env: Mapping[str, str] | None = None) -> tuple[float, str] | None:
    """The configured per-process send rate of a channel and the variable that set it; None when unpaced."""
    name = RATE_VARIABLES[channel]
    value = _number(_env(env), name, 0, 0, 100_000)
    return (value, name) if value else None


def demo_poll_interval(env: Mapping[str, str] | None = None) -> str:
    return _env(env).get("PRECALL_POLL_INTERVAL_S") or "5"


# Every PRECALL_* variable some part of precall reads (the README's table lists each).
KNOWN_VARIABLES = frozenset({
    "PRECALL_CRON_DATABASE_URL", "PRECALL_PUSH_PROVIDER", "PRECALL_SMS_PROVIDER", "PRECALL_FCM_BASE_URL",
    "PRECALL_FCM_TIMEOUT_S", "PRECALL_TWILIO_FROM", "PRECALL_TWILIO_BASE_URL", "PRECALL_TWILIO_STATUS_CALLBACK_URL",
    "PRECALL_TWILIO_TIMEOUT_S", "PRECALL_POLL_INTERVAL_S", "PRECALL_CLAIM_BATCH", "PRECALL_MAX_IN_FLIGHT",
    "PRECALL_DB_POOL_MIN", "PRECALL_DB_POOL_MAX", "PRECALL_DB_STATEMENT_TIMEOUT_MS", "PRECALL_DB_LOCK_TIMEOUT_MS",
    "PRECALL_FALLBACK_WAIT_S", "PRECALL_CALL_WEBHOOK_URL", "PRECALL_WEBHOOK_SECRET", "PRECALL_WORKER_NAME",
    "PRECALL_FCM_RATE_PER_S", "PRECALL_TWILIO_RATE_PER_S", "PRECALL_METRICS_PORT", "PRECALL_METRICS_ADDR",
    "PRECALL_SMS_PRICES", "PRECALL_JWT_SECRET", "PRECALL_JWT_PUBLIC_KEY", "PRECALL_JWT_AUDIENCE", "PRECALL_JWT_ISSUER",
    "PRECALL_JWT_MAX_LIFETIME_S", "PRECALL_API_DB_POOL_MAX",
    "PRECALL_API_MAX_BODY_BYTES", "PRECALL_API_READ_TIMEOUT_S", "PRECALL_API_HOST", "PRECALL_API_PORT",
    "PRECALL_LOG_LEVEL", "PRECALL_FR_TYPOGRAPHY", "PRECALL_STATE_DIR", "PRECALL_TEST_DATABASE_URL",
    "PRECALL_RECEIPT_SECRET", "PRECALL_RECEIPT_SECRET_PREVIOUS", "PRECALL_ANDROID_MESSAGE", "PRECALL_FCM_TRANSPORT", "PRECALL_API_WORKERS", "PRECALL_TWILIO_INBOUND_URL",
})


# Variables still honoured that moved elsewhere: what to do instead.
DEPRECATED_VARIABLES = {
    "PRECALL_FALLBACK_WAIT_S": "the fallback wait is fleet policy now: UPDATE precall.settings SET fallback_wait = "
                               "'30 seconds' (this process still uses the variable while it is set)",
}


def deprecated_variables(env: Mapping[str, str] | None = None) -> list[str]:
    """One warning line per deprecated variable that is set."""
    e = _env(env)
    return [f"{name} is deprecated: {advice}" for name, advice in DEPRECATED_VARIABLES.items() if e.get(name)]


def unknown_variables(env: Mapping[str, str] | None = None) -> list[str]:
    """PRECALL_* variables set in the environment that precall does not read (typos)."""
    return sorted(k for k in _env(env) if k.startswith("PRECALL_") and k not in KNOWN_VARIABLES)
