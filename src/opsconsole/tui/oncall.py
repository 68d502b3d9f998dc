"""On-call cues in the console: ring the terminal bell, and when the config file asks for it raise a
desktop notification (OSC 9 or OSC 777), when an SLA breach or a critical DQ failure STARTS: once per
incident, not at every refresh.

Incidents come from the health snapshot and rules that `opsconsole check` and the Prometheus alerts
use (ops/health.py), read every few seconds whatever pane is shown, on the refresh engine's
connection: a background read beside the others, not a connection of its own per console (fifty
consoles at an incident would hold fifty more).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterable, Mapping

import psycopg
from textual.app import App
from textual.timer import Timer

from opsconsole.config import ConsoleSettings, console_settings
from opsconsole.errors import OpsError, is_disconnect
from opsconsole.ops import health
from opsconsole.tui import textual_compat
from opsconsole.tui.refresh import DbSlot

POLL_INTERVAL_S = 5.0
CLEAR_AFTER = 3  # an incident is over once it was absent from this many polls in a row (no flapping)


class IncidentEdges:
    """Tells which incidents started. An incident is a key present in an update; it starts when it
    appears while not open, and it is over only after CLEAR_AFTER updates in a row without it, so a
    condition that flickers around its threshold is one incident, not one per refresh."""

    def __init__(self, clear_after: int = CLEAR_AFTER):
        self.clear_after = clear_after
        self.absent: dict[str, int] = {}  # open incident -> updates in a row it was missing from

    @property
    def open(self) -> set[str]:
        return set(self.absent)

    def update(self, present: Iterable[str]) -> list[str]:
        """Record the incidents present now; return those that started (sorted)."""
        now = set(present)
        started = sorted(now - self.absent.keys())
        for key in list(self.absent):
            if key in now:
                self.absent[key] = 0
            else:
                self.absent[key] += 1
                if self.absent[key] >= self.clear_after:
                    del self.absent[key]
        for key in started:
            self.absent[key] = 0
        return started


def incidents(snap: health.Snapshot) -> dict[str, str]:
    """The incidents open in a snapshot (key -> one sentence): the SLA breach at the critical level of
    its health rule, and each critical DQ rule whose latest result failed."""
    found: dict[str, str] = {}
    sla = health.RULES_BY_NAME["sla_breach"]
    if sla.state_of(snap.sla_breach_ratio) == health.CRITICAL:
        found["sla_breach"] = (
            f"SLA breach: {snap.sla_breach_ratio * 100:.1f}% of the transactions of the last "
            f"{health.SLA_WINDOW_MINUTES} minutes took over {snap.sla_target_s:g} s (pane 1 Monitor)."
        )
    for r in snap.dq:
        if r.severity == "critical" and not r.passed:
            found[f"dq:{r.rule}"] = (
                f"Critical DQ rule {r.rule} on {r.table} {r.status}s (pane 3 Data quality)."
            )
    return found


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f;]")


def escape_sequences(message: str, settings: ConsoleSettings, title: str = "opsconsole") -> str:
    """What to write to the terminal for one started incident: BEL and/or an OSC notification."""
    text = _UNSAFE.sub(" ", message)[:200]
    out = "\a" if settings.bell else ""
    if settings.desktop_notifications == "osc9":
        out += f"\x1b]9;{title}: {text}\a"
    elif settings.desktop_notifications == "osc777":
        out += f"\x1b]777;notify;{_UNSAFE.sub(' ', title)};{text}\a"
    return out


def terminal_writer(app: App) -> Callable[[str], None]:
    """Write raw sequences to the app's terminal. Textual has no public call for this; App.bell() and
    copy_to_clipboard() write through the private driver in the same way (tui/textual_compat.py)."""

    def write(sequence: str) -> None:
        textual_compat.write_to_terminal(app, sequence)

    return write


class OnCallWatcher:
    """Polls the health snapshot and calls for attention when an incident starts."""

    def __init__(
        self,
        app: App,
        slot: DbSlot,
        *,
        interval: float = POLL_INTERVAL_S,
        settings: ConsoleSettings | None = None,
        write: Callable[[str], None] | None = None,
    ):
        self.app = app
        self.interval = interval
        self.settings = settings
        self.write = write or terminal_writer(app)
        self.edges = IncidentEdges()
        self.slot = slot  # shared: its lock orders the snapshot with the pane refreshes
        self.alerted: list[str] = []  # what was called out, newest last (tests read it)
        self._busy = False
        self._timer: Timer | None = None
        self.stopped = False

    def start(self) -> None:
        if self.settings is None:
            try:
                self.settings = console_settings()
            except OpsError as exc:
                self.settings = ConsoleSettings()
                self.app.notify(f"{exc.message} Using the defaults.", severity="warning", timeout=8)
        # the first poll after one interval: the console's start (first refresh, premount) goes first
        self._timer = self.app.set_interval(self.interval, self.poll, name="oncall")

    def stop(self) -> None:
        """No more polls, and a poll in flight calls nothing out (the console left this database)."""
        self.stopped = True
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def poll(self) -> threading.Thread | None:
        """Read one snapshot on a thread of its own (never on the UI loop, never as a Textual worker
        that panes wait for); skipped while the last one runs. The result comes back to the UI thread."""
        if self._busy or self.stopped:
            return None
        self._busy = True
        thread = threading.Thread(target=self._poll_thread, name="oncall", daemon=True)
        thread.start()
        return thread

    @property
    def busy(self) -> bool:
        return self._busy

    def _poll_thread(self) -> None:
        try:
            found = self._read()
            if found is not None:
                with contextlib.suppress(RuntimeError):  # the app stopped meanwhile
                    self.app.call_from_thread(self.observe, found)
        finally:
            self._busy = False

    def _read(self) -> dict[str, str] | None:
        with self.slot.lock:
            try:
                # a read-only transaction with the refresh's own time budget: the panes it shares the
                # connection with wait for it no longer than for one another
                timeout = self.slot.timeout_ms or health.SNAPSHOT_TIMEOUT_MS
                return incidents(health.snapshot(self.slot.get(), timeout, histogram=False))
            except (OpsError, psycopg.Error) as exc:
                if is_disconnect(exc):
                    self.slot.close()  # the refresh engine tells the operator the database is gone
                return None

    def observe(self, found: Mapping[str, str]) -> list[str]:
        """Call out the incidents that started; return their keys."""
        if self.stopped:
            return []
        started = self.edges.update(found)
        settings = self.settings or ConsoleSettings()
        for key in started:
            self.alerted.append(found[key])
            self.write(escape_sequences(found[key], settings))
        return started
