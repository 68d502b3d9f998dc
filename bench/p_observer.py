"""P9, the observer's cost: how much server CPU one open console takes, pane by pane.

An incident: staging holds a large open backlog (3M rows at full size: 90% pending, 8% failed, 2% dead
letters, ingested over the last hour; QUICK: 100k), no worker runs. For each pane the real console
(OpsConsoleApp, headless under Textual's run_test, at the CLI's default refresh interval, LISTEN on,
the on-call watcher on) starts on that pane, loads it, and then simply stays open for a window. The
bench reads, from outside the console, the CPU time of the server backends the console holds
(application_name opsconsole:console, console-lookup, listen) at the start and the
end of the window: server CPU ms per wall second, from /proc/<pid>/schedstat (ns), with utime + stime
from /proc/<pid>/stat (10 ms clock ticks) beside it.

Then fifty consoles together, for real: fifty processes (bench/console_child.py), each one console open
on the worst pane, all loaded before the window starts; the same outside reading over all their
backends, the refreshes each console made in the window (a client starved of CPU would refresh less
and flatter the figure, so fewer than 80% of the expected refreshes fails the run), and the clients'
own CPU beside it. Fifty consoles hold 150 connections (three each); on the harness's own embedded
server the bench raises max_connections (ALTER SYSTEM, a restart) when it is lower, and on a server
given by --dsn it reports the fifty as not measured instead. QUICK runs ten consoles.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import CONSOLE_SIZE, BenchDB, Result, backend_run_ns, load_staging
from tools.drive import wait_loaded

# all still owed work: 90% pending, 8% failed, 2% dead letters (bench/harness.py loads them)
STATUS_MIX = {"pending": 900, "failed": 80, "dead_letter": 20}
DEFAULT_INTERVAL_S = 2.0  # `opsconsole console`'s default --interval (cli/console.py)
CONSOLE_APPS = (
    "opsconsole:console",
    "opsconsole:console-lookup",
    "opsconsole:listen",
)
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
TARGET_MS_PER_S = 10.0
TARGET_50_CORES = 0.5
FIFTY = 50
MIN_REFRESH_SHARE = 0.8  # of window / interval, per console


def proc_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/<pid>/stat; 0 once it
    is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def backend_cpu(conn: Any) -> dict[int, tuple[int, int, str]]:
    """CPU time of every backend the console holds, by pid: utime + stime in clock ticks from
    /proc/<pid>/stat, run time in ns from /proc/<pid>/schedstat, and its application_name."""
    names = dict(
        conn.execute(
            "SELECT pid, application_name FROM pg_stat_activity WHERE application_name = ANY(%s)",
            (list(CONSOLE_APPS),),
        ).fetchall()
    )
    out = {}
    for pid, name in names.items():
        ns = backend_run_ns(pid)
        if ns is None:
            continue
        out[pid] = (proc_ticks(pid), ns, name)
    return out


async def watch(db: BenchDB, pane: str, window_s: float) -> dict[str, Any]:
    """One console open on `pane` for window_s seconds after it loaded: its backends' CPU."""
    from opsconsole.tui.app import OpsConsoleApp

    app = OpsConsoleApp(
        db.dsn, database_label="bench", interval=DEFAULT_INTERVAL_S, listen=True, start_pane=pane
    )
    with db.connect() as probe:
        async with app.run_test(size=CONSOLE_SIZE):
            await wait_loaded(app, pane, timeout=180)
            await asyncio.sleep(1.0)  # the listener and the first on-call read have connected
            before = backend_cpu(probe)
            ticks_before = app.engine.ticks
            t0 = time.perf_counter()
            await asyncio.sleep(window_s)
            after = backend_cpu(probe)
            wall = time.perf_counter() - t0
            refreshes = app.engine.ticks - ticks_before
            loaded_ok = app.panes[pane].fetch_error is None
    ticks = sum(after[p][0] - before.get(p, (0, 0, ""))[0] for p in after)
    ns = sum(after[p][1] - before.get(p, (0, 0, ""))[1] for p in after)
    by_app: dict[str, float] = {}
    for p, (_, n, name) in after.items():
        by_app[name] = round(by_app.get(name, 0) + (n - before.get(p, (0, 0, ""))[1]) / 1e6 / wall, 2)
    stat_ms_per_s = ticks * TICK_S * 1000 / wall
    return {
        # schedstat's nanoseconds when the kernel keeps them (stat's 10 ms ticks are coarse over a
        # short window); stat's figure beside it
        "ms_per_s": round(ns / 1e6 / wall if ns else stat_ms_per_s, 2),
        "stat_ms_per_s": round(stat_ms_per_s, 2),
        "backends": len(after),
        "ms_per_s_by_backend": by_app,
        "refreshes": refreshes,
        "wall_s": round(wall, 1),
        "pane_ok": loaded_ok,
    }


def room_for(db: BenchDB, backends: int) -> str | None:
    """Make room for `backends` more connections; None when there is room, else why there is not.
    Only the harness's own embedded server is reconfigured (ALTER SYSTEM, then a restart)."""
    with db.connect() as conn:
        limit = int(conn.execute("SHOW max_connections").fetchone()[0])
        used = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        ).fetchone()[0]
        need = used + backends + 10  # the probe and the harness's own, with a margin
        if need <= limit:
            return None
        if db.server is None:
            return f"needs {need} connections, max_connections is {limit}; a --dsn server is not restarted"
        raised = max(need, 300)
        conn.execute(f"ALTER SYSTEM SET max_connections = {raised}")
    print(f"    max_connections {limit} -> {raised} on the embedded server (restart)", flush=True)
    db.server.restart("fast")
    return None


