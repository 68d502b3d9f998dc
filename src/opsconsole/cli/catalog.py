"""CLI: `catalog refresh|show`, `lineage TABLE`, `lake history CUSTOMER_ID`."""

from __future__ import annotations

import click

from opsconsole.cli.base import Context, json_option, pass_ctx, wants_json
from opsconsole.output import emit


@click.group("catalog")
def catalog() -> None:
    """The data catalog: every column of the platform's tables and views."""


@catalog.command("refresh")
@json_option
@pass_ctx
def catalog_refresh(ctx: Context, as_json: bool) -> None:
    """Bring the catalog in line with the database; print what was added, changed and removed."""
    from opsconsole.ops import catalog as ops

    with ctx.connect("catalog") as conn:
        result = ops.refresh_catalog(conn)
    emit(result.as_dict(), wants_json(ctx, as_json), title="catalog refreshed")


@catalog.command("show")
@click.argument("table", required=False)
@json_option
@pass_ctx
def catalog_show(ctx: Context, table: str | None, as_json: bool) -> None:
    """List catalogued tables, or the columns of TABLE."""
    from opsconsole.ops import catalog as ops

    with ctx.connect("catalog") as conn:
        if table is None:
            emit(ops.catalog_tables(conn), wants_json(ctx, as_json), title="catalog")
            return
        rows = ops.catalog_columns(conn, table)
    if wants_json(ctx, as_json):
        emit(rows, True)
        return
    shown = [
        {
            "column": r["column_name"],
            "type": r["data_type"],
            "null": "yes" if r["is_nullable"] else "no",
            "classification": r["data_classification"],
            "owner": r["business_owner"],
            "tags": r["tags"] or None,
            "description": r["column_description"],
        }
        for r in rows
    ]
    emit(shown, False, title=f"{rows[0]['schema_name']}.{rows[0]['table_name']} ({rows[0]['object_type']})")


@click.command("lineage")
@click.argument("table")
@click.option("--up", "direction", flag_value="up", help="Only where the data comes from.")
@click.option("--down", "direction", flag_value="down", help="Only where the data goes.")
@json_option
@pass_ctx
def lineage(ctx: Context, table: str, direction: str | None, as_json: bool) -> None:
    """Flows into and out of TABLE, followed recursively (both directions unless --up/--down)."""
    from opsconsole.ops import catalog as ops

    with ctx.connect("catalog") as conn:
        rows = ops.lineage(conn, table, direction or "both")
    emit(rows, wants_json(ctx, as_json), title=f"lineage of {table}")


@click.group("lake")
def lake() -> None:
    """The lakehouse: versioned customers."""


@lake.command("history")
@click.argument("customer_id", type=int)
@json_option
@pass_ctx
def lake_history(ctx: Context, customer_id: int, as_json: bool) -> None:
    """Every version of CUSTOMER_ID, oldest first, with the fields each one changed."""
    from opsconsole.ops import catalog as ops

    with ctx.connect("lake") as conn:
        rows = ops.lake_history(conn, customer_id)
    if wants_json(ctx, as_json):
        emit(rows, True)
        return
    shown = [
        {
            "version": r["version_number"],
            "operation": r["operation_type"],
            "from": r["effective_from"],
            "to": r["effective_to"],
            "changed": ", ".join(r["changed_fields"]) if r["changed_fields"] else None,
        }
        for r in rows
    ]
    emit(shown, False, title=f"customer {customer_id}")


@lake.command("export")
@click.option("--table", "table", required=True, help="A platform table or view, e.g. lakehouse_customers.")
@click.option("--as-of", "as_of", help="An instant (e.g. 2025-03-01T12:00:00Z): the table's state then.")
@click.option(
    "--format", "fmt", type=click.Choice(["parquet", "delta"]), default="parquet", show_default=True
)
@click.argument("path", type=click.Path(dir_okay=True, writable=True))
@json_option
@pass_ctx
def lake_export(ctx: Context, table: str, as_of: str | None, fmt: str, path: str, as_json: bool) -> None:
    """Write TABLE, or its state at --as-of, to PATH (Parquet, or Delta Lake with the deltalake package)."""
    from opsconsole.ops import lake as ops

    with ctx.connect("lake") as conn:
        result = ops.export_table(conn, table, path, as_of=as_of, fmt=fmt)
    emit(result, wants_json(ctx, as_json), title="exported")


COMMANDS = [catalog, lineage, lake]
