"""One SQL home for Python's statements: every statement precall sends is a named query of
sql/queries/<caller>.sql, each name is used, and each one prepares against a migrated database."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from precall import sql
from test_rolling_upgrade import result_columns

ROOT = Path(__file__).parents[1]
PACKAGE = ("api", "cli", "dispatcher", "sql", "templates", "precall")
# Development infrastructure, not the product: the throwaway cluster and the schema dump tool.
NOT_PRODUCT = {"precall/localdb.py", "sql/dump.py"}
SQL_TEXT = re.compile(r"""(["'])\s*(SELECT|UPDATE|INSERT|DELETE|WITH|CREATE|ALTER|DROP|LISTEN|SET|CALL)\s""")


def _sources() -> dict[str, str]:
    return {p.relative_to(ROOT).as_posix(): p.read_text() for folder in PACKAGE for p in (ROOT / folder).rglob("*.py")
            if not p.relative_to(ROOT).as_posix().startswith("precall/fakes/")}


@pytest.mark.unit
def test_no_statement_is_written_inline() -> None:
    offenders = [f"{rel}:{n}: {line.strip()[:80]}" for rel, text in _sources().items() if rel not in NOT_PRODUCT
                 for n, line in enumerate(text.splitlines(), 1) if SQL_TEXT.search(line)]
    assert not offenders, offenders


@pytest.mark.unit
def test_every_named_query_is_used_and_every_use_is_named() -> None:
    text = "\n".join(_sources().values())
    names = set(sql.query_names())
    unused = sorted(n for n in names if f'"{n}"' not in text)
    assert not unused, f"named queries nobody sends: {unused}"
    asked = set(re.findall(r'sql\.query\("(\w+)"\)', text))
    assert asked <= names, f"sql.query() of unknown names: {sorted(asked - names)}"


# Statements the server cannot prepare as such (utility commands), or that need pg_cron's schema,
# which lives in another database of the test cluster (cron.database_name).
NOT_PREPARABLE = {"migrate_ledger", "repeatable_session", "listen_due", "create_pg_cron",
                  "job_purge_cron_history"}  # installed in the cron database by cron_support.sql


def test_every_named_query_prepares_against_the_migrated_schema(conn) -> None:
    problems = []
    for name in sql.query_names():
        text = sql.query(name)
        if name in NOT_PREPARABLE or re.search(r"\bcron\.", text):
            continue
        try:
            result_columns(conn, text)
        except AssertionError as exc:
            problems.append(f"{name}: {exc}")
    assert not problems, problems
