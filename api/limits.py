"""What a request may cost before a route sees it: body size, body read time, and a slot held
only while its client is there.

Measured before this (issue 14): four 100 MB JSON bodies without a token took the API from
166 to 855 MB RSS and stalled /healthz 1.8 s; an unsigned 300 MB multipart POST to the Twilio
webhook was spooled to disk before its 403; 800 half-sent bodies were held open indefinitely; a
client that gave up on a request waiting for a locked row kept its pool connection until the
lock went. Here, in front of FastAPI (pure ASGI, so nothing is buffered):

- multipart bodies → 415 at once (no route takes files);
- a Content-Length over PRECALL_API_MAX_BODY_BYTES → 413 at once, and a chunked body is counted
  as it arrives and cut at the limit;
- a body write that needs a token or a Twilio signature and has none → 401/403 before a byte of
  it is read;
- a body not complete within PRECALL_API_READ_TIMEOUT_S → 408;
- once the body is in, a client that disconnects cancels its request: the statement is cancelled
  in PostgreSQL and the pool connection is free again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TWILIO_WEBHOOK_PATHS = ("/api/v1/webhooks/twilio/status", "/api/v1/webhooks/twilio/inbound")
_BODY_METHODS = {"POST", "PUT", "PATCH"}


class _Refused(Exception):
    """Raised into the route from receive(); the response is replaced by `status`/`error`."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


async def _answer(send: Send, status: int, error: str, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": error, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    def __init__(self, app: ASGIApp, max_body_bytes: int, read_timeout_s: float) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        refused = self._refuse_early(scope, headers)
        if refused is not None:
            status, error, detail, extra = refused
            await _answer(send, status, error, detail, extra)
            return
        await _Guarded(self, scope, receive, send).run()

    def _refuse_early(self, scope: Scope, headers: dict[bytes, bytes]
                      ) -> tuple[int, str, str, list[tuple[bytes, bytes]]] | None:
        """Refusals that need no byte of the body."""
        if scope.get("method") not in _BODY_METHODS:
            return None
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype.startswith(b"multipart/"):
            return 415, "unsupported_media_type", "multipart bodies are not accepted: send application/json " \
                "(Twilio callbacks: application/x-www-form-urlencoded)", []
        raw_length = headers.get(b"content-length")
        if raw_length is not None:
            try:
                length = int(raw_length)
            except ValueError:
                return 400, "invalid_request", "Content-Length is not a number", []
            if length > self.max_body:
                return 413, "payload_too_large", f"the body is {length} bytes; at most {self.max_body} are accepted", []
        path = scope.get("path", "")
        if path in TWILIO_WEBHOOK_PATHS:
            if b"x-twilio-signature" not in headers:
                return 403, "forbidden", "missing X-Twilio-Signature", []
        elif path.startswith("/api/v1/calls/") and path.endswith("/outcome"):
            # The call system signs its reports (checked by the route); no user session.
            if b"x-precall-signature" not in headers:
                return 401, "unauthorized", "missing X-Precall-Signature", []
        elif path.startswith("/api/") and not headers.get(b"authorization", b"").lower().startswith(b"bearer "):
            # A receipt or an action may carry the push's receipt token instead (checked by the route).
            if not (path.endswith(("/receipt", "/action")) and b"x-precall-receipt" in headers):
                return 401, "unauthorized", "missing Authorization: Bearer <token>", [(b"www-authenticate", b"Bearer")]
        return None


class _Guarded:
    """One request: its body counted and timed, its task cancelled when the client leaves."""

    def __init__(self, limits: RequestLimits, scope: Scope, receive: Receive, send: Send) -> None:
        self.limits, self.scope, self._receive, self._send = limits, scope, receive, send
        self.received = 0
        self.body_done = asyncio.Event()
        self.gone = asyncio.Event()
        self.refused: _Refused | None = None
        self.started = self.finished = False
        self.delivered = False  # the last body message went to the app
        if scope.get("method") not in _BODY_METHODS:
            self.body_done.set()  # nothing to read: watch for the client leaving from the start
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + limits.read_timeout_s

    async def run(self) -> None:
        task = asyncio.ensure_future(self.limits.app(self.scope, self.receive, self.send))
        watcher = asyncio.ensure_future(self._watch(task))
        try:
            await task
        except asyncio.CancelledError:
            if not self.gone.is_set():
                raise
        except _Refused:
            pass
        finally:
            watcher.cancel()
        if self.refused is not None and not self.started:
            await _answer(self._send, self.refused.status, self.refused.error, self.refused.detail)

    async def _watch(self, task: asyncio.Future[None]) -> None:
        """After the body, the only message left to come is the client leaving."""
        await self.body_done.wait()
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
        if not self.finished:
            self.gone.set()
            task.cancel()

    async def receive(self) -> Message:
        if self.body_done.is_set():
            if not self.delivered:
                self.delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self.gone.wait()
            return {"type": "http.disconnect"}
        remaining = self.deadline - asyncio.get_running_loop().time()
        try:
            message = await asyncio.wait_for(self._receive(), timeout=max(remaining, 0.001))
        except TimeoutError:
            self._refuse(408, "request_timeout",
                         f"the body did not arrive within {self.limits.read_timeout_s:g} s")
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limits.max_body:
                self._refuse(413, "payload_too_large", f"the body is over {self.limits.max_body} bytes")
            if not message.get("more_body", False):
                self.delivered = True
                self.body_done.set()
        return message

    def _refuse(self, status: int, error: str, detail: str) -> None:
        self.refused = _Refused(status, error, detail)
        raise self.refused

    async def send(self, message: Message) -> None:
        if self.refused is not None:
            return  # the route's answer to a body cut short (FastAPI makes it a 400) is replaced
        if message["type"] == "http.response.start":
            self.started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.finished = True
        await self._send(message)
