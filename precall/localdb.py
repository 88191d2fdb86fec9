"""A throwaway local PostgreSQL cluster with pg_cron loaded, for the demo and the tests.

initdb and pg_ctl refuse to run as root, so as root they run as the `postgres` user, and
the data directory must be somewhere that user can reach.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from precall.errors import PrecallError


def _pg_bindir() -> Path:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PrecallError("initdb not found: install PostgreSQL (Debian: apt-get install postgresql-15 postgresql-15-cron)")


def _has_pg_cron(bindir: Path) -> bool:
    pkglibdir = subprocess.run([str(bindir / "pg_config"), "--pkglibdir"], capture_output=True, text=True)
    libdir = Path(pkglibdir.stdout.strip()) if pkglibdir.returncode == 0 else bindir.parent / "lib"
    return (libdir / "pg_cron.so").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _reachable_by_postgres(path: Path, test: str = "-w") -> bool:
    if os.geteuid() != 0:
        return True
    probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", test, str(path)], capture_output=True)
    return probe.returncode == 0


@dataclass
class LocalCluster:
    """A PostgreSQL cluster in `datadir`, listening on 127.0.0.1:`port` with trust auth."""

    datadir: Path
    port: int
    cron_database: str = "postgres"
    preload_cron: bool = True

    @property
    def admin_dsn(self) -> str:
        return self.dsn("postgres")

    def dsn(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        bindir = _pg_bindir()
        if not _has_pg_cron(bindir):
            raise PrecallError("pg_cron is not installed: apt-get install postgresql-15-cron (or run make demo as root)")
        self.datadir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(self.datadir, pg.pw_uid, pg.pw_gid)
        os.chmod(self.datadir, 0o700)
        if not _reachable_by_postgres(self.datadir):
            raise PrecallError(f"the postgres user cannot reach {self.datadir}: choose a data directory outside root-only folders")
        subprocess.run(
            _as_owner([str(bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
                       "--encoding=UTF8", "--locale=C.UTF-8"]),
            check=True, capture_output=True,
        )
        conf = self.datadir / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                "\n# precall local cluster\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.datadir}'\n"
                + (
                    "shared_preload_libraries = 'pg_cron'\n"
                    f"cron.database_name = '{self.cron_database}'\n"
                    # pg_cron's launcher connects over libpq; trust auth on loopback lets it in.
                    "cron.host = '127.0.0.1'\n"
                    "cron.timezone = 'UTC'\n"
                    if self.preload_cron else ""
                )
                +
                "max_connections = 200\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "timezone = 'UTC'\n"
            )

    def start(self) -> None:
        bindir = _pg_bindir()
        subprocess.run(
            _as_owner([str(bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.datadir / "server.log"),
                       "-w", "-t", "60", "start"]),
            check=True, capture_output=True,
        )
        self._wait_ready()
        if self.cron_database != "postgres":
            import psycopg

            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.cron_database,)).fetchone() is None:
                    conn.execute(f'CREATE DATABASE "{self.cron_database}"')

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.admin_dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def running(self) -> bool:
        bindir = _pg_bindir()
        return subprocess.run(
            _as_owner([str(bindir / "pg_ctl"), "-D", str(self.datadir), "status"]), capture_output=True
        ).returncode == 0

    def stop(self, mode: str = "fast") -> None:
        bindir = _pg_bindir()
        subprocess.run(
            _as_owner([str(bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"]),
            capture_output=True,
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def throwaway(cron_database: str = "postgres", preload_cron: bool = True) -> LocalCluster:
    """A new cluster in a fresh directory under the system temp dir (reachable by postgres)."""
    base = Path(tempfile.mkdtemp(prefix="precall-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
    os.chmod(base, 0o755)
    cluster = LocalCluster(base / "data", free_port(), cron_database, preload_cron)
    cluster.init()
    cluster.start()
    return cluster


def project_cluster(state_dir: Path, cron_database: str) -> LocalCluster:
    """The demo's cluster under `.precall/`; if postgres cannot reach it, the data lives under /tmp
    and `.precall/pgdata` links to it."""
    # Absolute: a relative path would be resolved from our cwd, hiding root-only parents.
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    link = state_dir / "pgdata"
    port_file = state_dir / "port"
    port = int(port_file.read_text()) if port_file.exists() else free_port()
    port_file.write_text(str(port))
    if not link.exists():
        if link.is_symlink():
            link.unlink()
        os.chmod(state_dir, 0o755)
        if _reachable_by_postgres(state_dir, "-x"):
            link.mkdir()
        else:
            target = Path(tempfile.mkdtemp(prefix="precall-demo-", dir="/tmp"))
            os.chmod(target, 0o755)
            (target / "data").mkdir()
            link.symlink_to(target / "data")
    cluster = LocalCluster(link.resolve(), port, cron_database)
    if not cluster.initialised:
        cluster.init()
    if not cluster.running():
        cluster.start()
    return cluster
