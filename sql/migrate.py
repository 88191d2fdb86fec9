"""Applies sql/migrations in order, once, then every sql/functions file whose text changed, under
one advisory lock, each recorded in a ledger.

Numbered migrations are append-only (tables, columns, indexes, data, DROPs of superseded
signatures); a function's current definition lives in exactly one sql/functions file, re-applied
after the numbered ones whenever its checksum differs from the one recorded (as Flyway's
repeatable migrations). A numbered migration therefore must not rely on a function body changed
in the same release."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from precall import sql
from precall.errors import MigrationError

@dataclass(frozen=True)
class MigrationState:
    applied: list[tuple[int, str, str]]  # version, name, applied_at
    pending: list[sql.Migration]
    stale: list[sql.Repeatable]  # sql/functions files changed (or new) since the last migrate


def _applied(conn: psycopg.Connection) -> dict[int, tuple[str, str, str]]:
    exists = conn.execute(sql.query("has_migration_ledger")).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute(sql.query("applied_migrations")).fetchall()
    return {v: (n, c, at) for v, n, c, at in rows}


def _check(applied: dict[int, tuple[str, str, str]], code: list[sql.Migration]) -> list[sql.Migration]:
    by_version = {m.version: m for m in code}
    newer = sorted(v for v in applied if v not in by_version)
    if newer:
        raise MigrationError(
            f"the database has migrations this code does not know ({', '.join(f'{v:04d}' for v in newer)}): "
            "it is newer than this precall; upgrade precall instead"
        )
    changed = [m for m in code if m.version in applied and applied[m.version][1] != m.checksum]
    if changed:
        names = ", ".join(f"{m.version:04d}_{m.name}.sql" for m in changed)
        raise MigrationError(f"applied migrations were edited since they ran ({names}); add a new migration instead")
    return [m for m in code if m.version not in applied]


def _stale(conn: psycopg.Connection) -> list[sql.Repeatable]:
    exists = conn.execute(sql.query("has_repeatables_ledger")).fetchone()
    recorded: dict[str, str] = {}
    if exists and exists[0]:
        recorded = dict(conn.execute(sql.query("applied_repeatables")).fetchall())
    return [r for r in sql.repeatables() if recorded.get(r.name) != r.checksum]


def status(dsn: str) -> MigrationState:
    """Applied and pending migrations; raises if ledger and code disagree."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        applied = _applied(conn)
        pending = _check(applied, sql.migrations())
        return MigrationState([(v, n, at) for v, (n, _, at) in applied.items()], pending, _stale(conn))


def migrate(dsn: str) -> list[sql.Migration | sql.Repeatable]:
    """Applies pending migrations, then changed sql/functions files, each in its own
    transaction; returns those applied."""
    code = sql.migrations()
    done: list[sql.Migration | sql.Repeatable] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.query("migrate_lock"))
        try:
            conn.execute(sql.query("migrate_ledger").encode())  # several statements: no params
            for migration in _check(_applied(conn), code):
                try:
                    with conn.transaction():
                        conn.execute(migration.sql.encode())  # no params: runs as a script
                        conn.execute(sql.query("record_migration"), {
                            "version": migration.version, "name": migration.name, "checksum": migration.checksum})
                except psycopg.Error as exc:
                    reason = exc.diag.message_primary or str(exc).splitlines()[0]
                    raise MigrationError(f"migration {migration.version:04d}_{migration.name}.sql failed: {reason}") from exc
                done.append(migration)
            for repeatable in _stale(conn):
                try:
                    with conn.transaction():
                        conn.execute(sql.query("repeatable_session"))
                        conn.execute(repeatable.sql.encode())
                        conn.execute(sql.query("record_repeatable"),
                                     {"name": repeatable.name, "checksum": repeatable.checksum})
                except psycopg.Error as exc:
                    reason = exc.diag.message_primary or str(exc).splitlines()[0]
                    raise MigrationError(f"sql/{repeatable.label} failed: {reason}") from exc
                done.append(repeatable)
        finally:
            if not conn.closed:
                conn.execute(sql.query("migrate_unlock"))
    return done
