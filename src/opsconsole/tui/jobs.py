"""Running operator actions: the job record the UI shows, and the bar that shows it."""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from textual.markup import escape
from textual.reactive import reactive
from textual.widgets import Static

from opsconsole.ops.registry import ActionSpec
from opsconsole.tui.clock import human_duration
from opsconsole.tui.widgets.chrome import shown

if TYPE_CHECKING:
    from opsconsole.tui.state import ConsoleStatus

_ids = itertools.count(1)
SHOW_FINISHED_S = 8.0


@dataclass(eq=False)
class Job:
    spec: ActionSpec
    title: str
    arguments: dict[str, Any]
    started: float
    id: int = field(default_factory=lambda: next(_ids))
    status: str = "running"  # running | ok | error | cancelled
    progress: tuple[int, int] | None = None
    expected_s: float | None = None  # how long it should take (an estimate), for a progress bar
    counters: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    finished: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    conn: psycopg.Connection | None = None
    on_cancel: Callable[[], None] | None = None  # how to stop work that runs on other connections

    @property
    def running(self) -> bool:
        return self.status == "running"

    def cancel(self) -> None:
        """Stop between steps and cancel the statement in flight (the server rolls it back)."""
        self.cancel_event.set()
        if self.on_cancel is not None:
            with contextlib.suppress(Exception):
                self.on_cancel()
        conn = self.conn
        if conn is not None and not conn.closed:
            with contextlib.suppress(Exception):
                conn.cancel_safe(timeout=5)


class JobsBar(Static):
    """One line per running action (and recently finished ones); hidden when there are none. The jobs
    come with the ConsoleStatus the pane hands it; their counters move on between two statuses, so it
    redraws twice a second by itself."""

    DEFAULT_CSS = """
    JobsBar { height: auto; max-height: 5; background: $boost; padding: 0 1; display: none; }
    JobsBar.-visible { display: block; }
    """

    status: reactive[ConsoleStatus | None] = reactive(None, always_update=True, init=False, layout=False)

    _text: str | None = None  # what is shown, and in how many lines (-1: nothing yet)
    _lines = -1

    def on_mount(self) -> None:
        self.tick()
        self.set_interval(0.5, self.tick)

    def watch_status(self, status: ConsoleStatus | None) -> None:
        self.tick()

    def tick(self) -> None:
        status = self.status
        if not shown(self) or status is None:
            return
        now = status.clock.monotonic()
        lines = []
        for job in status.jobs:
            if job.running:
                lines.append(running_line(job, now))
            elif job.finished is not None and now - job.finished < SHOW_FINISHED_S:
                lines.append(finished_line(job))
        text = "\n".join(lines)
        if text == self._text:
            return  # nothing new (with no jobs: every half second): no redraw, no relayout
        relayout = len(lines) != self._lines  # the bar's height changes only with its line count
        self._text, self._lines = text, len(lines)
        self.set_class(bool(lines), "-visible")
        self.update(text, layout=relayout)


def running_line(job: Job, now: float) -> str:
    elapsed = human_duration(now - job.started)
    if job.spec.id == "continuous":
        c = job.counters
        return (
            f"[b $success]▶ continuous processing[/]  batches {c.get('batches', 0):,}"
            f"  processed {c.get('processed', 0):,}  failed {c.get('failed', 0):,}"
            f"  {c.get('rate', 0):,.0f} rows/s  running {elapsed}  [dim](c stops)[/]"
        )
    progress = ""
    if job.progress:
        done, total = job.progress
        filled = int(20 * done / total) if total else 0
        progress = f"  [$accent]{'█' * filled}{'░' * (20 - filled)}[/] {done}/{total}"
    elif job.expected_s:
        share = min(0.95, (now - job.started) / job.expected_s)
        filled = int(20 * share)
        progress = f"  [$accent]{'█' * filled}{'░' * (20 - filled)}[/] ~{share:.0%} of the last run's time"
    cancelling = "  [$warning]cancelling…[/]" if job.cancel_event.is_set() else "  [dim](x cancels)[/]"
    return f"[b $accent]⟳ {escape(job.title)}[/]{progress}  {elapsed}{cancelling}"


def finished_line(job: Job) -> str:
    mark = {"ok": "[$success]✓", "error": "[$error]✗", "cancelled": "[$warning]■"}.get(job.status, "•")
    return f"{mark} {escape(job.title)}[/]: {escape(job.message)}"
