"""Pane 5, Catalog & lineage: schema > table > columns with type, nullability and classification;
the highlighted table's lineage upstream and downstream; refresh the catalog (r) and see what changed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import psycopg
from rich import box
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.widgets import Static, Tree
from textual.widgets.tree import TreeNode

from opsconsole.errors import OpsError
from opsconsole.ops import catalog
from opsconsole.ops.registry import Capabilities
from opsconsole.output import format_cell
from opsconsole.tui.format import tone
from opsconsole.tui.screens.base import PaneScreen
from opsconsole.tui.state import ConsoleContext
from opsconsole.tui.widgets.chrome import set_text
from opsconsole.tui.widgets.data_list import Column, DataList

CLASS_TONE = {"restricted": "error", "confidential": "warning", "internal": "accent", "public": "success"}
D = "data_catalog."
COLUMNS = [
    Column("column", "column", 14, field="column_name", grow=40, source=D + "column_name"),
    Column("type", "type", 10, field="data_type", priority=1, grow=30, source=D + "data_type"),
    Column(
        "null",
        "null",
        4,
        field=lambda c: "yes" if c["is_nullable"] else "no",
        priority=2,
        source=D + "is_nullable",
    ),
    Column("class", "class", 12, field="data_classification", source=D + "data_classification"),
]


@dataclass
class CatalogData:
    columns: list[dict[str, Any]]

    def signature(self) -> tuple:
        return tuple(
            (
                c["schema_name"],
                c["table_name"],
                c["column_name"],
                c["data_type"],
                c["is_nullable"],
                c["data_classification"],
            )
            for c in self.columns
        )


class CatalogScreen(PaneScreen):
    PANE_ID = "catalog"
    PANE_KEY = "5"
    PANE_TITLE = "Catalog & lineage"
    NEEDS_RELATIONS = ("data_catalog",)

    def __init__(self, context: ConsoleContext) -> None:
        super().__init__(context)
        self._signature: tuple | None = None
        self.current_table: tuple[str, str] | None = None

    def compose_body(self) -> ComposeResult:
        yield Static("", id="catalog-summary")
        with Horizontal(id="catalog-split"):
            tree: Tree[tuple[str, ...]] = Tree("catalog", id="catalog-tree")
            tree.show_root = False
            yield tree
            with Vertical(id="catalog-side"):
                yield Static("Highlight a table to see its columns and lineage.", id="table-info")
                yield DataList(COLUMNS, name="columns", table_id="table-columns", id="columns-list")
                with VerticalScroll(id="lineage-box"):
                    yield Static("", id="lineage")

    def pane_mounted(self) -> None:
        self.query_one("#catalog-tree", Tree).focus()

    @classmethod
    def fetch(cls, conn: psycopg.Connection, caps: Capabilities, params: dict[str, Any]) -> CatalogData:
        return CatalogData(catalog.all_columns(conn))

    # -- the tree -------------------------------------------------------------------------------
    def column_label(self, c: dict[str, Any]) -> Text:
        label = Text(c["column_name"], style="bold")
        label.append(f"  {c['data_type'] or '?'}", style="dim")
        label.append(
            "  NULL" if c["is_nullable"] else "  NOT NULL", style="" if c["is_nullable"] else "italic"
        )
        cls = c["data_classification"]
        if cls:
            label.append(f"  [{cls}]", style=tone(self.app, CLASS_TONE.get(cls, "secondary")))
        return label

    def render_data(self, data: CatalogData) -> None:
        tables: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for c in data.columns:
            tables[(c["schema_name"], c["table_name"])].append(c)
        schemas = sorted({s for s, _ in tables})
        last = max((c["last_updated"] for c in data.columns if c["last_updated"]), default=None)
        set_text(
            self.query_one("#catalog-summary", Static),
            f"[b]{len(schemas)}[/] schemas, [b]{len(tables)}[/] tables, [b]{len(data.columns)}[/] columns  "
            f"[dim]catalogue updated[/] {self.clock.ago(last)}",
        )
        signature = data.signature()
        if signature == self._signature:
            return
        self._signature = signature
        tree: Tree[tuple[str, ...]] = self.query_one("#catalog-tree", Tree)
        expanded = {node.data for node in self._walk(tree.root) if node.is_expanded and node.data}
        cursor = tree.cursor_node.data if tree.cursor_node is not None else None
        first_build = not tree.root.children
        tree.clear()
        target: TreeNode | None = None
        first_table: TreeNode | None = None
        for schema in schemas:
            snode = tree.root.add(Text(schema, style="bold"), data=("schema", schema))
            if ("schema", schema) in expanded or (first_build and schema == "public"):
                snode.expand()
            for (s, table), cols in sorted(tables.items()):
                if s != schema:
                    continue
                tnode = snode.add(
                    Text.assemble(table, (f"  {len(cols)} cols", "dim")), data=("table", s, table)
                )
                if ("table", s, table) in expanded:
                    tnode.expand()
                if first_table is None and snode.is_expanded:
                    first_table = tnode
                if cursor == ("table", s, table):
                    target = tnode
                for c in cols:
                    leaf = tnode.add_leaf(self.column_label(c), data=("column", s, table, c["column_name"]))
                    if cursor == ("column", s, table, c["column_name"]):
                        target = leaf
                if cursor == ("schema", schema):
                    target = snode
        if target is None and first_build:
            target = first_table  # open on the first table, its columns and lineage beside it
        if target is not None:
            self.call_after_refresh(tree.move_cursor, target)
        if self.current_table is not None:
            self.show_table(*self.current_table, reload_lineage=False)

    def _walk(self, node: TreeNode) -> list[TreeNode]:
        out = [node]
        for child in node.children:
            out.extend(self._walk(child))
        return out

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        data = event.node.data
        if not data or data[0] == "schema":
            return
        schema, table = data[1], data[2]
        if (schema, table) != self.current_table:
            self.show_table(schema, table)

    # -- the side panel -------------------------------------------------------------------------
    def show_table(self, schema: str, table: str, reload_lineage: bool = True) -> None:
        self.current_table = (schema, table)
        cols = [
            c
            for c in (self.data.columns if self.data else [])
            if (c["schema_name"], c["table_name"]) == (schema, table)
        ]
        self.query_one("#table-info", Static).update(
            Text.assemble((f"{schema}.{table}", "bold"), f"  {len(cols)} columns")
        )
        rows = []
        for c in cols:
            cls = c["data_classification"] or "—"
            rows.append(
                (
                    c["column_name"],
                    c,
                    (
                        c["column_name"],
                        c["data_type"] or "?",
                        "yes" if c["is_nullable"] else "no",
                        Text(cls, style=tone(self.app, CLASS_TONE.get(cls, "secondary"))),
                    ),
                )
            )
        self.query_one("#columns-list", DataList).set_rows(rows)
        if reload_lineage:
            self.run_worker(self._lineage(schema, table), group="lineage", exclusive=True)

    async def _lineage(self, schema: str, table: str) -> None:
        target = self.query_one("#lineage", Static)
        caps = self.status.caps if self.status is not None else None
        reason = (
            caps.why_not_callable(("lineage_upstream", "lineage_downstream")) if caps else "not connected"
        )
        if reason:
            target.update(f"[dim]lineage: not available on this database: {escape(reason)}[/]")
            return
        name = table if schema == "public" else f"{schema}.{table}"

        try:
            flows = await self.context.lookup(lambda conn: catalog.lineage(conn, name, "both"))
        except (psycopg.Error, OpsError) as exc:
            target.update(f"[$error]lineage of {escape(name)} failed: {escape(str(exc))}[/]")
            return
        if self.current_table != (schema, table):
            return
        up = [{k: v for k, v in r.items() if k != "direction"} for r in flows if r["direction"] == "up"]
        down = [{k: v for k, v in r.items() if k != "direction"} for r in flows if r["direction"] == "down"]
        target.update(lineage_table(name, up, down))

    def show_changes(self, diff: dict[str, list[str]]) -> None:
        from opsconsole.tui.screens.modals import DetailScreen

        parts: list[Any] = []
        for kind in ("added", "removed", "changed"):
            names = diff.get(kind, [])
            parts.append(f"[b]{kind}[/] ({len(names)})")
            parts.append(
                Text("\n".join(names[:200]) + ("\n…" if len(names) > 200 else "") if names else "(none)")
            )
        self._signature = None  # rebuild the tree on the next refresh
        self.app.push_screen(DetailScreen("What the catalog refresh changed", parts))


def lineage_table(name: str, up: list[dict[str, Any]], down: list[dict[str, Any]]) -> Table:
    """Flows into and out of a table: depth, source -> target, pipeline (and how, dimmed)."""
    grid = Table(title=f"lineage of {name}", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    grid.add_column("", no_wrap=True)
    grid.add_column("hop", justify="right", no_wrap=True)
    grid.add_column("flow", overflow="fold")
    grid.add_column("pipeline", overflow="fold")
    for direction, rows in (("upstream", up), ("downstream", down)):
        if not rows:
            grid.add_row(direction, "", Text("(none)", style="dim"), "")
        for r in rows:
            if "source_table" in r and "target_table" in r:
                flow = Text.assemble(str(r["source_table"]), (" → ", "bold"), str(r["target_table"]))
                if r.get("transformation_logic"):
                    flow.append(f"\n{r['transformation_logic']}", style="dim")
                grid.add_row(direction, str(r.get("depth") or ""), flow, str(r.get("pipeline_name") or ""))
            else:
                grid.add_row(direction, "", "  ".join(f"{k}={format_cell(v)}" for k, v in r.items()), "")
    return grid
