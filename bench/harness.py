"""Run the benchmarks, write bench/results/latest.json, print a table, refresh the README table.

Each benchmark module under bench/ exposes BENCHMARKS: a list of functions f(db: BenchDB, quick: bool)
-> Result. A benchmark measures its candidate and its baseline in the same run, median of 3, so the
ratio means something on a noisy 2-core machine; absolute numbers are printed beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import statistics
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
from psycopg import conninfo
from rich.console import Console
from rich.table import Table

from opsconsole import errors
from opsconsole.db import migrate
from opsconsole.pipeline import arrival

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "latest.json"
README = ROOT.parent / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
MODULES = ("p_pipeline", "p_customers", "p_dq", "p_console", "p_observer", "p_citus")


@dataclass
class Result:
    id: str
    what: str
    value: float  # the candidate, in `unit`
    baseline: float | None  # the baseline, same unit (None when the target is absolute)
    ratio: float | None  # how many times better than the baseline
    target: str
    ok: bool
    unit: str
    details: dict = field(default_factory=dict)
    before: dict = field(default_factory=dict)  # the machine when it started (settle)
    measured_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


# A benchmark starts once the machine has been this quiet for SETTLE_QUIET_S in a row (all cores'
# busy share from /proc/stat), waiting at most SETTLE_MAX_S: the previous benchmark's dirty buffers
# and background work otherwise land in the next one's figures (a full run measured P8 at 61.5 ms p95
# right after P5's 4 GB build, and 32.5 ms alone on the idle machine; that run recorded nothing of the
# machine's state, so which it was cannot be told now).
SETTLE_BUSY = 0.15
SETTLE_QUIET_S = 3
SETTLE_MAX_S = 120.0


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs, or None where /proc/stat is missing."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]  # guest time is in user already
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def settle(admin_dsn: str) -> dict[str, Any]:
    """Flush what the previous benchmark left dirty (CHECKPOINT), then wait for a quiet machine.
    Returns what the machine was like when the benchmark started, for latest.json."""
    started = time.perf_counter()
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    quiet, busy = 0, None
    last = _cpu_times()
    while last is not None and quiet < SETTLE_QUIET_S and time.perf_counter() - started < SETTLE_MAX_S:
        time.sleep(1.0)
        now = _cpu_times()
        if now is None:
            break
        busy = (now[0] - last[0]) / max(now[1] - last[1], 1)
        quiet = quiet + 1 if busy < SETTLE_BUSY else 0
        last = now
    return {
        "busy_share": None if busy is None else round(busy, 3),
        "quiet": busy is not None and quiet >= SETTLE_QUIET_S,
        "load1": round(os.getloadavg()[0], 2),
        "settled_s": round(time.perf_counter() - started, 1),
    }


def median_of(fn: Callable[[], float], runs: int = 3) -> float:
    """Median of `runs` calls of fn (fn returns the measured quantity, e.g. seconds)."""
    return statistics.median(fn() for _ in range(runs))


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def backend_run_ns(pid: int) -> int | None:
    """CPU time a server backend has run, in ns (/proc/<pid>/schedstat), or None when this machine
    cannot see it (the server is elsewhere, or the kernel keeps no schedstat)."""
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class BenchDB:
    """A fresh, migrated database on the target server, dropped afterwards."""

    def __init__(self, admin_dsn: str, server: Any = None):
        self.admin_dsn = admin_dsn
        # the embedded server when the harness runs its own (no --dsn): a benchmark may restart it
        # with a setting it needs (P9's fifty consoles need more connections than its default)
        self.server = server
        self.name = f"opsconsole_bench_{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> BenchDB:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.dsn = conninfo.make_conninfo(self.admin_dsn, dbname=self.name)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            migrate.migrate(conn)
        return self

    def __exit__(self, *exc) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True, **kwargs)


# --------------------------------------------------------------------------------------------------
# The console benchmarks' data (P8 p_console, P9 p_observer): the sample, then staging rows by status
# --------------------------------------------------------------------------------------------------
CONSOLE_SIZE = (120, 40)  # the terminal the console benchmarks run the app in
LOAD_CHUNK = 500_000  # rows per COPY statement
STATUSES = ("processed", "pending", "failed", "dead_letter")


def staging_with_status(
    n: int, offset: int, now: dt.datetime, codes: list[str], per_mille: dict[str, int]
) -> pl.DataFrame:
    """p_pipeline's staging rows with a status each, by per mille of transaction_id in STATUSES order
    (e.g. {"pending": 900, "failed": 80, "dead_letter": 20}), ingested over the last hour: processed
    rows with a processing time, failed and dead-lettered ones with an error code, a message, retries
    and a next attempt in the next ten minutes."""
    from bench.p_pipeline import staging_frame  # p_pipeline imports this module

    assert sum(per_mille.values()) == 1000 and set(per_mille) <= set(STATUSES), per_mille
    k = pl.col("transaction_id") % 1000
    bounds, upto = [], 0
    for name in STATUSES:
        if per_mille.get(name):
            upto += per_mille[name]
            bounds.append((upto, name))
    status = pl.when(k < bounds[0][0]).then(pl.lit(bounds[0][1]))
    for bound, name in bounds[1:]:
        status = status.when(k < bound).then(pl.lit(name))
    status = status.otherwise(pl.lit(bounds[-1][1]))
    processed = k < per_mille.get("processed", 0)
    errored = k >= per_mille.get("processed", 0) + per_mille.get("pending", 0)
    ingested = pl.lit(now) - pl.duration(seconds=pl.col("transaction_id") % 3600)
    code = pl.col("transaction_id") % len(codes)
    return staging_frame(n, offset).with_columns(
        processing_status=status,
        ingestion_timestamp=ingested,
        processed_at=pl.when(processed).then(ingested + pl.duration(milliseconds=k)),
        processing_duration_ms=pl.when(processed).then(k),
        error_code=pl.when(errored).then(code.replace_strict(dict(enumerate(codes)), return_dtype=pl.String)),
        error_message=pl.when(errored).then(pl.lit("bench: ") + pl.col("transaction_id").cast(pl.String)),
        retry_count=pl.when(errored).then(k % 5).otherwise(0),
        next_attempt_at=pl.when(errored)
        .then(pl.lit(now) + pl.duration(seconds=pl.col("transaction_id") % 600))
        .otherwise(ingested),
    )


def load_staging(db: BenchDB, rows: int, per_mille: dict[str, int]) -> dict[str, Any]:
    """The sample (every pane has something to show), then `rows` staging rows with that status mix
    through the product's COPY loader, then VACUUM ANALYZE; returns the timings and the counts."""
    from bench.p_pipeline import copy_staging_frame  # p_pipeline imports this module
    from tools import sample

    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    with db.connect() as conn:
        sample.seed(conn, now, fixed_monitor=False, fixed_catalog=False)
        codes = [r[0] for r in conn.execute("SELECT error_code FROM financial_error_codes ORDER BY 1")]
    seeded = time.perf_counter()
    offset = 10_000_000_000  # clear of the sample's transaction ids
    for start in range(0, rows, LOAD_CHUNK):
        frame = staging_with_status(min(LOAD_CHUNK, rows - start), offset + start, now, codes, per_mille)
        copy_staging_frame(db, frame)
    with db.connect() as conn:  # the loaded frames set their states: counted as the tools count them
        arrival.select_counted(conn, "transaction_id >= %s", (offset,), source="bench")
    loaded = time.perf_counter()
    with db.connect() as conn:
        conn.execute("VACUUM ANALYZE financial_transactions_staging")
        total, open_rows = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE processing_status IN "
            "('pending', 'failed', 'dead_letter')) FROM financial_transactions_staging"
        ).fetchone()
    return {
        "seed_s": round(seeded - started, 1),
        "copy_s": round(loaded - seeded, 1),
        "vacuum_analyze_s": round(time.perf_counter() - loaded, 1),
        "staging_rows": total,
        "open_rows": open_rows,
    }


