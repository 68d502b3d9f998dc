"""The Prometheus exporter behind `opsconsole metrics`: a prometheus_client Collector that reads one
health snapshot (ops/health.py) per scrape.

One connection, opened lazily and reopened by the next scrape after it breaks. While the database
cannot be read the exporter keeps serving, with `opsconsole_up 0` and nothing else from the database;
the log gets one line when that starts and one when it ends, never a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator

import psycopg
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from opsconsole.db.connect import connect, describe
from opsconsole.errors import OpsError, first_line
from opsconsole.ops import health

log = logging.getLogger("opsconsole.metrics")


class HealthCollector(Collector):
    """Yields the opsconsole_* series from a fresh snapshot at every scrape."""

    def __init__(self, dsn: str, timeout_ms: int = health.SNAPSHOT_TIMEOUT_MS):
        self.dsn = dsn
        self.timeout_ms = timeout_ms
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()  # scrapes may overlap (threaded HTTP server); one at a time
        self._down_since: str | None = None
        self.scrapes = 0

    def describe(self) -> list[Metric]:
        return []  # the series depend on the data (DQ rules); do not collect at registration

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            started = time.monotonic()
            snap = self._read()
            self.scrapes += 1
        up = GaugeMetricFamily("opsconsole_up", "1 when the last scrape read the platform database, else 0.")
        up.add_metric([], 1 if snap is not None else 0)
        yield up
        duration = GaugeMetricFamily(
            "opsconsole_scrape_duration_seconds",
            "Time this scrape spent reading the database.",
            unit="seconds",
        )
        duration.add_metric([], time.monotonic() - started)
        yield duration
        if snap is not None:
            yield from series(snap)

    def _read(self) -> health.Snapshot | None:
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self.close()
                self._conn = connect(self.dsn, "metrics", statement_timeout_ms=self.timeout_ms)
            snap = health.snapshot(self._conn, self.timeout_ms)
        except (OpsError, psycopg.Error) as exc:
            self._went_down(exc.message if isinstance(exc, OpsError) else first_line(exc))
            if not isinstance(exc, psycopg.errors.QueryCanceled):
                self.close()
            return None
        if self._down_since is not None:
            log.info("database %s readable again; opsconsole_up is 1", describe(self.dsn))
            self._down_since = None
        return snap

    def _went_down(self, reason: str) -> None:
        if self._down_since is None:
            log.warning("cannot read the database (%s); opsconsole_up is 0, retrying at every scrape", reason)
            self._down_since = reason

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def series(s: health.Snapshot) -> Iterator[Metric]:
    """The exported series of one snapshot (names, help text and units as the Prometheus conventions)."""
    rows = GaugeMetricFamily(
        "opsconsole_staging_rows",
        "Staging rows by processing state, from the per-minute rollup (dead letters: status=dead_letter).",
        labels=["status"],
    )
    for status, count in s.staging_rows.items():
        rows.add_metric([status], count)
    yield rows
    yield CounterMetricFamily(
        "opsconsole_transactions_processed",
        "Transactions processed, over the ingestion minutes the rollup keeps (rollup_retention).",
        value=s.processed_total,
    )
    yield CounterMetricFamily(
        "opsconsole_sla_breaches",
        "Processed transactions that took longer than the SLA, over the minutes the rollup keeps.",
        value=s.sla_breaches_total,
    )
    yield HistogramMetricFamily(
        "opsconsole_processing_latency_seconds",
        "Ingestion to processed, per processed transaction, from the latency rollup (1 ms resolution).",
        buckets=[("+Inf" if math.isinf(le) else repr(le), n) for le, n in s.latency_buckets],
        sum_value=s.latency_sum_s,
        unit="seconds",
    )
    ratio = GaugeMetricFamily(
        "opsconsole_sla_breach_ratio",
        f"Share of transactions finished in the last {health.SLA_WINDOW_MINUTES} ingestion minutes that "
        "breached the SLA (0 to 1).",
        unit="ratio",
    )
    ratio.add_metric([], s.sla_breach_ratio)
    yield ratio
    target = GaugeMetricFamily("opsconsole_sla_target_seconds", "The processing SLA.", unit="seconds")
    target.add_metric([], s.sla_target_s)
    yield target
    oldest = GaugeMetricFamily(
        "opsconsole_oldest_pending_age_seconds",
        "Age of the oldest pending staging row, to the start of its ingestion minute (0: none pending).",
        unit="seconds",
    )
    oldest.add_metric([], s.oldest_pending_age_s)
    yield oldest
    workers = GaugeMetricFamily(
        "opsconsole_workers",
        "Pipeline worker claim loops connected (opsconsole:worker-*; a maintenance loop is not counted).",
    )
    workers.add_metric([], s.workers)
    yield workers
    busy = GaugeMetricFamily("opsconsole_workers_busy", "Pipeline worker sessions running a statement now.")
    busy.add_metric([], s.workers_busy)
    yield busy
    dq = GaugeMetricFamily(
        "opsconsole_dq_rule_passed",
        "1 when the active DQ rule's latest result passed (pass or warn), 0 when it failed or errored.",
        labels=["rule", "table", "severity"],
    )
    for r in s.dq:
        dq.add_metric([r.rule, r.table, r.severity], 1 if r.passed else 0)
    yield dq
    if s.dq_last_run_age_s is not None:
        age = GaugeMetricFamily(
            "opsconsole_dq_last_run_age_seconds",
            "Time since the newest finished data-quality run ended.",
            unit="seconds",
        )
        age.add_metric([], s.dq_last_run_age_s)
        yield age


def parse_listen(value: str) -> tuple[str, int]:
    """'host:port' (or '[v6]:port', or ':port' for every address) into (host, port); ValueError says why."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text:
        raise ValueError(f"--listen takes host:port (for example 127.0.0.1:9187), not {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"the port in --listen {value!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"the port in --listen {value!r} is outside 1-65535")
    return host or "0.0.0.0", port


# -- the alert rules file -----------------------------------------------------------------------------

RULES_FILE_HEADER = """\
# Prometheus alert rules for opsconsole. Generated by `opsconsole metrics --print-rules` from
# opsconsole.ops.health.RULES (the thresholds `opsconsole check` uses): change them there and run
#   opsconsole metrics --print-rules > deploy/prometheus/opsconsole.rules.yml
# tests/test_metrics.py fails while this file and the Python rules differ.
# ExporterDown assumes the scrape job is named "opsconsole" (see prometheus.yml beside this file).
"""

_DESCRIBE_VALUE = {
    "ratio": "{{ $value | humanizePercentage }}",
    "s": "{{ $value | humanizeDuration }}",
    "": "{{ $value }}",
}


def _q(text: str) -> str:
    """A YAML double-quoted scalar (a JSON string is one)."""
    import json

    return json.dumps(text, ensure_ascii=False)


def alert_rules_yaml() -> str:
    """The Prometheus rule file for health.RULES: one alert per rule and level, `promql op threshold`."""
    lines = [RULES_FILE_HEADER + "groups:", "  - name: opsconsole", "    rules:"]
    for rule in health.RULES:
        for level, threshold in rule.levels():
            bound = health.fmt_value(threshold, rule.unit)
            subject = "rule {{ $labels.rule }} on {{ $labels.table }}: " if "dq_rule" in rule.promql else ""
            description = (
                f"{subject}{rule.promql} is {_DESCRIBE_VALUE[rule.unit]} ({level} when {rule.op} {bound})."
            )
            lines += [
                f"      - alert: {rule.alert}",
                f"        expr: {_q(rule.expr(level))}",
            ]
            if rule.for_ not in ("0m", "0s", ""):
                lines.append(f"        for: {rule.for_}")
            lines += [
                "        labels:",
                f"          severity: {level}",
                f"          opsconsole_rule: {rule.name}",
                "        annotations:",
                f"          summary: {_q(rule.summary)}",
                f"          description: {_q(description)}",
                f"          runbook: {_q(rule.runbook)}",
            ]
    return "\n".join(lines) + "\n"
