"""Each SQL object has one current definition a DBA can read, the committed schema dump matches
what migrate builds, and changing a definition file is all an upgrade needs."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from precall import sql
from precall.sql import migrate
from precall.sql import dump

SQL_DIR = Path(sql.__file__).parent


def definition_files() -> dict[str, str]:
    """Every .sql file under sql/ except the numbered migrations and the generated dump."""
    return {str(p.relative_to(SQL_DIR)): p.read_text() for p in SQL_DIR.rglob("*.sql")
            if "migrations" not in p.parts and p.name != "schema.sql"}


def test_schema_sql_is_fresh(db) -> None:
    committed = (SQL_DIR / "schema.sql").read_text()
    assert dump.comparable(dump.dump(db)) == dump.comparable(committed), \
        "sql/schema.sql is stale: run `make schema` and commit it"


def test_every_function_view_and_trigger_is_defined_in_exactly_one_file(conn) -> None:
    files = definition_files()
    objects = [(f"function {name}", rf"CREATE (OR REPLACE )?(FUNCTION|PROCEDURE) precall\.{re.escape(name)}\(")
               for (name,) in conn.execute(
                   "SELECT DISTINCT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                   " WHERE n.nspname = 'precall'")]
    objects += [(f"view {name}", rf"CREATE (OR REPLACE )?VIEW precall\.{re.escape(name)}\b")
                for (name,) in conn.execute("SELECT viewname FROM pg_views WHERE schemaname = 'precall'")]
    objects += [(f"trigger {name} on {table}",
                 rf"CREATE (OR REPLACE )?TRIGGER {re.escape(name)}\s[^;]*?\bON (public\.)?{re.escape(table)}\b")
                for name, table in conn.execute(
                    "SELECT tgname, tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal")]
    assert len(objects) > 40
    problems = []
    for what, pattern in objects:
        holders = [f for f, text in files.items() if re.search(pattern, text)]
        if len(holders) != 1:
            problems.append(f"{what}: {holders or 'no file'}")
    assert not problems, problems


def test_function_settings_are_inside_the_definition(conn) -> None:
    """CREATE OR REPLACE resets a function's SET options: the file's CREATE must carry them, or a
    changed plan_calls would bring back a 300 ms JIT compile."""
    rows = conn.execute("SELECT p.proname, p.proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                        " WHERE n.nspname = 'precall' AND p.proconfig IS NOT NULL").fetchall()
    assert ("plan_calls", ["jit=off"]) in rows
    text = "\n".join(definition_files().values())
    for name, config in rows:
        block = re.search(rf"CREATE OR REPLACE FUNCTION precall\.{name}\(.*?AS \$function\$", text, re.S)
        assert block, name
        for setting in config:
            key, value = setting.split("=", 1)
            assert f"SET {key} TO '{value}'" in block.group(0), (name, setting)


def test_a_changed_definition_file_is_reapplied_and_reported_until_then(empty_db, monkeypatch) -> None:
    migrate.migrate(empty_db)
    assert migrate.status(empty_db).stale == []
    original = sql.repeatables

    def edited() -> list[sql.Repeatable]:
        out = []
        for r in original():
            if r.name == "planning.sql":
                r = sql.Repeatable(r.name, r.sql.replace(
                    "CREATE OR REPLACE FUNCTION precall.notify_due(",
                    "-- edited\nCREATE OR REPLACE FUNCTION precall.notify_due(", 1) + (
                    "\nCOMMENT ON FUNCTION precall.plan_due_previews(timestamptz) IS 'edited';\n"))
            out.append(r)
        return out

    monkeypatch.setattr(sql, "repeatables", edited)
    assert [r.label for r in migrate.status(empty_db).stale] == ["functions/planning.sql"]
    assert [m.label for m in migrate.migrate(empty_db)] == ["functions/planning.sql"]
    with psycopg.connect(empty_db) as c:
        assert c.execute("SELECT obj_description('precall.plan_due_previews(timestamptz)'::regprocedure)"
                         ).fetchone() == ("edited",)
    assert migrate.migrate(empty_db) == []


def test_an_existing_database_migrated_before_the_definition_files_ends_up_identical(empty_db, db, monkeypatch) -> None:
    """A database migrated by the numbered chain alone (the 0001–0014 releases) takes the
    definition files on the next migrate, and its schema is then the fresh one's."""
    with monkeypatch.context() as m:
        m.setattr(sql, "repeatables", lambda: [])
        migrate.migrate(empty_db)
        with psycopg.connect(empty_db) as c:
            assert c.execute("SELECT to_regclass('precall.schema_repeatables') IS NOT NULL").fetchone() == (True,)
    applied = migrate.migrate(empty_db)
    assert sorted(m.label for m in applied) == sorted(r.label for r in sql.repeatables())
    assert dump.comparable(dump.dump(empty_db)) == dump.comparable(dump.dump(db))


@pytest.mark.parametrize("bad", ["CREATE OR REPLACE FUNCTION precall.broken( RETURNS int AS $$ $$;"])
def test_a_broken_definition_file_fails_in_one_line_and_changes_nothing(empty_db, monkeypatch, bad) -> None:
    from precall.errors import MigrationError

    migrate.migrate(empty_db)
    original = sql.repeatables
    monkeypatch.setattr(sql, "repeatables", lambda: [sql.Repeatable("zz_broken.sql", bad), *original()])
    with pytest.raises(MigrationError, match=r"^sql/functions/zz_broken.sql failed: syntax error"):
        migrate.migrate(empty_db)
    assert [r.label for r in migrate.status(empty_db).stale] == ["functions/zz_broken.sql"]
