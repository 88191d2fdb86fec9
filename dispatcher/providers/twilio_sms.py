"""SMS through twilio's async client: explicit timeout, no SDK retries (a POST retried can send
twice), ValidityPeriod ending at the call."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timezone

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from precall.errors import ConfigError
from precall.dispatcher.providers.base import Accepted, Permanent, SmsOptedOut, SmsRequest, Transient

MIN_VALIDITY_S = 5


def validity_period(deadline: datetime) -> int:
    """Whole seconds until the call, within Twilio's 1..36000."""
    return min(36000, max(1, math.floor((deadline - datetime.now(timezone.utc)).total_seconds())))


class TwilioSmsSender:
    name = "twilio"

    def __init__(self, account_sid: str | None, auth_token: str | None, sender: str | None, base_url: str,
                 status_callback_url: str | None, timeout_s: float) -> None:
        missing = [n for n, v in (("TWILIO_ACCOUNT_SID", account_sid), ("TWILIO_AUTH_TOKEN", auth_token),
                                  ("PRECALL_TWILIO_FROM", sender)) if not v]
        if missing:
            raise ConfigError(
                f"PRECALL_SMS_PROVIDER=twilio needs {', '.join(missing)}; set PRECALL_SMS_PROVIDER=log to run without SMS"
            )
        self._sid, self._token, self._sender = account_sid, auth_token, sender
        self._base_url = base_url.rstrip("/")
        self._callback = status_callback_url
        self._timeout_s = timeout_s
        self._http: AsyncTwilioHttpClient | None = None
        self._client: Client | None = None

    async def start(self) -> None:
        # aiohttp needs a running loop at construction; max_retries stays unset (no POST retries).
        self._http = AsyncTwilioHttpClient(timeout=self._timeout_s)
        self._client = Client(self._sid, self._token, http_client=self._http)
        self._client.api.base_url = self._base_url

    async def send(self, request: SmsRequest, timeout: float) -> Accepted:
        assert self._client is not None, "start() first"
        sender = self._sender or ""
        kwargs: dict[str, object] = {"to": request.to, "body": request.body,
                                     "validity_period": validity_period(request.deadline)}
        if sender.startswith("MG"):
            kwargs["messaging_service_sid"] = sender
        else:
            kwargs["from_"] = sender
        if self._callback:
            kwargs["status_callback"] = self._callback
        try:
            message = await asyncio.wait_for(self._client.messages.create_async(**kwargs), timeout)
        except TwilioRestException as exc:
            code = str(exc.code or exc.status)
            if exc.code == 21610:
                raise SmsOptedOut(code, exc.msg) from exc
            if exc.status == 429:  # 20429: not created, so a retry cannot send twice
                raise Transient(code, exc.msg) from exc
            raise Permanent(code, exc.msg) from exc
        except asyncio.TimeoutError as exc:
            # Ambiguous: Twilio may have created the message. Not retried (no idempotency key).
            raise Permanent("TIMEOUT", f"no answer from Twilio within {timeout:.1f}s") from exc
        except (TwilioException, OSError) as exc:
            raise Permanent(type(exc).__name__, str(exc)) from exc
        return Accepted(str(message.sid))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
