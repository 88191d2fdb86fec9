"""Twilio's status callbacks: signature checked with the SDK, then precall.record_sms_status()."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Header, Request
from pydantic import BaseModel, ConfigDict, Field
from twilio.request_validator import RequestValidator

from precall.api import store
from precall.api.errors import BODY_LIMITS, ApiError, responses
from precall.api.models import TwilioStatusAck
from precall.config import ApiConfig

router = APIRouter()


class TwilioStatusForm(BaseModel):
    # Twilio sends more fields (AccountSid, From, To, ApiVersion…); they are signed, not needed.
    model_config = ConfigDict(extra="allow")
    MessageSid: str = Field(pattern=r"^(SM|MM)[0-9a-fA-F]{32}$")
    MessageStatus: str = Field(min_length=1, max_length=32, pattern=r"^[a-z_]+$")
    ErrorCode: int | None = Field(default=None, ge=0, le=99999)
    RawDlrDoneDate: str | None = Field(default=None, max_length=32)


async def check_signature(request: Request, url: str | None, url_variable: str, signature: str | None) -> None:
    """403 unless X-Twilio-Signature signs the public webhook URL and every form field (Twilio's
    RequestValidator). Runs before the form is parsed into a model: nothing unsigned is stored."""
    config: ApiConfig = request.app.state.config
    if not config.twilio_auth_token or not url:
        raise ApiError(403, "forbidden", f"this Twilio webhook is not configured (TWILIO_AUTH_TOKEN, {url_variable})")
    if not signature:
        raise ApiError(403, "forbidden", "missing X-Twilio-Signature")
    form = await request.form()
    params = {k: str(v) for k, v in form.multi_items()}
    if not RequestValidator(config.twilio_auth_token).validate(url, params, signature):
        raise ApiError(403, "forbidden", "X-Twilio-Signature does not match")


async def verified_twilio_request(
    request: Request, x_twilio_signature: Annotated[str | None, Header()] = None
) -> None:
    config: ApiConfig = request.app.state.config
    await check_signature(request, config.twilio_status_callback_url, "PRECALL_TWILIO_STATUS_CALLBACK_URL",
                          x_twilio_signature)


def _done_at(raw: str | None) -> datetime | None:
    """RawDlrDoneDate is the carrier's YYMMDDhhmm (UTC); absent or odd means 'now'."""
    if not raw:
        return None
    try:
        return datetime.strptime(raw, "%y%m%d%H%M").replace(tzinfo=timezone.utc)
    except ValueError:
        try:
            return parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None


@router.post("/api/v1/webhooks/twilio/status", responses=responses(403, 422, *BODY_LIMITS), tags=["providers"],
             dependencies=[Depends(verified_twilio_request)])
async def twilio_status(form: Annotated[TwilioStatusForm, Form()], request: Request) -> TwilioStatusAck:
    """Applies an SMS delivery status; idempotent, and a late 'sent' never undoes 'delivered'."""
    async with request.app.state.pool.connection() as conn:
        outcome = await store.record_sms_status(conn, form.MessageSid, form.MessageStatus, form.ErrorCode,
                                                _done_at(form.RawDlrDoneDate))
    return TwilioStatusAck(status=outcome)
