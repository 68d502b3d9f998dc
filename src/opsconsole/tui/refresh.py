"""The refresh engine: fetch pane data without ever blocking a key press and without overlapping.

- One fetch at a time. A tick starts a thread worker on the refresh connection; when it finishes the
  engine re-arms `set_timer(interval)` (dolphie's pattern), so a slow query delays the next tick instead
  of stacking ticks. A request that arrives while a fetch is in flight (a NOTIFY, a key) sets a flag and
  the engine runs again right after.
- Push, then poll: the Listener thread LISTENs on the platform's channels on its own connection and
  posts Notified messages; the app maps channels to panes and calls `request()`.
- Probes run with a statement_timeout shorter than the interval, on a session that is read-only.
- Server gone: the engine says so (the banner reads `connected`, `error`, `retry_in()`), keeps the
  panes' last data (marked stale), backs off 1, 2, 4, ... 30 s and recovers by itself.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from textual.timer import Timer

from opsconsole.db.connect import connect, set_session
from opsconsole.errors import (
    ConnectionProblem,
    first_line,
    is_disconnect,
    is_node_unreachable,
    unreachable_node,
)
from opsconsole.ops import channels
from opsconsole.ops.actions import describe_error
from opsconsole.ops.registry import Capabilities, probe
from opsconsole.tui.clock import Clock
from opsconsole.tui.messages import Notified, RefreshDone
from opsconsole.tui.screens.base import PaneResult, PaneScreen


class EngineHost(Protocol):
    """What the engine needs from the app that runs it (the app implements it; the engine does not
    know the App class): where to run and post, which pane is shown, and whom to tell what happened."""

    current_pane: str
    panes: dict[str, PaneScreen]
    caps: Capabilities | None
    clock: Clock

    def run_worker(self, work: Any, **kwargs: Any) -> Any: ...
    def set_timer(self, delay: float, callback: Any, **kwargs: Any) -> Timer: ...
    def post_message(self, message: Any) -> bool: ...
    def caps_changed(self, caps: Capabilities) -> None: ...
    def reconnected(self) -> None: ...
    def disconnected(self, error: str) -> None: ...
    def refresh_chrome(self) -> None: ...


INTERVALS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
REPROBE_EVERY_S = 30.0
MAX_BACKOFF_S = 30.0


def probe_timeout_ms(interval: float) -> int:
    """statement_timeout for pane probes: shorter than the interval, never below 500 ms."""
    return max(500, int(interval * 1000 * 0.8))


class DbSlot:
    """One lazily (re)opened connection for one purpose, used by one thread at a time."""

    def __init__(self, dsn: str, app_name: str, timeout_ms: int | None = None, read_only: bool = True):
        self.dsn = dsn
        self.app_name = app_name
        self.timeout_ms = timeout_ms
        self.read_only = read_only
        self.lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._applied_timeout: int | None = None

    def get(self) -> psycopg.Connection:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            self.close()
            conn = connect(self.dsn, self.app_name)
            if self.read_only:
                set_session(conn, read_only=True)
            self._conn = conn
            self._applied_timeout = None
        if self.timeout_ms != self._applied_timeout:
            set_session(conn, statement_timeout_ms=int(self.timeout_ms or 0))
            self._applied_timeout = self.timeout_ms
        return conn

    @property
    def backend_pid(self) -> int | None:
        conn = self._conn
        return conn.info.backend_pid if conn is not None and not conn.closed else None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


@dataclass
class FetchPlan:
    panes: list[tuple[str, type, dict[str, Any]]]  # (pane id, screen class, params)
    reprobe: bool
    timeout_ms: int
    results: list[PaneResult] = field(default_factory=list)


class RefreshEngine:
    def __init__(self, app: EngineHost, dsn: str, interval: float = 2.0):
        self.app = app
        self.interval = interval
        self.slot = DbSlot(dsn, "console", probe_timeout_ms(interval))
        self.connected: bool | None = None
        self.error: str | None = None
        self.failures = 0
        self.last_ok = None
        self.paused = False
        self.in_flight = False
        self.rerun = False
        self.dirty: set[str] = set()
        self._timer: Timer | None = None
        self._retry_at: float | None = None
        self._last_probe: float | None = None
        self.ticks = 0
        self.stopping = False

    # -- scheduling (UI thread) ---------------------------------------------------------------------
    def start(self) -> None:
        self.kick()

    def stop(self) -> None:
        self.stopping = True
        self._cancel_timer()

    def close(self) -> None:
        """Close the connection once a fetch in flight is done with it (a worker thread's call: it
        may wait up to the statement timeout). For a stopped engine: the console closed, or a profile
        switch replaced it."""
        with self.slot.lock:
            self.slot.close()

    def retry_in(self) -> float:
        if self._retry_at is None:
            return 0.0
        return max(0.0, self._retry_at - time.monotonic())

    def request(self, panes: set[str] | None = None) -> None:
        """Refresh these panes (default: the visible one) as soon as possible."""
        if panes:
            self.dirty |= panes
        if self.app.current_pane in (panes or {self.app.current_pane}):
            self.kick()

    def kick(self) -> None:
        if self.stopping:
            return
        if self.in_flight:
            self.rerun = True
            return
        if self.connected is False and self.retry_in() > 0:
            return  # the retry timer is armed; do not hammer a dead server
        self._cancel_timer()
        self._run()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if paused:
            self._cancel_timer()
        else:
            self.kick()

    def set_interval(self, interval: float) -> None:
        self.interval = interval
        self.slot.timeout_ms = probe_timeout_ms(interval)
        if not self.paused and not self.in_flight:
            self._cancel_timer()
            self._arm(interval)

    def faster(self) -> float:
        smaller = [i for i in INTERVALS if i < self.interval]
        self.set_interval(smaller[-1] if smaller else self.interval)
        return self.interval

    def slower(self) -> float:
        larger = [i for i in INTERVALS if i > self.interval]
        self.set_interval(larger[0] if larger else self.interval)
        return self.interval

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def _arm(self, delay: float) -> None:
        self._cancel_timer()
        if not self.stopping:
            self._timer = self.app.set_timer(delay, self._on_timer, name="refresh")

    def _on_timer(self) -> None:
        self._timer = None
        if self.connected is False:
            self._retry_at = None
        if not self.paused or self.connected is False:
            self.kick()

    def _run(self) -> None:
        pane = self.app.current_pane
        screen = self.app.panes[pane]
        params = screen.fetch_params()
        now = time.monotonic()
        reprobe = (
            self.app.caps is None
            or self.connected is not True
            or self._last_probe is None
            or now - self._last_probe > REPROBE_EVERY_S
        )
        plan = FetchPlan([(pane, type(screen), params)], reprobe, probe_timeout_ms(self.interval))
        self.dirty.discard(pane)
        self.in_flight = True
        self.rerun = False
        self.app.run_worker(lambda: self._fetch(plan), thread=True, group="refresh", exit_on_error=False)

    # -- the fetch (worker thread) ------------------------------------------------------------------
    def _fetch(self, plan: FetchPlan) -> None:
        caps = self.app.caps
        error = None
        results: list[PaneResult] = []
        with self.slot.lock:
            try:
                conn = self.slot.get()
                if plan.reprobe or caps is None:
                    caps = probe(conn)
                for pane, cls, params in plan.panes:
                    at = self.app.clock.now()
                    reason = cls.unavailable_reason(caps)
                    if reason:
                        results.append(PaneResult(pane, at, unavailable=reason))
                        continue
                    try:
                        data = cls.fetch(conn, caps, params)
                        results.append(PaneResult(pane, self.app.clock.now(), data=data))
                    except Exception as exc:
                        if is_disconnect(exc):
                            raise
                        results.append(PaneResult(pane, at, error=pane_error(exc, self.slot.timeout_ms)))
            except Exception as exc:
                self.slot.close()
                error = first_line(exc) if not isinstance(exc, ConnectionProblem) else exc.message
                if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
                    error = exc.diag.message_primary
                caps = None if plan.reprobe else caps
        self.app.post_message(RefreshDone(results, caps if error is None else None, error, self))

    # -- completion (UI thread) ---------------------------------------------------------------------
    def finished(self, message: RefreshDone) -> None:
        self.in_flight = False
        self.ticks += 1
        if message.error is None:
            was_down = self.connected is False
            self.connected = True
            self.error = None
            self.failures = 0
            self._retry_at = None
            self.last_ok = self.app.clock.now()
            if message.caps is not None and message.caps is not self.app.caps:
                self._last_probe = time.monotonic()
                self.app.caps_changed(message.caps)
            for result in message.results:
                self.app.panes[result.pane].show(result)
            if was_down:
                self.app.reconnected()
            delay = self.interval
        else:
            self.connected = False
            self.error = message.error
            self.failures += 1
            delay = min(MAX_BACKOFF_S, 2 ** (self.failures - 1))
            self._retry_at = time.monotonic() + delay
            self.app.disconnected(message.error)
        self.app.refresh_chrome()
        if self.stopping:
            return
        if self.rerun and message.error is None:
            self.kick()
        elif not self.paused or self.connected is False:
            self._arm(delay)


def pane_error(exc: BaseException, timeout_ms: int | None) -> str:
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return f"the query took longer than {timeout_ms} ms (statement_timeout)"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return f"permission denied: {describe_error(exc)}"
    if is_node_unreachable(exc):  # short: it is the pane's border line
        node = unreachable_node(exc)
        said = f"Citus worker node {node}" if node else f"a Citus worker node ({describe_error(exc)})"
        return f"{said} did not answer; the next refresh tries again"
    return describe_error(exc)


class Listener:
    """LISTEN on the platform's channels on a dedicated connection, in a worker thread."""

    def __init__(self, dsn: str, post: Callable[[Notified], Any]):
        self.dsn = dsn
        self.post = post
        self.stop_event = threading.Event()
        self.listening = False
        self.conn: psycopg.Connection | None = None

    def stop(self) -> None:
        self.stop_event.set()

    @property
    def backend_pid(self) -> int | None:
        conn = self.conn
        return conn.info.backend_pid if conn is not None and not conn.closed else None

    def run(self) -> None:
        backoff = 1.0
        while not self.stop_event.is_set():
            try:
                with connect(self.dsn, "listen") as conn:
                    self.conn = conn
                    channels.listen(conn)
                    self.listening = True
                    backoff = 1.0
                    while not self.stop_event.is_set():
                        for note in conn.notifies(timeout=0.5, stop_after=100):
                            self.post(Notified(note.channel, note.payload))
            except Exception:
                pass
            finally:
                self.listening = False
                self.conn = None
            self.stop_event.wait(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)
