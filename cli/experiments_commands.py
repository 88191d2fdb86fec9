"""`precall experiments …`: create, list, report and stop experiments scored on answered calls.

The figures come from the view precall.experiment_report (sql/functions/experiments.sql, methods
in sql/functions/estimation.sql); this module parses arms, prints, and words the verdict.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Optional

import psycopg
import typer

from precall.cli import store
from precall.cli.output import JSON_HELP, emit, to_json
from precall.config import database_url
from precall.errors import PrecallError
from precall.templates.catalog import Catalog

app = typer.Typer(no_args_is_help=True, help="Experiments: which lead, channel and words raise the answer rate.")

ARM_KEYS = ("share", "lead_min", "channel", "variant", "none")
POPULATION_KEYS = ("locale", "platform", "notification_pref")
Z_95 = 1.959963984540054  # two-sided 5%
Z_POWER_80 = 0.8416212335729143  # one-sided 20%: 80% power
SIGNIFICANT = 0.05


def parse_arm(text: str) -> dict[str, Any]:
    """NAME[:key=value[,key=value…]] → {"name": …, key: value}; keys share, lead_min, channel,
    variant, none (none takes no value: no preview)."""
    name, _, rest = text.partition(":")
    arm: dict[str, Any] = {"name": name.strip()}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if key not in ARM_KEYS:
            raise PrecallError(f"--arm {text!r}: unknown key {key!r} (use {', '.join(ARM_KEYS)})")
        if key == "none":
            arm["none"] = value.strip().lower() not in ("false", "0", "no") if eq else True
        elif not eq or not value.strip():
            raise PrecallError(f"--arm {text!r}: {key} needs a value ({key}=…)")
        elif key == "share":
            try:
                arm["share"] = float(value)
            except ValueError:
                raise PrecallError(f"--arm {text!r}: share {value!r} is not a number") from None
            if not 0 < arm["share"] <= 1:
                raise PrecallError(f"--arm {text!r}: share must be in (0, 1]")
        elif key == "lead_min":
            if not value.strip().isdigit():
                raise PrecallError(f"--arm {text!r}: lead_min {value!r} is not a whole number of minutes")
            arm["lead_min"] = int(value)
        else:
            arm[key] = value.strip()
    return arm


def parse_population(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if key not in POPULATION_KEYS or not eq or not value:
            raise PrecallError(f"--population {item!r}: use locale=…, platform=… or notification_pref=…")
        out[key] = value
    return out


def _when(text: Optional[str], flag: str) -> Optional[datetime]:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace(" ", "T", 1).replace("Z", "+00:00"))
    except ValueError:
        raise PrecallError(f"{flag} {text!r} is not an ISO-8601 date and time") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@app.command("create")
def create_cmd(
    name: str = typer.Argument(..., help="A lower-case name (letters, digits, _ . -)."),
    arm: list[str] = typer.Option(..., "--arm", help="NAME[:key=value,…] (share, lead_min, channel, variant, none); "
                                  "the first is the control."),
    holdout: float = typer.Option(0.0, help="The share of users who get no preview (arm 'holdout')."),
    population: list[str] = typer.Option([], help="locale=…, platform=…, notification_pref=… (repeat)."),
    start: Optional[str] = typer.Option(None, help="ISO-8601; default now."),
    end: Optional[str] = typer.Option(None, help="ISO-8601; default open-ended (stop it with `precall experiments stop`)."),
    allocation: str = typer.Option("fixed", help="fixed, or thompson: the arms' shares (holdout fixed) re-weighted "
                                   "once a day by Thompson sampling on answered calls, each arm keeping 5%."),
) -> None:
    """Create an experiment. Assignment is per user, sticky and reproducible.

    Example: precall experiments create lead-test --arm control --arm lead10:lead_min=10 --holdout 0.1
    """
    if allocation not in ("fixed", "thompson"):
        raise PrecallError(f"--allocation {allocation!r}: use fixed or thompson")
    arms = [parse_arm(a) for a in arm]
    catalog = Catalog()
    for a in arms:
        if "variant" in a:
            missing = [loc for loc in catalog.locales if a["variant"] not in catalog.variants(loc)]
            if missing:
                raise PrecallError(f"arm {a['name']}: variant {a['variant']!r} is missing in {', '.join(missing)} "
                                   f"(templates/<locale>/variants/{a['variant']}/)")
    with psycopg.connect(database_url(), autocommit=True) as conn:
        store.create_experiment(conn, name, arms, holdout, parse_population(population), _when(start, "--start"),
                                _when(end, "--end"), allocation)
        created = next(e for e in store.experiments(conn) if e["name"] == name)
    typer.echo(f"experiment {name} created ({created['status']}): {created['arms']}")


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """The experiments, newest first, with their arms and assigned users.

    Example: precall experiments list
    """
    with psycopg.connect(database_url(), autocommit=True) as conn:
        rows = store.experiments(conn)
    emit(rows, ["name", "status", "arms", "population", "starts_at", "ends_at", "users"], as_json)


@app.command("stop")
def stop_cmd(name: str = typer.Argument(...)) -> None:
    """Stop an experiment: sent previews stay; queued ones are re-planned under each user's own rules.

    Example: precall experiments stop lead-test
    """
    with psycopg.connect(database_url(), autocommit=True) as conn:
        replanned = store.stop_experiment(conn, name)
    if replanned is None:
        raise PrecallError(f"no running experiment named {name!r}")
    typer.echo(f"experiment {name} stopped; {replanned} call(s) re-planned under the users' own rules")


def calls_for_power(p1: float, p2: float) -> float | None:
    """Calls per arm for 80% power at two-sided 5% to tell p1 from p2 (normal approximation,
    no continuity correction); None when they are equal."""
    if p1 == p2:
        return None
    pbar = (p1 + p2) / 2
    top = Z_95 * math.sqrt(2 * pbar * (1 - pbar)) + Z_POWER_80 * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return top * top / (p1 - p2) ** 2


def _points(x: float) -> str:
    return f"{x * 100:+.1f}"


def verdict(arms: list[dict[str, Any]]) -> str:
    """One plain-language line: the arm that differs significantly from the control (or, with one
    arm, the preview against the holdout), else how many more calls per arm would settle it."""
    by_name = {a["arm"]: a for a in arms}
    control = next((a for a in arms if a["position"] == 1), None)
    if control is None:
        return "no control arm"
    others = [a for a in arms if a["position"] > 1]
    base, label = (control, "control") if others else (by_name.get("holdout"), "holdout")
    contenders = others if others else [control]
    if base is None:
        return "nothing to compare: one arm and no holdout"
    key = "vs_control" if others else "vs_holdout"
    significant = [a for a in contenders if a[key] and a[key]["p"] is not None and a[key]["p"] < SIGNIFICANT]
    if significant:
        best = max(significant, key=lambda a: abs(a[key]["diff"]))
        d, (lo, hi) = best[key]["diff"], best[key]["ci95"]
        word = "beats" if d > 0 else "trails"
        return (f"{best['arm']} {word} {label} by {_points(d)} points (95% CI {_points(lo)} to {_points(hi)}, "
                f"p = {best[key]['p']:.3g})")
    needed = []
    for a in contenders:
        if a["calls"] and base["calls"] and a["answer_rate"] is not None and base["answer_rate"] is not None:
            n = calls_for_power(a["answer_rate"], base["answer_rate"])
            if n is not None:
                needed.append(max(0, math.ceil(n) - min(a["calls"], base["calls"])))
    if not needed:
        return "not yet conclusive: no difference seen yet (or no calls have reached their time)"
    return f"not yet conclusive: about {min(needed)} more calls per arm for 80% power at this effect"


def report_data(rows: list[dict[str, Any]], allocations: list[dict[str, Any]]) -> dict[str, Any]:
    arms = []
    for r in rows:
        def cmp(prefix: str) -> dict[str, Any] | None:
            if r[f"{prefix}_diff"] is None:
                return None
            return {"diff": r[f"{prefix}_diff"], "ci95": [r[f"{prefix}_lo"], r[f"{prefix}_hi"]], "p": r[f"{prefix}_p"]}
        arms.append({
            "arm": r["arm"], "position": r["position"], "share": r["share"], "lead_min": r["lead_min"],
            "channel": r["channel"], "variant": r["variant"],
            "users": r["users"], "calls": r["calls"], "answered": r["answered"], "answer_rate": r["answer_rate"],
            "ci95": [r["ci_lo"], r["ci_hi"]] if r["ci_lo"] is not None else None,
            "vs_holdout": cmp("vs_holdout") if r["arm"] != "holdout" else None,
            "vs_control": cmp("vs_control") if r["position"] != 1 else None,
            "sms_spend": r["sms_spend"],
            "sms_spend_per_answered": {cur: float(amount) / r["answered"] for cur, amount in (r["sms_spend"] or {}).items()}
            if r["answered"] else None,
            "receipts": r["receipts"], "opens": r["opens"], "late_receipts": r["late_receipts"],
            "own_rule_users": r["own_rule_users"],
        })
    first = rows[0]
    return {"experiment": first["experiment"], "allocation": first["allocation"], "arms": arms,
            "allocations": [{"at": al["at"], "shares": al["shares"], "p_best": al["p_best"]} for al in allocations],
            "verdict": verdict(arms)}


@app.command("report")
def report_cmd(name: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Per arm: users, calls that reached their time, answered, answer rate with its 95% Wilson
    interval, the difference against the holdout and the control (Newcombe hybrid score interval,
    two-sided p: pooled z-test, Fisher's exact test below 10 expected in a cell), SMS spend,
    receipts, opens, late receipts; and a verdict.

    Example: precall experiments report lead-test --json
    """
    with psycopg.connect(database_url(), autocommit=True) as conn:
        rows = store.experiment_report(conn, name)
        allocations = store.experiment_allocations(conn, name)
    if not rows:
        raise PrecallError(f"no experiment named {name!r}")
    data = report_data(rows, allocations)
    if as_json:
        typer.echo(to_json(data))
        return

    def pct(x: Any) -> str:
        return "-" if x is None else f"{x * 100:.1f}%"

    def diff(c: dict[str, Any] | None) -> str:
        if c is None:
            return "-"
        return f"{_points(c['diff'])} [{_points(c['ci95'][0])}, {_points(c['ci95'][1])}] p={c['p']:.3g}"

    table = [{"arm": a["arm"], "users": a["users"], "calls": a["calls"], "answered": a["answered"],
              "rate": pct(a["answer_rate"]),
              "95% CI": "-" if a["ci95"] is None else f"{pct(a['ci95'][0])}–{pct(a['ci95'][1])}",
              "vs holdout": diff(a["vs_holdout"]), "vs control": diff(a["vs_control"])} for a in data["arms"]]
    emit(table, list(table[0]), False)
    if len(allocations) > 1:
        typer.echo("allocations: " + "; ".join(
            f"{al['at']:%Y-%m-%d} " + ", ".join(f"{k} {float(v) * 100:.1f}%" for k, v in al["shares"].items())
            for al in allocations))
    typer.echo(data["verdict"])
