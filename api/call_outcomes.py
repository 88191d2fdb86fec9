"""The call system's reports: POST /api/v1/calls/{call_id}/outcome, signed like the call webhook."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from precall import webhook_signature
from precall.api import store
from precall.api.errors import BODY_LIMITS, ApiError, responses
from precall.api.models import CallOutcome, CallOutcomeRecorded
from precall.config import ApiConfig

router = APIRouter()


async def signed_by_call_system(
    request: Request, x_precall_signature: Annotated[str | None, Header()] = None
) -> None:
    """X-Precall-Signature over the raw body with PRECALL_WEBHOOK_SECRET (the call webhook's
    scheme, precall/webhook_signature.py); older than 5 minutes → refused as a replay."""
    config: ApiConfig = request.app.state.config
    if not config.webhook_secret:
        raise ApiError(403, "forbidden", "call outcomes are not configured (PRECALL_WEBHOOK_SECRET)")
    if not x_precall_signature:
        raise ApiError(401, "unauthorized", "missing X-Precall-Signature")
    body = await request.body()
    if not webhook_signature.verify(config.webhook_secret, x_precall_signature, body):
        raise ApiError(403, "forbidden", "X-Precall-Signature does not match this body, or is older than "
                                         f"{webhook_signature.TOLERANCE_S} s (a replay)")


@router.post("/api/v1/calls/{call_id}/outcome", responses=responses(401, 403, 404, 409, 422, *BODY_LIMITS),
             tags=["call system"], dependencies=[Depends(signed_by_call_system)])
async def call_outcome(call_id: uuid.UUID, body: CallOutcome, request: Request) -> CallOutcomeRecorded:
    """Sets the call's status (answered, no_answer, failed) and keeps who answered: a call
    answered by a machine counts as not answered in call_answer_rate. Idempotent; a different
    outcome for a call already reported (or finished otherwise) → 409."""
    async with request.app.state.pool.connection() as conn:
        result, call_status, answered_by = await store.record_call_outcome(conn, call_id, body.status,
                                                                            body.answered_by, body.at)
    if result == "unknown":
        raise ApiError(404, "not_found", "no call with this id")
    if result == "conflict":
        found = f"{call_status}" + (f" (answered_by {answered_by})" if answered_by else "")
        raise ApiError(409, "conflict", f"this call's outcome is already {found}; {body.status} was not applied")
    return CallOutcomeRecorded(status="duplicate" if result == "duplicate" else "recorded",
                               call_status=call_status or body.status,
                               answered_by=(answered_by or body.answered_by))  # type: ignore[arg-type]
