"""Pane 1, Monitor: the financial pipeline at a glance, using the whole screen: throughput and p95 of the
last hour at full width, the minute table, failures by error code, each worker (who, since when,
rows/s, its current chunk), the backlog's age and a drain estimate.

A time cursor steps back through the rollup history beyond the last hour, minute by minute, for an
incident review: `[`/`]` one minute, `{`/`}` ten, Home the oldest minute kept, End back to live. The
window shown ends at the cursor's minute; the alarm (border, toast) always follows the live minutes.

An SLA breach (more than SLA_MAX_BREACH_PCT of a minute's transactions over SLA_TARGET_MS, the spec's
"95% processed within 1 second") turns the pane's border red and raises one toast per breach.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import psycopg
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from opsconsole.ops import pipeline
from opsconsole.ops.health import RULES_BY_NAME
from opsconsole.ops.registry import Capabilities
from opsconsole.tui.clock import human_duration
from opsconsole.tui.format import cell_num, ms, num, pct, plain, styled
from opsconsole.tui.screens.base import PaneScreen
from opsconsole.tui.state import ConsoleContext, ConsoleStatus
from opsconsole.tui.widgets.chrome import set_text
from opsconsole.tui.widgets.keyed_table import KeyedTable

SLA_TARGET_MS = 1000
SLA_MAX_BREACH_PCT = RULES_BY_NAME["sla_breach"].critical * 100  # the on-call threshold (ops/health)
MINUTES = 60

COLUMNS = [
    ("minute", "min", 5),
    ("total", "total", 7),
    ("processed", "processed", 9),
    ("failed", "failed", 6),
    ("pending", "pending", 7),
    ("dead", "dead", 5),
    ("avg", "avg ms", 6),
    ("p95", "p95 ms", 6),
    # the share (%) of the minute's transactions slower than the SLA: "SLA %" read as compliance
    ("sla", "breach", 6),
]
CODE_COLUMNS = [("code", "error code", 16), ("failed", "failed", 6), ("dead", "dead", 5)]
SIDE_WIDTH = 76  # the side tables (failures by code, workers) beside the minute table
# The minute table's width (each cell padded both sides, its vertical scrollbar) and the terminal
# width both need beside each other (the pane frame's border and padding, the side's margin): below
# it the side tables go under the minute table. At a fixed 120 the minute table got 39 of its 76
# columns and its headers were cut from "pending" on.
MINUTES_WIDTH = sum(width + 2 for _, _, width in COLUMNS) + 2
NARROW_BELOW = 4 + MINUTES_WIDTH + 1 + SIDE_WIDTH
WORKER_COLUMNS = [
    # a worker's loops are worker-0, worker-1, ... and worker-maintenance: cut from the start, so
    # that the part that tells them apart stays (it showed as "worker-ma…"). Not wider: at 80
    # columns the rows/s beside it would be cut
    ("worker", "worker", 10),
    ("who", "who", 8),
    ("since", "since", 6),
    ("rate", "rows/s", 6),
    ("chunk", "current chunk"),
]


def bare_ms(value: Any) -> str:
    """Milliseconds without the unit (the column header says ms), in the column's 6 characters: from
    100,000 on in thousands (k) or millions (M). Rows that waited 40 minutes showed "2,325," for
    2,325,280: the column cut the number, which then read as 2.3 s."""
    if value is None or float(value) < 99_999.5:
        return ms(value).removesuffix(" ms")
    v = float(value)
    if v < 999_500:
        return f"{v / 1000:.0f}k"
    if v < 9_950_000:
        return f"{v / 1e6:.1f}M"
    return f"{v / 1e6:,.0f}M"


@dataclass
class MonitorData:
    minutes: list[dict[str, Any]]  # the window shown (the live hour, or the hour up to the cursor)
    open: dict[str, dict[str, Any]]
    workers: list[dict[str, Any]]
    at: dt.datetime
    live: list[dict[str, Any]] = field(default_factory=list)  # the live hour, for the alarm
    codes: list[dict[str, Any]] = field(default_factory=list)
    span: dict[str, Any] = field(default_factory=dict)
    drain: pipeline.DrainEstimate | None = None
    until: dt.datetime | None = None  # the cursor's minute; None: live

    @property
    def backlog(self) -> int:
        return sum((self.open.get(s, {}).get("rows") or 0) for s in ("pending", "failed"))


def floor_minute(ts: dt.datetime) -> dt.datetime:
    return ts.replace(second=0, microsecond=0)


def series(minutes: list[dict[str, Any]], column: str, end: dt.datetime) -> list[float]:
    """One value per minute for the hour ending at `end`, oldest first; minutes with no row are 0."""
    base = floor_minute(end)
    by_minute = {floor_minute(r["minute_bucket"]): r for r in minutes}
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


def drain_text(drain: pipeline.DrainEstimate | None) -> str:
    """The drain estimate of the rows waiting for their first attempt, with the pace behind it."""
    if drain is None:
        return "drain —"
    pace = f"{num(drain.claimed_per_min)}/min out, {num(drain.arrived_per_min)}/min in"
    left = drain.seconds_left
    if drain.waiting <= 0:
        return f"drain [b]nothing waiting[/] ({pace})"
    if left is None:
        return f"drain [b][$error]not draining[/][/] ({pace})"
    return f"drain [b]~{human_duration(left)}[/] ({pace})"


class MonitorScreen(PaneScreen):
    PANE_ID = "monitor"
    PANE_KEY = "1"
    PANE_TITLE = "Monitor"
    NEEDS_RELATIONS = ("financial_processing_monitor", "financial_transactions_staging")
    PANE_BINDINGS = [
        Binding("left_square_bracket", "cursor(-1)", "Minute back", key_display="[", id="monitor.back"),
        Binding("right_square_bracket", "cursor(1)", "Minute forward", key_display="]", id="monitor.forward"),
        Binding(
            "left_curly_bracket",
            "cursor(-10)",
            "10 minutes back",
            key_display="{",
            show=False,
            id="monitor.back_ten",
        ),
        Binding(
            "right_curly_bracket",
            "cursor(10)",
            "10 minutes forward",
            key_display="}",
            show=False,
            id="monitor.forward_ten",
        ),
        # priority: the minute table would take Home/End to scroll itself
        Binding("home", "cursor_oldest", "Oldest minute", key_display="Home", show=False, priority=True),
        Binding("end", "cursor_live", "Live", key_display="End", show=False, priority=True),
    ]

    CSS = """
    MonitorScreen #kpi { height: auto; margin-bottom: 0; }
    MonitorScreen #review { height: auto; display: none; background: $warning 20%; }
    MonitorScreen.-review #review { display: block; }
    MonitorScreen #sparks { height: auto; layout: vertical; margin: 0; }
    MonitorScreen .spark-row { height: 2; }
    MonitorScreen .spark-label { height: 1; }
    MonitorScreen Sparkline { height: 1; width: 1fr; }
    MonitorScreen #lower { height: 1fr; }
    MonitorScreen #minutes { width: 1fr; height: 1fr; }
    MonitorScreen #side { width: SIDE_WIDTH; height: 1fr; margin-left: 1; }
    MonitorScreen #side > Vertical { height: 1fr; }
    MonitorScreen #codes-box { height: 14; }
    MonitorScreen #codes, MonitorScreen #workers { height: 1fr; }
    MonitorScreen .side-label { height: 1; color: $text-muted; }
    MonitorScreen.-stacked #lower { layout: vertical; }
    MonitorScreen.-stacked #minutes { height: 1fr; min-height: 4; }
    MonitorScreen.-stacked #side { width: 1fr; height: 6; margin-left: 0; layout: horizontal; }
    MonitorScreen.-stacked #codes-box { width: 37; height: 1fr; }
    MonitorScreen.-stacked #workers-box { width: 1fr; height: 1fr; margin-left: 1; }
    MonitorScreen.-tall .spark-row { height: 5; }
    MonitorScreen.-tall Sparkline { height: 4; }
    """.replace("SIDE_WIDTH", str(SIDE_WIDTH))

    def __init__(self, context: ConsoleContext) -> None:
        super().__init__(context)
        self.breach: dict[str, Any] | None = None
        self.cursor: dt.datetime | None = None  # the minute under review; None: live

    def compose_body(self) -> ComposeResult:
        yield Static("", id="review")
        yield Static("", id="kpi")
        yield Static("", id="continuous")
        with Vertical(id="sparks"):
            with Vertical(classes="spark-row"):
                yield Static("processed per minute", id="tp-label", classes="spark-label")
                yield Sparkline([], id="tp-spark")
            with Vertical(classes="spark-row"):
                yield Static("p95 processing ms", id="p95-label", classes="spark-label")
                yield Sparkline([], id="p95-spark")
        with Horizontal(id="lower"):
            yield KeyedTable(COLUMNS, id="minutes", cursor_type="none")
            with Vertical(id="side"):
                with Vertical(id="codes-box"):
                    yield Static("failures by error code (now)", classes="side-label")
                    yield KeyedTable(CODE_COLUMNS, id="codes", cursor_type="none")
                with Vertical(id="workers-box"):
                    yield Static("workers", id="workers-label", classes="side-label")
                    yield KeyedTable(WORKER_COLUMNS, id="workers", cursor_type="none")

    def pane_mounted(self) -> None:
        self._fit(self.size.width, self.size.height)

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.width, event.size.height)

    def _fit(self, width: int, height: int) -> None:
        # Its own class names: PaneScreen's HORIZONTAL_BREAKPOINTS own -narrow/-wide (at 110 columns),
        # and sharing them made the two flip each other's classes on mount, on resize and at the first
        # status pushes between 110 and NARROW_BELOW columns or under 45 lines: a restyle each time.
        self.set_class(0 < width < NARROW_BELOW, "-stacked")
        self.set_class(height >= 45, "-tall")

    # -- data -------------------------------------------------------------------------------------
    @classmethod
    def fetch(cls, conn: psycopg.Connection, caps: Capabilities, params: dict[str, Any]) -> MonitorData:
        until = params.get("until")
        live = pipeline.monitor_minutes(conn)
        opened = pipeline.open_rows(conn)
        data = MonitorData(
            minutes=pipeline.monitor_minutes(conn, until) if until is not None else live,
            open=opened,
            workers=pipeline.worker_sessions(conn),
            at=params["now"],
            live=live,
            codes=pipeline.failed_by_code(conn),
            span=pipeline.monitor_span(conn),
            until=until,
        )
        data.drain = pipeline.drain_estimate(conn, int(opened.get("pending", {}).get("rows") or 0))
        return data

    def fetch_params(self) -> dict[str, Any]:
        return {"now": self.clock.now(), "until": self.cursor}

    # -- the time cursor ----------------------------------------------------------------------------
    def _newest(self) -> dt.datetime:
        span = self.data.span if self.data is not None else {}
        return floor_minute(span.get("now") or self.clock.now())

    def _oldest(self) -> dt.datetime | None:
        span = self.data.span if self.data is not None else {}
        oldest = span.get("oldest_minute")
        return floor_minute(oldest) if oldest is not None else None

    def move_cursor(self, to: dt.datetime | None) -> None:
        newest = self._newest()
        if to is not None and to >= newest:
            to = None
        oldest = self._oldest()
        if to is not None and oldest is not None and to < oldest:
            to = oldest
        if to == self.cursor:
            return
        self.cursor = to
        self.set_class(to is not None, "-review")
        self._show_review()
        self.request_refresh()

    def action_cursor(self, minutes: int) -> None:
        start = self.cursor if self.cursor is not None else self._newest()
        self.move_cursor(start + dt.timedelta(minutes=int(minutes)))

    def action_cursor_oldest(self) -> None:
        oldest = self._oldest()
        if oldest is not None:
            self.move_cursor(oldest)

    def action_cursor_live(self) -> None:
        self.move_cursor(None)

    def _show_review(self) -> None:
        found = self.query("#review")
        if not found:
            return
        widget = found.first(Static)
        if self.cursor is None:
            set_text(widget, "")
            return
        back = (self._newest() - self.cursor).total_seconds()
        at = self.clock.stamp(self.cursor)[:16] if back >= 12 * 3600 else self.clock.time(self.cursor, False)
        set_text(
            widget,
            f"[b]⏪ review {at}[/], {human_duration(back)} back · backlog/workers: now · "
            f"[b]\\[ ][/] [b]{{ }}[/] [b]Home[/] [b]End[/]",
        )

    # -- rendering -----------------------------------------------------------------------------------
    def render_data(self, data: MonitorData) -> None:
        app = self.app
        clock = self.clock
        pending = data.open.get("pending", {})
        failed = data.open.get("failed", {})
        dead = data.open.get("dead_letter", {})
        oldest = clock.since(pending.get("oldest_ingested"))
        workers = data.workers
        claim = [w for w in workers if w["loop"] == "claim"]  # a maintenance loop processes nothing
        busy = sum(1 for w in claim if w["state"] == "active")
        lines = []
        latest = data.minutes[0] if data.minutes else None
        if latest is not None:
            r = latest
            lines.append(
                f"[b]{clock.time(r['minute_bucket'], seconds=False)}[/]  "
                f"processed [b]{num(r['processed_count'])}[/]  failed [b]{num(r['failed_count'])}[/]  "
                f"pending [b]{num(r['pending_count'])}[/]  p95 [b]{ms(r['p95_processing_ms'])}[/]  "
                # (a breach rate: a bare "SLA 100.0%" read as every transaction within the SLA)
                f"{'breach' if self.size.width < 100 else 'SLA breach'} [b]{pct(r['sla_breach_rate'])}[/]"
            )
        elif data.until is not None:
            lines.append(f"[dim]no transactions in the hour up to {clock.time(data.until, seconds=False)}[/]")
        else:
            lines.append("[dim]no transactions ingested in the last hour[/]")
        lines.append(
            f"backlog [b]{num(data.backlog)}[/] ({num(pending.get('rows') or 0)} pending, "
            f"{num(failed.get('rows') or 0)} retrying, {num(dead.get('rows') or 0)} dead)  "
            f"oldest pending [b]{human_duration(oldest) if oldest is not None else '—'}[/]"
        )
        lines.append(
            drain_text(data.drain)
            + ("  [dim](backlog, workers, codes: now)[/]" if data.until is not None else "")
        )
        set_text(
            self.query_one("#workers-label", Static),
            f"workers [b]{num(len(claim))}[/] ({num(busy)} busy)"
            + (" [dim]+ maintenance[/]" if len(claim) < len(workers) else ""),
        )
        set_text(self.query_one("#kpi", Static), "\n".join(lines))
        self.update_counters()
        self._show_review()

        end = data.until if data.until is not None else data.at
        throughput = series(data.minutes, "processed_count", end)
        p95 = series(data.minutes, "p95_processing_ms", end)
        self.query_one("#tp-spark", Sparkline).data = throughput
        self.query_one("#p95-spark", Sparkline).data = p95
        window = "last hour" if data.until is None else f"hour up to {clock.time(data.until, seconds=False)}"
        set_text(
            self.query_one("#tp-label", Static),
            f"processed per minute, {window}  "
            f"[dim]max {num(max(throughput))}  total {num(sum(throughput))}[/]",
        )
        set_text(
            self.query_one("#p95-label", Static),
            f"p95 processing ms, {window}  [dim]max {ms(max(p95))}  SLA {SLA_TARGET_MS} ms[/]",
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
                        Text(bare_ms(r["avg_processing_ms"]), justify="right"),
                        Text(bare_ms(r["p95_processing_ms"]), justify="right"),
                        styled(app, pct(sla).removesuffix("%"), "error", bold=True, justify="right")
                        if over
                        else Text(pct(sla).removesuffix("%"), justify="right"),
                    ),
                )
            )
        self.query_one("#minutes", KeyedTable).sync(rows)
        self.query_one("#codes", KeyedTable).sync(
            (
                str(c["error_code"]),
                (
                    plain(c["error_code"], 16),
                    styled(app, num(c["failed"]), "warning", justify="right") if c["failed"] else cell_num(0),
                    styled(app, num(c["dead_letter"]), "error", justify="right")
                    if c["dead_letter"]
                    else cell_num(0),
                ),
            )
            for c in data.codes
        )
        self.query_one("#workers", KeyedTable).sync(
            (str(w["pid"]), self._worker_cells(w, data.at)) for w in workers
        )
        self.set_breach(breach_of(data.live))

    def _worker_cells(self, w: dict[str, Any], now: dt.datetime) -> tuple[Any, ...]:
        clock = self.clock
        name = str(w["application_name"]).removeprefix("opsconsole:")
        since = clock.since(w["backend_start"])
        if w["chunk_started"] is not None:
            running = clock.since(w["chunk_started"]) or 0
            chunk = styled(self.app, f"busy {human_duration(running) if running >= 1 else '<1s'}", "success")
        else:
            chunk = Text("idle")
        if w["last_chunk_rows"] is not None:
            chunk.append(f" · last {num(w['last_chunk_rows'])} rows {ms(w['last_chunk_ms'])}")
        return (
            plain(name, 10, keep_end=True),
            plain(w["actor"], 8),
            Text(human_duration(since) if since is not None else "—"),
            cell_num(round((w["claimed_last_minute"] or 0) / 60))
            if w["loop"] == "claim"
            else Text("—", justify="right"),  # a maintenance loop claims nothing
            chunk,
        )

    def set_breach(self, row: dict[str, Any] | None) -> None:
        was = self.breach
        self.breach = row
        self.query_one("#pane-frame").set_class(row is not None, "-breach")
        if row is not None and was is None:
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
        self._fit(self.size.width, self.size.height)  # a resize while another pane showed
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
            set_text(widget, "")
            widget.display = False
            return
        c = job.counters
        widget.display = True
        set_text(
            widget,
            f"[$success]▶ continuous processing in this console[/]: {num(c.get('batches', 0))} batches, "
            f"{num(c.get('processed', 0))} processed, {num(c.get('failed', 0))} failed, "
            f"{num(c.get('rate', 0))} rows/s  [dim](c stops)[/]",
        )
