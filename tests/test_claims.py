"""The claims' one verdict (precall.claim_verdict) and one row shape (precall.claimed_preview):
every branch of the verdict as a table, the verdict inlined into the claim's plan, and the
previous release's claim names returning what the _v2 functions return."""

from __future__ import annotations

import pytest

from plugins.plans import explained, nodes

# (kind, call status, moved, receipt at, seconds left, attempts) -> (verdict, reason code)
# with the default settings: min_notice 30 s, call_grace 2 min, max_attempts 3.
CASES = [
    ("preview", "pending", False, None, 300, 0, "sending", None),
    ("preview", None, False, None, 300, 0, "cancelled", "call_deleted"),
    ("preview", "cancelled", False, None, 300, 0, "cancelled", "call_cancelled"),
    ("preview", "answered", True, None, 300, 0, "cancelled", "call_answered"),
    ("preview", "pending", True, None, 300, 0, "cancelled", "rescheduled"),
    ("preview", "pending", False, "2026-12-03 06:55:01+00", 60, 0, "cancelled", "receipt_arrived"),
    ("preview", "pending", False, None, 29, 0, "skipped", "too_late"),
    ("preview", "pending", False, None, 29, 5, "skipped", "too_late"),
    ("preview", "pending", False, None, 31, 3, "failed", "gave_up"),
    ("preview", "pending", False, None, 31, 2, "sending", None),
    ("call", "pending", False, None, 0, 0, "firing", None),
    ("call", "pending", False, None, -119, 2, "firing", None),
    ("call", "pending", False, None, -121, 0, "expired", "too_late"),
    ("call", None, None, None, 0, 0, "cancelled", "call_deleted"),
    ("call", "no_answer", False, None, 0, 0, "cancelled", "call_no_answer"),
    ("call", "pending", True, None, 0, 0, "cancelled", "rescheduled"),
    ("call", "pending", False, None, 10, 3, "failed", "gave_up"),
]


@pytest.mark.parametrize("kind,status,moved,receipt,left,attempts,verdict,code", CASES)
def test_each_verdict_and_its_reason(conn, kind, status, moved, receipt, left, attempts, verdict, code) -> None:
    row = conn.execute(
        "SELECT v.verdict, precall.reason_code(v.reason), v.reason FROM precall.claim_verdict("
        " %s, %s, %s, %s::timestamptz, make_interval(secs => %s), %s, (SELECT s FROM precall.settings s)) v",
        (kind, status, moved, receipt, left, attempts)).fetchone()
    assert row is not None
    assert (row[0], row[1]) == (verdict, code), row[2]


def test_the_verdict_and_the_row_shape_are_inlined_into_the_claim(conn, make) -> None:
    """Both are set-returning SQL functions the planner inlines into the claim's one statement (no
    function scan): a per-row plpgsql verdict, or a second statement reading the claimed rows back,
    cost ~0.9 ms a claim (bench/throughput.py lateness)."""
    uid = make.user(fcm_token="tok-1", push_enabled=True, notification_lead_min=1)
    make.call(uid, in_seconds=50)
    with explained(conn) as plans:
        [claimed] = conn.execute("SELECT * FROM precall.claim_due_previews_v3('w', 10, NULL, true)").fetchall()
    functions = {n.get("Function Name") for p in plans for n in nodes(p["Plan"]) if n["Node Type"] == "Function Scan"}
    assert functions == {"claim_due_previews_v3"}, functions  # the outer call only
    assert claimed[0] is not None


def test_the_previous_release_names_claim_the_same_rows(conn, make) -> None:
    """claim_due_previews and claim_manual_preview stay for old dispatchers: same columns, same rows."""
    uid = make.user(fcm_token="tok-1", push_enabled=True, notification_lead_min=1, coach="Max", current_streak=4)
    due = make.call(uid, in_seconds=50)        # inside the lead: its preview is due now
    manual = make.call(uid, in_seconds=3600)   # far ahead: only a manual send
    old = conn.execute("SELECT * FROM precall.claim_due_previews('old-worker', 10)")
    assert old.description is not None
    names = [c.name for c in old.description]
    rows = old.fetchall()
    assert [r[names.index("call_id")] for r in rows] == [__import__("uuid").UUID(due)]
    assert rows[0][names.index("coach_name")] == "Max" and rows[0][names.index("attempts")] == 1
    v2 = conn.execute("SELECT * FROM precall.claim_manual_preview_v2(%s, 'support')", (manual,))
    assert v2.description is not None and [c.name for c in v2.description] == names
    [m] = v2.fetchall()
    assert m[names.index("fcm_token")] == "tok-1" and m[names.index("current_streak")] == 4
