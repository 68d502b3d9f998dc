"""Platform health for on-call: one cheap snapshot and one set of rules over it.

`snapshot()` reads the pipeline's per-minute rollups, the worker sessions and the latest DQ results in
one read-only transaction under a statement_timeout; it never reads staging rows, so it costs the same
at any staging size. `RULES` are the thresholds on-call is paged on: `opsconsole check` evaluates them
on a snapshot, and deploy/prometheus/opsconsole.rules.yml states the same ones in PromQL over the
series `opsconsole metrics` exports (tests/test_health.py checks that the two agree).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from opsconsole.db.queries import dict_rows, query

SNAPSHOT_TIMEOUT_MS = 5_000  # below Prometheus' default scrape timeout (10 s)
SLA_WINDOW_MINUTES = 5  # the SLA breach ratio covers the last 5 ingestion minutes
STAGING_STATES = ("pending", "processed", "failed", "dead_letter", "duplicate")

OK, WARNING, CRITICAL, UNKNOWN = "ok", "warning", "critical", "unknown"
EXIT_CODES = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}  # the Nagios plugin convention


@dataclass(frozen=True)
class DqResult:
    rule: str
    table: str
    severity: str
    passed: bool
    status: str
    checked_at: dt.datetime


@dataclass(frozen=True)
class Snapshot:
    """What the platform looks like now, from maintained sources only."""

    at: dt.datetime
    staging_rows: dict[str, int]
    sla_breaches_total: int
    sla_target_s: float
    sla_breach_ratio: float  # over the last SLA_WINDOW_MINUTES; 0 when nothing finished there
    oldest_pending_age_s: float  # 0 when nothing is pending
    latency_buckets: list[tuple[float, int]]  # (upper bound in seconds, cumulative rows), last is +Inf
    latency_sum_s: float
    workers: int
    workers_busy: int
    dq: list[DqResult] = field(default_factory=list)
    dq_last_run_age_s: float | None = None  # None: no DQ run has finished yet

    @property
    def processed_total(self) -> int:
        return self.staging_rows["processed"]

    @property
    def latency_count(self) -> int:
        return self.latency_buckets[-1][1] if self.latency_buckets else 0

    @property
    def dead_letters(self) -> int:
        return self.staging_rows["dead_letter"]


def snapshot(
    conn: psycopg.Connection, timeout_ms: int = SNAPSHOT_TIMEOUT_MS, *, histogram: bool = True
) -> Snapshot:
    """Read a Snapshot in one read-only transaction (one consistent view) with a statement_timeout.

    Cost grows with the rollup's retention, not with staging: at 30 days kept (43,200 minutes) the
    pipeline sums take about 40 ms and the latency histogram about 115 ms; histogram=False skips the
    latter (latency_buckets is then empty) for readers that need no latency."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(int(timeout_ms)),))
        pipe = dict_rows(conn, query("health/pipeline"), {"window_minutes": SLA_WINDOW_MINUTES})[0]
        bounds = conn.execute("SELECT financial_latency_bounds()").fetchone() if histogram else None
        hist = dict_rows(conn, query("health/latency")) if histogram else []
        workers = dict_rows(conn, query("health/workers"))[0]
        dq = dict_rows(conn, query("health/dq_latest"))
        last_run = dict_rows(conn, query("health/dq_last_run"))
    done = pipe["recent_done"]
    return Snapshot(
        at=pipe["at"],
        staging_rows={state: int(pipe[state]) for state in STAGING_STATES},
        sla_breaches_total=int(pipe["sla_breaches"]),
        sla_target_s=(pipe["sla_ms"] or 0) / 1000,
        sla_breach_ratio=pipe["recent_breaches"] / done if done > 0 else 0.0,
        oldest_pending_age_s=float(pipe["oldest_pending_age_s"] or 0),
        latency_buckets=cumulative_buckets(list(bounds[0]), hist) if bounds else [],
        latency_sum_s=pipe["latency_sum_ms"] / 1000,
        workers=int(workers["workers"] or 0),
        workers_busy=int(workers["busy"] or 0),
        dq=[
            DqResult(
                r["rule_name"],
                r["table_name"],
                r["severity"],
                bool(r["passed"]),
                r["status"],
                r["checked_at"],
            )
            for r in dq
        ],
        dq_last_run_age_s=last_run[0]["age_s"] if last_run else None,
    )