def many_consoles(db: BenchDB, pane: str, n: int, window_s: float) -> dict[str, Any]:
    """n real consoles, one process each, open on `pane`: their backends' CPU over window_s."""
    why_not = room_for(db, n * len(CONSOLE_APPS))
    if why_not is not None:
        return {"consoles": n, "measured": False, "why": why_not}
    with db.connect() as probe:  # the one-console runs' backends are gone (they would count here)
        deadline = time.monotonic() + 30
        while backend_cpu(probe) and time.monotonic() < deadline:
            time.sleep(0.2)
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="p9-") as tmp:
        procs, logs = [], []
        try:
            t0 = time.perf_counter()
            for i in range(n):
                logs.append(open(Path(tmp) / f"{i}.err", "w", encoding="utf-8"))  # noqa: SIM115 (closed below)
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.console_child", db.dsn, pane, str(DEFAULT_INTERVAL_S)],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=logs[-1],
                        text=True,
                        cwd=root,
                    )
                )
            for i, p in enumerate(procs):
                if p.stdout.readline().strip() != "ready":  # the child's own load timeout bounds this
                    err = (Path(tmp) / f"{i}.err").read_text(encoding="utf-8").strip().splitlines()
                    raise RuntimeError(f"console {i} of {n} did not load: {err[-1] if err else 'no output'}")
            started_s = time.perf_counter() - t0
            time.sleep(1.0)

            def marks() -> list[tuple[int, bool]]:
                for p in procs:
                    p.stdin.write("mark\n")
                    p.stdin.flush()
                out = [p.stdout.readline().split() for p in procs]
                return [(int(m[1]), m[2] == "ok") for m in out]

            with db.connect() as probe:
                m0 = marks()
                before = backend_cpu(probe)
                clients_before = sum(proc_ticks(p.pid) for p in procs)
                t1 = time.perf_counter()
                time.sleep(window_s)
                after = backend_cpu(probe)
                clients_after = sum(proc_ticks(p.pid) for p in procs)
                wall = time.perf_counter() - t1
                m1 = marks()
        finally:
            for p in procs:
                if p.poll() is None:
                    try:
                        p.stdin.write("quit\n")
                        p.stdin.flush()
                    except OSError:
                        pass
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            for log in logs:
                log.close()
    ns = sum(after[p][1] - before.get(p, (0, 0, ""))[1] for p in after)
    refreshes = [b[0] - a[0] for a, b in zip(m0, m1, strict=True)]
    expected = window_s / DEFAULT_INTERVAL_S
    ms_per_s = ns / 1e6 / wall
    return {
        "consoles": n,
        "measured": True,
        "pane": pane,
        "ms_per_s": round(ms_per_s, 2),
        "cores": round(ms_per_s / 1000, 3),
        "per_console_ms_per_s": round(ms_per_s / n, 2),
        "backends": len(after),
        "refreshes_min": min(refreshes),
        "refreshes_median": statistics.median(refreshes),
        "refreshes_expected": expected,
        "refreshes_kept_up": min(refreshes) >= MIN_REFRESH_SHARE * expected,
        "panes_ok": all(ok for _, ok in m1),
        "client_cores": round((clients_after - clients_before) * TICK_S / wall, 2),
        "started_s": round(started_s, 1),
        "wall_s": round(wall, 1),
    }


def p9_observer_cost(db: BenchDB, quick: bool) -> Result:
    from opsconsole.tui.screens import PANES

    rows = 100_000 if quick else 3_000_000
    window = 6.0 if quick else 20.0  # covers the on-call watcher's 5 s poll at least once
    loaded = load_staging(db, rows, STATUS_MIX)
    per_pane = {cls.PANE_ID: asyncio.run(watch(db, cls.PANE_ID, window)) for cls in PANES}
    worst_pane = max(per_pane, key=lambda k: per_pane[k]["ms_per_s"])
    worst = per_pane[worst_pane]["ms_per_s"]
    n = 10 if quick else FIFTY
    many = many_consoles(db, worst_pane, n, window)
    if many["measured"]:
        fifty_cores = many["cores"] * FIFTY / n
        fifty_how = f"measured: {n} consoles at once" + ("" if n == FIFTY else f", x {FIFTY // n} (QUICK)")
    else:
        fifty_cores = None
        fifty_how = f"not measured: {many['why']}"
    ok = (
        worst < TARGET_MS_PER_S
        and fifty_cores is not None
        and fifty_cores < TARGET_50_CORES
        and many["refreshes_kept_up"]
        and many["panes_ok"]
        and all(v["pane_ok"] for v in per_pane.values())
    )
    return Result(
        id="P9",
        what=f"server CPU of one open console, worst pane, {loaded['open_rows']:,} open staging rows, "
        f"refresh every {DEFAULT_INTERVAL_S:g} s"
        + (f"; {n} consoles at once: {many['cores']:g} core" if many["measured"] else ""),
        value=worst,
        baseline=None,
        ratio=None,
        target=f"< {TARGET_MS_PER_S:g} ms/s per console; 50 consoles < {TARGET_50_CORES:g} core",
        ok=ok,
        unit="ms/s",
        details=loaded
        | {
            "per_pane": per_pane,
            "fifty_consoles_cores": None if fifty_cores is None else round(fifty_cores, 3),
            "fifty_consoles_how": fifty_how,
            "many_consoles": many,
            "clock_tick_ms": round(TICK_S * 1000, 1),
            "window_s": window,
        },
    )


BENCHMARKS = [p9_observer_cost]
