"""Snapshot tests: each pane at 80x24 and 200x60 on the deterministic sample (tools.sample), with the
clock frozen, so a snapshot changes only when the console's look does. Regenerate after an intended
change with `pytest tests/tui/test_snapshots.py --snapshot-update` and review the SVGs."""

from __future__ import annotations

import pytest

from tools import sample
from tools.drive import wait_screen
from tools.screenshots import SIZE, console_app, open_pane

PANES = ["monitor", "backlog", "quality", "customers", "catalog", "activity", "timeline"]
SIZES = {"80x24": (80, 24), "200x60": (200, 60)}  # the smallest terminal and a wide one


@pytest.fixture
def seeded(db_dsn, conn):
    anchor = sample.minute_anchor()
    sample.seed(conn, anchor)
    return db_dsn, anchor


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("pane", PANES)
def test_pane_snapshot(snap_compare, seeded, pane, size):
    dsn, anchor = seeded
    app = console_app(dsn, anchor, pane)

    async def run_before(pilot) -> None:
        await open_pane(app, pilot, pane)

    assert snap_compare(app, terminal_size=SIZES[size], run_before=run_before)


def test_help_snapshot(snap_compare, seeded):
    dsn, anchor = seeded
    app = console_app(dsn, anchor, "activity")

    async def run_before(pilot) -> None:
        await open_pane(app, pilot, "activity")
        await pilot.press("question_mark")
        await wait_screen(app, "HelpScreen")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
