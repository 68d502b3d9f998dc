"""The opsconsole Textual app: six panes (one screen each, switched as modes), the refresh engine,
the NOTIFY listener, and the operator actions.

The app composes and routes: panes and widgets never import it. It makes each pane with a
ConsoleContext (clock, lookup slot), pushes the console's state into the shown pane's `status` reactive
(ConsoleStatus: connection, caps, interval, jobs), and handles what panes ask for by message
(RefreshRequested, ActionRequested, PaneShown; tui/messages.py).

Threads and connections: pane refreshes run in a thread worker on the "console" connection;
the on-call watcher's health snapshot on the same one; interactive reads (search, drill-downs,
confirmation counts) on the "console-lookup" connection; each action on a fresh connection of its
own; LISTEN on a dedicated one. Workers post messages; widgets are touched on the UI thread only.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import psycopg
from textual import events
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from opsconsole import config
from opsconsole.errors import OpsError
from opsconsole.ops import channels, pipeline
from opsconsole.ops.actions import describe_error
from opsconsole.ops.registry import ACTIONS, ACTIONS_BY_ID, Capabilities
from opsconsole.tui import textual_compat
from opsconsole.tui.clock import Clock, human_duration
from opsconsole.tui.gcpolicy import GcPolicy
from opsconsole.tui.jobs import Job
from opsconsole.tui.messages import (
    ActionRequested,
    JobFinished,
    JobProgress,
    Notified,
    PaneShown,
    RefreshDone,
    RefreshRequested,
)
from opsconsole.tui.oncall import OnCallWatcher
from opsconsole.tui.operations import Operations
from opsconsole.tui.refresh import DbSlot, Listener, RefreshEngine
from opsconsole.tui.screens import PANES
from opsconsole.tui.screens.base import PaneScreen
from opsconsole.tui.state import ConsoleContext, ConsoleStatus
from opsconsole.tui.widgets.data_list import DataList

T = TypeVar("T")

# Which panes a NOTIFY channel makes stale.
CHANNEL_PANES: dict[str, set[str]] = {
    channels.PIPELINE: {"monitor", "backlog", "timeline"},
    channels.STAGING: {"monitor", "backlog"},
    channels.DQ: {"quality", "activity", "timeline"},
    channels.CATALOG: {"catalog", "activity", "timeline"},
    channels.C360: {"customers", "activity"},
}

LOOKUP_TIMEOUT_MS = 10_000
FLEET_POLL_S = 5.0


def close_connections(engine: RefreshEngine, lookup: DbSlot) -> None:
    """Close a stopped console's refresh and lookup connections. A blocking call, for a thread: a
    refresh in flight holds its connection until its statement ends."""
    engine.close()
    lookup.close()


class OpsConsoleApp(App):
    TITLE = "opsconsole"
    CSS_PATH = Path(__file__).with_name("console.tcss")  # absolute: subclasses live elsewhere
    DEFAULT_MODE = "monitor"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        *[
            Binding(
                pane.PANE_KEY,
                f"show_pane('{pane.PANE_ID}')",
                pane.PANE_TITLE,
                show=False,
                id=f"app.pane.{pane.PANE_ID}",
            )
            for pane in PANES
        ],
        Binding("question_mark", "help", "Help", key_display="?", id="app.help"),
        Binding("p", "toggle_pause", "Pause", id="app.refresh_pause"),
        Binding("plus,equals_sign", "faster", "Interval", key_display="+/-", id="app.faster"),
        Binding("minus", "slower", "Refresh less often", show=False, key_display="-", id="app.slower"),
        Binding("x", "cancel_job", "Cancel action", id="app.cancel_job"),
        Binding("q", "quit", "Quit", id="app.quit"),
    ]

    def __init__(
        self,
        dsn: str,
        *,
        database_label: str = "",
        read_only: bool = False,
        interval: float = 2.0,
        clock: Clock | None = None,
        listen: bool = True,
        version_label: str | None = None,
        start_pane: str | None = None,
        keymap: dict[str, str] | None = None,
        remember_choices: bool = False,
    ):
        # The first mode is the start pane (switching on mount instead leaves its footer unfilled).
        self.DEFAULT_MODE = start_pane or "monitor"
        super().__init__()
        self.dsn = dsn
        self.database_label = database_label or "database"
        self.version_label = version_label
        self.read_only = read_only
        self.clock = clock or Clock()
        self.caps: Capabilities | None = None
        context = ConsoleContext(self.clock, self.lookup_async)
        self.panes: dict[str, PaneScreen] = {cls.PANE_ID: cls(context) for cls in PANES}
        for pane_id, screen in self.panes.items():
            self.add_mode(pane_id, lambda s=screen: s)
        self.current_pane = self.DEFAULT_MODE
        self.start_pane = start_pane
        self.engine = RefreshEngine(self, dsn, interval)
        self.lookup = DbSlot(dsn, "console-lookup", LOOKUP_TIMEOUT_MS)
        self.listener = Listener(dsn, self.post_message) if listen else None
        # bell / desktop notification when an incident starts; polls on the engine's connection
        self.oncall = OnCallWatcher(self, self.engine.slot)
        self.jobs: dict[int, Job] = {}
        self.ops = Operations(self)
        self.premounted = False  # every pane composed and mounted (see _premount)
        self._instant_switch = False
        self.gc_policy = GcPolicy()
        self.fleet: dict | None = None  # the fleet's pause switch, as last read (header of every pane)
        self.keymap = dict(keymap or {})  # [keys] of the config file, checked by tui.keys.check_keymap
        self.remember_choices = remember_choices  # the theme, kept in config.state_path() between runs
        self.listen = listen
        self.profile: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def on_mount(self) -> None:
        if self.keymap:
            self.set_keymap(self.keymap)
        if self.remember_choices:
            theme = config.remembered("theme")
            if theme and theme in self.available_themes:
                self.theme = theme
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        if self.listener is not None:
            self.run_worker(self.listener.run, thread=True, group="listen", exit_on_error=False)
        self.engine.start()
        self.set_interval(1.0, self.refresh_chrome, name="chrome")  # relative times tick on
        self.set_interval(FLEET_POLL_S, self.refresh_fleet, name="fleet")  # NOTIFY first, this as fallback
        self.refresh_fleet()
        self.oncall.start()

    def _theme_changed(self, theme: object) -> None:
        """Table cells carry theme colours: draw the panes' data again in the new ones; remember it."""
        if self.remember_choices:
            config.remember("theme", self.theme)
        if not self.is_running:  # the change landed while the app shuts down: its panes are being pruned
            return
        for screen in self.panes.values():
            if screen.is_mounted and screen.data is not None and not screen.unavailable:
                screen.render_data(screen.data)

    def on_unmount(self) -> None:
        self.gc_policy.stop()
        self.engine.stop()
        self.oncall.stop()
        if self.listener is not None:
            self.listener.stop()
        # the connections go with the console, not whenever the app object is collected
        threading.Thread(target=close_connections, args=(self.engine, self.lookup), daemon=True).start()
        for job in self.jobs.values():
            if job.running:
                job.cancel()

    def _on_exit_app(self) -> None:  # also runs on ctrl+q
        self.on_unmount()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.InputEvent):
            self.gc_policy.input_seen()
        await super().on_event(event)

    # -- panes ----------------------------------------------------------------------------------
    def action_show_pane(self, pane: str) -> None:
        if pane not in self.panes:
            return
        self.current_pane = pane
        # switch_mode holds every frame back 50 ms (App.delay_update) to hide a screen composing itself;
        # a mounted pane is composed and laid out already, so it can be drawn in the next frame (P8).
        self._instant_switch = self.panes[pane].is_mounted
        try:
            self.switch_mode(pane)
        finally:
            self._instant_switch = False

    def delay_update(self, delay: float = 0.05) -> None:  # a Textual hook: see textual_compat
        if not self._instant_switch:
            super().delay_update(delay)

    async def _premount(self) -> None:
        """Compose and mount the panes not shown yet, one at a time, so that the first switch to each
        one costs a redraw instead of composing a screen (100-270 ms on the UI thread, P8). Then the
        app's objects all exist: hand full garbage collections to the GcPolicy."""
        textual_compat.record_styled(self, self.screen)  # the pane shown first
        for pane_id, screen in self.panes.items():
            if not self.is_running:  # shutting down
                break
            if not screen.is_running:
                screen.status = self.console_status()
                textual_compat.mark_styled(self, screen)  # its widgets get the styles as they mount
                await textual_compat.init_mode(self, pane_id)
            await asyncio.sleep(0)  # keys go first
        self.premounted = True
        self.gc_policy.start()
        self.set_interval(1.0, self.gc_policy.tick, name="gc")

    def on_pane_shown(self, message: PaneShown) -> None:
        self.pane_shown(message.pane)

    def pane_shown(self, pane: str) -> None:
        """A pane became visible: refresh it now if its data is old or a NOTIFY marked it dirty."""
        self.current_pane = pane
        screen = self.panes[pane]
        age = self.clock.since(screen.updated_at)
        if pane in self.engine.dirty or age is None or age >= self.engine.interval:
            self.engine.kick()
        self.refresh_chrome()

    def console_status(self) -> ConsoleStatus:
        engine = self.engine
        return ConsoleStatus(
            clock=self.clock,
            database_label=self.database_label,
            version_label=self.version_label,
            read_only=self.read_only,
            caps=self.caps,
            connected=engine.connected,
            error=engine.error,
            retry_at=time.monotonic() + engine.retry_in() if engine.retry_in() > 0 else None,
            last_ok=engine.last_ok,
            interval=engine.interval,
            paused=engine.paused,
            jobs=tuple(self.jobs.values()),
            fleet=self.fleet,
        )

    def refresh_chrome(self) -> None:
        """Push the console's state into the shown pane (its header, banner, jobs bar and badge)."""
        screen = self.panes.get(self.current_pane)
        if screen is None or not screen.is_mounted or not self.is_running:
            return
        screen.status = self.console_status()

    def refresh_panes(self, panes: set[str]) -> None:
        self.engine.request(panes)

    def on_refresh_requested(self, message: RefreshRequested) -> None:
        self.engine.request(message.panes)

    def on_action_requested(self, message: ActionRequested) -> None:
        self.start_op(message.action_id)

    # -- engine callbacks -------------------------------------------------------------------------
    def on_refresh_done(self, message: RefreshDone) -> None:
        if message.engine is not self.engine:
            return  # fetched from the database the console left (a profile switch)
        self.engine.finished(message)
        if self.engine.ticks == 1:  # the first pane shows its data: now prepare the others
            self.run_worker(self._premount, group="premount", exit_on_error=False)

    def caps_changed(self, caps: Capabilities) -> None:
        self.caps = caps
        self.refresh_bindings()
        status = self.console_status()
        for screen in self.panes.values():
            if screen.is_mounted:
                screen.status = status  # what the role may do decides which keys the pane offers

    def disconnected(self, error: str) -> None:
        if self.engine.failures == 1:
            self.notify(
                f"Lost the connection to {self.database_label}: {error}. Retrying by itself.",
                title="disconnected",
                severity="error",
                timeout=6,
            )

    def reconnected(self) -> None:
        self.notify(f"Connected to {self.database_label} again.", title="reconnected", timeout=4)

    def refresh_fleet(self) -> None:
        """Read the fleet's pause switch (on the lookup slot) and show it in the header."""
        self.run_worker(self._read_fleet, group="fleet", exclusive=True, exit_on_error=False)

    async def _read_fleet(self) -> None:
        try:
            fleet = await self.lookup_async(pipeline.fleet_state)
        except Exception:  # disconnected: the header says so already; the next poll tries again
            return
        if fleet != self.fleet:
            self.fleet = fleet
            self.refresh_chrome()

    def on_notified(self, message: Notified) -> None:
        panes = CHANNEL_PANES.get(message.channel, set())
        if message.channel == channels.STAGING and '"paused"' in (message.payload or ""):
            self.refresh_fleet()  # pause_processing()/resume_processing() said so
        if message.channel == channels.DQ:
            self._dq_alert(message.payload)
        self.engine.request(panes)

    def _dq_alert(self, payload: str) -> None:
        try:
            data = json.loads(payload) if payload else {}
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        failed = data.get("failed") or data.get("failed_rules") or data.get("failing")
        severity = str(data.get("severity") or "")
        if failed or severity in {"critical", "error"}:
            what = data.get("rule_name") or data.get("rule") or f"{failed} rule(s)"
            self.notify(f"Data quality: {what} failing.", title="data quality", severity="warning")

    # -- interval, pause, help ----------------------------------------------------------------------
    def action_toggle_pause(self) -> None:
        self.engine.set_paused(not self.engine.paused)
        self.notify("Refresh paused (p resumes)." if self.engine.paused else "Refresh resumed.", timeout=2)
        self.refresh_chrome()

    def action_faster(self) -> None:
        interval = self.engine.faster()
        self.notify(f"Refreshing every {human_duration(interval)}.", timeout=2)
        self.refresh_chrome()

    def action_slower(self) -> None:
        interval = self.engine.slower()
        self.notify(f"Refreshing every {human_duration(interval)}.", timeout=2)
        self.refresh_chrome()

    def action_help(self) -> None:
        from opsconsole.tui.screens.modals import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            HelpScreen.show(self, self.help_rows())

    def help_rows(self) -> list[tuple[str, str, str, str]]:
        """(where, key, what, state) for every binding and action."""
        rows: list[tuple[str, str, str, str]] = []
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            if binding.action.startswith("show_pane"):
                continue
            what = "Refresh more often" if binding.action == "faster" else binding.description
            key = "+" if binding.action == "faster" else binding.key_display or binding.key
            rows.append(("everywhere", key, what, ""))
        rows.append(("everywhere", f"1-{len(PANES)}", "Switch pane (or click the tab)", ""))
        rows.append(("everywhere", "ctrl+p", "Command palette: every action, theme, pane", ""))
        for binding in DataList.BINDINGS:  # every pane's lists share these (widgets/data_list.py)
            assert isinstance(binding, Binding)
            rows.append(("every list", binding.key_display or binding.key, binding.description, ""))
        for pane in PANES:
            for binding in pane.BINDINGS:
                assert isinstance(binding, Binding)
                if binding.action.startswith("op("):
                    continue
                rows.append((pane.PANE_TITLE, binding.key_display or binding.key, binding.description, ""))
        for spec in ACTIONS:
            reason = spec.unavailable_reason(self.caps, self.read_only)
            where = ", ".join(p.PANE_TITLE for p in PANES if p.PANE_ID in spec.panes)
            rows.append((where, spec.key, spec.title, f"unavailable: {reason}" if reason else "available"))
        return rows

    # -- actions --------------------------------------------------------------------------------
    def actions_reason(self, action_id: str) -> str | None:
        """Why an action may not run now (None when it may)."""
        return ACTIONS_BY_ID[action_id].unavailable_reason(self.caps, self.read_only)

    def op_allowed(self, action_id: str) -> bool:
        spec = ACTIONS_BY_ID.get(action_id)
        return spec is not None and spec.unavailable_reason(self.caps, self.read_only) is None

    def start_op(self, action_id: str) -> None:
        spec = ACTIONS_BY_ID[action_id]
        reason = spec.unavailable_reason(self.caps, self.read_only)
        if reason:
            self.notify(f"{spec.title} is unavailable: {reason}.", severity="warning")
            return
        self.ops.start(spec)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_job":
            return any(job.running for job in self.jobs.values())
        return True

    def action_cancel_job(self) -> None:
        running = [job for job in self.jobs.values() if job.running]
        if running:
            job = running[-1]
            job.cancel()
            self.notify(f"Cancelling {job.title}…", timeout=3)
            self.refresh_chrome()

    def on_job_progress(self, message: JobProgress) -> None:
        self.refresh_chrome()
        if message.job.spec.id == "continuous" and self.current_pane == "monitor":
            self.panes["monitor"].update_counters()

    def on_job_finished(self, message: JobFinished) -> None:
        self.ops.finished(message)
        self.refresh_bindings()
        self.refresh_chrome()

    # -- the command palette ------------------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for pane in PANES:
            yield SystemCommand(
                f"Go to {pane.PANE_TITLE} ({pane.PANE_KEY})",
                f"Show the {pane.PANE_TITLE} pane",
                lambda p=pane.PANE_ID: self.action_show_pane(p),
            )
        for spec in ACTIONS:
            reason = spec.unavailable_reason(self.caps, self.read_only)
            if reason and self.read_only and spec.mutating:
                continue  # read-only hides every action, in the palette too
            panes = ", ".join(p.PANE_TITLE for p in PANES if p.PANE_ID in spec.panes)
            help_text = f"unavailable: {reason}" if reason else f"{spec.description} [{spec.key} on {panes}]"
            yield SystemCommand(spec.title, help_text, lambda s=spec: self.palette_op(s.id))
        yield SystemCommand(
            "Pause or resume refresh (p)", "Stop or restart the timer", self.action_toggle_pause
        )
        for name in self.profile_names():
            if name != self.profile:
                yield SystemCommand(
                    f"Switch to profile {name}",
                    "Reconnect to that profile's database; the panes refresh",
                    lambda n=name: self.switch_profile(n),
                )

    # -- profiles --------------------------------------------------------------------------------
    def profile_names(self) -> list[str]:
        try:
            return sorted(config.load_profiles(config.config_path()))
        except OpsError:
            return []

    def switch_profile(self, name: str) -> None:
        """Connect to another profile's database without restarting: check it answers, then give the
        engine, the lookup slot, the listener and the on-call watcher the new DSN; every pane refreshes."""
        self.run_worker(self._switch_profile(name), group="profile", exclusive=True, exit_on_error=False)

    async def _switch_profile(self, name: str) -> None:
        from opsconsole.cli.console import database_label
        from opsconsole.db.connect import connect

        try:
            target = config.resolve_target(
                profile=name,
                env={k: v for k, v in os.environ.items() if k not in ("OPSCONSOLE_DSN", "DATABASE_URL")},
            )
            dsn = target.dsn or ""
            await asyncio.to_thread(lambda: connect(dsn, "console").close())
        except OpsError as exc:  # no such profile, or its database does not answer: one sentence
            self.notify(
                f"Profile {name}: {exc.message} Still on {self.database_label}.",
                title="profile not switched",
                severity="error",
                timeout=8,
            )
            return
        except psycopg.Error as exc:
            self.notify(
                f"Profile {name}: {describe_error(exc)}. Still on {self.database_label}.",
                title="profile not switched",
                severity="error",
                timeout=8,
            )
            return
        self.engine.stop()
        self.oncall.stop()
        if self.listener is not None:
            self.listener.stop()
        old_lookup, old_engine = self.lookup, self.engine
        interval, paused = self.engine.interval, self.engine.paused
        self.dsn = dsn
        self.profile = name
        self.database_label = f"{name} ({database_label(dsn)})"
        self.caps = None
        self.fleet = None
        self.engine = RefreshEngine(self, dsn, interval)
        self.engine.paused = paused
        self.lookup = DbSlot(dsn, "console-lookup", LOOKUP_TIMEOUT_MS)
        await asyncio.to_thread(close_connections, old_engine, old_lookup)
        self.listener = Listener(dsn, self.post_message) if self.listen else None
        if self.listener is not None:
            self.run_worker(self.listener.run, thread=True, group="listen", exit_on_error=False)
        self.oncall = OnCallWatcher(self, self.engine.slot)
        self.oncall.start()
        self.refresh_bindings()
        self.engine.request({pane.PANE_ID for pane in PANES})
        self.engine.start()
        self.refresh_fleet()
        self.refresh_chrome()
        self.notify(f"Connected to profile {name}: {self.database_label}.", title="profile", timeout=4)

    def palette_op(self, action_id: str) -> None:
        spec = ACTIONS_BY_ID[action_id]
        if self.current_pane not in spec.panes:
            self.action_show_pane(spec.panes[0])
        self.call_after_refresh(self.start_op, action_id)

    # -- interactive reads ------------------------------------------------------------------------
    def lookup_sync(self, fn: Callable[[psycopg.Connection], T]) -> T:
        with self.lookup.lock:
            try:
                return fn(self.lookup.get())
            except (psycopg.OperationalError, psycopg.InterfaceError):
                self.lookup.close()
                raise

    async def lookup_async(self, fn: Callable[[psycopg.Connection], T]) -> T:
        return await asyncio.to_thread(self.lookup_sync, fn)
