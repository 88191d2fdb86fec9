"""Rolling upgrades keep their promise: while dispatchers of the previous release still run, every
statement they send (that release's dispatcher queries, kept in tests/fixtures/previous_release/queries.sql)
prepares against the newly migrated database and returns the columns it returned then
(`class_row(ClaimedPreview)` refuses a result shape it does not know).

When a release ships: copy its sql/queries/dispatcher.sql there (as queries.sql) and re-capture columns.json against that
release's schema (`capture()` below). A function whose signature or result shape must change gets
a new, versioned name (`…_v2`); the old one stays until a later release drops it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg

FIXTURE = Path(__file__).parent / "fixtures" / "previous_release"


def queries(text: str) -> dict[str, str]:
    parts = re.split(r"^-- (\w+) --$", text, flags=re.M)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


def _dollar_params(query: str) -> str:
    """psycopg's %(name)s placeholders as the server's $n (what psycopg sends)."""
    names: list[str] = []

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "%%":
            return "%"
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    return re.sub(r"%%|%\((\w+)\)s", one, query)


def result_columns(conn: psycopg.Connection, query: str) -> list[str]:
    """Prepares the statement (nothing runs) and describes what it would return."""
    pg = conn.pgconn
    prepared = pg.prepare(b"", _dollar_params(query).encode())
    if prepared.error_message:
        raise AssertionError(prepared.error_message.decode().strip())
    described = pg.describe_prepared(b"")
    return [described.fname(i).decode() + " "
            + conn.execute("SELECT format_type(%s, NULL)", (described.ftype(i),)).fetchone()[0]  # type: ignore[index]
            for i in range(described.nfields)]


def capture(dsn: str, release: str) -> None:
    """Writes columns.json for the queries.sql in the fixture, against that release's schema."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cols = {name: result_columns(conn, q) for name, q in queries((FIXTURE / "queries.sql").read_text()).items()}
    (FIXTURE / "columns.json").write_text(json.dumps({"release": release, "columns": cols}, indent=1) + "\n")


def test_the_previous_release_dispatchers_statements_still_run_with_the_same_columns(conn) -> None:
    expected = json.loads((FIXTURE / "columns.json").read_text())
    old = queries((FIXTURE / "queries.sql").read_text())
    assert set(old) == set(expected["columns"]) and len(old) >= 10
    problems = []
    for name, query in old.items():
        try:
            got = result_columns(conn, query)
        except AssertionError as exc:
            problems.append(f"{name}: no longer prepares: {exc}")
            continue
        if got != expected["columns"][name]:
            problems.append(f"{name}: returns {got}, the previous release expects {expected['columns'][name]}")
    assert not problems, problems
