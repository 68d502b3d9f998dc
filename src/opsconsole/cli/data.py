"""Data commands: seed (demo dataset), simulate (live traffic), ingest (files)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import click

from opsconsole.cli.base import Context, json_option, pass_ctx, wants_json
from opsconsole.errors import OpsError
from opsconsole.output import console, emit, err_console


# --------------------------------------------------------------------------------------------------
# seed
# --------------------------------------------------------------------------------------------------
class _RichProgress:
    """The seed's progress sink: a rich progress bar per table (on stderr) and a line per table."""

    def __init__(self, enabled: bool):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.enabled = enabled
        self.lock = threading.Lock()
        self.tasks: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.progress = Progress(
            TextColumn("{task.description:<32}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>14}"),
            TimeElapsedColumn(),
            console=err_console,
            disable=not enabled,
        )

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def start(self, table: str, total: int) -> None:
        with self.lock:
            self.started[table] = time.perf_counter()
            self.tasks[table] = self.progress.add_task(table, total=max(total, 1), rate="")

    def advance(self, table: str, rows: int) -> None:
        with self.lock:
            task = self.tasks[table]
            self.progress.advance(task, rows)
            done = self.progress.tasks[task].completed
            secs = time.perf_counter() - self.started[table]
            rate = f"{done / secs:,.0f} rows/s" if secs > 0 else ""
            self.progress.update(task, rate=rate)

    def done(self, result) -> None:
        with self.lock:
            task = self.tasks[result.table]
            self.progress.update(
                task,
                total=max(result.rows, 1),
                completed=result.rows,
                rate=f"{result.rows_per_s:,.0f} rows/s",
            )
            if not self.enabled:
                return
            if result.status == "skipped":
                self.progress.console.print(f"{result.table}: skipped ({result.note})", highlight=False)
            else:
                self.progress.console.print(
                    f"{result.table}: {result.rows:,} rows in {result.seconds:.1f} s "
                    f"({result.rows_per_s:,.0f} rows/s)",
                    highlight=False,
                )


@click.command("seed")
@click.option(
    "--customers", type=click.IntRange(min=10), default=10_000, show_default=True, help="Customers to create."
)
@click.option("--seed", "seed_value", type=int, default=1, show_default=True, help="Random seed.")
@click.option(
    "--as-of",
    help="The instant the history ends at (date or timestamp, UTC); default: today 00:00 UTC. "
    "Same seed + customers + as-of gives identical data.",
)
@click.option("--truncate", is_flag=True, help="Empty the seeded tables first.")
@click.option("--if-empty", is_flag=True, help="Do nothing (exit 0) when the tables already hold data.")
@click.option(
    "--jobs", type=click.IntRange(1, 8), default=2, show_default=True, help="Tables loaded at once."
)
@click.option(
    "--history/--no-history",
    default=True,
    show_default=True,
    help="Run the settled transactions through the financial pipeline (when installed) so processed, "
    "ledger and is_processed agree; --no-history leaves them all unprocessed (much faster at 1M).",
)
@click.option(
    "--backlog",
    type=click.IntRange(min=0),
    help="Pending staging rows left for the workers (default: customers / 50, at least 100). "
    "The demo seeds none: a backlog that waits for the first worker misses the SLA by its age.",
)
@json_option
@pass_ctx
def seed_cmd(
    ctx: Context,
    customers: int,
    seed_value: int,
    as_of: str | None,
    truncate: bool,
    if_empty: bool,
    jobs: int,
    history: bool,
    backlog: int | None,
    as_json: bool,
) -> None:
    """Fill every source table with a consistent demo dataset (~38 rows per customer)."""
    from opsconsole.datagen import seed as seeding

    plan = seeding.SeedPlan(
        customers=customers, seed=seed_value, as_of=seeding.parse_as_of(as_of), backlog=backlog
    )
    as_json = wants_json(ctx, as_json)
    show = not as_json and err_console.is_terminal
    with _RichProgress(show) as progress:
        summary = seeding.seed(
            ctx.dsn,
            plan,
            truncate_first=truncate,
            if_empty=if_empty,
            jobs=jobs,
            progress=progress,
            history=history,
        )
    if as_json:
        emit(summary, True)
        return
    if summary["status"] == "skipped":
        counts = ", ".join(f"{t} ({n:,})" for t, n in summary["existing"].items())
        click.echo(f"Seed skipped: the database already holds data ({counts}).")
        return
    if summary["truncated"]:
        click.echo("Emptied first: " + ", ".join(summary["truncated"]))
    emit(
        summary["tables"],
        False,
        title=f"seeded {customers:,} customers (seed {seed_value}, as of {plan.as_of:%Y-%m-%d})",
    )
    click.echo(
        f"{summary['total_rows']:,} rows in {summary['seconds']:.1f} s ({summary['rows_per_s']:,} rows/s), "
        f"ANALYZE {summary['analyze_seconds']:.1f} s."
    )