def collect(selected: set[str] | None) -> list[Callable]:
    found = []
    for name in MODULES:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}":
                continue
            raise
        for fn in getattr(module, "BENCHMARKS", []):
            if selected is None or fn.__name__.split("_")[0].upper() in selected:
                found.append(fn)
    return sorted(found, key=lambda f: f.__name__)


def num(value: float) -> str:
    """Three significant figures for small values (0.038 s), thousands separators for large ones."""
    return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"


def render(results: list[Result]) -> Table:
    table = Table(title="opsconsole benchmarks")
    for col in ("id", "what", "value", "baseline", "ratio", "target", "ok"):
        table.add_column(col)
    for r in results:
        table.add_row(
            r.id,
            r.what,
            f"{num(r.value)} {r.unit}",
            "—" if r.baseline is None else f"{num(r.baseline)} {r.unit}",
            "—" if r.ratio is None else f"{r.ratio:,.1f}x",
            r.target,
            "yes" if r.ok else "NO",
        )
    return table


def bench_order(record: dict) -> int:
    """P2 before P10: by the number, not the text."""
    return int(record["id"].lstrip("P"))


def readme_table(records: list[dict]) -> str:
    """The README's table from latest.json's records (a partial run keeps the others' last figures)."""
    machines = sorted({r["machine"] for r in records})
    sizes = {r["quick"] for r in records}
    how = "`make bench QUICK=1`" if sizes == {True} else "`make bench`"
    if sizes == {True, False}:
        how += " (rows marked *quick* at the small sizes of `QUICK=1`)"
    ordered = sorted(records, key=bench_order)
    noisy = [r["id"] for r in ordered if r.get("before") and not r["before"].get("quiet")]
    unknown = [r["id"] for r in ordered if not r.get("before")]
    state = []
    if noisy:
        state.append(f"Started on a machine that was not quiet: {', '.join(noisy)} (latest.json `before`).")
    if unknown:
        state.append(f"Not recorded how quiet the machine was: {', '.join(unknown)} (an older run).")
    lines = [
        f"Measured by {how} on {'; '.join(machines)}. "
        + (
            " ".join(state)
            or f"Each started on a quiet machine (CPU busy < {SETTLE_BUSY:.0%} for {SETTLE_QUIET_S} s)."
        ),
        "",
        "| id | what | value | baseline | ratio | target | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=bench_order):
        base = "—" if r["baseline"] is None else f"{num(r['baseline'])} {r['unit']}"
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:,.1f}x"
        what = r["what"] + (" (*quick*)" if r["quick"] and sizes == {True, False} else "")
        lines.append(
            f"| {r['id']} | {what} | {num(r['value'])} {r['unit']} | {base} | {ratio} | {r['target']} | "
            f"{'yes' if r['ok'] else 'no'} |"
        )
    return "\n".join(lines)


