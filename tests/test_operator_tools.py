"""Support's CLI (send, calls, history, stats, doctor), the dispatcher's metrics and retention."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import httpx
import psycopg
import psycopg.rows
import pytest

from plugins.processes import free_port, precall_cli, wait_until
from precall.sql import cron


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return precall_cli(*args, env=env, timeout=timeout)


def one_line_error(out: subprocess.CompletedProcess[str], *words: str) -> None:
    assert out.returncode == 1, out
    assert "Traceback" not in out.stderr and out.stderr.strip().count("\n") == 0, out.stderr
    for w in words:
        assert w in out.stderr, out.stderr


def rows(dsn: str, sql: str, *args: object) -> list[dict]:
    with psycopg.connect(dsn) as c:
        return c.cursor(row_factory=psycopg.rows.dict_row).execute(sql, args).fetchall()


# --- precall send -------------------------------------------------------------------------------

def test_send_dry_run_then_send_then_refuse_then_force(db, make, fake_fcm, fake_twilio, dispatcher_env) -> None:
    uid = make.user(fcm_token="tok-manual", push_enabled=True, coach="Max", current_streak=12)
    call = make.call(uid, in_seconds=3600)  # an hour out: not planned yet

    dry = cli(dispatcher_env, "send", call, "--dry-run")
    assert dry.returncode == 0 and "Coach Max is calling in 60 min! 💪" in dry.stdout and "push (path A)" in dry.stdout
    assert fake_fcm.state.sent == [] and rows(db, "SELECT 1 FROM notification_logs") == []

    first = cli(dispatcher_env, "send", call)
    assert first.returncode == 0, first.stderr
    assert len(fake_fcm.state.accepted()) == 1
    sent = rows(db, "SELECT * FROM notification_logs WHERE call_id = %s", call)
    assert [(r["type"], r["status"], r["resend"]) for r in sent] == [("preview_push", "sent", False)]
    assert sent[0]["manual_by"].startswith("manual:")

    again = cli(dispatcher_env, "send", call)
    one_line_error(again, "already sent at", "by push", "--force")
    assert len(fake_fcm.state.accepted()) == 1

    forced = cli(dispatcher_env, "send", call, "--force", "--channel", "sms")
    assert forced.returncode == 0, forced.stderr
    assert len(fake_twilio.state.accepted()) == 1 and len(fake_fcm.state.accepted()) == 1
    after = rows(db, "SELECT type, status, resend FROM notification_logs WHERE call_id = %s ORDER BY created_at", call)
    assert after == [{"type": "preview_push", "status": "sent", "resend": False},
                     {"type": "preview_sms", "status": "sent", "resend": True}]
    # The planner, when the call's window opens, does not plan another preview for it.
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("SELECT precall.plan_due_previews(now() + interval '58 minutes')")
    assert len(rows(db, "SELECT 1 FROM notification_logs WHERE call_id = %s", call)) == 2


def test_send_takes_over_the_planned_row_and_respects_the_rules(db, make, fake_fcm, fake_twilio, dispatcher_env) -> None:
    uid = make.user(fcm_token="tok-2", push_enabled=True, notification_lead_min=5)
    call = make.call(uid, in_seconds=360)  # planned at once: send_at is 60 s away
    planned = rows(db, "SELECT id FROM notification_logs WHERE call_id = %s AND status = 'queued'", call)
    assert len(planned) == 1
    assert cli(dispatcher_env, "send", call).returncode == 0
    assert rows(db, "SELECT id, status FROM notification_logs WHERE call_id = %s", call) == \
        [{"id": planned[0]["id"], "status": "sent"}]

    no_phone = make.user(phone_number=None, fcm_token="tok-3", push_enabled=True)
    call2 = make.call(no_phone, in_seconds=3600)
    out = cli(dispatcher_env, "send", call2, "--channel", "sms")
    one_line_error(out, "not sent", "no_phone")
    assert fake_twilio.state.sent == []

    for bad, words in ((["send", "not-a-uuid"], ["not a uuid"]), (["send", str(uuid.uuid4())], ["no call with id"]),
                       (["send", call, "--channel", "fax"], ["--channel must be push or sms"])):
        one_line_error(cli(dispatcher_env, *bad), *words)


# --- calls and history --------------------------------------------------------------------------

def test_calls_schedule_in_local_time_reschedule_cancel_and_list(db, make, dispatcher_env) -> None:
    uid = make.user(timezone="Europe/Paris", fcm_token="t", push_enabled=True)
    out = cli(dispatcher_env, "calls", "schedule", uid, "2027-03-29 07:00", "--topic", "mood_check")
    assert out.returncode == 0, out.stderr
    call = rows(db, "SELECT id, scheduled_at, topic FROM scheduled_calls WHERE user_id = %s", uid)[0]
    assert call["scheduled_at"] == datetime(2027, 3, 29, 5, 0, tzinfo=timezone.utc)  # CEST, after the DST change
    assert call["topic"] == "mood_check"

    assert cli(dispatcher_env, "calls", "reschedule", str(call["id"]), "2027-03-29 08:15").returncode == 0
    assert rows(db, "SELECT scheduled_at FROM scheduled_calls WHERE id = %s", call["id"])[0]["scheduled_at"] == \
        datetime(2027, 3, 29, 6, 15, tzinfo=timezone.utc)

    listed = json.loads(cli(dispatcher_env, "calls", "list", "--user", uid, "--json").stdout)
    assert [(c["id"], c["status"], c["local_time"]) for c in listed] == \
        [(str(call["id"]), "pending", "2027-03-29 08:15 Europe/Paris")]

    soon = make.call(uid, in_seconds=200)  # planned now: cancelling it cancels its preview
    assert rows(db, "SELECT status FROM notification_logs WHERE call_id = %s", soon) == [{"status": "queued"}]
    assert cli(dispatcher_env, "calls", "cancel", soon).returncode == 0
    assert rows(db, "SELECT status FROM notification_logs WHERE call_id = %s", soon) == [{"status": "cancelled"}]
    one_line_error(cli(dispatcher_env, "calls", "cancel", soon), "is cancelled", "only a pending call")
    one_line_error(cli(dispatcher_env, "calls", "schedule", uid, "tomorrow at 7"), "is not a date and time")
    one_line_error(cli(dispatcher_env, "calls", "list", "--status", "bogus"), "--status must be one of")


def test_history_newest_first_as_table_and_json(db, make, conn, dispatcher_env) -> None:
    uid = make.user()
    for i, ago in enumerate((30, 10, 20)):
        call = make.call(uid, in_seconds=7200 + i)
        conn.execute("INSERT INTO notification_logs (user_id, call_id, type, channel, status, title, created_at)"
                     " VALUES (%s, %s, 'preview_push', 'push', 'sent', %s, now() - make_interval(mins => %s))",
                     (uid, call, f"T-{ago}", ago))
    got = json.loads(cli(dispatcher_env, "history", uid, "--json", "--limit", "2").stdout)
    assert [n["title"] for n in got] == ["T-10", "T-20"]
    table = cli(dispatcher_env, "history", uid)
    assert table.returncode == 0 and table.stdout.index("T-10") < table.stdout.index("T-20") < table.stdout.index("T-30")
    assert "\x1b[" not in table.stdout  # no colour codes when not on a terminal
    one_line_error(cli(dispatcher_env, "history", str(uuid.uuid4())), "no user with id")


def test_every_command_has_help_with_an_example(dispatcher_env) -> None:
    import typer

    from precall.cli.app import app

    def leaves(group, path):
        for name, command in getattr(group, "commands", {}).items():
            yield from leaves(command, [*path, name]) if hasattr(command, "commands") else [[*path, name]]

    commands = list(leaves(typer.main.get_command(app), []))
    assert {"send", "history", "stats", "doctor", "api", "dispatcher", "render"} <= {c[0] for c in commands}
    assert len(commands) >= 20
    for command in commands:
        out = cli(dispatcher_env, *command, "--help")
        assert out.returncode == 0 and "Example" in out.stdout, (command, out.stdout)
    # A command line that does not parse: one line, status 2, no box and no traceback.
    for args, words in ((["history"], "Missing argument"), (["calls", "frob"], "No such command 'frob'"),
                        (["calls", "list", "--limit", "0"], "--limit"), (["doctor", "--bogus"], "No such option")):
        out = cli(dispatcher_env, *args)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and words in out.stderr, (args, out.stderr)
        assert out.stderr.startswith("precall: ") and "Traceback" not in out.stderr


# --- stats against reference SQL -------------------------------------------------------------------

REFERENCE = {
    # Written over the base tables, independently of precall.notification_facts / call_facts.
    "call_answer_rate": """
        SELECT count(*) FILTER (WHERE c.status = 'answered'), count(*)
        FROM scheduled_calls c WHERE c.status IN ('answered', 'no_answer', 'failed') AND c.scheduled_at >= %(since)s""",
    "open_rate": """
        SELECT count(*) FILTER (WHERE opened_at IS NOT NULL), count(*) FILTER (WHERE delivered_at IS NOT NULL)
        FROM notification_logs WHERE channel = 'push' AND created_at >= %(since)s""",
    "push_delivery_rate": """
        SELECT count(*) FILTER (WHERE delivered_at IS NOT NULL), count(*) FILTER (WHERE sent_at IS NOT NULL)
        FROM notification_logs WHERE channel = 'push' AND created_at >= %(since)s""",
    "fallback_sms_rate": """
        SELECT count(*) FILTER (WHERE type = 'fallback_sms' AND sent_at IS NOT NULL),
               count(*) FILTER (WHERE type IN ('preview_push', 'preview_sms') AND sent_at IS NOT NULL)
        FROM notification_logs WHERE created_at >= %(since)s""",
    "late_receipts": """
        SELECT count(*) FILTER (WHERE late_receipt), count(*) FILTER (WHERE channel = 'push' AND delivered_at IS NOT NULL)
        FROM notification_logs WHERE created_at >= %(since)s""",
}


def seed_kpi_data(conn, make) -> None:
    en_ios = make.user(locale="en", platform="ios", fcm_token="a", push_enabled=True)
    fr_android = make.user(locale="fr", platform="android", fcm_token="b", push_enabled=True)
    fr_none = make.user(locale="fr", notification_pref="sms_only")
    now = datetime.now(timezone.utc)

    def call(user, status, hours_ago):
        return make.call(user, at=now - timedelta(hours=hours_ago), status=status)

    def log(user, call_id, type_, channel, status, *, sent=True, delivered=None, opened=None, late=False,
            cost=None, currency=None, lateness_ms=None, created_days_ago=0.1, reason=None):
        sent_at = now - timedelta(days=created_days_ago) if sent else None
        send_at = sent_at - timedelta(milliseconds=lateness_ms) if (sent_at and lateness_ms is not None) else None
        if status == "queued":
            send_at = now + timedelta(hours=1)
        conn.execute(
            "INSERT INTO notification_logs (user_id, call_id, type, channel, status, sent_at, attempted_at, send_at,"
            " planned_for, delivered_at, opened_at, late_receipt, cost_estimate, cost_currency, reason, created_at)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (user, call_id, type_, channel, status, sent_at, sent_at, send_at, now - timedelta(days=created_days_ago),
             sent_at + timedelta(seconds=delivered) if (sent_at and delivered is not None) else None,
             sent_at + timedelta(seconds=opened) if (sent_at and opened is not None) else None,
             late, cost, currency, reason, now - timedelta(days=created_days_ago)))

    c1, c2, c3 = call(en_ios, "answered", 5), call(en_ios, "no_answer", 30), call(fr_android, "answered", 50)
    c4, c5, c6 = call(fr_android, "failed", 70), call(fr_none, "answered", 20), call(en_ios, "pending", -2)
    call(en_ios, "cancelled", 3), call(fr_none, "in_progress", 1)
    call(fr_android, "answered", 24 * 10)  # outside a 7-day window
    log(en_ios, c1, "preview_push", "push", "opened", delivered=1.5, opened=40, lateness_ms=4)
    log(en_ios, c2, "preview_push", "push", "delivered", delivered=31, late=True, lateness_ms=9)
    log(en_ios, c2, "fallback_sms", "sms", "sent", cost=Decimal("0.0075"), currency="USD", lateness_ms=12)
    log(fr_android, c3, "preview_push", "push", "sent", lateness_ms=25)
    log(fr_android, c3, "fallback_sms", "sms", "sent", cost=Decimal("0.0650"), currency="EUR", lateness_ms=7)
    log(fr_android, c4, "preview_push", "push", "delivered", delivered=2.0, lateness_ms=3)
    log(fr_android, c4, "fallback_sms", "sms", "cancelled", sent=False, reason="receipt_arrived: push delivered")
    log(fr_none, c5, "preview_sms", "sms", "sent", cost=Decimal("0.1300"), currency="EUR", lateness_ms=6)
    log(fr_none, c6, "preview_sms", None, "queued", sent=False)
    log(en_ios, c6, "preview_push", None, "skipped", sent=False, reason="too_late")
    log(en_ios, c1, "preview_push", "push", "failed", sent=False, reason="fcm_rejected")
    log(en_ios, c1, "preview_push", "push", "opened", delivered=1, opened=5, created_days_ago=9)  # outside


def test_stats_match_reference_sql_over_the_base_tables(db, make, conn, dispatcher_env) -> None:
    seed_kpi_data(conn, make)
    out = cli(dispatcher_env, "stats", "--since", "7d", "--json")
    assert out.returncode == 0, out.stderr
    got = {k["kpi"]: k for k in json.loads(out.stdout)["kpis"]}
    since = datetime.fromisoformat(json.loads(out.stdout)["since"])
    for kpi, sql in REFERENCE.items():
        num, den = conn.execute(sql, {"since": since}).fetchone()
        assert (got[kpi]["numerator"], got[kpi]["denominator"]) == (num, den), kpi
        assert got[kpi]["value"] == pytest.approx(round(num / den, 4)), kpi
    # The figures themselves, worked out by hand from the seed above.
    assert (got["call_answer_rate"]["numerator"], got["call_answer_rate"]["denominator"]) == (3, 5)
    assert got["call_answer_rate"]["meets_target"] is False  # 60% < 70%
    assert (got["open_rate"]["numerator"], got["open_rate"]["denominator"]) == (1, 3)
    assert (got["push_delivery_rate"]["numerator"], got["push_delivery_rate"]["denominator"]) == (3, 4)
    assert (got["fallback_sms_rate"]["numerator"], got["fallback_sms_rate"]["denominator"]) == (2, 5)
    assert got["fallback_sms_rate"]["meets_target"] is False  # 40% > 15%
    assert (got["late_receipts"]["numerator"], got["late_receipts"]["denominator"]) == (1, 3)
    ref_late = conn.execute(
        "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM attempted_at - send_at) * 1000)"
        " FROM notification_logs WHERE attempted_at IS NOT NULL AND send_at IS NOT NULL AND created_at >= %s", (since,)).fetchone()[0]
    for p, ref in zip((50, 95, 99), ref_late):
        assert got[f"lateness_p{p}"]["value"] == pytest.approx(ref, abs=0.05)
    assert got["lateness_p50"]["value"] == pytest.approx(7.0)
    assert got["lateness_p99"]["meets_target"] is False  # one send 25 ms late
    assert got["sms_spend_USD"]["value"] == pytest.approx(0.0075)
    assert got["sms_spend_EUR"]["value"] == pytest.approx(0.195)  # never added to the dollars
    ref_ttr = conn.execute(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - sent_at) * 1000)"
        " FROM notification_logs WHERE channel = 'push' AND delivered_at IS NOT NULL AND created_at >= %s", (since,)).fetchone()[0]
    assert got["time_to_receipt_p50"]["value"] == pytest.approx(ref_ttr, abs=0.05) and ref_ttr == pytest.approx(2000)

    by_locale = json.loads(cli(dispatcher_env, "stats", "--since", "7d", "--by", "locale", "--json").stdout)["kpis"]
    fr = {k["kpi"]: k for k in by_locale if k["grp"] == "fr"}
    ref_fr = conn.execute(
        "SELECT count(*) FILTER (WHERE c.status = 'answered'), count(*) FROM scheduled_calls c JOIN users u ON u.id = c.user_id"
        " WHERE u.locale = 'fr' AND c.status IN ('answered', 'no_answer', 'failed') AND c.scheduled_at >= %s", (since,)).fetchone()
    assert (fr["call_answer_rate"]["numerator"], fr["call_answer_rate"]["denominator"]) == ref_fr == (2, 3)

    table = cli(dispatcher_env, "stats", "--since", "7d")
    assert table.returncode == 0 and "call_answer_rate" in table.stdout and "60.0%" in table.stdout and "≥ 70.0%" in table.stdout
    one_line_error(cli(dispatcher_env, "stats", "--since", "last tuesday"), "--since")
    one_line_error(cli(dispatcher_env, "stats", "--by", "colour"), "--by must be one of")


# --- doctor ------------------------------------------------------------------------------------------

def test_doctor_catches_a_missing_cron_job_and_a_stopped_dispatcher(db, pg_server, make, start_dispatcher, dispatcher_env) -> None:
    missing = cli(dispatcher_env, "doctor")
    assert missing.returncode == 1
    assert re.search(r"^FAIL planning job: precall_plan_due_previews:\S+ is missing or inactive", missing.stdout, re.M)
    assert re.search(r"^FAIL dispatchers: no dispatcher heartbeat", missing.stdout, re.M)

    cron_dsn = cron.cron_dsn(db, None)
    cron.install(db, cron_dsn)
    # pg_cron's own record of a successful run (the real job runs on the minute; test_cron waits for it).
    with psycopg.connect(cron_dsn, autocommit=True) as c:
        c.execute("INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status,"
                  " return_message, start_time, end_time) SELECT jobid, nextval('cron.runid_seq'), 1, database, username,"
                  " command, 'succeeded', '1 row', now(), now() FROM cron.job WHERE jobname = %s",
                  (cron.plan_job_name(db.rsplit("dbname=", 1)[-1].split()[0] if "dbname=" in db else db.rsplit("/", 1)[-1]),))
    d = start_dispatcher()
    healthy = cli(dispatcher_env, "doctor", "--verbose")
    assert healthy.returncode == 0, healthy.stdout
    assert re.search(r"^OK   dispatchers: 1 alive", healthy.stdout, re.M)
    assert re.search(r"^OK   planning job: last success \d+s ago", healthy.stdout, re.M)

    assert d.terminate() == 0
    stopped = cli(dispatcher_env, "doctor")
    assert stopped.returncode == 1
    assert re.search(r"^FAIL dispatchers: no dispatcher heartbeat in the last 45s \(last heartbeat from ", stopped.stdout, re.M)
    assert "planning job" not in stopped.stdout  # only problems are printed

    report = json.loads(cli(dispatcher_env, "doctor", "--json").stdout)
    assert report["ok"] is False and {"check": "dispatchers", "status": "fail"}.items() <= \
        next(c for c in report["checks"] if c["check"] == "dispatchers").items()


def test_doctor_reports_overdue_previews_and_bad_provider_settings(db, make, conn, dispatcher_env) -> None:
    uid = make.user(fcm_token="t", push_enabled=True)
    call = make.call(uid, in_seconds=600)
    conn.execute("INSERT INTO notification_logs (user_id, call_id, type, status, send_at, planned_for)"
                 " SELECT %s, id, 'preview_push', 'queued', now() - interval '90 seconds', scheduled_at"
                 " FROM scheduled_calls WHERE id = %s", (uid, call))
    env = {**dispatcher_env, "TWILIO_AUTH_TOKEN": ""}
    out = cli(env, "doctor")
    assert out.returncode == 1
    assert re.search(r"^FAIL queue: 1 preview\(s\) overdue, the oldest by 9\ds", out.stdout, re.M)
    assert re.search(r"^FAIL sms provider: .*TWILIO_AUTH_TOKEN", out.stdout, re.M)


# --- metrics --------------------------------------------------------------------------------------

def scrape(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_metrics_endpoint_counts_a_send(db, make, fake_fcm, start_dispatcher) -> None:
    port = free_port()
    start_dispatcher(PRECALL_METRICS_PORT=str(port))
    sent_key = 'precall_sends_total{channel="push",outcome="sent",type="preview_push"}'
    before = scrape(port)
    assert before.get(sent_key, 0) == 0 and before["precall_lateness_seconds_count"] == 0
    uid = make.user(fcm_token="tok-m", push_enabled=True, notification_lead_min=1)
    make.call(uid, in_seconds=62)
    wait_until(lambda: fake_fcm.state.accepted(), timeout=10)
    wait_until(lambda: scrape(port).get(sent_key) == 1, timeout=10)
    after = scrape(port)
    assert after["precall_lateness_seconds_count"] == 1
    assert after['precall_provider_latency_seconds_count{provider="fcm",result="ok"}'] == 1
    assert after['precall_lateness_seconds_bucket{le="0.1"}'] == 1  # left within 100 ms of send_at
    wait_until(lambda: "precall_queue_depth" in scrape(port), timeout=10)
    assert scrape(port)["precall_queue_depth"] == 0


# --- retention ------------------------------------------------------------------------------------

def test_retention_prunes_old_finished_rows_in_batches(db, make, conn) -> None:
    uid = make.user()
    call = make.call(uid, in_seconds=3600)
    for status, days in (("sent", 200), ("failed", 181), ("skipped", 365), ("sent", 10), ("queued", 200)):
        conn.execute("INSERT INTO notification_logs (user_id, call_id, type, channel, status, send_at, planned_for, created_at, resend)"
                     " VALUES (%s, %s, 'preview_push', 'push', %s, now(), now(), now() - make_interval(days => %s), true)",
                     (uid, call, status, days))
    conn.execute("CALL precall.prune_notification_logs(2)")
    left = rows(db, "SELECT status, (now() - created_at) > interval '180 days' AS old FROM notification_logs ORDER BY status")
    assert left == [{"status": "queued", "old": True}, {"status": "sent", "old": False}]
    conn.execute("UPDATE precall.settings SET retention = '7 days'")
    conn.execute("CALL precall.prune_notification_logs()")
    assert [r["status"] for r in rows(db, "SELECT status FROM notification_logs")] == ["queued"]