# --------------------------------------------------------------------------------------------------
# simulate
# --------------------------------------------------------------------------------------------------
def _rate(name: str, default: float, what: str):
    return click.option(
        f"--{name}-rate",
        name.replace("-", "_") + "_rate",
        type=click.FloatRange(0, 1),
        default=default,
        show_default=True,
        help=what,
    )


@click.command("simulate")
@click.option(
    "--rate", type=click.FloatRange(min=0.1), default=1000.0, show_default=True, help="Financial rows/s."
)
@click.option("--duration", type=click.FloatRange(min=0.1), help="Seconds to run (default: until Ctrl-C).")
@click.option(
    "--events-rate", type=click.FloatRange(min=0), default=100.0, show_default=True, help="Events/s."
)
@click.option("--market-rate", type=click.FloatRange(min=0), default=16.0, show_default=True, help="Ticks/s.")
@click.option(
    "--crm-burst-every", type=click.FloatRange(min=0.1), default=5.0, show_default=True, help="Seconds."
)
@click.option(
    "--crm-burst-size", type=click.IntRange(min=0), default=50, show_default=True, help="Updates/burst."
)
@click.option(
    "--crm-new", type=click.IntRange(min=0), default=10, show_default=True, help="Sign-ups per burst."
)
@click.option(
    "--tick", type=click.FloatRange(min=0.01), default=0.2, show_default=True, help="Micro-batch seconds."
)
@click.option("--seed", "seed_value", type=int, help="Random seed (default: from the clock).")
@_rate("invalid", 0.02, "Share of staging rows that are invalid.")
@_rate("duplicate", 0.01, "Share of staging rows that re-deliver an earlier row exactly.")
@_rate("conflict", 0.005, "Share of staging rows that reuse a transaction_id with another payload.")
@_rate("late", 0.02, "Share of staging rows and events arriving minutes to hours late.")
@_rate("out-of-order", 0.02, "Share of staging rows and events older than rows sent before them.")
@_rate("cross-system-dup", 0.05, "Share of new customers who are an existing person from another system.")
@click.option(
    "--pid-file", type=click.Path(dir_okay=False, path_type=Path), help="Write the process id here."
)
@click.option(
    "--scenario",
    type=click.Choice(["history", "incident"]),
    help="Play a story instead of open-ended traffic: `history` fills the Monitor's last hour with "
    "healthy minutes (the demo's warm-up); `incident` stalls the pipeline behind a lock for --hold "
    "seconds while traffic arrives, then lets it drain (alarms, timeline, drain estimate).",
)
@click.option(
    "--hold", type=click.FloatRange(min=1), default=90.0, show_default=True, help="incident: seconds stalled."
)
@json_option
@pass_ctx
def simulate_cmd(
    ctx: Context,
    rate: float,
    duration: float | None,
    events_rate: float,
    market_rate: float,
    crm_burst_every: float,
    crm_burst_size: int,
    crm_new: int,
    tick: float,
    seed_value: int | None,
    invalid_rate: float,
    duplicate_rate: float,
    conflict_rate: float,
    late_rate: float,
    out_of_order_rate: float,
    cross_system_dup_rate: float,
    pid_file: Path | None,
    scenario: str | None,
    hold: float,
    as_json: bool,
) -> None:
    """Live traffic into staging, events, CRM and market data until Ctrl-C or --duration."""
    from opsconsole.datagen import simulate

    if scenario is not None:
        _play(ctx, scenario, rate=rate, hold=hold, seed=seed_value, as_json=wants_json(ctx, as_json))
        return

    faults = simulate.FaultRates(
        invalid=invalid_rate,
        duplicate=duplicate_rate,
        conflict=conflict_rate,
        late=late_rate,
        out_of_order=out_of_order_rate,
        cross_system_dup=cross_system_dup_rate,
    )
    try:
        faults.validate()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    cfg = simulate.SimConfig(
        seed=seed_value if seed_value is not None else int(time.time()),
        rate=rate,
        tick_seconds=tick,
        events_rate=events_rate,
        market_rate=market_rate,
        crm_burst_every=crm_burst_every,
        crm_burst_updates=crm_burst_size,
        crm_burst_new=crm_new,
        faults=faults,
    )
    as_json = wants_json(ctx, as_json)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if pid_file:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{os.getpid()}\n")
    live_line = _StatusLine(enabled=not as_json)
    try:
        with live_line:
            stats = simulate.run(
                ctx.dsn,
                cfg,
                duration=duration,
                on_status=live_line.update,
                stop=stop,
                on_outage=lambda line: click.echo(time.strftime("%H:%M:%S ") + line, err=True),
            )
    finally:
        if pid_file:
            pid_file.unlink(missing_ok=True)
    report = stats.as_dict()
    if as_json:
        emit(report, True)
        return
    if stats.outages:
        click.echo(
            f"Rode out {stats.outages} database outage(s) ({stats.outage_s:.1f} s): "
            f"{stats.skipped_ticks:,} tick(s) due meanwhile were not generated; nothing sent was lost."
        )
    if stats.held:
        click.echo(
            f"Held the asked rate: {stats.asked_rate:,.0f} financial rows/s "
            f"(achieved {stats.achieved_rate:,.0f} over {stats.elapsed_s:.1f} s)."
        )
    else:
        click.echo(
            f"Could not hold the asked rate: {stats.asked_rate:,.0f} rows/s asked, "
            f"{stats.achieved_rate:,.0f} achieved on average, "
            f"up to {stats.max_lag_s:.1f} s behind schedule."
        )
    emit(
        {k: v for k, v in report.items() if k not in ("faults", "event_faults")}
        | {"faults": ", ".join(f"{k} {v:,}" for k, v in stats.faults.items())},
        False,
        title="simulate",
    )


