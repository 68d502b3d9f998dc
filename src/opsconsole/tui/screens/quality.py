"""Pane 3, Data quality: the latest result of every rule (failing first), a trend of its recent
scores, run all checks (r) or the rule under the cursor (o), and a rule's history on Enter."""

from __future__ import annotations

from typing import Any

import psycopg
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from opsconsole.ops import dq
from opsconsole.ops.registry import Capabilities
from opsconsole.tui.format import num, plain, pretty_json, spark, styled, summarize
from opsconsole.tui.screens.base import PaneScreen
from opsconsole.tui.widgets.chrome import set_text
from opsconsole.tui.widgets.data_list import Column, DataList
from opsconsole.tui.widgets.keyed_table import KeyedTable

R = "dq_rule_definitions."
M = "data_quality_metrics."
COLUMNS = [
    Column("status", "status", 9, source=M + "status"),
    Column("rule", "rule", 26, field="rule_name", grow=60, source=R + "rule_name"),
    Column("table", "table", 12, field="table_name", priority=2, grow=40, source=R + "table_name"),
    Column("score", "score", 7, source=M + "metric_value"),
    Column("threshold", "threshold", 9, field="threshold_value", priority=3, source=R + "threshold_value"),
    Column("severity", "severity", 8, priority=1, source=R + "severity"),
    Column("trend", "trend", 10, field="recent", priority=4, export=False),
    Column("last", "last run", 9, field="check_timestamp", priority=3, source=M + "check_timestamp"),
]
FAILING = ("fail", "error")
SEVERITY_TONE = {"critical": "error", "error": "error", "warning": "warning", "info": "foreground"}


def score_text(value: Any) -> str:
    return "—" if value is None else f"{float(value) * 100:.1f}%"


class QualityScreen(PaneScreen):
    PANE_ID = "quality"
    PANE_KEY = "3"
    PANE_TITLE = "Data quality"
    NEEDS_RELATIONS = ("dq_rule_definitions", "data_quality_metrics")
    PANE_BINDINGS = [Binding("enter", "history", "History", key_display="⏎", show=False)]

    def compose_body(self) -> ComposeResult:
        yield Static("", id="dq-summary")
        yield DataList(COLUMNS, name="rules", table_id="rules", enter="History")

    def pane_mounted(self) -> None:
        self.query_one(DataList).focus_table()

    @classmethod
    def fetch(cls, conn: psycopg.Connection, caps: Capabilities, params: dict[str, Any]) -> Any:
        return dq.latest_results(conn)

    def render_data(self, data: list[dict[str, Any]]) -> None:
        app = self.app
        clock = self.clock
        failing = [r for r in data if r["status"] in FAILING]
        never = [r for r in data if r["status"] is None]
        severe = [r for r in failing if r["severity"] in ("critical", "error")]
        last = max((r["check_timestamp"] for r in data if r["check_timestamp"]), default=None)
        summary = (
            f"[b]{num(len(data))}[/] rules: "
            + (f"[$error b]{len(failing)} failing[/]" if failing else "[$success]none failing[/]")
            + (f" ([$error]{len(severe)} critical/error[/])" if severe else "")
            + f", {len(data) - len(failing) - len(never)} passing"
            + (f", {len(never)} never run" if never else "")
            + f"  [dim]last run[/] {clock.ago(last)}"
        )
        set_text(self.query_one("#dq-summary", Static), summary)
        rows = []
        for r in data:
            status = r["status"] or "never run"
            tone = "error" if status in FAILING else ("secondary" if r["status"] is None else "success")
            if status == "warn":
                tone = "warning"
            recent = [float(v) if v is not None else None for v in (r["recent"] or [])]
            rows.append(
                (
                    r["rule_name"],
                    r,
                    (
                        styled(app, status.upper() if r["status"] else status, tone, bold=tone == "error"),
                        plain(r["rule_name"] + ("" if r["is_active"] else " (inactive)")),
                        plain(r["table_name"]),
                        Text(score_text(r["score"]), justify="right"),
                        Text(score_text(r["threshold_value"]), justify="right"),
                        styled(
                            app, r["severity"] or "—", SEVERITY_TONE.get(r["severity"] or "", "secondary")
                        ),
                        Text(spark(recent, 10)),
                        Text(clock.ago(r["check_timestamp"]) if r["check_timestamp"] else "—"),
                    ),
                )
            )
        self.query_one(DataList).set_rows(rows)

    def op_context(self, action_id: str) -> dict[str, Any]:
        if not self.is_mounted:
            return {}
        return {"rule_name": self.query_one("#rules", KeyedTable).cursor_key}

    def on_data_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        self.action_history()

    def action_history(self) -> None:
        rule = self.query_one("#rules", KeyedTable).cursor_key
        if rule:
            self.run_worker(self._history(rule), group="details", exclusive=True)

    async def _history(self, rule: str) -> None:
        from opsconsole.tui.screens.modals import DetailScreen

        try:
            history = await self.context.lookup(lambda conn: dq.recent_results(conn, rule))
        except psycopg.Error as exc:
            self.app.notify(f"Could not read the history of {rule}: {exc}", severity="error")
            return
        clock = self.clock
        rule_row = next((r for r in (self.data or []) if r["rule_name"] == rule), {})
        lines = [
            f"{clock.stamp(h.get('check_timestamp'))}  {h.get('status') or '—':5}  "
            f"score {score_text(h.get('metric_value')):>7}"
            f"  threshold {score_text(h.get('threshold_value')):>7}  "
            f"{h.get('message') or summarize(h.get('details'), 60).plain}"
            for h in history
        ] or ["(this rule has never run)"]
        parts: list[Any] = [
            f"[b]{rule}[/] on {rule_row.get('table_name', '?')}  ({rule_row.get('rule_type', '?')}, "
            f"severity {rule_row.get('severity', '?')})",
            Text(
                spark(
                    [
                        float(h["metric_value"])
                        for h in reversed(history)
                        if h.get("metric_value") is not None
                    ],
                    50,
                )
            ),
            Text("\n".join(lines)),
        ]
        if history:
            parts += ["[b]the latest result in full[/]", Text(pretty_json(history[0]))]
        self.app.push_screen(DetailScreen(f"History of {rule}", parts))
