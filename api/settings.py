"""The API's configuration from environment variables (all documented in the README)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from precall.dispatcher.config import database_url
from precall.dispatcher.errors import ConfigError


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


@dataclass(frozen=True)
class ApiConfig:
    database_url: str
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    twilio_auth_token: str | None = None
    twilio_status_callback_url: str | None = None
    pool_max: int = 10
    # Every API statement and lock wait is bounded: one user's row held by a DBA must not hold
    # the pool (and every other user's request) with it.
    statement_timeout_ms: int = 5000
    lock_timeout_ms: int = 2000

    @property
    def jwt_algorithms(self) -> list[str]:
        return ["RS256", "ES256"] if self.jwt_public_key else ["HS256"]

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
        pool_max = _int(env, "PRECALL_API_DB_POOL_MAX", 10)
        return cls(
            database_url=database_url(env),
            jwt_secret=secret,
            jwt_public_key=public_key,
            jwt_audience=env.get("PRECALL_JWT_AUDIENCE") or None,
            jwt_issuer=env.get("PRECALL_JWT_ISSUER") or None,
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            twilio_status_callback_url=env.get("PRECALL_TWILIO_STATUS_CALLBACK_URL") or None,
            pool_max=pool_max,
            statement_timeout_ms=_int(env, "PRECALL_DB_STATEMENT_TIMEOUT_MS", 5000),
            lock_timeout_ms=_int(env, "PRECALL_DB_LOCK_TIMEOUT_MS", 2000),
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < 1:
        raise ConfigError(f"{name}={raw} must be at least 1")
    return value
