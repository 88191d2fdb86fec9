"""precall db migrate: ordered, recorded, idempotent, safe when run five times at once."""

import os
import subprocess
import sys

import psycopg
import pytest

from plugins.processes import precall_cli

from precall import sql
from precall.sql import migrate
from precall.errors import MigrationError


def _ledger(dsn: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        return [(v, c) for v, c in conn.execute("SELECT version, checksum FROM precall.schema_migrations ORDER BY 1")]


def _precall(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": dsn}
    return precall_cli(*args, env=env)


def test_migrate_applies_all_then_nothing(empty_db: str) -> None:
    first = _precall(empty_db, "db", "migrate", "--no-cron")
    assert first.returncode == 0, first.stderr
    assert "applied 0001_tables" in first.stdout
    code = sql.migrations()
    assert _ledger(empty_db) == [(m.version, m.checksum) for m in code]
    second = _precall(empty_db, "db", "migrate", "--no-cron")
    assert second.returncode == 0
    assert "up to date" in second.stdout
    assert _ledger(empty_db) == [(m.version, m.checksum) for m in code]


def test_five_concurrent_migrates_are_safe(empty_db: str) -> None:
    env = {**os.environ, "DATABASE_URL": empty_db}
    procs = [
        subprocess.Popen([sys.executable, "-m", "precall.cli", "db", "migrate", "--no-cron"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(5)
    ]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert all(rc == 0 for _, _, rc in results), results
    applied_lines = sum(out.count("applied 0001_tables") for out, _, _ in results)
    assert applied_lines == 1
    assert len(_ledger(empty_db)) == len(sql.migrations())


def test_refuses_edited_migration(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE precall.schema_migrations SET checksum = 'x' WHERE version = 1")
    with pytest.raises(MigrationError, match="edited"):
        migrate.migrate(db)
    out = _precall(db, "db", "migrate", "--no-cron")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "0001_tables.sql" in out.stderr
    assert "Traceback" not in out.stderr


def test_refuses_database_newer_than_code(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO precall.schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')")
    out = _precall(db, "db", "migrate", "--no-cron")
    assert out.returncode == 1
    assert "newer" in out.stderr and "9999" in out.stderr


def test_status_lists_applied_and_cron(db: str) -> None:
    out = _precall(db, "db", "status")
    assert out.returncode == 0, out.stderr
    assert "applied  0001_tables" in out.stdout
    assert "pending" not in out.stdout
    assert "planning job: NOT scheduled" in out.stdout


@pytest.mark.integration  # a child process or a local server: not the unit layer
def test_unreachable_database_is_one_line() -> None:
    out = _precall("postgresql://nobody@127.0.0.1:1/none", "db", "migrate")
    assert out.returncode == 1
    assert out.stderr.startswith("precall: cannot reach the database")
    assert "Traceback" not in out.stderr


@pytest.mark.integration  # a child process or a local server: not the unit layer
def test_missing_database_url_is_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    out = precall_cli("db", "status", env=env)
    assert out.returncode == 1
    assert out.stderr.strip() == "precall: DATABASE_URL is not set (e.g. postgresql://user@host:5432/app)"
