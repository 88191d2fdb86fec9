"""Twilio's inbound-message webhook: SMS consent both ways (STOP / START and their synonyms)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Header, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from precall.api import store
from precall.api.errors import BODY_LIMITS, responses
from precall.api.twilio_status import check_signature
from precall.config import ApiConfig

router = APIRouter()
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


class TwilioInboundForm(BaseModel):
    # Twilio sends more (To, AccountSid, NumMedia, FromCountry…): signed, not needed.
    model_config = ConfigDict(extra="allow")
    MessageSid: str = Field(pattern=r"^(SM|MM)[0-9a-fA-F]{32}$")
    From: str = Field(min_length=1, max_length=32)
    Body: str = Field(default="", max_length=1600)


async def verified_inbound(request: Request, x_twilio_signature: Annotated[str | None, Header()] = None) -> None:
    config: ApiConfig = request.app.state.config
    await check_signature(request, config.twilio_inbound_url, "PRECALL_TWILIO_INBOUND_URL", x_twilio_signature)


@router.post("/api/v1/webhooks/twilio/inbound", responses={**responses(403, 422, *BODY_LIMITS),
             200: {"content": {"text/xml": {"schema": {"type": "string"}}}, "description": "An empty TwiML response"}},
             tags=["providers"], dependencies=[Depends(verified_inbound)], response_class=Response)
async def twilio_inbound(form: Annotated[TwilioInboundForm, Form()], request: Request) -> Response:
    """A text to our number: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT set sms_opted_out for
    every user with that number; START, YES, UNSTOP clear it; anything else is stored. Twilio
    itself answers the keywords (Advanced Opt-Out), so the reply here is empty."""
    async with request.app.state.pool.connection() as conn:
        await store.record_inbound_sms(conn, form.MessageSid, form.From, form.Body)
    return Response(EMPTY_TWIML, media_type="text/xml")
