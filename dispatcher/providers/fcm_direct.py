"""Push by FCM HTTP v1 requests of our own (PRECALL_FCM_TRANSPORT=direct, the default).

firebase-admin stays the source of credentials (its service-account handling and token refresh)
and of the error mapping: only the request itself is ours, a pre-serialised JSON body over an
aiohttp connection pool. Why: per push, firebase-admin spent ~1.6-2.5 ms of dispatcher CPU
(building and validating a Message, encoding it, httpx and its auth flow) where the HTTP request
itself costs ~0.25 ms (bench/throughput.py --transport; BENCHMARKS.md). The body is the one the
SDK would send (tests/test_fcm_direct.py compares it with firebase-admin's own encoder), and an
error answer is handed to firebase-admin's own parser, then to the same classify() as the SDK
path, so both transports fail the same way.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import datetime, timezone
from typing import Any

import aiohttp
import firebase_admin
import httpx
from firebase_admin import _utils, messaging

from precall.dispatcher.providers.base import Accepted, PushRequest
from precall.dispatcher.providers.fcm import classify, load_credentials, warm_up_failed

TOKEN_MARGIN_S = 300.0  # refresh the access token this long before it expires


def _ttl(deadline: datetime) -> str:
    return f"{max(0, math.floor((deadline - datetime.now(timezone.utc)).total_seconds()))}s"


def message_body(req: PushRequest) -> dict[str, Any]:
    """The FCM v1 message firebase-admin's encoder makes of fcm.build_message(req)."""
    if req.data_only:
        return {"android": {"collapse_key": req.collapse_id, "priority": "high", "ttl": _ttl(req.deadline)},
                "data": {**req.data, "title": req.title, "body": req.body}, "token": req.token}
    aps: dict[str, Any] = {"mutable-content": 1, "interruption-level": "time-sensitive"}
    if req.category is not None:
        aps = {"category": req.category, **aps}
    body: dict[str, Any] = {
        "android": {"collapse_key": req.collapse_id, "notification": {"tag": req.collapse_id},
                    "priority": "high", "ttl": _ttl(req.deadline)},
        "apns": {"headers": {"apns-priority": "10", "apns-push-type": "alert",
                             "apns-expiration": str(int(req.deadline.timestamp())),
                             "apns-collapse-id": req.collapse_id[:64]},
                 "payload": {"aps": aps}},
        "notification": {"body": req.body, "title": req.title},
        "token": req.token,
    }
    if req.data:  # the SDK's encoder leaves an empty map out
        body["data"] = req.data
    return body


class FcmDirectSender:
    name = "fcm"

    def __init__(self, credentials_path: str | None, base_url: str, http_timeout_s: float,
                 in_flight: int = 64) -> None:
        self._cred, self.project_id = load_credentials(credentials_path)
        self._url = f"{base_url.rstrip('/')}/v1/projects/{self.project_id}/messages:send"
        self._http_timeout_s = http_timeout_s
        self._in_flight = in_flight
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._expires = 0.0  # epoch seconds
        self._token_lock = asyncio.Lock()
        self._headers = {"Content-Type": "application/json; charset=UTF-8", "X-GOOG-API-FORMAT-VERSION": "2",
                         "X-FIREBASE-CLIENT": f"fire-admin-python/{firebase_admin.__version__}"}

    async def start(self) -> None:
        # One connection per request in flight, kept alive (a new TCP + TLS handshake per push
        # would cost more than the push).
        connector = aiohttp.TCPConnector(limit=max(1, self._in_flight), keepalive_timeout=60)
        self._session = aiohttp.ClientSession(connector=connector, json_serialize=json.dumps)
        try:
            await self._bearer()  # warm: otherwise the first preview pays ~200 ms for the token
        except Exception as exc:  # noqa: BLE001 - sends will retry the token; say why now
            warm_up_failed(exc)

    async def _bearer(self, stale: str | None = None) -> str:
        """The access token; refreshed when it is about to expire, or when FCM refused `stale`."""
        token = self._token
        if token is not None and token != stale and self._expires - time.time() > TOKEN_MARGIN_S:
            return token
        async with self._token_lock:
            if self._token is not None and self._token != stale and self._expires - time.time() > TOKEN_MARGIN_S:
                return self._token
            info = await asyncio.to_thread(self._cred.get_access_token)
            expiry = info.expiry
            self._expires = (expiry.replace(tzinfo=timezone.utc).timestamp() if expiry is not None
                             else time.time() + 3600)
            self._token = str(info.access_token)
            return self._token

    async def send(self, request: PushRequest, timeout: float) -> Accepted:
        assert self._session is not None, "start() first"
        body = json.dumps({"message": message_body(request)}, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            async with asyncio.timeout(timeout):
                token = await self._bearer()
                status, headers, content = await self._post(body, token)
                if status == 401:
                    # A revoked or rotated token: one fresh token and one more try (as google-auth
                    # does under the SDK).
                    token = await self._bearer(stale=token)
                    status, headers, content = await self._post(body, token)
        except Exception as exc:  # noqa: BLE001 - classified as the SDK path's are
            raise classify(exc) from exc
        if status == 200:
            try:
                return Accepted(str(json.loads(content)["name"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise classify(exc) from exc
        raise classify(self._platform_error(status, headers, content))

    async def _post(self, body: bytes, token: str) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        async with self._session.post(self._url, data=body,
                                      headers={**self._headers, "Authorization": f"Bearer {token}"}) as resp:
            return resp.status, dict(resp.headers), await resp.read()

    def _platform_error(self, status: int, headers: dict[str, str], content: bytes) -> Exception:
        """The FirebaseError firebase-admin makes of this answer (its own parser: the same
        exception types, codes, messages and Retry-After as the SDK path)."""
        request = httpx.Request("POST", self._url)
        response = httpx.Response(status, headers=headers, content=content, request=request)
        error = httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)
        return _utils.handle_platform_error_from_httpx(
            error, messaging._MessagingService._build_fcm_error_httpx)  # noqa: SLF001 - pinned SDK, tested

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
