"""One real console in a process of its own, for P9's fifty: the parent starts many of these.

`python -m bench.console_child DSN PANE INTERVAL` runs OpsConsoleApp headless (Textual's run_test, at
the benchmarks' terminal size, LISTEN on, the on-call watcher on) on PANE, prints `ready` once the
pane has loaded, then answers each line on stdin: `mark` prints the refresh count so far, `quit`
(or the end of stdin) exits. A process per console, not fifty apps in one event loop: each console
then has its own interpreter, threads and connections, as fifty engineers' terminals would.
"""

from __future__ import annotations

import asyncio
import sys

from bench.harness import CONSOLE_SIZE
from tools.drive import wait_loaded


async def run(dsn: str, pane: str, interval: float) -> int:
    from opsconsole.tui.app import OpsConsoleApp

    app = OpsConsoleApp(dsn, database_label="bench", interval=interval, listen=True, start_pane=pane)
    async with app.run_test(size=CONSOLE_SIZE):
        await wait_loaded(app, pane, timeout=600)
        print("ready", flush=True)
        while True:
            line = (await asyncio.to_thread(sys.stdin.readline)).strip()
            if line == "mark":
                error = app.panes[pane].fetch_error
                print(f"mark {app.engine.ticks} {'ok' if error is None else 'error'}", flush=True)
            elif line in ("quit", ""):
                return 0


def main() -> int:
    dsn, pane, interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
    return asyncio.run(run(dsn, pane, interval))


if __name__ == "__main__":
    sys.exit(main())
