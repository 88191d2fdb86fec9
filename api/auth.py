"""Who is calling: the app's bearer JWT, checked with PyJWT; `sub` is the user id."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection

from precall import receipt_tokens
from precall.api import store
from precall.api.errors import ApiError
from precall.config import ApiConfig

bearer = HTTPBearer(auto_error=False, description="A JWT whose `sub` is the user id.")
receipt_header = APIKeyHeader(name="X-Precall-Receipt", auto_error=False, scheme_name="ReceiptToken",
                              description="The push's data.receipt_token (receipts only, instead of a bearer JWT).")
LEEWAY_S = 30  # clock skew between the app's auth server and us


def _unauthorized(reason: str) -> ApiError:
    return ApiError(401, "unauthorized", reason, headers={"WWW-Authenticate": "Bearer"})


def user_id_from_token(token: str, config: ApiConfig) -> uuid.UUID:
    try:
        claims = jwt.decode(
            token, config.jwt_key, algorithms=config.jwt_algorithms,
            audience=config.jwt_audience, issuer=config.jwt_issuer, leeway=LEEWAY_S,
            options={"require": ["sub", "exp"], "verify_aud": config.jwt_audience is not None},
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized("the token has expired") from None
    except jwt.PyJWTError as exc:
        # Not only InvalidTokenError: a header naming an algorithm of another key type (ES256
        # against an RSA key) raises InvalidKeyError, which used to be a 500 with a traceback.
        raise _unauthorized(f"invalid token: {exc}") from None
    try:
        lifetime = float(claims["exp"]) - time.time()
    except (TypeError, ValueError, OverflowError):
        raise _unauthorized("the token's exp is not a number") from None
    if lifetime > config.jwt_max_lifetime_s + LEEWAY_S:
        raise _unauthorized(f"the token is valid for longer than {config.jwt_max_lifetime_s} s "
                            "(PRECALL_JWT_MAX_LIFETIME_S); issue shorter-lived tokens")
    try:
        return uuid.UUID(str(claims["sub"]))
    except ValueError:
        raise _unauthorized("the token's sub is not a user id") from None


async def current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> uuid.UUID:
    if credentials is None:
        raise _unauthorized("missing Authorization: Bearer <token>")
    config: ApiConfig = request.app.state.config
    user_id = user_id_from_token(credentials.credentials, config)
    async with request.app.state.pool.connection() as conn:
        if not await store.user_exists(conn, user_id):
            raise _unauthorized("unknown user")
    return user_id


CurrentUser = Annotated[uuid.UUID, Depends(current_user)]


@dataclass(frozen=True)
class Caller:
    """Who sent a receipt: a user (bearer JWT) or a device holding the push's receipt token."""

    user_id: uuid.UUID | None
    device_id: int | None


def receipt_unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "the receipt token does not verify for this notification "
                                         "(wrong, expired, or another notification's)")


async def receipt_caller(
    notification_id: uuid.UUID, request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    token: Annotated[str | None, Depends(receipt_header)],
) -> Caller:
    """X-Precall-Receipt when sent (a bearer JWT is then not needed), else the bearer JWT."""
    if token is None:
        return Caller(await current_user(request, credentials), None)
    return _device_caller(notification_id, request, token)


async def receipt_caller_deferred(
    notification_id: uuid.UUID, request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    token: Annotated[str | None, Depends(receipt_header)],
) -> Caller:
    """As receipt_caller, but a bearer JWT's user is not looked up here: the receipt's own
    statement is scoped to that user, and the route asks whether the user exists only when the
    statement found nothing (401 unknown user, else 404). One round trip per receipt instead of
    two: receipts must keep up with the dispatchers' pushes (bench/receipts.py)."""
    if token is None:
        if credentials is None:
            raise _unauthorized("missing Authorization: Bearer <token>")
        return Caller(user_id_from_token(credentials.credentials, request.app.state.config), None)
    return _device_caller(notification_id, request, token)


async def known_user(conn: AsyncConnection[Any], user_id: uuid.UUID) -> None:
    """401 unknown user, for a route that deferred the lookup (receipt_caller_deferred)."""
    if not await store.user_exists(conn, user_id):
        raise _unauthorized("unknown user")


def _device_caller(notification_id: uuid.UUID, request: Request, token: str) -> Caller:
    config: ApiConfig = request.app.state.config
    device_id = receipt_tokens.verify(token, notification_id, (config.receipt_secret, config.receipt_secret_previous),
                                      datetime.now(timezone.utc))
    if device_id is None:
        raise receipt_unauthorized()
    return Caller(None, device_id)


ReceiptCaller = Annotated[Caller, Depends(receipt_caller)]
DeferredReceiptCaller = Annotated[Caller, Depends(receipt_caller_deferred)]