def cumulative_buckets(lower_bounds_ms: list[int], rows: list[dict[str, Any]]) -> list[tuple[float, int]]:
    """Prometheus histogram buckets from the rollup's [lower, upper) ms buckets: every upper bound in
    seconds with the rows below it, then +Inf with all rows. Every bound appears, empty or not, so
    the series never come and go."""
    counts = {int(r["bucket_lower_ms"]): int(r["row_count"]) for r in rows}
    out: list[tuple[float, int]] = []
    running = 0
    for i, lower in enumerate(lower_bounds_ms):
        running += counts.pop(lower, 0)
        if i + 1 < len(lower_bounds_ms):
            out.append((lower_bounds_ms[i + 1] / 1000, running))
    running += sum(counts.values())  # rows under a bound the function no longer lists
    out.append((math.inf, running))
    return out


# -- the rules --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthRule:
    """One condition on-call is paged on. It holds when `measure op threshold`, for the warning and the
    critical threshold (None: no such level). `promql` is the same quantity over the exported series:
    the Prometheus alert for a level is exactly `promql op threshold` (labelled with the level).
    `measure` is None for conditions only Prometheus can see (the exporter itself being down)."""

    name: str
    alert: str
    summary: str
    promql: str
    op: str
    warning: float | None
    critical: float | None
    measure: Callable[[Snapshot], float | None] | None
    runbook: str
    unit: str = ""
    for_: str = "1m"

    def levels(self) -> list[tuple[str, float]]:
        return [(lvl, t) for lvl, t in ((WARNING, self.warning), (CRITICAL, self.critical)) if t is not None]

    def expr(self, level: str) -> str:
        return f"{self.promql} {self.op} {fmt_number(dict(self.levels())[level])}"

    def breaches(self, value: float, threshold: float) -> bool:
        return value > threshold if self.op == ">" else value < threshold

    def state_of(self, value: float | None) -> str:
        if value is None:
            return OK
        state = OK
        for level, threshold in self.levels():
            if self.breaches(value, threshold):
                state = level
        return state


def _critical_dq_passed(s: Snapshot) -> float | None:
    critical = [r for r in s.dq if r.severity == "critical"]
    return min((1.0 if r.passed else 0.0) for r in critical) if critical else None


