"""Twilio's inbound-message webhook: SMS consent both ways (STOP / START and their synonyms), and
replies to a preview (1 / 2 / 3 and their words) that call now, snooze or skip the call, answered
with a one-segment confirmation in the user's language as TwiML <Message>."""

from __future__ import annotations

from functools import cache
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Header, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from twilio.twiml.messaging_response import MessagingResponse

from precall.api import store
from precall.api.errors import BODY_LIMITS, responses
from precall.api.twilio_status import check_signature
from precall.config import ApiConfig
from precall.templates.catalog import Catalog
from precall.templates.sms_pricing import estimate
from precall.templates.sms_replies import build_reply

router = APIRouter()
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


class TwilioInboundForm(BaseModel):
    # Twilio sends more (To, AccountSid, NumMedia, FromCountry…): signed, not needed.
    model_config = ConfigDict(extra="allow")
    MessageSid: str = Field(pattern=r"^(SM|MM)[0-9a-fA-F]{32}$")
    From: str = Field(min_length=1, max_length=32, pattern=r"^[^\x00-\x1f]+$")
    Body: str = Field(default="", max_length=1600)

    @field_validator("Body")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        # PostgreSQL text cannot hold NUL; a text is kept without it rather than refused.
        return value.replace("\x00", "")


async def verified_inbound(request: Request, x_twilio_signature: Annotated[str | None, Header()] = None) -> None:
    config: ApiConfig = request.app.state.config
    await check_signature(request, config.twilio_inbound_url, "PRECALL_TWILIO_INBOUND_URL", x_twilio_signature)


@router.post("/api/v1/webhooks/twilio/inbound", responses={**responses(403, 422, *BODY_LIMITS),
             200: {"content": {"text/xml": {"schema": {"type": "string"}}},
                   "description": "TwiML: empty, or one <Message> (a confirmation or the help text)"}},
             tags=["providers"], dependencies=[Depends(verified_inbound)], response_class=Response)
async def twilio_inbound(form: Annotated[TwilioInboundForm, Form()], request: Request) -> Response:
    """A text to our number. STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT set sms_opted_out for
    every user with that number; START, YES, UNSTOP clear it (Twilio itself answers those: the
    reply here is empty). 1 / NOW / MAINTENANT, 2 / LATER / PLUS TARD, 3 / SKIP / ANNULER act on
    the call of the latest SMS preview sent to that number in the last 30 minutes (call now,
    snooze, skip) and are answered with a confirmation; anything else from a known number gets a
    short help text, at most once a day. Every text is stored once per MessageSid."""
    async with request.app.state.pool.connection() as conn:
        got = await store.receive_sms(conn, form.MessageSid, form.From, form.Body)
        if got.kind not in ("action", "help"):
            return Response(EMPTY_TWIML, media_type="text/xml")
        snooze = await store.snooze_minutes(conn)
        if got.kind == "help":
            reply_kind, kind = "help", "help"
        elif got.outcome == "applied":
            reply_kind, kind = "confirmation", str(got.action)
        else:
            reply_kind, kind = "refused", "refused"
        text = build_reply(_catalog(), got.locale, kind, name=got.coach_name, at=got.scheduled_at,
                           time_zone=got.time_zone, snooze_minutes=snooze)
        config: ApiConfig = request.app.state.config
        cost = estimate(form.From, text.segments, config.sms_prices)
        await store.record_sms_reply(conn, form.MessageSid, reply_kind, text.text, text.encoding, text.segments,
                                     cost[0] if cost else None, cost[1] if cost else None)
    twiml = MessagingResponse()
    twiml.message(text.text)
    return Response(str(twiml), media_type="text/xml")


@cache
def _catalog() -> Catalog:
    return Catalog()