def _play(ctx: Context, scenario: str, *, rate: float, hold: float, seed: int | None, as_json: bool) -> None:
    """simulate --scenario: one of opsconsole.datagen.scenarios."""
    from opsconsole.datagen import scenarios
    from opsconsole.db.connect import connect

    if scenario == "history":
        with connect(ctx.dsn, "simulate") as conn:
            report = scenarios.play_history(conn, rate=rate, seed=seed if seed is not None else 1)
        if not as_json:
            click.echo(
                f"Healthy history: {report['minutes_written']} minute(s) of the last hour written "
                f"({report['rows']:,} rows), {report['minutes_kept']} already held data."
            )
        else:
            emit(report, True)
        return
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    say = (lambda line: None) if as_json else click.echo
    try:
        given = click.get_current_context().get_parameter_source("rate") != click.core.ParameterSource.DEFAULT
        # the incident's traffic: what a demo worker drains once the lock goes (unless --rate says)
        report = scenarios.play_incident(
            ctx.dsn, hold=hold, rate=rate if given else 300.0, say=say, stop=stop
        )
    except KeyboardInterrupt:
        stop.set()
        raise click.Abort() from None
    if as_json:
        emit(report, True)


class _StatusLine:
    """A live status line on a terminal; a plain line every 10 s otherwise (for log files)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.live = None
        self.last_plain = 0.0

    def __enter__(self):
        if self.enabled and console.is_terminal:
            from rich.live import Live
            from rich.text import Text

            self.live = Live(Text("starting..."), console=console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)
        return False

    def update(self, stats) -> None:
        if not self.enabled:
            return
        line = stats.describe()
        if self.live is not None:
            from rich.text import Text

            self.live.update(Text(line, style="bold red" if stats.behind else ""))
        elif time.monotonic() - self.last_plain >= 10:
            self.last_plain = time.monotonic()
            click.echo(time.strftime("%H:%M:%S ") + line)


# --------------------------------------------------------------------------------------------------
# ingest
# --------------------------------------------------------------------------------------------------
@click.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--table", required=True, help="Target table (table or schema.table).")
@click.option("--force", is_flag=True, help="Load files whose content was loaded into this table before.")
@click.option("--evolve", is_flag=True, help="Add columns the table lacks (ALTER TABLE ... ADD COLUMN).")
@json_option
@pass_ctx
def ingest_cmd(
    ctx: Context, paths: tuple[Path, ...], table: str, force: bool, evolve: bool, as_json: bool
) -> None:
    """Load Parquet, CSV, JSON/NDJSON and Avro files; bad rows go to ingest_rejects with a reason."""
    from opsconsole.pipeline import ingest

    results = ingest.ingest(ctx.dsn, list(paths), table, force=force, evolve=evolve)
    rows = [r.as_dict() for r in results]
    if wants_json(ctx, as_json):
        emit(rows, True)
    else:
        emit(
            [
                {
                    "file": r.path,
                    "status": r.status,
                    "rows": r.rows_total,
                    "loaded": r.loaded,
                    "rejected": r.rejected,
                    "skipped": r.skipped,
                    "note": r.note,
                }
                for r in results
            ],
            False,
            title=f"ingest into {results[0].table if results else table}",
        )
        for r in results:
            if r.status in ("refused", "failed", "skipped") and r.note:
                click.echo(f"{r.path}: {r.status}: {r.note}")
            if r.reasons:
                reasons = "; ".join(f"{reason} ({n:,})" for reason, n in r.reasons.most_common(5))
                click.echo(f"{r.path}: rejected rows by reason: {reasons}")
            if r.added_columns:
                click.echo(f"{r.path}: added column(s) {', '.join(r.added_columns)} to {r.table}")
    bad = [r for r in results if r.status in ("refused", "failed")]
    if bad:
        raise OpsError(
            f"{len(bad)} of {len(results)} file(s) were not loaded ({', '.join(r.path for r in bad)}); "
            "see the note beside each."
        )


COMMANDS = [seed_cmd, simulate_cmd, ingest_cmd]
