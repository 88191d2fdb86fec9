"""Planning costs what is due, not the table size: the named partial index is used."""

import json

import psycopg


def test_planning_scan_uses_the_partial_index_on_100k_calls(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO users (phone_number, notification_lead_min)"
        " SELECT '+1555' || lpad(g::text, 7, '0'), 1 + g % 60 FROM generate_series(1, 2000) g"
    )
    # 100k calls over 30 days, most already answered, as in a live database.
    conn.execute(
        "INSERT INTO scheduled_calls (user_id, scheduled_at, status, topic)"
        " SELECT u.ids[1 + g % 2000], now() - interval '20 days' + (g * interval '26 seconds'),"
        "        CASE WHEN g < 66000 THEN 'answered' ELSE 'pending' END, 'fitness_checkin'"
        " FROM generate_series(1, 100000) g, (SELECT array_agg(id) AS ids FROM users) u"
    )
    assert conn.execute("SELECT count(*) FROM scheduled_calls").fetchone() == (100000,)
    conn.execute("ANALYZE")
    plan = conn.execute("EXPLAIN (FORMAT JSON) SELECT * FROM precall.calls_in_window(now())").fetchone()
    assert plan is not None
    text = json.dumps(plan[0])
    assert '"Index Name": "scheduled_calls_pending_due_idx"' in text, text
    assert '"Relation Name": "scheduled_calls"' in text
    assert '"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Parallel Aware": false, "Async Capable": false, "Relation Name": "scheduled_calls"' not in text
    planned = conn.execute("SELECT precall.plan_due_previews()").fetchone()
    assert planned is not None and planned[0] >= 0
