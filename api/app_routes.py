"""The mobile app's endpoints: device registration, preferences, history, receipts and actions."""

from __future__ import annotations

import uuid
from typing import Annotated

import psycopg.errors
from fastapi import APIRouter, Query, Request

from precall.api import store
from precall.api.auth import CurrentUser, DeferredReceiptCaller, ReceiptCaller, known_user, receipt_unauthorized
from precall.api.errors import BODY_LIMITS, ApiError, responses
from precall.api.models import (
    ActionApplied, ActionRequest, Device, History, HistoryPage, Notification, NotificationPreferences,
    PreferencesView, Receipt, ReceiptRecorded, RegisterDevice, Registered, UnregisterDevice, Unregistered, Updated,
)

router = APIRouter(prefix="/api/v1")


@router.post("/notifications/register-device", responses=responses(401, 422, *BODY_LIMITS), tags=["app"])
async def register_device(body: RegisterDevice, user: CurrentUser, request: Request) -> Registered:
    """Adds or refreshes this device (the user's other devices keep theirs; a token another user
    held moves here); push_enabled as sent re-enables push after a dead token."""
    async with request.app.state.pool.connection() as conn:
        registered = await store.register_device(conn, user, body.fcm_token, body.platform, body.push_enabled)
    if not registered:
        raise ApiError(401, "unauthorized", "unknown user")
    return Registered()


@router.post("/notifications/unregister-device", responses=responses(401, 422, *BODY_LIMITS), tags=["app"])
async def unregister_device(body: UnregisterDevice, user: CurrentUser, request: Request) -> Unregistered:
    """Logout: this device gets no more previews. Idempotent; another user's token is left alone
    (and answers the same)."""
    async with request.app.state.pool.connection() as conn:
        await store.unregister_device(conn, user, body.fcm_token)
    return Unregistered()


@router.get("/users/notification-preferences", responses=responses(401), tags=["app"])
async def get_preferences(user: CurrentUser, request: Request) -> PreferencesView:
    """The caller's channel preference, lead time, SMS consent and devices (never a token or the number)."""
    async with request.app.state.pool.connection() as conn:
        prefs = await store.preferences(conn, user)
        devices = await store.devices(conn, user)
    if prefs is None:
        raise ApiError(401, "unauthorized", "unknown user")
    return PreferencesView(**prefs, devices=[Device(**d) for d in devices])


async def _update_preferences(body: NotificationPreferences, user: uuid.UUID, request: Request) -> Updated:
    async with request.app.state.pool.connection() as conn:
        if body.notification_pref == "sms_only" and not await store.phone_on_file(conn, user):
            raise ApiError(409, "no_phone_number", "sms_only needs a phone number on file")
        try:
            await store.update_preferences(conn, user, body.notification_pref, body.notification_lead_min)
        except psycopg.errors.CheckViolation as exc:  # a lead above precall.settings.max_lead
            raise ApiError(422, "lead_not_allowed", exc.diag.message_primary or "lead not allowed") from None
    return Updated()


@router.post("/users/notification-preferences", responses=responses(401, 409, 422, *BODY_LIMITS), tags=["app"])
async def post_preferences(body: NotificationPreferences, user: CurrentUser, request: Request) -> Updated:
    """Sets the channel preference and/or the lead time; unsent previews move accordingly."""
    return await _update_preferences(body, user, request)


@router.put("/users/notification-preferences", responses=responses(401, 409, 422, *BODY_LIMITS), tags=["app"])
async def put_preferences(body: NotificationPreferences, user: CurrentUser, request: Request) -> Updated:
    """Same as POST."""
    return await _update_preferences(body, user, request)


@router.get("/notifications/history", responses=responses(401, 422), tags=["app"])
async def history(
    user: CurrentUser, request: Request, page: Annotated[HistoryPage, Query()]
) -> History:
    """The caller's notifications and the actions taken on them (entries of type "action"), newest first."""
    async with request.app.state.pool.connection() as conn:
        rows = await store.notification_history(conn, user, page.limit, page.offset)
    return History(notifications=[Notification.model_validate(r, from_attributes=False) for r in rows])


