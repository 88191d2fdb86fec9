"""Request and response bodies: the API's contract, as the OpenAPI document shows it."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime, BeforeValidator, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema, field_validator,
    model_validator,
)

# FCM registration tokens are ~160 characters of [A-Za-z0-9_:-]; APNs device tokens are 64 hex.
TOKEN_PATTERN = r"^[A-Za-z0-9_:\-.]+$"
_APNS_DEVICE_TOKEN = re.compile(r"[0-9A-Fa-f]{64}")


def _utc_text(value: datetime) -> str:
    """Every timestamp the API answers with is UTC with a Z, whatever the session's TimeZone."""
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


UtcDatetime = Annotated[datetime, PlainSerializer(_utc_text, return_type=str, when_used="json"),
                        WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization")]


def _json_integer(value: object) -> object:
    """JSON Schema's integer: 5 and 5.0, never "5" or true."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be a whole number")
        return int(value)
    return value


JsonInteger = Annotated[int, BeforeValidator(_json_integer)]


class RegisterDevice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # 0 is not false, "5" is not 5
    fcm_token: str = Field(min_length=32, max_length=4096, pattern=TOKEN_PATTERN,
                           examples=["dGhpcyBpcyBhIHRva2VuIGZyb20gRkNNIGZvciB0ZXN0aW5nIG9ubHk"],
                           description="The FCM registration token (not an APNs device token: 64 hex digits are refused).",
                           json_schema_extra={"not": {"pattern": "^[0-9A-Fa-f]{64}$"}})
    platform: Literal["ios", "android"]
    push_enabled: bool = True

    @field_validator("fcm_token")
    @classmethod
    def _not_an_apns_token(cls, value: str) -> str:
        if _APNS_DEVICE_TOKEN.fullmatch(value):
            raise ValueError("this is an APNs device token (64 hex digits), which FCM cannot deliver to: "
                             "register the FCM registration token (Firebase Messaging getToken()) instead")
        return value


class Registered(BaseModel):
    status: Literal["registered"] = "registered"


class UnregisterDevice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    fcm_token: str = Field(min_length=1, max_length=4096, pattern=TOKEN_PATTERN,
                           description="The token this device registered (logout).")


class Unregistered(BaseModel):
    status: Literal["unregistered"] = "unregistered"


class Device(BaseModel):
    platform: str | None
    push_enabled: bool = Field(description="The device gets previews: enabled, token alive, seen recently.")
    last_seen_at: UtcDatetime


class PreferencesView(BaseModel):
    notification_pref: str
    notification_lead_min: int
    phone_number_on_file: bool
    sms_opted_out: bool
    devices: list[Device]


class NotificationPreferences(BaseModel):
    """Either field may be left out (not null); at least one is needed."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})
    # Not Optional: null is refused; left out, the default None means "unchanged".
    notification_pref: Literal["push_only", "sms_only", "push_and_sms"] = None  # type: ignore[assignment]
    notification_lead_min: JsonInteger = Field(default=None, ge=1, le=60)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _something(self) -> NotificationPreferences:
        if self.notification_pref is None and self.notification_lead_min is None:
            raise ValueError("give notification_pref, notification_lead_min or both")
        return self


class Updated(BaseModel):
    status: Literal["updated"] = "updated"


class Notification(BaseModel):
    id: uuid.UUID
    call_id: uuid.UUID | None
    type: str
    channel: str | None
    status: str
    title: str | None
    body: str | None
    reason: str | None
    send_at: UtcDatetime | None
    sent_at: UtcDatetime | None
    delivered_at: UtcDatetime | None
    opened_at: UtcDatetime | None
    created_at: UtcDatetime | None
    # An entry of type "action": what the person did with the preview `notification_id`, and
    # what came of it (outcome; also in status).
    action: Literal["call_now", "snooze", "skip"] | None = None
    outcome: Literal["applied", "already_acted", "not_pending", "too_late"] | None = None
    notification_id: uuid.UUID | None = None


class HistoryPage(BaseModel):
    model_config = ConfigDict(extra="forbid")  # ?limt=5 is a typo worth a 422, not a silent default
    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=100_000)


class History(BaseModel):
    notifications: list[Notification]


def _rfc3339_text(value: object) -> object:
    if value is not None and not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time string")
    return value


class Receipt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: Literal["delivered", "opened"]
    at: Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)] = Field(
        default=None,  # type: ignore[assignment]
        description="When the device saw it; now when left out. Kept between the send and now (device clocks drift).")


class ReceiptRecorded(BaseModel):
    status: Literal["recorded", "duplicate"]
    late: bool = Field(description="The fallback SMS had already left: the user got both.")
    delivered_at: UtcDatetime | None
    opened_at: UtcDatetime | None


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class TwilioStatusAck(BaseModel):
    status: Literal["applied", "pending", "duplicate"]


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    action: Literal["call_now", "snooze", "skip"] = Field(
        description="call_now: the call happens now; snooze: the call moves precall.settings.snooze_minutes "
                    "(default 10) later; skip: today's call is cancelled.")


class ActionApplied(BaseModel):
    status: Literal["applied"] = "applied"
    action: Literal["call_now", "snooze", "skip"]
    scheduled_at: UtcDatetime = Field(description="The call's time after the action (skip: the cancelled call's).")
    call_status: str = Field(description="pending, or cancelled after a skip.")


class CallOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["answered", "no_answer", "failed"]
    answered_by: Literal["human", "machine", "unknown"] = "unknown"
    at: Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)] = Field(
        default=None,  # type: ignore[assignment]
        description="When the call ended or was answered (the call system's clock).")


class CallOutcomeRecorded(BaseModel):
    status: Literal["recorded", "duplicate"]
    call_status: str
    answered_by: Literal["human", "machine", "unknown"]
