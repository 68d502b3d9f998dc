"""Pane 1, Monitor: per-minute throughput, latency and SLA of the financial pipeline, the backlog,
the active workers, and sparklines of throughput and p95 over the last hour.

An SLA breach (more than SLA_MAX_BREACH_PCT of a minute's transactions over SLA_TARGET_MS, the spec's
"95% processed within 1 second") turns the pane's border red and raises one toast per breach.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import psycopg
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from opsconsole.ops import pipeline
from opsconsole.ops.health import RULES_BY_NAME
from opsconsole.ops.registry import Capabilities
from opsconsole.tui.clock import human_duration
from opsconsole.tui.format import cell_num, ms, num, pct, styled
from opsconsole.tui.screens.base import PaneScreen
from opsconsole.tui.state import ConsoleContext, ConsoleStatus
from opsconsole.tui.widgets.keyed_table import KeyedTable

SLA_TARGET_MS = 1000
SLA_MAX_BREACH_PCT = RULES_BY_NAME["sla_breach"].critical * 100  # the on-call threshold (ops/health)
MINUTES = 60

COLUMNS = [
    ("minute", "minute", 6),
    ("total", "total", 7),
    ("processed", "processed", 9),
    ("failed", "failed", 6),
    ("pending", "pending", 7),
    ("dead", "dead letter", 11),
    ("avg", "avg ms", 9),
    ("p95", "p95 ms", 9),
    ("max", "max ms", 9),
    ("sla", "SLA breach", 10),
]


@dataclass
class MonitorData:
    minutes: list[dict[str, Any]]
    open: dict[str, dict[str, Any]]
    workers: dict[str, Any]
    at: dt.datetime
    extra: dict[str, Any] = field(default_factory=dict)


def series(minutes: list[dict[str, Any]], column: str, now: dt.datetime) -> list[float]:
    """One value per minute for the last hour, oldest first; minutes with no row are 0."""
    base = now.replace(second=0, microsecond=0)
    by_minute = {r["minute_bucket"].replace(second=0, microsecond=0): r for r in minutes}
    values = []
    for back in range(MINUTES - 1, -1, -1):
        row = by_minute.get(base - dt.timedelta(minutes=back))
        values.append(float(row[column] or 0) if row else 0.0)
    return values


def breach_of(minutes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest minute with finished work, if it breached the SLA."""
    for row in minutes:
        done = (row["processed_count"] or 0) + (row["failed_count"] or 0)
        if done:
            rate = row["sla_breach_rate"]
            return row if rate is not None and float(rate) > SLA_MAX_BREACH_PCT else None
    return None


