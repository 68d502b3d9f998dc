"""`make screenshots`: open every pane on a freshly seeded scratch database and save screenshots/*.svg.

    python -m tools.screenshots [--out screenshots] [--admin-dsn DSN]

The scratch database (opsconsole_screenshots) lives on the embedded server unless --admin-dsn names a
server where the role may CREATE DATABASE; it is migrated, loaded with tools.sample, and
dropped afterwards. The clock is frozen so the pictures only change when the console does.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
from psycopg import conninfo
from textual.widgets import Input

from opsconsole.db import migrate
from opsconsole.tui.app import OpsConsoleApp
from opsconsole.tui.clock import FrozenClock
from tools import sample
from tools.drive import wait_loaded, wait_screen

SIZE = (120, 40)
SCRATCH_DB = "opsconsole_screenshots"
SHOWN_NOW = dt.datetime(2025, 3, 14, 12, 30, 0, tzinfo=dt.UTC)  # what "now" looks like in the pictures


def anchor_now() -> dt.datetime:
    """The frozen "now" of the pictures (the sample dates everything relative to it): the start of a
    minute, see tools.sample.minute_anchor."""
    return sample.minute_anchor()


def console_app(dsn: str, anchor: dt.datetime, pane: str, **kwargs) -> OpsConsoleApp:
    return OpsConsoleApp(
        dsn,
        database_label="demo",
        version_label="18",
        clock=FrozenClock(anchor, SHOWN_NOW),
        listen=False,
        interval=60.0,
        start_pane=pane,
        **kwargs,
    )


async def open_pane(app: OpsConsoleApp, pilot, pane: str) -> None:
    """Wait until the pane shows its data (or says why it cannot), and nothing is in flight."""
    await wait_loaded(app, pane)
    for _ in range(40):  # the footer fills in a refresh after the screen mounts
        if app.screen.query("FooterKey"):
            break
        await pilot.pause(0.05)
    for widget in app.screen.query("Input"):
        widget.cursor_blink = False  # type: ignore[attr-defined]
    await pilot.pause(0.1)
    await settle_tables(app, pilot)


async def settle_tables(app: OpsConsoleApp, pilot) -> None:
    """Wait until every table has measured its new cells (DataTable does it when idle, so under load a
    picture taken too early shows the column widths of before)."""
    from textual.widgets import DataTable

    for _ in range(100):
        pending = [
            t
            for t in app.screen.query(DataTable)
            if t._require_update_dimensions or t._updated_cells  # noqa: SLF001 - no public flag for this
        ]
        if not pending:
            break
        await pilot.pause(0.05)
    await pilot.pause(0.05)


async def shoot(
    app: OpsConsoleApp, out: Path, name: str, then: Callable[..., Awaitable[None]] | None
) -> Path:
    async with app.run_test(size=SIZE) as pilot:
        await open_pane(app, pilot, app.start_pane or "monitor")
        if then is not None:
            await then(app, pilot)
            await pilot.pause(0.3)
        path = app.save_screenshot(f"{name}.svg", path=str(out))
    return Path(path)


async def _search(app: OpsConsoleApp, pilot) -> None:
    await pilot.press("slash")
    while not isinstance(app.focused, Input):  # the box has the focus before the keys are typed
        await pilot.pause(0.05)
    await pilot.press(*"ada")
    await wait_loaded(app, "customers", lambda d: d.q == "ada")


async def _retry_dialog(app: OpsConsoleApp, pilot) -> None:
    if not app.op_allowed("retry_failed"):
        return  # the pipeline is not installed: the picture shows the pane as it is
    await pilot.press("r")
    await wait_screen(app, "ChoiceScreen")
    await pilot.press("down", "enter")
    await wait_screen(app, "ConfirmScreen")


async def _help(app: OpsConsoleApp, pilot) -> None:
    await pilot.press("question_mark")
    await wait_screen(app, "HelpScreen")


SHOTS: list[tuple[str, str, Callable[..., Awaitable[None]] | None]] = [
    ("1-monitor", "monitor", None),
    ("2-backlog", "backlog", None),
    ("2-backlog-retry-confirm", "backlog", _retry_dialog),
    ("3-data-quality", "quality", None),
    ("4-customers", "customers", _search),
    ("5-catalog", "catalog", None),
    ("6-activity", "activity", None),
    ("7-timeline", "timeline", None),
    ("help", "activity", _help),
]


def prepare(admin_dsn: str, anchor: dt.datetime, migrations: Path | None = None) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{SCRATCH_DB}"')
    dsn = conninfo.make_conninfo(admin_dsn, dbname=SCRATCH_DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # a dev's other migrations dir brings its definitions/ beside it, as sql/ does
        definitions = migrations.parent / "definitions" if migrations is not None else None
        migrate.migrate(conn, migrations, definitions)
        sample.seed(conn, anchor)
    return dsn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="screenshots", help="directory for the SVGs")
    parser.add_argument(
        "--admin-dsn", help="a server where this role may CREATE DATABASE (default: embedded)"
    )
    parser.add_argument("--migrations", type=Path, help=argparse.SUPPRESS)  # another migrations dir (dev)
    args = parser.parse_args(argv)
    if args.admin_dsn:
        admin_dsn = args.admin_dsn
    else:
        from opsconsole.db.embedded import EmbeddedServer

        admin_dsn = conninfo.make_conninfo(EmbeddedServer().ensure_running().dsn, dbname="postgres")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    anchor = anchor_now()
    dsn = prepare(admin_dsn, anchor, args.migrations)
    try:
        for name, pane, then in SHOTS:
            path = asyncio.run(shoot(console_app(dsn, anchor, pane), out, name, then))
            print(f"wrote {path}")
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
