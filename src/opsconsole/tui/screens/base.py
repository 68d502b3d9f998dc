"""What every pane screen has: the shared chrome, a bordered body titled with its key, a freshness
badge, a "not available on this database" state, and key bindings generated from the action registry.

A pane's data flow: `fetch_params()` (UI thread) snapshots what the fetch needs (filter text, search),
`fetch(conn, caps, params)` runs in the refresh engine's worker thread on the refresh connection and
asks ops/ for the data, and `show(data)` applies the result on the UI thread.

A pane does not know the App class: it is made with a ConsoleContext (clock, lookup slot), receives the
console's state in its `status` reactive, and asks the app for things with messages (RefreshRequested,
ActionRequested, PaneShown), which bubble from the screen to the app.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any, ClassVar

import psycopg
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.markup import escape
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Static

from opsconsole.errors import OpsError
from opsconsole.ops import exports
from opsconsole.ops.registry import Capabilities, actions_for_pane
from opsconsole.tui.jobs import JobsBar
from opsconsole.tui.messages import ActionRequested, PaneShown, RefreshRequested
from opsconsole.tui.state import ConsoleContext, ConsoleStatus
from opsconsole.tui.widgets.chrome import Banner, PaneFooter, PaneTabs, StatusHeader, shown
from opsconsole.tui.widgets.data_list import DataList


class PaneScreen(Screen):
    PANE_ID: ClassVar[str] = ""
    PANE_KEY: ClassVar[str] = ""
    PANE_TITLE: ClassVar[str] = ""
    NEEDS_RELATIONS: ClassVar[tuple[str, ...]] = ()
    NEEDS_FUNCTIONS: ClassVar[tuple[str, ...]] = ()
    PANE_BINDINGS: ClassVar[list[Binding]] = []
    # `-narrow` below 110 columns: the stylesheet gives narrow terminals their own widths
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [(0, "-narrow"), (110, "-wide")]

    # the console's state, pushed by the app while this pane is shown (and when the caps change)
    status: reactive[ConsoleStatus | None] = reactive(None, always_update=True, init=False, layout=False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # BINDINGS must be in place before Textual merges them in DOMNode.__init_subclass__.
        if cls.__dict__.get("PANE_ID"):
            action_bindings = [
                Binding(spec.key, f"op('{spec.id}')", spec.label, id=f"{cls.PANE_ID}.{spec.id}")
                for spec in actions_for_pane(cls.PANE_ID)
            ]
            # every binding gets an id (<pane>.<action>), so [keys] in the config file can rebind it
            pane_bindings = [
                b if b.id else dataclasses.replace(b, id=f"{cls.PANE_ID}.{b.action.split('(')[0]}")
                for b in cls.__dict__.get("PANE_BINDINGS", [])
            ]
            cls.BINDINGS = action_bindings + pane_bindings
        super().__init_subclass__(**kwargs)

    def __init__(self, context: ConsoleContext) -> None:
        super().__init__(id=f"pane-{self.PANE_ID}")
        self.context = context
        self.clock = context.clock
        self._bindings_for: tuple[int, bool] | None = None
        self.data: Any = None
        self.updated_at: dt.datetime | None = None
        self.unavailable: str | None = None
        self.fetch_error: str | None = None

    def watch_status(self, status: ConsoleStatus | None) -> None:
        if status is None or not self.is_mounted:
            return
        allowed = (id(status.caps), status.read_only)
        if allowed != self._bindings_for:  # what the role may do decides which keys the pane offers
            self._bindings_for = allowed
            self.refresh_bindings()
        for widget in self.query(StatusHeader).results():
            widget.status = status
        for widget in self.query(Banner).results():
            widget.status = status
        for widget in self.query(JobsBar).results():
            widget.status = status
        self.update_badge()
        self.status_changed(status)

    def status_changed(self, status: ConsoleStatus) -> None:
        """A pane's own reaction to new console state (the Monitor shows continuous processing)."""

    def request_refresh(self) -> None:
        """Fetch this pane's data again as soon as possible (its filter or search changed)."""
        self.post_message(RefreshRequested({self.PANE_ID}))

    # -- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusHeader()
        yield PaneTabs(self.PANE_ID)
        yield Banner()
        with Vertical(id="pane-frame", classes="pane-frame") as frame:
            frame.border_title = self.pane_title()
            yield Static("", id="unavailable", classes="unavailable")
            with Vertical(id="pane-body"):
                yield from self.compose_body()
        yield JobsBar()
        yield PaneFooter(compact=True)

    def compose_body(self) -> ComposeResult:  # pragma: no cover - overridden
        yield from ()

    def on_mount(self) -> None:
        if not self.app.is_running:
            return  # the app quit while this pane was being mounted ahead of time (widgets gone)
        self._apply()
        self.pane_mounted()
        if self.status is not None:  # pushed before the widgets existed
            self.watch_status(self.status)

    def pane_mounted(self) -> None:
        """A pane's own setup once its widgets exist (which widget has the focus ...)."""

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        # Textual re-applies the whole stylesheet to a screen it switches to, and every DataTable then
        # drops its rendered rows; a pane's styles are kept current while it is hidden (classes,
        # focus and hover restyle their widgets as they change; a theme change refreshes all screens),
        # so the restyle only cost time: ~40% of a pane switch's UI-thread work (P8).
        event.refresh_styles = False  # a Textual internal: see textual_compat
        if not self.is_current:
            return  # mounted ahead of time (the app's premount), not shown
        self.post_message(PaneShown(self.PANE_ID))

    # -- data -----------------------------------------------------------------------------------
    @classmethod
    def unavailable_reason(cls, caps: Capabilities) -> str | None:
        return caps.why_not_readable(cls.NEEDS_RELATIONS) or caps.why_not_callable(cls.NEEDS_FUNCTIONS)

    def fetch_params(self) -> dict[str, Any]:
        return {}

    @classmethod
    def fetch(cls, conn: psycopg.Connection, caps: Capabilities, params: dict[str, Any]) -> Any:
        raise NotImplementedError

    def show(self, outcome: PaneResult) -> None:
        """Apply one refresh outcome (UI thread)."""
        self.unavailable = outcome.unavailable
        self.fetch_error = outcome.error
        fresh = outcome.unavailable is None and outcome.error is None
        if fresh:
            self.data = outcome.data
            self.updated_at = outcome.at
        self._apply(render=fresh)

    def _apply(self, render: bool = True) -> None:
        """Show the stored state, once the screen's widgets exist (a refresh can land mid-compose;
        on_mount applies it then)."""
        frames = self.query("#pane-frame")
        notes = self.query("#unavailable")
        if not self.is_mounted or not frames or not notes:
            return
        frames.first().set_class(self.unavailable is not None, "-unavailable")
        note = f"not available on this database: {self.unavailable}" if self.unavailable else ""
        if notes.first(Static).content != note:  # an update re-lays the screen out: only on change (P8)
            notes.first(Static).update(note)
        if render and self.unavailable is None and self.data is not None:
            self.render_data(self.data)
        self.update_badge()

    def render_data(self, data: Any) -> None:  # pragma: no cover - overridden
        pass

    def update_badge(self) -> None:
        if not shown(self):
            return
        frames = self.query("#pane-frame")
        if not self.is_mounted or not frames:
            return
        status = self.status
        frame = frames.first()
        if self.unavailable:
            badge = "not available"
        elif self.updated_at is None:
            badge = "loading…" if self.fetch_error is None else f"[$error]{self.fetch_error}[/]"
        else:
            ago = self.clock.ago(self.updated_at)
            stale = self.fetch_error is not None or (
                status is not None
                and (
                    status.connected is False
                    or (
                        (self.clock.since(self.updated_at) or 0) > max(3 * status.interval, 10)
                        and not status.paused
                    )
                )
            )
            if self.fetch_error:
                badge = f"[$error]stale · {self.fetch_error}[/] · updated {ago}"
            elif stale:
                badge = f"[$warning]stale[/] · updated {ago}"
            else:
                badge = f"updated {ago}"
        frame.border_subtitle = badge

    # -- lists: title, export, copy --------------------------------------------------------------
    def pane_title(self) -> str:
        """'2 Backlog', then the sort and filter of each list that has one."""
        title = escape(f"{self.PANE_KEY} {self.PANE_TITLE}")
        lists = list(self.query(DataList).results()) if self.is_mounted else []
        for data_list in lists:
            described = data_list.describe()
            if described:
                name = f"{data_list.list_name}: " if len(lists) > 1 else ""
                title += f" [dim]·[/] {escape(name + described)}"
        return title

    def on_data_list_changed(self, message: DataList.Changed) -> None:
        for frame in self.query("#pane-frame").results():
            frame.border_title = self.pane_title()

    def on_data_list_export_requested(self, message: DataList.ExportRequested) -> None:
        self.run_worker(self._export(message), group="export", exclusive=True)

    async def _export(self, message: DataList.ExportRequested) -> None:
        data_list, fmt, columns, rows = message.data_list, message.fmt, message.columns, message.rows
        name = f"{self.PANE_ID}-{data_list.list_name}".replace(" ", "-")
        labels = [c.label for c in columns]
        sources = [c.source for c in columns if c.source]
        try:
            if fmt == "clipboard":
                text = await self.context.lookup(
                    lambda conn: exports.record_copy(conn, name, labels, sources, rows[0])
                )
                self.app.copy_to_clipboard(text)
                self.app.notify(
                    f"Copied the row to the clipboard (OSC 52): {len(text)} characters.", timeout=3
                )
                return
            now = dt.datetime.now()  # the file's name: the operator's wall clock
            done = await self.context.lookup(
                lambda conn: exports.export_list(conn, name, fmt, labels, sources, rows, Path.cwd(), now)
            )
        except OpsError as exc:
            self.app.notify(exc.message, severity="error", timeout=6)
            return
        except psycopg.Error as exc:
            self.app.notify(f"The export failed: {exc}", severity="error", timeout=6)
            return
        self.app.notify(f"Exported {done['rows']:,} rows to {done['path']}", title="export", timeout=5)

    # -- actions --------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "op" and parameters:
            return self.status is not None and self.status.op_allowed(str(parameters[0]))
        return True

    def action_op(self, action_id: str) -> None:
        self.post_message(ActionRequested(action_id))

    def op_context(self, action_id: str) -> dict[str, Any]:
        """What the pane contributes to an action (the cursor row, the selection)."""
        return {}


class PaneResult:
    """One pane's refresh outcome: data, or why there is none."""

    __slots__ = ("pane", "data", "unavailable", "error", "at")

    def __init__(
        self,
        pane: str,
        at: dt.datetime,
        data: Any = None,
        unavailable: str | None = None,
        error: str | None = None,
    ):
        self.pane = pane
        self.at = at
        self.data = data
        self.unavailable = unavailable
        self.error = error
