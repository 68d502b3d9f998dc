"""Pane 6, Activity: the operator audit log (who, what, scope, result, when), newest first."""

from __future__ import annotations

from typing import Any

import psycopg
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding

from opsconsole.ops import audit
from opsconsole.ops.registry import Capabilities
from opsconsole.tui.format import plain, pretty_json, styled, summarize
from opsconsole.tui.screens.base import PaneScreen
from opsconsole.tui.widgets.data_list import Column, DataList
from opsconsole.tui.widgets.keyed_table import KeyedTable

LIMIT = 200

A = "ops_audit_log."
COLUMNS = [
    Column("when", "when", 8, field="occurred_at", source=A + "occurred_at"),
    Column("ago", "ago", 11, field="occurred_at", priority=5, export=False),
    Column("actor", "who", 10, priority=1, grow=24, source=A + "actor"),
    Column("action", "action", 20, grow=64, source=A + "action"),
    Column("scope", "scope", 12, field="arguments", priority=3, grow=200, source=A + "arguments"),
    Column("status", "status", 9, source=A + "status"),
    Column("result", "result", 12, priority=2, grow=200, source=A + "result"),
    Column("ms", "ms", 6, field="duration_ms", priority=4, source=A + "duration_ms"),
]


def result_cell(r: dict[str, Any]) -> Text:
    """ok: the result; otherwise what went wrong (the error, else the reason)."""
    result = r["result"]
    if r["status"] == "ok":
        return summarize(result, 200)
    error = result.get("error") if isinstance(result, dict) else None
    return plain(error or r["reason"] or result, 200)


class ActivityScreen(PaneScreen):
    PANE_ID = "activity"
    PANE_KEY = "6"
    PANE_TITLE = "Activity"
    NEEDS_RELATIONS = ("ops_audit_log",)
    PANE_BINDINGS = [Binding("enter", "details", "Details", key_display="⏎", show=False)]

    def compose_body(self) -> ComposeResult:
        yield DataList(COLUMNS, name="actions", table_id="audit", enter="Details")

    def pane_mounted(self) -> None:
        self.query_one(DataList).focus_table()

    @classmethod
    def fetch(cls, conn: psycopg.Connection, caps: Capabilities, params: dict[str, Any]) -> Any:
        return audit.recent(conn, LIMIT)

    def render_data(self, data: list[dict[str, Any]]) -> None:
        clock = self.clock
        tones = {"ok": "success", "error": "error", "cancelled": "warning", "denied": "error"}
        rows = []
        for r in data:
            status = r["status"]
            rows.append(
                (
                    str(r["audit_id"]),
                    r,
                    (
                        Text(clock.time(r["occurred_at"])),
                        Text(clock.ago(r["occurred_at"])),
                        plain(r["actor"]),
                        plain(r["action"]),
                        summarize(r["arguments"], 200),
                        styled(self.app, status, tones.get(status, "secondary"), bold=status != "ok"),
                        result_cell(r),
                        Text(
                            f"{float(r['duration_ms']):,.0f}" if r["duration_ms"] is not None else "—",
                            justify="right",
                        ),
                    ),
                )
            )
        self.query_one(DataList).set_rows(rows)

    def action_details(self) -> None:
        from opsconsole.tui.screens.modals import DetailScreen

        table = self.query_one("#audit", KeyedTable)
        key = table.cursor_key
        if key is None or not self.data:
            return
        row = next((r for r in self.data if str(r["audit_id"]) == key), None)
        if row is None:
            return
        clock = self.clock
        head = (
            f"[b]{row['action']}[/] by [b]{row['actor']}[/] from {row['application_name'] or '—'}\n"
            f"at {clock.stamp(row['occurred_at'])} ({clock.ago(row['occurred_at'])}), status "
            f"[b]{row['status']}[/], {row['duration_ms'] or '—'} ms\nreason: {row['reason'] or '—'}"
        )
        self.app.push_screen(
            DetailScreen(
                f"Audit #{row['audit_id']}",
                [
                    head,
                    "[b]arguments[/]",
                    Text(pretty_json(row["arguments"])),
                    "[b]result[/]",
                    Text(pretty_json(row["result"])),
                ],
            )
        )

    def on_data_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        self.action_details()
