"""The API's configuration from environment variables (all documented in the README)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from precall.config import database_url
from precall.errors import ConfigError


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
            max_body_bytes=_int(env, "PRECALL_API_MAX_BODY_BYTES", 65536),
            read_timeout_s=float(_int(env, "PRECALL_API_READ_TIMEOUT_S", 10)),
            jwt_max_lifetime_s=_int(env, "PRECALL_JWT_MAX_LIFETIME_S", 86400),
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
