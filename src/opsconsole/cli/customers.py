"""`opsconsole customer search|show` and `opsconsole c360 refresh|status`."""

from __future__ import annotations

from typing import Any

import click

from opsconsole.cli.base import Context, json_option, pass_ctx, wants_json
from opsconsole.output import console, emit

# The 360 fields a person reads first, in this order; the rest follow.
PROFILE_FIRST = (
    "customer_id",
    "customer_uuid",
    "first_name",
    "last_name",
    "email",
    "phone",
    "source_system",
    "golden_customer_id",
    "duplicate_of",
    "value_segment",
    "activity_segment",
    "engagement_segment",
    "total_orders",
    "total_lifetime_value",
    "orders_30d",
    "orders_90d",
    "last_order_date",
    "days_since_last_order",
    "customer_age_days",
)
PROFILE_HIDDEN = {"email_norm"}


@click.group("customer")
def customer() -> None:
    """Find customers and show their 360 view."""


@customer.command("search")
@click.argument("text")
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="Most rows to show."
)
@json_option
@pass_ctx
def customer_search(ctx: Context, text: str, limit: int, as_json: bool) -> None:
    """Ranked search by name, email or phone fragment; an id or uuid finds that customer."""
    from opsconsole.ops import customers

    with ctx.connect("customers") as conn:
        rows = customers.search(conn, text, limit)
    if wants_json(ctx, as_json):
        emit(rows, True)
        return
    table = [
        {
            "id": r["customer_id"],
            "name": " ".join(p for p in (r["first_name"], r["last_name"]) if p),
            "email": r["email"],
            "phone": r["phone"],
            "match": r["match_kind"],
            "score": round(float(r["score"]), 2),
            "orders": r["total_orders"],
            "segment": r["value_segment"],
        }
        for r in rows
    ]
    emit(table, False, title=f"customers matching {text!r}")


@customer.command("show")
@click.argument("ref", metavar="ID")
@click.option("--recent", default=10, show_default=True, type=click.IntRange(1, 1000), help="Rows per list.")
@json_option
@pass_ctx
def customer_show(ctx: Context, ref: str, recent: int, as_json: bool) -> None:
    """One customer (by id or uuid): the 360 row and recent orders, events and transactions."""
    from opsconsole.ops import customers

    with ctx.connect("customers") as conn:
        data = customers.show(conn, ref, recent)
    if wants_json(ctx, as_json):
        emit(data, True)
        return
    c360 = data["customer_360"]
    if c360 is None:
        emit(data["profile"], False, title=f"customer {data['customer_id']} (CRM record)")
        console.print(
            "Not in customer 360 yet: its first refresh is pending (`opsconsole c360 refresh`).",
            highlight=False,
        )
    else:
        emit(_profile(c360), False, title=f"customer {data['customer_id']}: 360")
        if data["refresh_pending"]:
            console.print("A change to this customer is queued; the next refresh updates this row.")
    if data["linked_records"]:
        emit(data["linked_records"], False, title="same person in other records (normalised email)")
    emit(data["recent_orders"], False, title="recent orders")
    emit(data["recent_events"], False, title="recent events")
    emit(data["recent_transactions"], False, title="recent transactions (failed and dead-lettered first)")


def _profile(row: dict[str, Any]) -> dict[str, Any]:
    first = {k: row[k] for k in PROFILE_FIRST if k in row}
    rest = {k: v for k, v in row.items() if k not in first and k not in PROFILE_HIDDEN}
    return {**first, **rest}


@click.group("c360")
def c360() -> None:
    """Customer 360 upkeep: refresh and status."""


@c360.command("refresh")
@click.option("--full", is_flag=True, help="Recompute every customer, not only the changed ones.")
@json_option
@pass_ctx
def c360_refresh(ctx: Context, full: bool, as_json: bool) -> None:
    """Recompute the customers whose sources changed (or all of them with --full)."""
    from opsconsole.ops import customers

    with ctx.connect("c360-refresh") as conn:
        result = customers.refresh(conn, full=full)
    if wants_json(ctx, as_json):
        emit(result, True)
        return
    seconds = result["refresh_duration"].total_seconds()
    click.echo(
        f"customer 360 {result['mode']} refresh: {result['rows_processed']} row(s) processed "
        f"({result['rows_upserted']} written, {result['rows_deleted']} removed) from "
        f"{result['queue_entries']} queued change(s) in {seconds * 1000:.1f} ms."
    )


@c360.command("status")
@json_option
@pass_ctx
def c360_status(ctx: Context, as_json: bool) -> None:
    """What is queued for the next refresh, and how the last one went."""
    from opsconsole.ops import customers

    with ctx.connect("customers") as conn:
        row = customers.status(conn)
    emit(row, wants_json(ctx, as_json), title="customer 360")


COMMANDS = [customer, c360]
