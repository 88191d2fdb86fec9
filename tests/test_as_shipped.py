"""precall as shipped: the wheel, installed (not editable) into a throwaway venv, run from there.

The checkout's own tests import precall through the editable install; a file missing from the
wheel (templates/<locale>/strings.toml once was) only shows here. Dependencies are not downloaded
again: the throwaway venv sees the test venv's site-packages through a .pth file, after its own,
so `precall` itself can only come from the installed wheel (asserted).
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from plugins.processes import wait_until

ROOT = Path(__file__).resolve().parent.parent

# Builds and installs the wheel (seconds): the acceptance layer, not the unit layer.
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bin/ directory of a venv holding only the built precall wheel."""
    work = tmp_path_factory.mktemp("shipped")
    # A copy of the sources: setuptools reuses an in-tree build/ directory, whose stale files
    # would hide what a clean build leaves out.
    src = work / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", ".precall", "*.egg-info",
                                                            "__pycache__", "bench", "tests"))
    wheels = work / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(src)],
                   check=True, cwd=work, capture_output=True)
    [wheel] = wheels.glob("precall-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # Only the dependencies come from the test venv (after the venv's own site-packages).
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()] or [sysconfig.get_paths()["purelib"]]
    (Path(purelib) / "precall_test_deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True)
    yield venv / "bin"


def run(bin_dir: Path, *args: str, env: dict[str, str] | None = None, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / "precall"), *args], capture_output=True, text=True, cwd=cwd,
                          env=env or clean_env(), timeout=120)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PRECALL_", "TWILIO_", "PYTHONPATH", "GOOGLE_"))}
    env.update(extra)
    return env


def test_the_installed_package_is_the_wheel_not_the_checkout(shipped: Path, tmp_path: Path) -> None:
    out = subprocess.run([str(shipped / "python"), "-c", "import precall; print(precall.__file__)"],
                         capture_output=True, text=True, cwd=tmp_path, check=True, env=clean_env())
    location = Path(out.stdout.strip()).resolve()
    assert location.is_relative_to(shipped.parent.resolve()), location
    assert not location.is_relative_to(ROOT), location


def test_templates_check_and_render_from_the_wheel(shipped: Path, tmp_path: Path) -> None:
    check = run(shipped, "templates", "check", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    render = run(shipped, "render", "--locale", "fr", "--coach", "Léa", "--streak", "7", "--lead", "5", cwd=tmp_path)
    assert render.returncode == 0, render.stderr
    assert "title: Coach Léa t'appelle dans 5 min ! ⭐" in render.stdout
    en = run(shipped, "render", "--topic", "mood_check", "--streak", "12", cwd=tmp_path)
    assert en.returncode == 0, en.stderr
    assert "title: Coach Max is calling in 5 min! 💪" in en.stdout


def test_migrate_and_send_one_preview_from_the_wheel(shipped: Path, tmp_path: Path, empty_db: str) -> None:
    env = clean_env(DATABASE_URL=empty_db, PRECALL_PUSH_PROVIDER="log", PRECALL_SMS_PROVIDER="log",
                    PRECALL_POLL_INTERVAL_S="1", PRECALL_RECEIPT_SECRET="r" * 32)
    migrated = run(shipped, "db", "migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(empty_db, autocommit=True) as conn:
        coach = conn.execute("INSERT INTO coach_personas (name) VALUES ('Max') RETURNING id").fetchone()[0]
        uid = conn.execute(
            "INSERT INTO users (coach_persona_id, fcm_token, push_enabled, platform, current_streak,"
            " notification_lead_min) VALUES (%s, 'tok-shipped', true, 'android', 12, 1) RETURNING id",
            (coach,)).fetchone()[0]
        call = conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                            " VALUES (%s, now() + interval '62 seconds', 'fitness_checkin') RETURNING id",
                            (uid,)).fetchone()[0]
        proc = subprocess.Popen([str(shipped / "precall"), "dispatcher"], env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            def sent() -> object:
                return conn.execute("SELECT status, channel, title, body FROM notification_logs"
                                    " WHERE call_id = %s AND status = 'sent'", (call,)).fetchone()

            wait_until(sent, timeout=30)
            assert sent() == ("sent", "push", "Coach Max is calling in 1 min! 💪", "Day 12: your fitness goal check-in.")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
        assert proc.returncode == 0, err[-2000:]
        assert "Traceback" not in err