_RECEIPT_ERRORS = {
    "unknown": (404, "not_found", "no notification with this id for this user"),
    "not_push": (409, "not_a_push", "receipts are recorded for push notifications only"),
    "not_sent": (409, "not_sent", "this notification has not been sent"),
}


@router.post("/notifications/{notification_id}/receipt", responses=responses(401, 404, 409, 422, *BODY_LIMITS),
             tags=["app"])
async def receipt(notification_id: uuid.UUID, body: Receipt, caller: DeferredReceiptCaller,
                  request: Request) -> ReceiptRecorded:
    """Records that the push reached the device (or was opened); stops a pending fallback SMS.

    Authenticated by the app's bearer JWT, or without a session by the push's own
    `data.receipt_token` in `X-Precall-Receipt` (an Android background handler, an iOS
    Notification Service Extension): a token that does not verify for this notification → 401."""
    async with request.app.state.pool.connection() as conn:
        outcome, state = await store.record_push_receipt(conn, notification_id, body.event, body.at,
                                                         caller.user_id, caller.device_id)
        if caller.device_id is not None and outcome in _RECEIPT_ERRORS:
            # The token verified, yet names nothing we hold (pruned): as for any token that fails.
            raise receipt_unauthorized()
        if outcome == "unknown" and caller.user_id is not None:
            await known_user(conn, caller.user_id)  # a deleted user's valid JWT: 401, as elsewhere
        if outcome in _RECEIPT_ERRORS:
            status, code, detail = _RECEIPT_ERRORS[outcome]
            raise ApiError(status, code, detail)
    return ReceiptRecorded(status="duplicate" if outcome == "duplicate" else "recorded", late=state.late,
                           delivered_at=state.delivered_at, opened_at=state.opened_at)


def _utc(at: object) -> str:
    return at.isoformat().replace("+00:00", "Z") if hasattr(at, "isoformat") else str(at)


@router.post("/notifications/{notification_id}/action", responses=responses(401, 404, 409, 422, *BODY_LIMITS),
             tags=["app"])
async def action(notification_id: uuid.UUID, body: ActionRequest, caller: ReceiptCaller,
                 request: Request) -> ActionApplied:
    """The person answers the preview: `call_now`, `snooze` or `skip` (the push's buttons, see
    data.actions / the iOS category PRECALL_CALL). Once per call: a second action, a call no
    longer pending, or one whose time has come → 409 with what was found. Also counts as the
    push's receipt (delivered and opened). Authenticated like a receipt: the bearer JWT, or the
    push's data.receipt_token in X-Precall-Receipt."""
    async with request.app.state.pool.connection() as conn:
        result = await store.apply_call_action(conn, notification_id, body.action, caller.user_id, caller.device_id)
    if result.outcome in ("unknown", "not_sent"):
        if caller.device_id is not None:
            raise receipt_unauthorized()
        if result.outcome == "unknown":
            raise ApiError(404, "not_found", "no preview with this id for this user")
        raise ApiError(409, "not_sent", "this preview has not been sent")
    if result.outcome == "already_acted":
        raise ApiError(409, "already_acted", f"this call was already answered: {result.found_action} at "
                       f"{_utc(result.found_at)}; the call is {result.call_status}, at {_utc(result.scheduled_at)}")
    if result.outcome == "not_pending":
        raise ApiError(409, "not_pending", f"the call is {result.call_status or 'gone'}: nothing to move")
    if result.outcome == "too_late":
        raise ApiError(409, "too_late", f"the call's time has come ({_utc(result.scheduled_at)}): nothing to move")
    assert result.scheduled_at is not None and result.call_status is not None
    return ActionApplied(action=body.action, scheduled_at=result.scheduled_at, call_status=result.call_status)
