"""`precall doctor`: is precall healthy right now? One line per problem, exit 1 if any."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

import psycopg
import typer

from precall.cli import store
from precall.cli import capacity_command
from precall.cli.output import to_json
from precall.sql import cron, migrate
from precall import config as settings
from precall.config import Config, database_url
from precall.errors import PrecallError
from precall.dispatcher.providers import factory

PLAN_RUN_MAX_AGE = timedelta(minutes=2)
OVERDUE_AFTER = timedelta(seconds=10)  # a preview this late means nobody is sending


@dataclass
class Finding:
    check: str
    status: str  # ok, warn or fail
    detail: str


def _schema(dsn: str) -> list[Finding]:
    try:
        st = migrate.status(dsn)
    except PrecallError as exc:
        return [Finding("migrations", "fail", str(exc))]
    if st.pending or st.stale:
        names = ", ".join([m.label for m in st.pending] + [r.label for r in st.stale])
        count = len(st.pending) + len(st.stale)
        return [Finding("migrations", "fail", f"{count} pending ({names}): run precall db migrate")]
    return [Finding("migrations", "ok", f"{len(st.applied)} applied, none pending")]


def _cron(dsn: str, now: datetime) -> list[Finding]:
    try:
        cs = cron.state(dsn, cron.cron_dsn(dsn, settings.cron_database_url()))
    except PrecallError as exc:
        return [Finding("pg_cron", "fail", str(exc))]
    if not cs.loaded:
        return [Finding("pg_cron", "fail", "not loaded: add pg_cron to shared_preload_libraries and restart PostgreSQL")]
    out = [Finding("pg_cron", "ok", f"loaded, cron database {cs.cron_database}")]
    if not cs.plan_job_active:
        out.append(Finding("planning job", "fail", f"{cron.plan_job_name(cs.app_database)} is missing or inactive: "
                           "run precall db cron-install"))
    elif cs.plan_last_success is None or now - cs.plan_last_success > PLAN_RUN_MAX_AGE:
        last = f"last success {cs.plan_last_success:%Y-%m-%d %H:%M:%S}Z" if cs.plan_last_success else "never succeeded"
        why = f"; last run {cs.plan_last_status}: {(cs.plan_last_message or '').strip()[:200]}" if cs.plan_last_status else ""
        out.append(Finding("planning job", "fail", f"no successful run in the last 2 minutes ({last}{why})"))
    else:
        out.append(Finding("planning job", "ok", f"last success {(now - cs.plan_last_success).total_seconds():.0f}s ago"))
    if not cs.prune_job_active:
        out.append(Finding("retention job", "warn", "not scheduled: notification_logs grows forever "
                           "(run precall db cron-install)"))
    return out


def _dispatchers(conn: psycopg.Connection, now: datetime) -> list[Finding]:
    rows = store.dispatcher_heartbeats(conn)
    max_age = store.heartbeat_max_age(conn)
    alive = [r for r in rows if r[2] is None and now - r[1] <= max_age]
    out: list[Finding] = []
    if alive:
        out.append(Finding("dispatchers", "ok", f"{len(alive)} alive: {', '.join(r[0] for r in alive)}"))
    else:
        last = f"last heartbeat from {rows[0][0]} at {rows[0][1]:%Y-%m-%d %H:%M:%S}Z" if rows else "none has ever run"
        out.append(Finding("dispatchers", "fail", f"no dispatcher heartbeat in the last {max_age.seconds}s ({last})"))
    for name, beat, stopped in rows:
        if stopped is None and max_age < now - beat <= timedelta(hours=1):
            out.append(Finding("dispatchers", "warn", f"{name} went silent at {beat:%H:%M:%S}Z without a clean stop (crash?)"))
    return out


def _queue(conn: psycopg.Connection) -> list[Finding]:
    health = store.queue_health(conn, OVERDUE_AFTER)
    queued, overdue, oldest, stuck = health.queued, health.overdue, health.oldest_overdue_s or 0.0, health.expired_leases
    out = [Finding("queue", "ok", f"{queued} preview(s) queued")]
    for channel in ("push", "sms"):
        beyond = store.previews_beyond_capacity(conn, channel)
        if beyond:
            out.append(Finding("capacity", "warn", f"{len(beyond)} {channel} preview(s) beyond capacity: their "
                               f"second is full even max_early earlier (up to {max(r['needed_early'] for r in beyond)} "
                               f"needed): precall capacity --channel {channel}"))
        configured = capacity_command.total_rate(conn, channel)
        if configured is None:
            continue
        rate, how = configured
        risk = store.previews_at_risk(conn, rate, channel)
        if risk:
            out.append(Finding("capacity", "fail", f"{len(risk)} {channel} preview(s) would miss their call's cut-off "
                               f"at {how} (up to {max(r['late_by'] for r in risk)} late): "
                               f"precall capacity --channel {channel}"))
    if overdue:
        out.append(Finding("queue", "fail", f"{overdue} preview(s) overdue, the oldest by {oldest:.0f}s: "
                           "is a dispatcher running?"))
    if stuck:
        out.append(Finding("queue", "fail", f"{stuck} preview(s) with an expired lease not yet taken over"))
    for currency, budget, spent, share in store.sms_budget_use(conn):
        if share is not None and share >= 0.8:
            out.append(Finding("sms budget", "warn", f"{share * 100:.0f}% of today's {currency} SMS budget used "
                               f"({spent} of {budget}); past 100% fallback SMS are skipped (sms_budget)"))
    expired, last = store.expired_calls(conn)
    if expired:
        out.append(Finding("calls", "warn", f"{expired} call(s) in the last 24 h expired unhanded (no dispatcher "
                           f"within precall.settings.call_grace of their time), the last due {last:%Y-%m-%d %H:%M:%S}Z"))
    for arm in store.experiment_guardrail(conn):
        out.append(Finding("experiments", "warn", f"{arm['experiment']}: arm {arm['arm']} answers "
                           f"{arm['answer_rate'] * 100:.1f}% against the control's {arm['control_rate'] * 100:.1f}% "
                           f"({arm['vs_control_diff'] * 100:+.1f} points, p = {arm['vs_control_p']:.2g}, "
                           f"{arm['calls']} calls): consider precall experiments stop {arm['experiment']}"))
    failed, last = store.failed_call_events(conn)
    if failed:
        out.append(Finding("calls", "warn", f"{failed} call event(s) in the last 24 h did not reach the call webhook "
                           f"(SELECT * FROM precall.call_events WHERE status = 'failed'), the last at "
                           f"{last:%Y-%m-%d %H:%M:%S}Z"))
    return out


def _providers() -> list[Finding]:
    try:
        config = Config.from_env()
    except PrecallError as exc:
        return [Finding("providers", "fail", str(exc))]
    out: list[Finding] = []
    for kind, provider, build in (("push", config.push_provider, factory.push_sender),
                                  ("sms", config.sms_provider, factory.sms_sender)):
        if provider == "log":
            out.append(Finding(f"{kind} provider", "warn", "log: previews are only written to the log, never sent"))
            continue
        try:
            build(config)
        except PrecallError as exc:
            out.append(Finding(f"{kind} provider", "fail", str(exc)))
        else:
            out.append(Finding(f"{kind} provider", "ok", provider))
    return out


def doctor_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print every check as JSON."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print the checks that passed."),
) -> None:
    """Check pg_cron, the planning job, dispatcher heartbeats, the queue and the provider settings.

    Prints one line per problem and exits 1 if there is any (warnings alone exit 0).

    Example: precall doctor --verbose
    """
    dsn = database_url()
    now = datetime.now(timezone.utc)
    findings = _schema(dsn) + _cron(dsn, now)
    with psycopg.connect(dsn, autocommit=True) as conn:
        findings += _dispatchers(conn, now) + _queue(conn)
    findings += _providers()
    findings += [Finding("settings", "warn", f"{name} is set but precall does not read it (a typo?)")
                 for name in settings.unknown_variables()]
    findings += [Finding("settings", "warn", line) for line in settings.deprecated_variables()]
    failed = [f for f in findings if f.status == "fail"]
    if as_json:
        print(to_json({"ok": not failed, "checks": [asdict(f) for f in findings]}))
    else:
        for f in findings:
            if f.status != "ok" or verbose:
                typer.echo(f"{f.status.upper():<4} {f.check}: {f.detail}")
        if not failed:
            typer.echo("precall is healthy" + (" (with warnings)" if any(f.status == "warn" for f in findings) else ""))
    if failed:
        raise typer.Exit(1)
