"""P8, the console: key press to screen update while the panes refresh against a big staging table.

The real app (OpsConsoleApp) runs headless under Textual's Pilot against the bench database, with the
refresh engine at its shortest interval (refresh.INTERVALS[0]) and the NOTIFY listener on. The engine
refreshes the visible pane (plus any pane a NOTIFY made dirty, when shown), so the key script visits
all six panes in turn and each one's refresh runs against the staging rows while keys arrive.

What "the screen changed" means here: Textual draws a frame when a screen's update timer fires
(Screen._compositor_refresh -> App._display(screen, update)). The bench wraps App._display: it renders
the update to the terminal byte string as the real driver would (headless skips only the write), stamps
the time, and checks the pressed key's expectation (the right screen is on top, the cursor row moved,
the input holds the typed text ...) against the app's state at that moment. The first frame drawn for
the top screen with the expectation met is the key's screen update; latency = that stamp - the moment
`pilot.press` was called. The bench never calls `pilot.pause()` between press and frame, because
pause() forces a frame (Screen._on_timer_update) that a user's terminal would not get.

Staging rows are loaded by harness.load_staging (p_pipeline's rows through the product's COPY, with
a status mix: mostly processed, some pending, failed and dead-lettered, ingested over the last hour).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.harness import CONSOLE_SIZE, BenchDB, Result, load_staging
from opsconsole.tui.refresh import INTERVALS
from tools.drive import wait_loaded

FRAME_TIMEOUT_S = 5.0  # a key with no matching frame by then counts as this long, and as a miss


# The data: N staging rows, mostly processed, some still owed work (bench/harness.py loads them)
STATUS_MIX = {"processed": 950, "pending": 30, "failed": 15, "dead_letter": 5}


# --------------------------------------------------------------------------------------------------
# Frames: when the screen actually changed
# --------------------------------------------------------------------------------------------------
@dataclass
class Press:
    key: str
    what: str
    expect: Callable[[], bool]


@dataclass
class FrameProbe:
    """Wraps App._display: renders each frame as the terminal driver would and stamps the first frame
    of the top screen that meets the pending key's expectation."""

    app: Any
    pending: Press | None = None
    hit_at: float | None = None
    frames: int = 0
    render_s: list[float] = field(default_factory=list)

    def install(self) -> None:
        original = self.app._display

        def display(screen: Any, renderable: Any) -> None:
            original(screen, renderable)
            app = self.app
            if renderable is None or app._batch_count:
                return
            t = time.perf_counter()
            if hasattr(renderable, "render_segments"):
                renderable.render_segments(app.console)  # the bytes a real terminal would be sent
            self.frames += 1
            self.render_s.append(time.perf_counter() - t)
            if self.pending is not None and screen is app.screen and self.pending.expect():
                self.hit_at = time.perf_counter()
                self.pending = None

        self.app._display = display


