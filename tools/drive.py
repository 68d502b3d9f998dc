"""Driving the console from code (tests, screenshots, the P8 bench): wait until a pane shows its data,
or until a dialog is open. Developer tooling: the console itself never waits like this."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from textual.app import App
from textual.screen import Screen

# worker groups that run all the time (LISTEN) or belong to an action, not to a pane's loading
BACKGROUND_GROUPS = {"listen", "flow", "jobs"}


def busy(app: App) -> bool:
    return any(
        w.state.name in {"PENDING", "RUNNING"} and w.group not in BACKGROUND_GROUPS for w in app.workers
    )


async def wait_loaded(
    app: Any, pane: str, check: Callable[[Any], bool] | None = None, timeout: float = 15.0
) -> None:
    """Wait until the pane shows data (passing `check`) or says why it cannot, every pane is mounted,
    and nothing is in flight."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    screen = app.panes[pane]
    while loop.time() < deadline:
        done = (
            screen.unavailable is not None
            or screen.fetch_error is not None
            or (screen.data is not None and (check is None or check(screen.data)))
        )
        if done and app.premounted and not app.engine.in_flight and not busy(app):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the {pane} pane did not load within {timeout} s")


async def wait_screen(app: App, name: str, timeout: float = 10.0) -> Screen:
    """Wait until the screen on top is of the class named `name` (a dialog, a detail screen)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if type(app.screen).__name__ == name:
            await asyncio.sleep(0.05)
            return app.screen
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{name} did not open within {timeout} s")
