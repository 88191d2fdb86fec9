"""`precall send CALL_ID`: a manual preview, through the dispatcher's own code path and rules."""

from __future__ import annotations

import uuid
import asyncio
import getpass
import os
import socket
from datetime import datetime, timezone
from typing import Any, Optional

import psycopg
import typer

from precall.cli import store
from precall.cli.history_command import parse_uuid
from precall.cli.output import emit, to_json
from precall.dispatcher.channel import Path, Reachability, select_notification_path
from precall.config import Config, database_url
from precall.dispatcher.db import Database
from precall import errors
from precall.errors import PrecallError
from precall.templates.messages import MessageInput, minutes_left
from precall.dispatcher.providers import factory
from precall.templates.render import Renderer
from precall.dispatcher import push_targets
from precall.dispatcher.send_preview import PreviewSender

RESULT_COLUMNS = ["type", "channel", "status", "sent_at", "provider_id", "reason", "id"]
PATH_NAMES = {Path.PUSH: "push (path A)", Path.SMS: "SMS (path B)",
              Path.PUSH_WITH_FALLBACK: "push, SMS if no receipt in time (path C)"}


def _worker() -> str:
    return f"manual:{getpass.getuser()}@{socket.gethostname()}:{os.getpid()}"


def _dry_run(call_id: uuid.UUID, channel: Optional[str], as_json: bool) -> None:
    with psycopg.connect(database_url(), autocommit=True) as conn:
        inp = store.preview_inputs(conn, call_id)
        if inp is None:
            raise PrecallError(f"no call with id {call_id}")
        sent = store.last_sent_preview(conn, call_id, inp["scheduled_at"])
        snooze = store.snooze_minutes(conn)
    reach = Reachability(inp["notification_pref"], inp["fcm_token"], inp["push_enabled"], inp["phone_number"],
                         inp["sms_opted_out"])
    path = select_notification_path(reach)
    chosen = channel or ({Path.SMS: "sms"}.get(path, "push") if path else None)
    seconds = (inp["scheduled_at"] - datetime.now(timezone.utc)).total_seconds()
    rendered = Renderer.from_env().render(
        MessageInput(inp["coach_name"], inp["current_streak"] or 0, inp["topic"], inp["locale"], minutes_left(max(seconds, 60)),
                     snooze))
    plan = {
        "call_id": call_id, "call_status": inp["call_status"], "scheduled_at": inp["scheduled_at"],
        "path": PATH_NAMES[path] if path else "none: no usable token or phone",
        "channel": chosen, "title": rendered.push.title, "body": rendered.push.body,
        "sms": rendered.sms.text, "sms_encoding": rendered.sms.encoding, "sms_segments": rendered.sms.segments,
        "already_sent": {"at": sent[0], "channel": sent[1], "type": sent[2]} if sent else None,
    }
    if as_json:
        print(to_json(plan))
        return
    for key, value in plan.items():
        typer.echo(f"{key:>13}: {value if value is not None else '-'}")
    typer.echo("dry run: nothing was sent or written")


async def _send(config: Config, call_id: uuid.UUID, channel: Optional[str], force: bool) -> list[dict[str, Any]]:
    push, sms = factory.push_sender(config), factory.sms_sender(config)
    pool = Database(config.database_url, 1, 4, "precall-send")
    await pool.open()
    await push.start()
    await sms.start()
    worker = _worker()
    try:
        async with pool.connection() as conn:
            row = await store.claim_manual_preview(conn, call_id, worker, force,
                                                   {"push": "preview_push", "sms": "preview_sms"}.get(channel or ""))
            [row] = await push_targets.attach(conn, [row])
        sender = PreviewSender(pool, push, sms, Renderer.from_env(), config, worker)
        await sender.follow_policy()
        await sender.process(row, channel)
        async with pool.connection() as conn:
            return await store.notification_and_fallback(conn, row.id)
    finally:
        await push.close()
        await sms.close()
        await pool.close()


def send_cmd(
    call_id: str = typer.Argument(..., help="The call's id."),
    channel: Optional[str] = typer.Option(None, help="push or sms; default: the path rules choose."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be sent, send nothing."),
    force: bool = typer.Option(False, "--force", help="Send even if a preview already went out (a marked resend)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Send a call's preview now, exactly as the dispatcher would (same code, same rules).

    Refuses when a preview already went out for this call time, saying when and how; --force
    sends again, recorded as a manual resend.

    Example: precall send 9b1d7c1e-0f4a-4d8e-8a51-6b1f9e2c3d40 --channel sms --dry-run
    """
    if channel not in (None, "push", "sms"):
        raise PrecallError(f"--channel must be push or sms, not {channel!r}")
    cid = parse_uuid(call_id, "call id")
    if dry_run:
        _dry_run(cid, channel, as_json)
        return
    config = Config.from_env()
    try:
        rows = asyncio.run(_send(config, cid, channel, force))
    except psycopg.Error as exc:
        refused = errors.from_database(exc)
        if refused is None:
            raise
        raise refused from None
    emit(rows, RESULT_COLUMNS, as_json)
    main = rows[0] if rows else None
    if main is None or main["status"] not in ("sent", "delivered", "opened"):
        raise PrecallError(f"not sent: {main['reason'] if main else 'no row'}")
    if any(r["type"] == "fallback_sms" and r["status"] == "queued" for r in rows):
        typer.echo("path C: the fallback SMS is planned; a running dispatcher sends it unless the app acknowledges")
