"""Console test helpers: wait for the app to show things, read its tables and screen."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

from opsconsole.tui.app import OpsConsoleApp
from opsconsole.tui.clock import FrozenClock
from opsconsole.tui.messages import Notified

SIZE = (120, 40)
# Snapshots show every timestamp as if "now" were this instant (see FrozenClock).
SHOWN_NOW = dt.datetime(2025, 3, 14, 12, 30, 0, tzinfo=dt.UTC)


class RecordingApp(OpsConsoleApp):
    """The console, keeping the toasts it raised and the NOTIFYs it received, for tests to read."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.notices: list[str] = []
        self.notifications_seen: list[tuple[str, str]] = []

    def notify(self, message: str, *args: Any, **kwargs: Any) -> None:
        self.notices.append(message)
        super().notify(message, *args, **kwargs)

    def on_notified(self, message: Notified) -> None:  # OpsConsoleApp's own handler runs too (MRO)
        self.notifications_seen.append((message.channel, message.payload))


def frozen_clock(anchor: dt.datetime) -> FrozenClock:
    return FrozenClock(anchor, SHOWN_NOW)


async def wait_for(pilot, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll predicate (on the UI loop) until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await pilot.pause(0.05)


async def type_in(pilot, text: str) -> None:
    """Press / and type `text` into the search or filter box it opens, once that box has the focus
    (the test presses keys faster than any person: the first ones could reach the table instead)."""
    from textual.widgets import Input

    await pilot.press("slash")
    await wait_for(pilot, lambda: isinstance(pilot.app.focused, Input), what="the search box")
    await pilot.press(*text)


def table_rows(app: OpsConsoleApp, selector: str) -> list[list[str]]:
    """The visible text of a DataTable, row by row, in display order."""
    from textual.widgets import DataTable

    table = app.screen.query_one(selector, DataTable)
    out = []
    for row in table.ordered_rows:
        out.append([str(getattr(cell, "plain", cell)) for cell in table.get_row(row.key)])
    return out


def screen_text(app: OpsConsoleApp) -> str:
    """Everything the current screen shows, as plain text lines."""
    return "\n".join("".join(seg.text for seg in strip) for strip in app.screen._compositor.render_strips())


def statics_text(screen) -> str:
    """The text of every Static on a screen, including what is scrolled out of view."""
    from textual.widgets import Static

    out = []
    for widget in screen.query(Static):
        content = widget.content
        out.append(str(getattr(content, "plain", content)))
    return "\n".join(out)
