"""Installing precall into an app database that already has users and scheduled_calls."""

import os
import subprocess
import sys

import psycopg

from precall.dispatcher import migrate

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
    out = subprocess.run([sys.executable, "-m", "precall.cli", "db", "migrate"], capture_output=True, text=True, env=env)
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
    out = subprocess.run([sys.executable, "-m", "precall.cli", "db", "migrate"], capture_output=True, text=True, env=env)
    assert out.returncode == 1
    assert "users.id is bigint, precall needs uuid" in out.stderr
