"""Pane 4, Customers: search as you type (name, email, phone, id or uuid); Enter opens the customer:
the customer-360 row, recent orders, events and transactions, and the lakehouse history with time
travel to an instant the operator types (t)."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg
from rich import box
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Input, Static

from opsconsole.ops import customers
from opsconsole.ops.registry import Capabilities
from opsconsole.tui.clock import human_duration
from opsconsole.tui.format import cell_num, plain, pretty_json
from opsconsole.tui.screens.base import PaneScreen
from opsconsole.tui.state import ConsoleContext
from opsconsole.tui.widgets.chrome import PaneFooter, StatusHeader, set_text
from opsconsole.tui.widgets.data_list import Column, DataList
from opsconsole.tui.widgets.keyed_table import KeyedTable

LIMIT = 50
DEBOUNCE_S = 0.2
C = "crm_customers."
V = "customer_360_mv."
COLUMNS = [
    Column("id", "id", 6, field="customer_id", source=C + "customer_id"),
    Column("name", "name", 16, field=lambda r: display_name(r), grow=30, source=C + "last_name"),
    Column("email", "email", 20, priority=2, grow=36, source=C + "email"),
    Column("phone", "phone", 13, priority=3, grow=20, source=C + "phone"),
    Column("match", "match", 6, field="match_kind", priority=4),
    Column("orders", "orders", 6, field="total_orders", source=V + "total_orders"),
    Column("ltv", "value", 10, field="total_lifetime_value", source=V + "total_lifetime_value"),
    Column("segment", "segment", 8, field="value_segment", priority=1, grow=12, source=V + "value_segment"),
]
NAME_KEYS = ("first_name", "last_name")


@dataclass
class SearchData:
    q: str | None
    rows: list[dict[str, Any]]
    source: str  # "search_customers()" or "crm_customers"


def display_name(r: dict[str, Any]) -> str:
    if r.get("full_name") or r.get("name"):
        return str(r.get("full_name") or r.get("name"))
    return " ".join(str(r[k]) for k in NAME_KEYS if r.get(k)) or "—"


class CustomersScreen(PaneScreen):
    PANE_ID = "customers"
    PANE_KEY = "4"
    PANE_TITLE = "Customers"
    NEEDS_RELATIONS = ("crm_customers",)
    PANE_BINDINGS = [Binding("enter", "open", "Open", key_display="⏎", show=False)]

    def __init__(self, context: ConsoleContext) -> None:
        super().__init__(context)
        self.search_text = ""
        self._debounce = None

    @classmethod
    def unavailable_reason(cls, caps: Capabilities) -> str | None:
        """Open for a role that can search one way or another: the audited search_customers() (support),
        crm_customers itself, or the masked customers (viewer, 80_privacy.sql); otherwise why not."""
        if caps.why_not_callable(("search_customers",)) is None:
            return None
        if caps.why_not_readable(("customers_masked",)) is None:
            return None
        return caps.why_not_readable(cls.NEEDS_RELATIONS)

    def compose_body(self) -> ComposeResult:
        yield Static("", id="search-info")
        # the list's filter is the search: the database matches (and audits it for support)
        yield DataList(
            COLUMNS,
            name="results",
            table_id="results",
            enter="Open",
            server_filter=True,
            keep_box=True,
            filter_id="search",
            placeholder="press / to search: name, email, phone, customer id or uuid",
        )

    def pane_mounted(self) -> None:
        # The results, not the search box, have the focus on arrival: a focused input takes the number
        # keys as text, so an operator passing through with 4 then 5 would be stuck typing '5'. `/`
        # searches, Esc or Enter come back to the results.
        self.query_one(DataList).focus_table()

    def fetch_params(self) -> dict[str, Any]:
        q = self.search_text.strip() or None
        data = self.data
        if q and isinstance(data, SearchData) and data.q == q and data.source == "search_customers()":
            # search_customers() audits every call: it runs once per query typed, not once per refresh
            # tick (a search left on screen wrote an audit row every interval)
            return {"q": q, "unchanged": data}
        return {"q": q}

    @classmethod
    def fetch(cls, conn: psycopg.Connection, caps: Capabilities, params: dict[str, Any]) -> SearchData:
        q = params.get("q")
        if params.get("unchanged") is not None:
            return params["unchanged"]
        if q and caps.why_not_callable(("search_customers",)) is None:
            rows = customers.console_search(conn, q, LIMIT, audited=True, masked=False)
            return SearchData(q, rows, "search_customers()")
        # a viewer: the same plain matching over the masked customers (masked in the database)
        masked = bool(
            caps.why_not_readable(("crm_customers",)) and caps.why_not_readable(("customers_masked",)) is None
        )
        rows = customers.console_search(conn, q, LIMIT, audited=False, masked=masked)
        return SearchData(q, rows, "customers_masked" if masked else "crm_customers")

    def render_data(self, data: SearchData) -> None:
        hint = ""
        if data.source == "customers_masked":
            hint = "  [dim](masked: this role may not read customer PII)[/]"
        what = f"matching [b]{escape(data.q)}[/]" if data.q else "(press / to search)"
        set_text(
            self.query_one("#search-info", Static),
            f"{len(data.rows)}{'+' if len(data.rows) >= LIMIT else ''} "
            f"customer{'' if len(data.rows) == 1 else 's'} {what}{hint}",
        )
        rows = []
        for r in data.rows:
            match = r.get("match_kind")
            rows.append(
                (
                    str(r["customer_id"]),
                    r,
                    (
                        Text(str(r["customer_id"]), justify="right"),
                        plain(display_name(r)),
                        plain(r.get("email")),
                        plain(r.get("phone")),
                        plain(match),
                        cell_num(r.get("total_orders")),
                        cell_num(r.get("total_lifetime_value"), 2),
                        plain(r.get("value_segment")),
                    ),
                )
            )
        self.query_one(DataList).set_rows(rows)

    def on_data_list_filter_changed(self, event: DataList.FilterChanged) -> None:
        self.search_text = event.text
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(DEBOUNCE_S, lambda: self.request_refresh())

    @on(Input.Submitted, "#search")
    def search_submitted(self, event: Input.Submitted) -> None:
        table = self.query_one("#results", KeyedTable)
        if table.row_count == 1:
            self.call_after_refresh(self.action_open)

    def on_data_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        key = self.query_one("#results", KeyedTable).cursor_key
        if key is not None:
            caps = self.status.caps if self.status is not None else None
            self.app.push_screen(CustomerScreen(int(key), self.context, caps))


# ---------------------------------------------------------------------------------------------------


@dataclass
class CustomerData:
    profile: dict[str, Any] | None
    c360: dict[str, Any] | None
    orders: list[dict[str, Any]]
    events: list[dict[str, Any]]
    transactions: list[dict[str, Any]]
    versions: list[dict[str, Any]] | None
    notes: list[str]


def read_customer(conn: psycopg.Connection, caps: Capabilities | None, customer_id: int) -> CustomerData:
    notes = []
    via = "table"
    if caps is not None and caps.why_not_readable(("crm_customers",)):
        # support opens a customer through the audited lookup; a viewer sees the masked record
        via = "lookup" if caps.why_not_callable(("lookup_customer",)) is None else "masked"
    profile = customers.profile(conn, customer_id, via)

    def rows(name: str, needs: tuple[str, ...]) -> list[dict[str, Any]] | None:
        reason = caps.why_not_readable(needs) if caps else "not connected"
        if reason:
            notes.append(f"{name}: not available on this database: {reason}")
            return None
        return customers.detail_rows(conn, name, customer_id)

    c360_rows = rows("360", ("customer_360_mv",))
    c360 = c360_rows[0] if c360_rows else None
    orders = rows("orders", ("erp_orders",)) or []
    events = rows("events", ("ecommerce_events",)) or []
    transactions = (
        rows("transactions", ("financial_transactions", "financial_transactions_staging", "erp_orders")) or []
    )
    versions = rows("versions", ("lakehouse_customers",))
    return CustomerData(profile, c360, orders, events, transactions, versions, notes)


def table_of(rows: list[dict[str, Any]], columns: list[str], clock: Any, title: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for c in columns:
        table.add_column(c, overflow="ellipsis", no_wrap=True)
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            if isinstance(v, dt.datetime):
                cells.append(clock.stamp(v))
            else:
                cells.append(plain(v, 40))
        table.add_row(*cells)
    if not rows:
        table.add_row(*(["(none)"] + [""] * (len(columns) - 1)))
    return table


def kv_table(record: dict[str, Any], clock: Any, title: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, expand=True)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    items = list(record.items())
    half = (len(items) + 1) // 2
    for left, right in zip(items[:half], items[half:] + [("", None)] * (2 * half - len(items)), strict=False):
        cells = []
        for k, v in (left, right):
            if isinstance(v, str) and len(v) >= 19 and v[4] == "-" and v[10] == "T":
                with contextlib.suppress(ValueError):
                    v = clock.stamp(dt.datetime.fromisoformat(v))
            if isinstance(v, dt.datetime):
                v = clock.stamp(v)
            elif isinstance(v, dt.timedelta):  # data_staleness: "37d 10h", not "37 days, 10:32:59.166190"
                v = human_duration(v.total_seconds())
            cells += [k, plain(v, 48) if k else ""]
        table.add_row(*cells)
    return table


class CustomerScreen(Screen):
    """One customer: 360 row, orders, events, transactions, lakehouse versions, time travel."""

    BINDINGS = [
        Binding("escape,q", "close", "Back"),
        Binding("t", "time_travel", "Time travel"),
        Binding("ctrl+r", "reload", "Reload"),
    ]

    def __init__(self, customer_id: int, context: ConsoleContext, caps: Capabilities | None):
        super().__init__(id=f"customer-{customer_id}")
        self.customer_id = customer_id
        self.context = context
        self.clock = context.clock
        self.caps = caps
        self.data: CustomerData | None = None

    def compose(self) -> ComposeResult:
        yield StatusHeader()
        with VerticalScroll(id="customer-body", classes="pane-frame") as body:
            body.border_title = f"4 Customers › customer {self.customer_id}"
            yield Static("loading…", id="c-profile")
            yield Static("", id="c-360")
            yield Static("", id="c-orders")
            yield Static("", id="c-events")
            yield Static("", id="c-transactions")
            yield Static("", id="c-versions")
            yield Static("", id="c-travel")
        yield PaneFooter(compact=True)

    def on_mount(self) -> None:
        self.query_one("#customer-body").focus()
        self.action_reload()

    def action_reload(self) -> None:
        self.run_worker(self._load, group="customer", exclusive=True)

    async def _load(self) -> None:
        try:
            data = await self.context.lookup(lambda c: read_customer(c, self.caps, self.customer_id))
        except psycopg.Error as exc:
            self.query_one("#c-profile", Static).update(
                f"[$error]could not load the customer: {escape(str(exc))}[/]"
            )
            return
        self.data = data
        self.show(data)

    def show(self, data: CustomerData) -> None:
        clock = self.clock
        if data.profile is None:
            self.query_one("#c-profile", Static).update(f"No customer {self.customer_id} in crm_customers.")
            return
        p = data.profile
        self.query_one("#c-profile", Static).update(
            Text.assemble(
                (f"{display_name(p)}", "bold"),
                f"  #{p['customer_id']}  {p.get('email') or '—'}  {p.get('phone') or '—'}",
                f"  uuid {p['customer_uuid']}\ncustomer since {clock.stamp(p['created_at'])}, ",
                f"profile updated {clock.stamp(p['updated_at'])}",
            )
        )
        c360 = self.query_one("#c-360", Static)
        if data.c360 is not None:
            c360.update(kv_table(data.c360, clock, "customer 360"))
        else:
            note = next(
                (n for n in data.notes if n.startswith("360")), "360: this customer has no 360 row yet"
            )
            c360.update(Text(note.replace("360:", "customer 360:", 1), style="dim"))
        self.query_one("#c-orders", Static).update(
            table_of(
                data.orders,
                ["order_id", "order_number", "order_date", "total_amount", "currency_code", "status"],
                clock,
                "recent orders",
            )
        )
        self.query_one("#c-events", Static).update(
            table_of(
                data.events,
                ["event_timestamp", "event_type", "category", "page_url"],
                clock,
                "recent events",
            )
        )
        self.query_one("#c-transactions", Static).update(
            table_of(
                data.transactions,
                [
                    "transaction_id",
                    "transaction_timestamp",
                    "amount",
                    "transaction_type",
                    "status",
                    "error_code",
                    "order_id",
                ],
                clock,
                "transactions: failed and dead-lettered first, then the latest processed",
            )
        )
        versions = self.query_one("#c-versions", Static)
        if data.versions is None:
            note = next((n for n in data.notes if n.startswith("versions")), "")
            versions.update(Text(note.replace("versions:", "lakehouse history:", 1), style="dim"))
        else:
            versions.update(
                table_of(
                    data.versions,
                    ["version_number", "operation_type", "effective_from", "effective_to", "customer_data"],
                    clock,
                    "lakehouse history (t: time travel)",
                )
            )

    async def _travel(self, instant: str) -> None:
        target = self.query_one("#c-travel", Static)
        try:
            rows = await self.context.lookup(
                lambda conn: customers.time_travel(conn, self.customer_id, instant)
            )
        except psycopg.Error as exc:
            msg = exc.diag.message_primary if isinstance(exc, psycopg.Error) else str(exc)
            target.update(Text(f"time travel to {instant!r} failed: {msg}", style="bold"))
            return
        if not rows:
            target.update(Text(f"At {instant} customer {self.customer_id} did not exist in the lakehouse."))
        else:
            target.update(
                Text.assemble(
                    (f"as of {instant}: version {rows[0].get('version_number')}\n", "bold"),
                    pretty_json(rows[0].get("customer_data")),
                )
            )
        target.scroll_visible()

    def action_time_travel(self) -> None:
        caps = self.caps
        reason = caps.why_not_callable(("time_travel_customers",)) if caps else "not connected"
        if reason:
            self.app.notify(f"Time travel is not available on this database: {reason}.", severity="warning")
            return
        self.run_worker(self._ask_travel, group="travel", exclusive=True)

    async def _ask_travel(self) -> None:
        from opsconsole.tui.screens.modals import PromptScreen

        def check(text: str) -> str | None:
            try:
                dt.datetime.fromisoformat(text)
            except ValueError:
                return "an instant like 2025-01-31 14:00 or 2025-01-31T14:00:00+00:00"
            return None

        default = self.clock.now().strftime("%Y-%m-%d %H:%M:%S+00")
        instant = await self.app.push_screen_wait(
            PromptScreen(
                "Time travel", "Show this customer as of (timestamp with time zone):", default, check
            )
        )
        if instant:
            await self._travel(instant)

    def action_close(self) -> None:
        self.dismiss()
