"""Plans as they run: auto_explain captures every statement a function executes (nested ones
included, with its bound values) and sends each plan to this client as a LOG notice, so a test
reads the plans of the function itself rather than of a fragment copied out of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of a plan tree (init plans and subplans included), depth first."""
    out = [plan]
    for child in plan.get("Plans", []):
        out += nodes(child)
    return out


def scans_of(plans: list[dict[str, Any]], relation: str) -> list[dict[str, Any]]:
    return [n for p in plans for n in nodes(p["Plan"]) if n.get("Relation Name") == relation]


def seq_scans_of(plans: list[dict[str, Any]], relation: str) -> list[dict[str, Any]]:
    """Any node that reads `relation` sequentially, wherever it sits in any plan."""
    return [n for n in scans_of(plans, relation) if n["Node Type"] in ("Seq Scan", "Parallel Seq Scan")]


@contextmanager
def explained(conn: psycopg.Connection[Any], analyze: bool = True) -> Iterator[list[dict[str, Any]]]:
    """Collects the JSON plan of every statement run on `conn` inside the block."""
    plans: list[dict[str, Any]] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        text = diag.message_primary or ""
        start = text.find("{")
        if text.startswith("duration:") and start >= 0:
            plans.append(json.loads(text[start:]))

    conn.execute("LOAD 'auto_explain'")
    for name, value in (("log_min_duration", "0"), ("log_nested_statements", "on"), ("log_format", "json"),
                        ("log_analyze", "on" if analyze else "off"), ("log_timing", "off")):
        conn.execute(f"SET auto_explain.{name} = {value}")
    conn.execute("SET client_min_messages = log")
    conn.add_notice_handler(keep)
    try:
        yield plans
    finally:
        conn.remove_notice_handler(keep)
        conn.execute("SET client_min_messages = notice")
        conn.execute("SET auto_explain.log_min_duration = -1")


def flushed_seq_scans(conn: psycopg.Connection[Any], relation: str) -> int:
    """pg_stat_user_tables.seq_scan after this backend's pending counts are flushed (PostgreSQL 15
    flushes at most once a second otherwise: a sleep of 0.6 s read back 0)."""
    conn.execute("SELECT pg_stat_force_next_flush()")  # flushed as this statement's transaction ends
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = %s", (relation,)).fetchone()
    assert row is not None
    return int(row[0])