def update_readme(block: str) -> None:
    text = README.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        return
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}", encoding="utf-8")


def machine_of(admin: str) -> str:
    with psycopg.connect(admin) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    return f"{platform.machine()}, {os.cpu_count()} cores, PostgreSQL {version}"


def save(machine: str, results: list[Result], args: argparse.Namespace) -> None:
    """Write latest.json and the README table. A run replaces only the ids it measured, so the file
    keeps the last figure of every benchmark (each record says when it was measured)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = [asdict(r) | {"machine": machine, "quick": args.quick} for r in results]
    if RESULTS.exists():
        measured = {r.id for r in results}
        kept = [r for r in json.loads(RESULTS.read_text(encoding="utf-8")) if r["id"] not in measured]
        payload = sorted(kept + payload, key=bench_order)
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    update_readme(readme_table(payload))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes; finishes in under a minute")
    parser.add_argument("--only", help="comma-separated ids, e.g. P1,P4")
    parser.add_argument("--dsn", help="admin DSN of the server to use (default: the embedded server)")
    parser.add_argument("--readme", action="store_true", help="only rewrite the README table (latest.json)")
    args = parser.parse_args()
    if args.readme:
        update_readme(readme_table(json.loads(RESULTS.read_text(encoding="utf-8"))))
        return 0

    console = Console()
    server = None
    if args.dsn:
        admin = args.dsn
    else:
        from opsconsole.db.embedded import EmbeddedServer

        server = EmbeddedServer()
        admin = conninfo.make_conninfo(server.ensure_running().dsn, dbname="postgres")
    selected = {s.strip().upper() for s in args.only.split(",")} if args.only else None
    benches = collect(selected)
    if not benches:
        console.print("No benchmarks found.")
        return 1
    machine = machine_of(admin)
    results: list[Result] = []
    failed = []
    for fn in benches:
        before = settle(admin)
        quiet = "quiet" if before["quiet"] else f"NOT quiet after {before['settled_s']:g} s"
        console.print(f"[bold]{fn.__name__}[/] ... (machine {quiet}: busy {before['busy_share']})")
        try:
            with BenchDB(admin, server) as db:
                result = fn(db, args.quick)
        except Exception as exc:  # a broken benchmark must not cost the others' figures
            traceback.print_exc()
            failed.append(f"{fn.__name__}: {type(exc).__name__}: {errors.first_line(exc)}")
            console.print(f"  [red]{failed[-1]}[/]")
            continue
        result.before = before
        ratio = "—" if result.ratio is None else f"{result.ratio:.1f}x"
        console.print(f"  {result.id}: {num(result.value)} {result.unit} (ratio {ratio})")
        results.append(result)
        save(machine, results, args)  # after each one: a later failure or ^C keeps what was measured
    if results:
        console.print(render(results))
        console.print(f"wrote {RESULTS.relative_to(ROOT.parent)}")
    for line in failed:
        console.print(f"[red]failed[/] {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