class LoopLag:
    """Samples how late a 5 ms sleep wakes up on the app's event loop: a blocked loop shows here."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            self.lags.append(time.perf_counter() - t - 0.005)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


# --------------------------------------------------------------------------------------------------
# The key script
# --------------------------------------------------------------------------------------------------
def _cursor(app: Any) -> tuple[Any, str, int] | None:
    """The focused widget and its cursor (DataTable row or Tree line), if it has one."""
    from textual.widgets import DataTable, Tree

    w = app.focused
    if isinstance(w, DataTable):
        return w, "cursor_row", w.cursor_row
    if isinstance(w, Tree):
        return w, "cursor_line", w.cursor_line
    return None


def plan_key(app: Any, key: str) -> Press | None:
    """What pressing `key` now must show; None when it would change nothing visible (skipped)."""
    from textual.command import CommandPalette
    from textual.widgets import Input

    from opsconsole.tui.screens.modals import HelpScreen

    screen = app.screen
    focused = app.focused
    if isinstance(focused, Input) and (len(key) == 1 or key in ("slash", "backspace")):
        # a focused input takes printable keys (pane digits and "/" too) as text; the value changes
        # (typing replaces a selection: Input selects its text when focused, so no exact expectation)
        before = focused.value
        if key == "backspace" and not before:
            return None
        return Press(key, f"type in {focused.id}", lambda: focused.value != before)
    if key in ("1", "2", "3", "4", "5", "6"):
        target = next(s for s in app.panes.values() if key == s.PANE_KEY)
        if screen is target:
            return None
        return Press(key, f"pane {key}", lambda: app.screen is target)
    if key == "question_mark":
        return Press(key, "help", lambda: isinstance(app.screen, HelpScreen))
    if key == "ctrl+p":
        return Press(key, "palette", lambda: isinstance(app.screen, CommandPalette))
    if key == "escape" and not hasattr(screen, "PANE_ID"):
        return Press(key, "close dialog", lambda: app.screen is not screen)
    if key in ("down", "up"):
        cur = _cursor(app)
        if cur is None:
            return None
        widget, attr, at = cur
        want = at + (1 if key == "down" else -1)
        limit = widget.row_count if attr == "cursor_row" else widget.last_line + 1
        if not 0 <= want < limit:
            return None
        return Press(
            key, f"{key} in {widget.id or type(widget).__name__}", lambda: getattr(widget, attr) == want
        )
    pane = getattr(screen, "PANE_ID", "")
    if pane == "customers" and key in ("slash", "escape"):
        target = screen.query_one("#search" if key == "slash" else "#results")
        if target.has_focus:
            return None
        return Press(key, "focus search" if key == "slash" else "leave search", lambda: target.has_focus)
    if key == "slash" and pane == "backlog":
        box = screen.query_one("#filter", Input)
        return Press(key, "open filter", lambda: bool(box.display and box.has_focus))
    if key == "escape" and pane == "backlog":
        box = screen.query_one("#filter", Input)
        if not box.display:
            return None
        return Press(key, "close filter", lambda: not box.display)
    return None


# One round visits every pane and does something in each; help and the palette open and close.
ROUND = [
    "2", "down", "down", "down", "up", "slash", "escape",
    "3", "down", "up",
    "4", "slash", "a", "d", "backspace", "backspace", "escape", "down",
    "5", "down", "down", "up",
    "6", "down", "down", "up",
    "1", "question_mark", "escape", "ctrl+p", "escape",
]  # fmt: skip
GAPS = (0.08, 0.15, 0.25, 0.4)  # seconds between key presses, cycled: a person's pace, varied


async def drive(dsn: str, rounds: int) -> dict[str, Any]:
    from opsconsole.tui.app import OpsConsoleApp

    interval = INTERVALS[0]
    app = OpsConsoleApp(dsn, database_label="bench", interval=interval, listen=True)
    samples: list[tuple[str, float, bool]] = []
    fetches: list[tuple[str, float]] = []
    errors: list[tuple[str, str]] = []
    misses: list[str] = []
    lag = LoopLag()
    async with app.run_test(size=CONSOLE_SIZE) as pilot:
        probe = FrameProbe(app)
        probe.install()
        fetch = app.engine._fetch

        finished = app.engine.finished

        def timed_fetch(plan: Any) -> None:  # the refresh worker (its thread), timed per plan
            t = time.perf_counter()
            fetch(plan)
            fetches.append((plan.panes[0][0], time.perf_counter() - t))

        def counted_finished(message: Any) -> None:  # the UI thread: which refreshes failed, and why
            for result in message.results:
                if result.error:
                    errors.append((result.pane, result.error))
            if message.error:
                errors.append(("(connection)", message.error))
            finished(message)

        app.engine._fetch = timed_fetch
        app.engine.finished = counted_finished
        await wait_loaded(app, "monitor", timeout=120)
        ticks_before = app.engine.ticks
        lag.start()
        started = time.perf_counter()
        n = 0
        for _ in range(rounds):
            for key in ROUND:
                press = plan_key(app, key)
                if press is None:
                    await pilot.press(key)  # keep the script's state in step; not measured
                    continue
                probe.hit_at = None
                probe.pending = press
                t0 = time.perf_counter()
                await pilot.press(key)
                deadline = t0 + FRAME_TIMEOUT_S
                while probe.hit_at is None and time.perf_counter() < deadline:
                    await asyncio.sleep(0.002)
                probe.pending = None
                hit = probe.hit_at is not None
                if not hit:  # what the screen showed instead, for the report
                    focused = app.focused
                    misses.append(
                        f"{press.what} ({key}): screen {type(app.screen).__name__}, focused "
                        f"{type(focused).__name__}#{getattr(focused, 'id', None)} "
                        f"value {getattr(focused, 'value', None)!r}"
                    )
                samples.append((press.what, (probe.hit_at - t0) if hit else FRAME_TIMEOUT_S, hit))
                await asyncio.sleep(GAPS[n % len(GAPS)])
                n += 1
        elapsed = time.perf_counter() - started
        lag.stop()
        ticks = app.engine.ticks - ticks_before
        await pilot.press("q")
    return {
        "samples": samples,
        "fetches": fetches,
        "errors": errors,
        "misses": misses,
        "lags": lag.lags,
        "ticks": ticks,
        "seconds": elapsed,
        "frames": probe.frames,
        "render_s": probe.render_s,
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    ms = [s[1] * 1000 for s in run["samples"]]
    by_what: dict[str, list[float]] = {}
    for what, seconds, _ in run["samples"]:
        by_what.setdefault(what.split(" in ")[0] if what.startswith(("down", "up")) else what, []).append(
            seconds * 1000
        )
    per_pane: dict[str, list[float]] = {}
    for pane, seconds in run["fetches"]:
        per_pane.setdefault(pane, []).append(seconds * 1000)
    errors: dict[str, int] = {}
    for pane, _ in run["errors"]:
        errors[pane] = errors.get(pane, 0) + 1
    lags = [x * 1000 for x in run["lags"]] or [0.0]
    return {
        "presses": len(ms),
        "missed": sum(1 for s in run["samples"] if not s[2]),
        "misses": run["misses"],
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(pct(ms, 0.95), 1),
        "max_ms": round(max(ms), 1),
        "by_key_p95_ms": {k: round(pct(v, 0.95), 1) for k, v in sorted(by_what.items())},
        "slowest": sorted(((round(s * 1000, 1), w) for w, s, _ in run["samples"]), reverse=True)[:5],
        "refresh_interval_s": INTERVALS[0],
        "refreshes": run["ticks"],
        "refresh_ms_median_by_pane": {p: round(statistics.median(v), 1) for p, v in sorted(per_pane.items())},
        "refresh_ms_max_by_pane": {p: round(max(v), 1) for p, v in sorted(per_pane.items())},
        "refresh_errors_by_pane": errors,
        "refresh_error_examples": sorted({e for _, e in run["errors"]})[:3],
        "loop_lag_p99_ms": round(pct(lags, 0.99), 1),
        "loop_lag_max_ms": round(max(lags), 1),
        "frames": run["frames"],
        "frame_render_ms_p95": round(pct([x * 1000 for x in run["render_s"]] or [0.0], 0.95), 2),
        "script_seconds": round(run["seconds"], 1),
    }


def p8_console_keys(db: BenchDB, quick: bool) -> Result:
    rows = 20_000 if quick else 10_000_000
    rounds = 1 if quick else 5  # quick: ~30 keys in ~20 s, so make bench QUICK=1 stays near a minute
    loaded = load_staging(db, rows, STATUS_MIX)
    summary = summarize(asyncio.run(drive(db.dsn, rounds)))
    p95 = summary["p95_ms"]
    return Result(
        id="P8",
        what=f"console key press -> screen update, {summary['presses']} keys, "
        f"{loaded['staging_rows']:,} staging rows, refresh every {INTERVALS[0]:g} s",
        value=p95,
        baseline=None,
        ratio=None,
        target="p95 < 50 ms",
        ok=p95 < 50 and summary["missed"] == 0,
        unit="ms",
        details=loaded | summary,
    )


BENCHMARKS = [p8_console_keys]