RULES: tuple[HealthRule, ...] = (
    HealthRule(
        name="database_down",
        alert="OpsconsoleDatabaseDown",
        summary="The exporter cannot read the platform database",
        promql="opsconsole_up",
        op="<",
        warning=None,
        critical=1,
        measure=lambda s: 1.0,  # a snapshot was read; `check` reports an unreachable database itself
        runbook="Check that the server is up and the exporter's DSN (`opsconsole where`). The console "
        "shows a banner on every pane while it cannot connect; pane 1 Monitor (key 1) fills again once "
        "it is back.",
    ),
    HealthRule(
        name="exporter_down",
        alert="OpsconsoleExporterDown",
        summary="Prometheus cannot scrape `opsconsole metrics`",
        promql='up{job="opsconsole"}',
        op="<",
        warning=None,
        critical=1,
        measure=None,
        runbook="Restart `opsconsole metrics` (its log says why it stopped); meanwhile watch pane 1 "
        "Monitor (key 1) in the console.",
    ),
    HealthRule(
        name="sla_breach",
        alert="OpsconsoleSlaBreach",
        summary="Transactions slower than the SLA over the last 5 ingestion minutes",
        promql="opsconsole_sla_breach_ratio",
        op=">",
        warning=0.01,
        critical=0.05,  # the spec: 95% processed within the SLA (1 s)
        measure=lambda s: s.sla_breach_ratio,
        runbook="Console pane 1 Monitor (key 1): p95 and SLA breach per minute, active workers; "
        "`b` processes a batch, `c` starts continuous processing. Add workers if they are all busy.",
        unit="ratio",
        for_="2m",
    ),
    HealthRule(
        name="backlog_age",
        alert="OpsconsoleBacklogAge",
        summary="The oldest pending staging row has waited too long",
        promql="opsconsole_oldest_pending_age_seconds",
        op=">",
        warning=300,
        critical=900,
        measure=lambda s: s.oldest_pending_age_s,
        runbook="Console pane 2 Backlog (key 2): rows by state and error code, next retry; pane 1 "
        "Monitor (key 1) shows whether workers are active. Start a worker or `c` in the console.",
        unit="s",
    ),
    HealthRule(
        name="dead_letters",
        alert="OpsconsoleDeadLettersGrowing",
        # check sees one moment, so it warns while dead letters exist; Prometheus sees history, so it
        # alerts when their number grew over 15 minutes (an old, acknowledged pile does not page).
        summary="Staging rows were dead-lettered (out of retries)",
        promql='delta(opsconsole_staging_rows{status="dead_letter"}[15m])',
        op=">",
        warning=0,
        critical=None,
        measure=lambda s: float(s.dead_letters),
        runbook="Console pane 2 Backlog (key 2): filter with `/`, `Enter` shows a row's payload and "
        "history; fix the cause, then `r` retries the selection (CLI: `opsconsole retry --dead-letter`).",
        for_="0m",
    ),
    HealthRule(
        name="dq_critical",
        alert="OpsconsoleCriticalDqFailing",
        summary="A critical data-quality rule failed its latest run",
        promql='opsconsole_dq_rule_passed{severity="critical"}',
        op="<",
        warning=None,
        critical=1,
        measure=_critical_dq_passed,
        runbook="Console pane 3 Data quality (key 3): failing rules first; `Enter` shows the rule's "
        "history, `o` re-runs the rule under the cursor, `r` runs all.",
        for_="0m",
    ),
    HealthRule(
        name="no_worker",
        alert="OpsconsoleNoActiveWorker",
        summary="No pipeline worker is connected",
        promql="opsconsole_workers",
        op="<",
        warning=None,
        critical=1,
        measure=lambda s: float(s.workers),
        runbook="Start `opsconsole worker` (or its service); pane 1 Monitor (key 1) shows active "
        "workers, and `c` there processes continuously from the console meanwhile.",
        for_="2m",
    ),
)
RULES_BY_NAME = {rule.name: rule for rule in RULES}


@dataclass(frozen=True)
class Finding:
    rule: HealthRule
    value: float | None
    state: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.name,
            "state": self.state,
            "value": self.value,
            "warning": self.rule.warning,
            "critical": self.rule.critical,
            "op": self.rule.op,
            "summary": self.rule.summary,
        }

    def describe(self) -> str:
        value = fmt_value(self.value, self.rule.unit)
        if self.state == OK:
            return f"{self.rule.name} {value}"
        threshold = dict(self.rule.levels())[self.state]
        return f"{self.rule.name} {value} {self.rule.op} {fmt_value(threshold, self.rule.unit)}"


def evaluate(snap: Snapshot) -> list[Finding]:
    """Every rule `check` can judge from one snapshot, with its state."""
    findings = []
    for rule in RULES:
        if rule.measure is None:
            continue
        value = rule.measure(snap)
        findings.append(Finding(rule, value, rule.state_of(value)))
    return findings


def worst(states: list[str]) -> str:
    order = (OK, WARNING, UNKNOWN, CRITICAL)  # Nagios: critical outranks unknown outranks warning
    return max(states, key=order.index, default=OK)


def fmt_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    if unit == "s":
        return f"{value:.0f}s"
    return fmt_number(value)
