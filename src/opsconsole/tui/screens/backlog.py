"""Pane 2, Backlog: staging rows still owed work; failed, dead-lettered and parked rows, filterable
(`/`), drillable (Enter), selectable (space), retryable (r: what the filter shows, the selection, an
error code, a batch or all), parkable (k, u brings back) and checkable before a retry (w: what if).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.widgets import Static

from opsconsole.ops import pipeline
from opsconsole.ops.registry import Capabilities
from opsconsole.tui.clock import human_duration
from opsconsole.tui.format import cell_num, num, plain, pretty_json, styled
from opsconsole.tui.screens.base import PaneScreen
from opsconsole.tui.state import ConsoleContext
from opsconsole.tui.widgets.chrome import set_text
from opsconsole.tui.widgets.data_list import Column, DataList
from opsconsole.tui.widgets.keyed_table import KeyedTable

LIMIT = 500

S = "financial_transactions_staging."
ROW_COLUMNS = [
    Column("sel", " ", 1, export=False),
    Column("id", "id", 6, field="staging_id", source=S + "staging_id"),
    Column("status", "status", 11, field="processing_status", source=S + "processing_status"),
    Column("code", "error code", 14, field="error_code", grow=40, source=S + "error_code"),
    Column("error", "error", 20, field="error_message", grow=160, source=S + "error_message"),
    Column("retries", "tries", 5, field="retry_count", priority=2, source=S + "retry_count"),
    Column("next", "next try", 9, field="next_attempt_at", priority=1, source=S + "next_attempt_at"),
    Column("batch", "batch", 10, field="batch_id", priority=3, grow=24, source=S + "batch_id"),
    Column("txn", "txn id", 10, field="transaction_id", priority=4, source=S + "transaction_id"),
]
CODE_COLUMNS = [
    Column("code", "error code", 12, field="error_code", grow=40, source=S + "error_code"),
    Column("failed", "failed", 6, source=S + "processing_status"),
    Column("dead", "dead", 5, field="dead_letter", source=S + "processing_status"),
    Column("parked", "parked", 6, field="parked", priority=2, source=S + "processing_status"),
    Column("due", "next due", 9, field="next_due", priority=1, source=S + "next_attempt_at"),
]


@dataclass
class BacklogData:
    open: dict[str, dict[str, Any]]
    codes: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    filter: str | None


class BacklogScreen(PaneScreen):
    PANE_ID = "backlog"
    PANE_KEY = "2"
    PANE_TITLE = "Backlog"
    NEEDS_RELATIONS = ("financial_transactions_staging",)
    PANE_BINDINGS = [
        Binding("enter", "details", "Details", key_display="⏎", show=False),
        Binding("space", "toggle_select", "Select"),
        Binding("escape", "clear", "Clear", show=False),
    ]

    def __init__(self, context: ConsoleContext) -> None:
        super().__init__(context)
        self.selected: set[int] = set()
        self.filter_text: str = ""
        # what the rows list was last synced from (the rows, the selection, the theme its cells are
        # coloured in), and the "next try" text each row shows: a refresh with the same rows only
        # ticks the countdowns that changed
        self._synced: tuple[list[dict[str, Any]], frozenset[int], str] | None = None
        self._next_shown: dict[str, str] = {}

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="backlog-top"):
            yield Static("", id="backlog-summary")
            with Vertical(id="codes-box"):
                yield DataList(CODE_COLUMNS, name="codes", table_id="codes", id="codes-list")
        yield Static("", id="rows-title", classes="box-title")
        yield DataList(
            ROW_COLUMNS,
            name="rows",
            table_id="rows",
            id="rows-list",
            enter="Details",
            server_filter=True,  # the database filters: a retry takes exactly the rows shown
            filter_id="filter",
            placeholder="filter: status, error code, message, batch, or an id",
        )

    def pane_mounted(self) -> None:
        self.query_one("#rows-list", DataList).focus_table()

    # -- data -----------------------------------------------------------------------------------
    def fetch_params(self) -> dict[str, Any]:
        return {"filter": self.filter_text.strip() or None}

    @classmethod
    def fetch(cls, conn: psycopg.Connection, caps: Capabilities, params: dict[str, Any]) -> BacklogData:
        flt = params.get("filter")
        return BacklogData(
            pipeline.open_rows(conn, failed_detail=True),
            pipeline.failed_by_code(conn),
            pipeline.failed_rows(conn, flt, LIMIT),
            flt,
        )

    def render_data(self, data: BacklogData) -> None:
        app = self.app
        clock = self.clock
        pending = data.open.get("pending", {})
        failed = data.open.get("failed", {})
        dead = data.open.get("dead_letter", {})
        parked = data.open.get("parked", {})
        oldest = clock.since(pending.get("oldest_ingested"))
        due = failed.get("next_due")
        due_text = "—"
        if due is not None:
            wait = (due - clock.now()).total_seconds()
            due_text = "due now" if wait <= 0 else f"in {human_duration(wait)}"
        retries = sum(int(v.get("retries") or 0) for v in data.open.values())
        set_text(
            self.query_one("#backlog-summary", Static),
            f"pending      [b]{num(pending.get('rows') or 0):>9}[/]  oldest "
            f"{human_duration(oldest) if oldest is not None else '—'}\n"
            f"failed       [b]{num(failed.get('rows') or 0):>9}[/]  next retry {due_text}\n"
            f"dead letter  [b]{num(dead.get('rows') or 0):>9}[/]  needs an operator\n"
            f"parked       [b]{num(parked.get('rows') or 0):>9}[/]  set aside\n"
            f"retries      [b]{num(retries):>9}[/]  on open rows",
        )
        self.query_one("#codes-list", DataList).set_rows(
            (
                r["error_code"],
                r,
                (
                    plain(r["error_code"]),
                    cell_num(r["failed"]),
                    styled(app, num(r["dead_letter"]), "error", justify="right")
                    if r["dead_letter"]
                    else cell_num(0),
                    cell_num(r["parked"]),
                    Text(self._due(r["next_due"])),
                ),
            )
            for r in data.codes
        )
        shown = len(data.rows)
        more = "+" if shown >= LIMIT else ""
        title = f"[b]failed, dead-lettered and parked rows[/]  {num(shown)}{more} shown"
        if data.filter:
            title += f"  [dim]filter[/] [b]{escape(data.filter)}[/]"
        if self.selected:
            title += f"  [$accent]{len(self.selected)} selected[/]"
        set_text(self.query_one("#rows-title", Static), title)
        rows_list = self.query_one("#rows-list", DataList)
        synced = (data.rows, frozenset(self.selected), app.theme)
        if self._synced == synced:
            # the same rows as last time: only "next try" counts down (a full sync of 500 rows each
            # second held the UI thread for tens of ms and delayed the key pressed meanwhile, P8)
            ticked = {}
            for r in data.rows:
                key, text = str(r["staging_id"]), self._next_text(r)
                if self._next_shown.get(key) != text:
                    ticked[key] = self._next_shown[key] = text
            rows_list.update_cells("next", {key: Text(text) for key, text in ticked.items()})
            return
        self._synced = synced
        self._next_shown = {}
        rows_list.set_rows(self._row_cells(r) for r in data.rows)

    def _due(self, due: Any) -> str:
        if due is None:
            return "—"
        wait = (due - self.clock.now()).total_seconds()
        return "due" if wait <= 0 else f"in {human_duration(wait)}"

    def _next_text(self, r: dict[str, Any]) -> str:
        return self._due(r["next_attempt_at"]) if r["processing_status"] == "failed" else "—"

    def _row_cells(self, r: dict[str, Any]) -> tuple[str, dict[str, Any], tuple[Any, ...]]:
        app = self.app
        status = r["processing_status"]
        key = str(r["staging_id"])
        self._next_shown[key] = self._next_text(r)
        return (
            key,
            r,
            (
                styled(app, "●", "accent") if r["staging_id"] in self.selected else Text(" "),
                Text(str(r["staging_id"]), justify="right"),
                styled(app, status, {"dead_letter": "error", "parked": "secondary"}.get(status, "warning")),
                plain(r["error_code"]),
                plain(r["error_message"]),
                cell_num(r["retry_count"]),
                Text(self._next_shown[key]),
                plain(r["batch_id"]),
                Text(str(r["transaction_id"]) if r["transaction_id"] is not None else "—", justify="right"),
            ),
        )

    # -- filter, selection, drill-down ------------------------------------------------------------
    def on_data_list_filter_changed(self, event: DataList.FilterChanged) -> None:
        """The rows' filter (the list's `/`): the database filters, so fetch again."""
        filtered = bool(self.filter_text.strip())
        self.filter_text = event.text
        if filtered or event.text.strip():  # closing an empty filter: no query
            self.request_refresh()

    def action_clear(self) -> None:
        """Escape with no filter open (the list clears its filter first): clear the selection."""
        if self.selected:
            self.clear_selection()

    def action_toggle_select(self) -> None:
        table = self.query_one("#rows", KeyedTable)
        key = table.cursor_key
        if key is None:
            return
        sid = int(key)
        if sid in self.selected:
            self.selected.discard(sid)
            table.update_cell(key, "sel", Text(" "))
        else:
            self.selected.add(sid)
            table.update_cell(key, "sel", styled(self.app, "●", "accent"))
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1)
        if self.data is not None:
            self.render_data(self.data)

    def clear_selection(self) -> None:
        self.selected.clear()
        if self.is_mounted and self.data is not None:
            self.render_data(self.data)

    def cursor_row_data(self) -> dict[str, Any] | None:
        if self.data is None or not self.is_mounted:
            return None
        key = self.query_one("#rows", KeyedTable).cursor_key
        return next((r for r in self.data.rows if str(r["staging_id"]) == key), None)

    def op_context(self, action_id: str) -> dict[str, Any]:
        row = self.cursor_row_data()
        return {
            "selected": sorted(self.selected),
            "filter": self.filter_text.strip() or None,
            "cursor_id": row["staging_id"] if row else None,
            "error_code": row["error_code"] if row else None,
            "batch_id": row["batch_id"] if row else None,
        }

    def on_data_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        if event.data_table.id == "rows":
            self.action_details()

    def action_details(self) -> None:
        row = self.cursor_row_data()
        if row is None:
            return
        self.run_worker(self._details(row), group="details", exclusive=True)

    async def _details(self, row: dict[str, Any]) -> None:
        from opsconsole.tui.screens.modals import DetailScreen

        def read(conn: psycopg.Connection) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
            return pipeline.staging_detail(
                conn, row["staging_id"], row["transaction_id"], row["batch_id"], row["error_code"]
            )

        try:
            full, attempts, history = await self.context.lookup(read)
        except psycopg.Error as exc:
            self.app.notify(f"Could not read staging row {row['staging_id']}: {exc}", severity="error")
            return
        clock = self.clock
        attempt_lines = [
            f"#{a['staging_id']}  {a['processing_status']}  code {a['error_code'] or '—'}  "
            f"tries {a['retry_count']}  batch {a['batch_id'] or '—'}  "
            f"ingested {clock.stamp(a['ingestion_timestamp'])}"
            for a in attempts
        ] or ["(none)"]
        history_lines = [
            f"{clock.stamp(h['occurred_at'])}  {h['actor']}  {h['action']}  {h['status']}" for h in history
        ] or ["(no operator action names this row, its batch or its error code)"]
        payload = (full or {}).get("reference_data")
        parts: list[Any] = [
            f"[b]status[/] {row['processing_status']}   [b]error[/] {escape(str(row['error_code'] or '—'))}: "
            f"{escape(str(row['error_message'] or '—'))}",
            "[b]payload (reference_data)[/]",
            Text(pretty_json(payload)),
            "[b]attempts (staging rows with this transaction_id)[/]",
            Text("\n".join(attempt_lines)),
            "[b]history (operator actions)[/]",
            Text("\n".join(history_lines)),
            "[b]the full row[/]",
            Text(pretty_json(full)),
        ]
        self.app.push_screen(DetailScreen(f"Staging row {row['staging_id']}", parts))
