"""Push through firebase-admin's async API (HTTP v1), with the deadline carried to FCM and APNs; the
credentials and the error mapping both transports share (fcm_direct.py is the other)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import warnings
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import firebase_admin
from firebase_admin import _retry, credentials, exceptions, messaging
from google.auth.exceptions import RefreshError

from precall.errors import ConfigError
from precall.dispatcher.providers.base import Accepted, DeadToken, Permanent, PushRequest, Transient
from precall.dispatcher.providers.http_lanes import LaneTransport

_DEAD_TOKEN_MESSAGE = "not a valid FCM registration token"


def _seconds_until(deadline: datetime) -> int:
    return max(0, math.floor((deadline - datetime.now(timezone.utc)).total_seconds()))


def build_message(req: PushRequest) -> messaging.Message:
    """The time-critical payload: high priority, TTL and apns-expiration ending at the call."""
    if req.data_only:
        # Android, data message: Android runs the app's onMessageReceived even in the background
        # only for messages without a notification block; title and body travel in data.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return messaging.Message(
                token=req.token,
                data={**req.data, "title": req.title, "body": req.body},
                android=messaging.AndroidConfig(priority="high", ttl=_seconds_until(req.deadline),
                                                collapse_key=req.collapse_id),
            )
    with warnings.catch_warnings():
        # Message.token is deprecated in favour of Installation IDs; apps still register tokens.
        warnings.simplefilter("ignore", DeprecationWarning)
        return messaging.Message(
            token=req.token,
            notification=messaging.Notification(title=req.title, body=req.body),
            data=req.data,
            # collapse_key only merges messages still waiting at FCM; the notification tag makes
            # a re-sent preview (a retry after a timeout, a crash mid-send) replace the one shown.
            android=messaging.AndroidConfig(
                priority="high", ttl=_seconds_until(req.deadline), collapse_key=req.collapse_id,
                notification=messaging.AndroidNotification(tag=req.collapse_id),
            ),
            apns=messaging.APNSConfig(
                headers={
                    "apns-priority": "10",
                    "apns-push-type": "alert",
                    "apns-expiration": str(int(req.deadline.timestamp())),
                    "apns-collapse-id": req.collapse_id[:64],
                },
                payload=messaging.APNSPayload(
                    aps=messaging.Aps(mutable_content=True, category=req.category,
                                     custom_data={"interruption-level": "time-sensitive"}),
                ),
            ),
        )


def retry_after_s(exc: Exception) -> float | None:
    """The seconds an FCM answer's Retry-After asks for (delta-seconds or an HTTP date)."""
    response = getattr(exc, "http_response", None)
    raw = response.headers.get("Retry-After") if response is not None else None
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(raw) - datetime.now(timezone.utc)).total_seconds())
        except (TypeError, ValueError):
            return None


def _refresh_error(exc: BaseException | None) -> RefreshError | None:
    """google-auth's RefreshError, as raised or wrapped by firebase-admin (UnknownError's cause)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, RefreshError):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return None


def classify(exc: Exception) -> Exception:
    """Maps firebase-admin's exceptions to what the dispatcher does next."""
    if isinstance(exc, messaging.UnregisteredError):
        return DeadToken("UNREGISTERED", str(exc))
    if isinstance(exc, messaging.SenderIdMismatchError):
        return DeadToken("SENDER_ID_MISMATCH", str(exc))
    if isinstance(exc, exceptions.InvalidArgumentError):
        if _DEAD_TOKEN_MESSAGE in str(exc):
            return DeadToken("INVALID_ARGUMENT", str(exc))
        return Permanent("INVALID_ARGUMENT", str(exc))
    refused = _refresh_error(exc)
    if refused is not None:
        # No access token: the service account is refused (a deleted key, another project) or the
        # token endpoint is down. Only the second is worth a retry.
        if getattr(refused, "retryable", False):
            return Transient("AUTH_UNAVAILABLE", str(refused))
        return Permanent("AUTH", f"FCM credentials refused: {refused}")
    if isinstance(exc, (messaging.QuotaExceededError, exceptions.UnavailableError, exceptions.InternalError,
                        exceptions.DeadlineExceededError, exceptions.UnknownError, asyncio.TimeoutError)):
        code = getattr(exc, "code", "TIMEOUT") if not isinstance(exc, asyncio.TimeoutError) else "TIMEOUT"
        return Transient(str(code), str(exc) or "no answer before the timeout", retry_after_s(exc))
    if isinstance(exc, exceptions.FirebaseError):
        return Permanent(str(exc.code), str(exc))
    return Transient(type(exc).__name__, str(exc))


