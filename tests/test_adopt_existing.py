"""Installing precall into an app database that already has users and scheduled_calls."""

import os
import time

import psycopg

from plugins.processes import precall_cli, wait_until

from precall.sql import migrate

APP_SCHEMA = """
CREATE TABLE orgs (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL UNIQUE,
    org_id integer REFERENCES orgs(id),
    phone_number text
);
CREATE TABLE scheduled_calls (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users(id),
    scheduled_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    vapi_assistant text
);
CREATE TABLE call_recordings (call_id uuid REFERENCES scheduled_calls(id), url text);
INSERT INTO orgs (name) VALUES ('acme');
INSERT INTO users (email, org_id, phone_number)
    SELECT 'u' || g || '@example.com', 1, '+1555' || lpad(g::text, 7, '0') FROM generate_series(1, 1000) g;
INSERT INTO scheduled_calls (user_id, scheduled_at, status, vapi_assistant)
    SELECT id, now() + interval '3 days', 'answered', 'asst_1' FROM users;
INSERT INTO call_recordings SELECT id, 'https://x/' || id FROM scheduled_calls LIMIT 10;
"""


def test_adopts_existing_tables_and_keeps_every_row(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(APP_SCHEMA.encode())
        before = conn.execute("SELECT count(*), sum(hashtext(email)) FROM users").fetchone()
    migrate.migrate(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert conn.execute("SELECT count(*), sum(hashtext(email)) FROM users").fetchone() == before
        assert conn.execute("SELECT count(*) FROM scheduled_calls WHERE vapi_assistant = 'asst_1'").fetchone() == (1000,)
        assert conn.execute("SELECT count(*) FROM call_recordings").fetchone() == (10,)
        # New columns arrived with their defaults on the old rows.
        row = conn.execute(
            "SELECT DISTINCT notification_lead_min, notification_pref, push_enabled, sms_opted_out, locale FROM users"
        ).fetchall()
        assert row == [(5, "push_only", False, False, "en")]
        assert conn.execute("SELECT DISTINCT preview_sent FROM scheduled_calls").fetchall() == [(False,)]
        # The app keeps working with its own columns, and precall's contract holds for new rows.
        uid = conn.execute(
            "INSERT INTO users (email, org_id, phone_number) VALUES ('new@example.com', 1, '+15550000001') RETURNING id"
        ).fetchone()
        assert uid is not None
        conn.execute(
            "INSERT INTO scheduled_calls (user_id, scheduled_at, topic) VALUES (%s, now() + interval '6 minutes', 'mood_check')",
            (uid[0],),
        )
        queued = conn.execute("SELECT count(*) FROM notification_logs WHERE status = 'queued'").fetchone()
        assert queued == (1,)
    assert migrate.migrate(empty_db) == []


def test_refuses_unknown_status_values_in_one_line(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(APP_SCHEMA.encode())
        conn.execute("UPDATE scheduled_calls SET status = 'done' WHERE ctid IN (SELECT ctid FROM scheduled_calls LIMIT 3)")
        conn.execute("UPDATE scheduled_calls SET status = 'voicemail' WHERE status = 'answered' AND ctid IN (SELECT ctid FROM scheduled_calls WHERE status = 'answered' LIMIT 2)")
    env = {**os.environ, "DATABASE_URL": empty_db}
    out = precall_cli("db", "migrate", env=env)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "'done'" in lines[0] and "'voicemail'" in lines[0] and "scheduled_calls.status" in lines[0]
    with psycopg.connect(empty_db, autocommit=True) as conn:
        # Nothing was half-applied, nothing mapped silently.
        assert conn.execute("SELECT count(*) FROM scheduled_calls WHERE status = 'done'").fetchone() == (3,)
        assert conn.execute("SELECT to_regclass('notification_logs')").fetchone() == (None,)


def test_refuses_non_uuid_ids(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id bigserial PRIMARY KEY, email text)")
    env = {**os.environ, "DATABASE_URL": empty_db}
    out = precall_cli("db", "migrate", env=env)
    assert out.returncode == 1
    assert "users.id is bigint, precall needs uuid" in out.stderr


VARCHAR_SCHEMA = """
CREATE TABLE coach_personas (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name varchar(50) NOT NULL);
CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email varchar(255) NOT NULL UNIQUE,
    phone_number varchar(20),
    locale varchar(10) NOT NULL DEFAULT 'en',
    timezone varchar(64) NOT NULL DEFAULT 'UTC',
    coach_persona_id uuid REFERENCES coach_personas(id),
    current_streak smallint NOT NULL DEFAULT 0,
    fcm_token varchar(255),
    platform varchar(10),
    push_enabled boolean NOT NULL DEFAULT false,
    notification_pref varchar(32) NOT NULL DEFAULT 'push_only',
    notification_lead_min smallint NOT NULL DEFAULT 5
);
CREATE TABLE scheduled_calls (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users(id),
    scheduled_at timestamptz NOT NULL,
    status varchar(32) NOT NULL DEFAULT 'pending',
    topic varchar(64)
);
"""


def test_adopted_varchar_columns_still_send(empty_db, start_dispatcher, fake_fcm, fake_twilio) -> None:
    """varchar(n) and smallint columns (common in app schemas) are kept as they are, and the
    claim still returns what the dispatcher reads: a push and an SMS leave."""
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(VARCHAR_SCHEMA.encode())
    migrate.migrate(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        # The app's column types are untouched.
        types = dict(conn.execute(
            "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns c"
            " JOIN pg_attribute a ON a.attrelid = 'users'::regclass AND a.attname = c.column_name"
            " WHERE c.table_name = 'users'").fetchall())
        assert types["phone_number"] == "character varying(20)" and types["fcm_token"] == "character varying(255)"
        assert types["current_streak"] == "smallint"
        coach = conn.execute("INSERT INTO coach_personas (name) VALUES ('Max') RETURNING id").fetchone()[0]
        push_user = conn.execute(
            "INSERT INTO users (email, coach_persona_id, fcm_token, push_enabled, platform, current_streak,"
            " notification_lead_min) VALUES ('a@x', %s, 'tok-varchar', true, 'ios', 12, 1) RETURNING id",
            (coach,)).fetchone()[0]
        sms_user = conn.execute(
            "INSERT INTO users (email, coach_persona_id, phone_number, notification_pref, locale, current_streak,"
            " notification_lead_min) VALUES ('b@x', %s, '+15555550177', 'sms_only', 'fr', 12, 1) RETURNING id",
            (coach,)).fetchone()[0]
        for uid in (push_user, sms_user):
            conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                         " VALUES (%s, now() + interval '63 seconds', 'fitness_checkin')", (uid,))
    d = start_dispatcher(DATABASE_URL=empty_db)
    wait_until(lambda: fake_fcm.state.accepted() and fake_twilio.state.accepted(), timeout=15)
    [push] = fake_fcm.state.accepted()
    assert push.message["token"] == "tok-varchar"
    assert push.message["notification"]["title"] == "Coach Max is calling in 1 min! 💪"
    [sms] = fake_twilio.state.accepted()
    assert sms.form["To"] == "+15555550177" and sms.form["Body"].startswith("Coach Max t'appelle dans 1 min")
    assert d.proc.poll() is None
    # Answering the preview works on these tables too: skip from the push, "Plus tard" by SMS.
    with psycopg.connect(empty_db, autocommit=True) as conn:
        wait_until(lambda: conn.execute("SELECT count(*) FROM notification_logs WHERE sent_at IS NOT NULL").fetchone()
                   == (2,), timeout=10)
        nid = push.message["data"]["notification_id"]
        assert conn.execute("SELECT outcome, call_status FROM precall.apply_call_action(%s, 'skip', NULL)",
                            (nid,)).fetchone() == ("applied", "cancelled")
        got = conn.execute("SELECT kind, outcome, locale FROM precall.receive_sms('SM' || md5('adopted'), "
                           "'+15555550177', 'Plus tard')").fetchone()
        assert got == ("action", "applied", "fr")
        calls = conn.execute("SELECT u.email, c.status, c.scheduled_at > now() + interval '9 minutes'"
                             " FROM scheduled_calls c JOIN users u ON u.id = c.user_id ORDER BY 1").fetchall()
        assert calls == [("a@x", "cancelled", False), ("b@x", "pending", True)]


def test_dispatcher_survives_a_database_error_in_one_tick(db, make, conn, start_dispatcher, fake_fcm) -> None:
    """A database error that is not a lost connection (here: a claim function that raises) is
    logged and retried; the daemon does not exit, and sends once the cause is gone."""
    conn.execute("ALTER FUNCTION precall.claim_due_previews_v3(text, integer, text[], boolean) RENAME TO claim_due_previews_saved")
    conn.execute("CREATE FUNCTION precall.claim_due_previews_v3(p_worker text, p_limit integer, p_gone text[], p_ahead boolean)"
                 " RETURNS TABLE (id uuid)"
                 " LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'broken on purpose'; END $$")
    uid = make.user(fcm_token="tok-survive", push_enabled=True, notification_lead_min=1)
    make.call(uid, in_seconds=61)
    d = start_dispatcher()
    d.wait_for_log("broken on purpose", timeout=15)
    time.sleep(1)
    assert d.proc.poll() is None, "the dispatcher exited on a database error"
    conn.execute("DROP FUNCTION precall.claim_due_previews_v3(text, integer, text[], boolean)")
    conn.execute("ALTER FUNCTION precall.claim_due_previews_saved(text, integer, text[], boolean) RENAME TO claim_due_previews_v3")
    wait_until(lambda: fake_fcm.state.accepted(), timeout=15)
    assert [r.message["token"] for r in fake_fcm.state.accepted()] == ["tok-survive"]
