"""Messages between the console's parts. Workers post them from threads; panes post them to ask the
app for something (they bubble from the screen to the app); handlers run on the UI thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from opsconsole.ops.actions import ActionOutcome
    from opsconsole.ops.registry import Capabilities
    from opsconsole.tui.jobs import Job
    from opsconsole.tui.screens.base import PaneResult


# -- from panes to the app ---------------------------------------------------------------------------


class RefreshRequested(Message):
    """Refresh these panes as soon as possible (the filter or search text changed)."""

    def __init__(self, panes: set[str]):
        super().__init__()
        self.panes = panes


class ActionRequested(Message):
    """The operator asked for an action (a pane's key)."""

    def __init__(self, action_id: str):
        super().__init__()
        self.action_id = action_id


class PaneShown(Message):
    """A pane became the visible screen."""

    def __init__(self, pane: str):
        super().__init__()
        self.pane = pane


# -- from worker threads to the app --------------------------------------------------------------------


class RefreshDone(Message):
    def __init__(
        self, results: list[PaneResult], caps: Capabilities | None, error: str | None, engine: object
    ):
        super().__init__()
        self.results = results
        self.caps = caps
        self.error = error
        # the RefreshEngine that fetched: one replaced since (a profile switch) is ignored
        self.engine = engine


class Notified(Message):
    def __init__(self, channel: str, payload: str):
        super().__init__()
        self.channel = channel
        self.payload = payload


class JobProgress(Message):
    def __init__(self, job: Job):
        super().__init__()
        self.job = job


class JobFinished(Message):
    def __init__(self, job: Job, outcome: ActionOutcome, after: Callable[[ActionOutcome], None] | None):
        super().__init__()
        self.job = job
        self.outcome = outcome
        self.after = after