def load_credentials(credentials_path: str | None) -> tuple[credentials.Certificate, str]:
    """The service account (firebase-admin's Certificate: it signs and refreshes the OAuth token)
    and its project id; a one-line ConfigError when missing or unreadable."""
    if not credentials_path:
        raise ConfigError(
            "PRECALL_PUSH_PROVIDER=fcm needs GOOGLE_APPLICATION_CREDENTIALS (a service-account JSON); "
            "set PRECALL_PUSH_PROVIDER=log to run without push"
        )
    try:
        with open(credentials_path, encoding="utf-8") as f:
            info = json.load(f)
        return credentials.Certificate(info), str(info["project_id"])
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"GOOGLE_APPLICATION_CREDENTIALS={credentials_path}: {exc}") from None


def warm_up_failed(exc: BaseException) -> None:
    logging.getLogger("precall.providers.fcm").warning("FCM token warm-up failed: %s", exc)


class FcmPushSender:
    """PRECALL_FCM_TRANSPORT=sdk: firebase-admin's send_each_async."""

    name = "fcm"

    def __init__(self, credentials_path: str | None, base_url: str, http_timeout_s: float,
                 in_flight: int = 64) -> None:
        self._cred, self.project_id = load_credentials(credentials_path)
        self._base_url = base_url.rstrip("/")
        self._http_timeout_s = http_timeout_s
        self._in_flight = in_flight
        self._app: firebase_admin.App | None = None

    async def start(self) -> None:
        # One app per dispatcher (and per event loop: the SDK's httpx client is bound to the loop).
        self._app = firebase_admin.initialize_app(
            self._cred, {"projectId": self.project_id, "httpTimeout": self._http_timeout_s},
            name=f"precall-{id(self)}",
        )
        service = messaging._get_messaging_service(self._app)  # noqa: SLF001 - pinned SDK, tested
        # firebase-admin has no public endpoint setting (only the Go SDK does); pinned to 7.7.0 and
        # tests/test_providers_config.py checks the override still takes.
        service._fcm_url = f"{self._base_url}/v1/projects/{self.project_id}/messages:send"  # noqa: SLF001
        # firebase-admin 7.7.0 retries 500/503 inside its httpx transport without closing the
        # failed response, so each retried answer keeps a pooled connection checked out; after
        # 100 of them every send waits for a connection until it times out, for good (found by
        # bench/chaos.py provider_faults). Our own retry is deadline-aware: the SDK's is switched
        # off by retrying no status.
        # Under that retry layer the SDK's single connection pool is swapped for lanes of small
        # pools (see http_lanes.py): one pool reconnected for nearly every send above 20 in flight.
        for transport in service._async_client._mounts.values():  # noqa: SLF001 - pinned SDK, tested
            transport._retry = _retry.HttpxRetry(max_retries=0, status_forcelist=[])  # noqa: SLF001
            transport._wrapped_transport = LaneTransport(self._in_flight)  # noqa: SLF001
        # Warm the OAuth token now: otherwise the first preview pays ~200 ms for it.
        try:
            await asyncio.to_thread(self._cred.get_access_token)
        except Exception as exc:  # noqa: BLE001 - sends will retry the token; say why now
            warm_up_failed(exc)

    async def send(self, request: PushRequest, timeout: float) -> Accepted:
        assert self._app is not None, "start() first"
        try:
            batch = await asyncio.wait_for(messaging.send_each_async([build_message(request)], app=self._app), timeout)
        except Exception as exc:  # noqa: BLE001 - classified below
            raise classify(exc) from exc
        result = batch.responses[0]
        if result.success:
            return Accepted(str(result.message_id))
        assert result.exception is not None
        raise classify(result.exception) from result.exception

    async def close(self) -> None:
        if self._app is not None:
            service = messaging._get_messaging_service(self._app)  # noqa: SLF001
            client = getattr(service, "_async_client", None)
            aclose = getattr(client, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # noqa: BLE001 - closing on shutdown
                    pass
            # delete_app() would call asyncio.run() inside our loop; drop the registry entry instead.
            firebase_admin._apps.pop(self._app.name, None)  # noqa: SLF001
            self._app = None