class MonitorScreen(PaneScreen):
    PANE_ID = "monitor"
    PANE_KEY = "1"
    PANE_TITLE = "Monitor"
    NEEDS_RELATIONS = ("financial_processing_monitor", "financial_transactions_staging")

    def __init__(self, context: ConsoleContext) -> None:
        super().__init__(context)
        self.breach: dict[str, Any] | None = None

    def compose_body(self) -> ComposeResult:
        yield Static("", id="kpi")
        yield Static("", id="continuous")
        with Horizontal(id="sparks"):
            with Vertical(classes="spark-box"):
                yield Static("processed per minute, last hour", id="tp-label", classes="spark-label")
                yield Sparkline([], id="tp-spark")
            with Vertical(classes="spark-box"):
                yield Static("p95 processing ms, last hour", id="p95-label", classes="spark-label")
                yield Sparkline([], id="p95-spark")
        yield KeyedTable(COLUMNS, id="minutes", cursor_type="none")

    @classmethod
    def fetch(cls, conn: psycopg.Connection, caps: Capabilities, params: dict[str, Any]) -> MonitorData:
        return MonitorData(
            pipeline.monitor_minutes(conn),
            pipeline.open_rows(conn),
            pipeline.active_workers(conn),
            at=params["now"],
        )

    def fetch_params(self) -> dict[str, Any]:
        return {"now": self.clock.now()}

    def render_data(self, data: MonitorData) -> None:
        app = self.app
        clock = self.clock
        latest = data.minutes[0] if data.minutes else None
        pending = data.open.get("pending", {})
        failed = data.open.get("failed", {})
        dead = data.open.get("dead_letter", {})
        backlog = (pending.get("rows") or 0) + (failed.get("rows") or 0)
        oldest = clock.since(pending.get("oldest_ingested"))
        lines = []
        if latest is not None:
            r = latest
            lines.append(
                f"[b]minute {clock.time(r['minute_bucket'], seconds=False)}[/]  "
                f"processed [b]{num(r['processed_count'])}[/]  failed [b]{num(r['failed_count'])}[/]  "
                f"pending [b]{num(r['pending_count'])}[/]  avg [b]{ms(r['avg_processing_ms'])}[/]  "
                f"p95 [b]{ms(r['p95_processing_ms'])}[/]  SLA breach [b]{pct(r['sla_breach_rate'])}[/]"
            )
        else:
            lines.append("[dim]no transactions ingested in the last hour[/]")
        lines.append(
            f"backlog [b]{num(backlog)}[/] ({num(pending.get('rows') or 0)} pending, "
            f"{num(failed.get('rows') or 0)} failed awaiting retry, "
            f"{num(dead.get('rows') or 0)} dead letter)  "
            f"oldest pending [b]{human_duration(oldest) if oldest is not None else '—'}[/]  "
            f"workers [b]{num(data.workers.get('workers') or 0)}[/] active "
            f"({num(data.workers.get('busy') or 0)} busy)"
        )
        self.query_one("#kpi", Static).update("\n".join(lines))
        self.update_counters()

        throughput = series(data.minutes, "processed_count", data.at)
        p95 = series(data.minutes, "p95_processing_ms", data.at)
        self.query_one("#tp-spark", Sparkline).data = throughput
        self.query_one("#p95-spark", Sparkline).data = p95
        self.query_one("#tp-label", Static).update(
            f"processed per minute, last hour  [dim]max {num(max(throughput))}  "
            f"total {num(sum(throughput))}[/]"
        )
        self.query_one("#p95-label", Static).update(
            f"p95 processing ms, last hour  [dim]max {ms(max(p95))}  SLA {SLA_TARGET_MS} ms[/]"
        )

        rows = []
        for r in data.minutes:
            sla = r["sla_breach_rate"]
            over = sla is not None and float(sla) > SLA_MAX_BREACH_PCT
            rows.append(
                (
                    r["minute_bucket"].isoformat(),
                    (
                        Text(clock.time(r["minute_bucket"], seconds=False)),
                        cell_num(r["total_transactions"]),
                        cell_num(r["processed_count"]),
                        styled(app, num(r["failed_count"]), "error", justify="right")
                        if r["failed_count"]
                        else cell_num(0),
                        cell_num(r["pending_count"]),
                        cell_num(r.get("dead_letter_count")),
                        Text(ms(r["avg_processing_ms"]), justify="right"),
                        Text(ms(r["p95_processing_ms"]), justify="right"),
                        Text(ms(r["max_processing_ms"]), justify="right"),
                        styled(app, pct(sla), "error", bold=True, justify="right")
                        if over
                        else Text(pct(sla), justify="right"),
                    ),
                )
            )
        self.query_one("#minutes", KeyedTable).sync(rows)
        self.set_breach(breach_of(data.minutes))

    def set_breach(self, row: dict[str, Any] | None) -> None:
        was = self.breach
        self.breach = row
        self.query_one("#pane-frame").set_class(row is not None, "-breach")
        if row is not None and (was is None or was["minute_bucket"] != row["minute_bucket"]) and was is None:
            clock = self.clock
            self.app.notify(
                f"SLA breach: {pct(row['sla_breach_rate'])} of transactions took over {SLA_TARGET_MS} ms "
                f"in the minute {clock.time(row['minute_bucket'], seconds=False)} "
                f"(p95 {ms(row['p95_processing_ms'])}).",
                title="SLA breach",
                severity="error",
                timeout=10,
            )

    def status_changed(self, status: ConsoleStatus) -> None:
        self.update_counters()

    def update_counters(self) -> None:
        """The line on continuous processing run by this console (its job's counters)."""
        if not self.is_mounted:
            return
        job = self.status.running("continuous") if self.status is not None else None
        found = self.query("#continuous")
        if not found:  # the app is shutting down: the widgets are gone
            return
        widget = found.first(Static)
        if job is None:
            widget.update("")
            widget.display = False
            return
        c = job.counters
        widget.display = True
        widget.update(
            f"[$success]▶ continuous processing in this console[/]: {num(c.get('batches', 0))} batches, "
            f"{num(c.get('processed', 0))} processed, {num(c.get('failed', 0))} failed, "
            f"{num(c.get('rate', 0))} rows/s  [dim](c stops)[/]"
        )
