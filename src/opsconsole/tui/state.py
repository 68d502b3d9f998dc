"""What the app hands its panes and widgets, so that none of them reaches into the App.

- ConsoleContext: fixed for the console's life and given to each pane when it is made: the clock and
  the interactive-read slot (`lookup`: run a function of a connection in a thread, for drill-downs).
- ConsoleStatus: a snapshot of the console's state (connection, caps, interval, jobs), pushed by the
  app into the shown pane's `status` reactive (on every change and once a second); the pane passes it
  to its chrome widgets.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from opsconsole.ops.registry import ACTIONS_BY_ID, Capabilities
from opsconsole.tui.clock import Clock

if TYPE_CHECKING:
    from opsconsole.tui.jobs import Job

T = TypeVar("T")
Lookup = Callable[[Callable[[psycopg.Connection], Any]], Awaitable[Any]]


@dataclass(frozen=True)
class ConsoleContext:
    clock: Clock
    lookup: Lookup


@dataclass(frozen=True, eq=False)
class ConsoleStatus:
    clock: Clock
    database_label: str
    version_label: str | None
    read_only: bool
    caps: Capabilities | None
    connected: bool | None  # None: not yet known
    error: str | None
    retry_at: float | None  # monotonic time of the next reconnect attempt
    last_ok: dt.datetime | None
    interval: float
    paused: bool
    jobs: tuple[Job, ...] = ()
    fleet: dict[str, Any] | None = None  # pipeline_fleet_control: paused, changed_by, changed_at, reason

    def op_allowed(self, action_id: str) -> bool:
        spec = ACTIONS_BY_ID.get(action_id)
        return spec is not None and spec.unavailable_reason(self.caps, self.read_only) is None

    def running(self, action_id: str) -> Job | None:
        return next((j for j in self.jobs if j.running and j.spec.id == action_id), None)
