"""`opsconsole metrics | check`: the platform's health for the tools on-call already runs.

`metrics` serves Prometheus text exposition (opsconsole/exporter.py); `check` evaluates the same
health rules once (ops/health.py) and answers as a Nagios plugin: one line, exit 0/1/2/3.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading

import click
import psycopg
from psycopg import conninfo

from opsconsole.cli.base import Context, json_option, pass_ctx, wants_json
from opsconsole.errors import ConfigProblem, ConnectionProblem, OpsError, from_database
from opsconsole.ops import health


def _checked_dsn(ctx: Context) -> str:
    """The target's conninfo, refusing one that does not parse (a connection is not tried here)."""
    dsn = ctx.dsn
    try:
        conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigProblem(f"The DSN is not valid ({str(exc).strip()}); check --dsn.") from None
    return dsn


@click.command("metrics")
@click.option(
    "--listen",
    default="127.0.0.1:9187",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to serve /metrics on (localhost by default; :PORT for every address).",
)
@click.option(
    "--print-rules",
    is_flag=True,
    help="Print the Prometheus alert rules for the health thresholds and exit (no database needed).",
)
@pass_ctx
def metrics(ctx: Context, listen: str, print_rules: bool) -> None:
    """Serve Prometheus metrics: pipeline backlog, latency, SLA, DQ results, workers.

    Each scrape reads one snapshot from rollups and maintained counts (never staging rows) on one
    connection with a statement timeout. While the database is unreachable the exporter keeps serving
    with opsconsole_up 0 and reconnects by itself.
    """
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry

    from opsconsole.db.connect import describe
    from opsconsole.exporter import HealthCollector, alert_rules_yaml, parse_listen

    if print_rules:
        click.echo(alert_rules_yaml(), nl=False)
        return
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise ConfigProblem(f"{str(exc)[0].upper()}{str(exc)[1:]}.") from None
    dsn = _checked_dsn(ctx)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr, force=True
    )
    log = logging.getLogger("opsconsole.metrics")
    collector = HealthCollector(dsn)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigProblem(f"Cannot listen on {listen}: {exc.strerror or exc}.") from None
    stop = threading.Event()

    def _stop(signum, _frame) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("serving http://%s:%d/metrics for %s", host, server.server_port, describe(dsn))
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach it reads the metrics (no authentication)", host)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        server.server_close()
        collector.close()


def nagios_line(
    state: str, findings: list[health.Finding], snap: health.Snapshot | None, reason: str = ""
) -> str:
    """One line: STATE, what is wrong (or a short all-clear), then performance data after '|'."""
    head = f"OPSCONSOLE {state.upper()}"
    if snap is None:
        return f"{head} - {reason}"
    bad = [f for f in findings if f.state != health.OK]
    if bad:
        text = "; ".join(f.describe() for f in sorted(bad, key=lambda f: f.state != health.CRITICAL))
    else:
        dq = [r for r in snap.dq if r.severity == "critical"]
        text = (
            f"{snap.staging_rows['pending']} pending, oldest {snap.oldest_pending_age_s:.0f}s, "
            f"SLA breach {snap.sla_breach_ratio * 100:.1f}%, {snap.dead_letters} dead letters, "
            f"{snap.workers} worker(s), {len(dq)} critical DQ rule(s) passing"
        )
    perf = []
    for f in findings:
        if f.value is None or f.rule.name == "database_down":
            continue
        warn = "" if f.rule.warning is None else health.fmt_number(f.rule.warning)
        crit = "" if f.rule.critical is None else health.fmt_number(f.rule.critical)
        if f.rule.op == "<":  # Nagios ranges: "N:" alerts below N
            warn, crit = (f"{t}:" if t else "" for t in (warn, crit))
        uom = "s" if f.rule.unit == "s" else ""
        perf.append(f"{f.rule.name}={health.fmt_number(round(f.value, 6))}{uom};{warn};{crit}")
    return f"{head} - {text}" + (f" | {' '.join(perf)}" if perf else "")


@click.command("check")
@json_option
@pass_ctx
def check(ctx: Context, as_json: bool) -> None:
    """Evaluate the health rules once; exit 0 ok, 1 warning, 2 critical, 3 unknown (Nagios).

    For cron, systemd timers and monitoring agents. The rules and their thresholds are the ones the
    Prometheus alert rules use (see the README's On-call section).
    """
    from opsconsole.db.connect import connect

    snap: health.Snapshot | None = None
    findings: list[health.Finding] = []
    try:
        dsn = _checked_dsn(ctx)
        with connect(dsn, "check", statement_timeout_ms=health.SNAPSHOT_TIMEOUT_MS) as conn:
            snap = health.snapshot(conn)
        findings = health.evaluate(snap)
        state, reason = health.worst([f.state for f in findings]), ""
    except ConnectionProblem as exc:  # the database is down or refuses us: that is what a check is for
        state, reason = health.CRITICAL, exc.message
    except OpsError as exc:  # unusable configuration: the check cannot tell
        state, reason = health.UNKNOWN, exc.message
    except psycopg.errors.QueryCanceled:
        state = health.UNKNOWN
        reason = f"the health snapshot took longer than {health.SNAPSHOT_TIMEOUT_MS} ms and was cancelled."
    except psycopg.OperationalError as exc:
        state, reason = health.CRITICAL, f"lost the database connection ({str(exc).strip()})."
    except psycopg.Error as exc:
        problem = from_database(exc, "read the health snapshot")
        state = health.UNKNOWN
        reason = problem.message if problem else f"the health snapshot failed: {str(exc).strip()}."
    line = nagios_line(state, findings, snap, reason)
    if wants_json(ctx, as_json):
        out = {
            "state": state,
            "exit_code": health.EXIT_CODES[state],
            "summary": line,
            "findings": [f.as_dict() for f in findings],
        }
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(line)
    sys.exit(health.EXIT_CODES[state])


COMMANDS = [metrics, check]
