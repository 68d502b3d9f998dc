"""Pane 7, Timeline: what changed, on one time axis, newest first: SLA-breach minutes, data-quality
failures, schema changes, catalog differences and operator actions (ops/timeline.py).

`k` steps the kind shown (all, then each kind), `w` the window (1 h, 6 h, 24 h, 7 days); the list is a
DataList (`/` filter, `s`/`S` sort, `e` export, `y` copy). Operator actions are the Activity pane's
read, so they show what that pane shows the role (masked search texts).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.widgets import Static

from opsconsole.ops import timeline
from opsconsole.ops.health import RULES_BY_NAME
from opsconsole.ops.registry import Capabilities
from opsconsole.tui.format import plain, styled
from opsconsole.tui.screens.base import PaneScreen
from opsconsole.tui.state import ConsoleContext
from opsconsole.tui.widgets.chrome import set_text
from opsconsole.tui.widgets.data_list import Column, DataList
from opsconsole.tui.widgets.keyed_table import KeyedTable

BREACH_PCT = RULES_BY_NAME["sla_breach"].critical * 100  # the Monitor's alarm threshold
WINDOWS = ((60, "1 h"), (360, "6 h"), (1440, "24 h"), (10080, "7 days"))
KIND_CHOICES = (None, *timeline.KINDS)
TONES = {"critical": "error", "error": "error", "warning": "warning", "info": "secondary"}

COLUMNS = [
    Column("when", "when", 14, field="occurred_at"),
    Column("kind", "kind", 15, field=lambda r: timeline.KIND_LABELS[r["kind"]]),
    Column("subject", "what", 22, grow=48),
    Column("detail", "detail", 20, grow=400),
    Column("severity", "severity", 8, priority=1),
]


@dataclass
class TimelineData:
    events: list[timeline.Event]
    since: dt.datetime
    until: dt.datetime


class TimelineScreen(PaneScreen):
    PANE_ID = "timeline"
    PANE_KEY = "7"
    PANE_TITLE = "Timeline"
    NEEDS_RELATIONS = (
        "financial_processing_rollup",
        "data_quality_metrics",
        "schema_evolution_log",
        "data_catalog",
        "ops_audit_log",
    )
    NEEDS_FUNCTIONS = ("ops_timeline",)
    PANE_BINDINGS = [
        Binding("k", "next_kind", "Kind"),
        Binding("w", "next_window", "Window"),
        Binding("enter", "details", "Details", key_display="⏎", show=False),
    ]
    CSS = """
    TimelineScreen #timeline-title { height: 1; }
    """

    def __init__(self, context: ConsoleContext) -> None:
        super().__init__(context)
        self.kind: str | None = None
        self.window = 2  # index into WINDOWS: 24 h

    def compose_body(self) -> ComposeResult:
        yield Static("", id="timeline-title", classes="box-title")
        yield DataList(
            COLUMNS,
            name="events",
            table_id="events",
            enter="Details",
            placeholder="filter: kind, what, detail, severity",
            filter_id="timeline-filter",
        )

    def pane_mounted(self) -> None:
        self.query_one(DataList).focus_table()

    # -- data -------------------------------------------------------------------------------------
    def fetch_params(self) -> dict[str, Any]:
        return {"now": self.clock.now(), "minutes": WINDOWS[self.window][0]}

    @classmethod
    def fetch(cls, conn: psycopg.Connection, caps: Capabilities, params: dict[str, Any]) -> TimelineData:
        minutes = params["minutes"]
        until, events = timeline.recent(conn, minutes, breach_pct=BREACH_PCT)
        return TimelineData(events, until - dt.timedelta(minutes=minutes), until)

    def shown_events(self, data: TimelineData) -> list[timeline.Event]:
        """The events of the chosen kind (the list filters and sorts them further)."""
        return [e for e in data.events if self.kind is None or e.kind == self.kind]

    def render_data(self, data: TimelineData) -> None:
        clock = self.clock
        shown = self.shown_events(data)
        counts = {k: sum(1 for e in data.events if e.kind == k) for k in timeline.KINDS}
        kinds = "  ".join(
            f"[reverse b]{timeline.KIND_LABELS[k]} {counts[k]}[/]"
            if k == self.kind
            else f"{timeline.KIND_LABELS[k]} {counts[k]}"
            for k in timeline.KINDS
        )
        set_text(
            self.query_one("#timeline-title", Static),
            f"[b]{len(shown)}[/] of {len(data.events)} events, last {WINDOWS[self.window][1]}  ·  {kinds}"
            "  [dim](k kind, w window)[/]",
        )
        rows = []
        for e in shown:
            tone = TONES.get(e.severity, "secondary")
            record = {
                "occurred_at": e.occurred_at,
                "kind": e.kind,
                "subject": e.subject,
                "detail": e.detail,
                "severity": e.severity,
            }
            rows.append(
                (
                    e.key,
                    record,
                    (
                        Text(clock.stamp(e.occurred_at)[5:]),
                        styled(self.app, timeline.KIND_LABELS[e.kind], tone, bold=tone == "error"),
                        plain(e.subject),
                        Text(e.detail.replace("\n", " ")),
                        styled(self.app, e.severity, tone),
                    ),
                )
            )
        self.query_one(DataList).set_rows(rows)

    # -- kind and window ----------------------------------------------------------------------------
    def action_next_kind(self) -> None:
        self.kind = KIND_CHOICES[(KIND_CHOICES.index(self.kind) + 1) % len(KIND_CHOICES)]
        if self.data is not None:
            self.render_data(self.data)

    def action_next_window(self) -> None:
        self.window = (self.window + 1) % len(WINDOWS)
        self.request_refresh()

    def action_details(self) -> None:
        from opsconsole.tui.screens.modals import DetailScreen

        key = self.query_one("#events", KeyedTable).cursor_key
        if key is None or self.data is None:
            return
        event = next((e for e in self.data.events if e.key == key), None)
        if event is None:
            return
        self.app.push_screen(
            DetailScreen(
                f"{timeline.KIND_LABELS[event.kind]} · {self.clock.stamp(event.occurred_at)}",
                [f"[b]{escape(event.subject)}[/]  ({event.severity})", Text(event.detail)],
            )
        )

    def on_data_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        self.action_details()
