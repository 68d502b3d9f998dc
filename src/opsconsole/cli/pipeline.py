"""`opsconsole process | retry | worker | reconcile | backlog | purge | park | unpark | what-if | pause |
resume`: the pipeline from the shell."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import sys

import click

from opsconsole.cli.base import Context, json_option, pass_ctx, wants_json
from opsconsole.ops import channels
from opsconsole.ops import pipeline as ops
from opsconsole.output import emit, err_console


@click.command("process")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=10000,
    show_default=True,
    help="Rows to claim at most (processed in chunks of the configured chunk size).",
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=0),
    default=300,
    show_default=True,
    help="Time budget, checked between chunks.",
)
@json_option
@pass_ctx
def process(ctx: Context, batch_size: int, max_seconds: float, as_json: bool) -> None:
    """Process one batch of due staging rows now and print what happened."""
    with ctx.connect("process") as conn:
        result = ops.process_batch(conn, batch_size, dt.timedelta(seconds=max_seconds))
    if wants_json(ctx, as_json):
        emit(result.as_dict(), True)
    elif result.claimed == 0:
        click.echo("Nothing was due: the staging backlog is empty.")
    else:
        emit(result.as_dict(), False, title="batch processed")


def _parse_ids(values: tuple[str, ...]) -> list[int] | None:
    ids: list[int] = []
    for value in values:
        for part in value.replace(",", " ").split():
            try:
                ids.append(int(part))
            except ValueError:
                raise click.BadParameter(
                    f"{part!r} is not a staging id (an integer).", param_hint="--ids"
                ) from None
    return ids or None


FILTER_HELP = (
    "The Backlog's filter: rows whose status, staging or transaction id equals it, or whose error code, "
    "message or batch contains it (case-insensitive)."
)

# The Backlog's selectors and the audit reason, one definition for every command that takes them.
ids_option = click.option("--ids", multiple=True, help="Staging ids, comma- or space-separated; repeatable.")
filter_option = click.option("--filter", "filter_text", help=FILTER_HELP)
reason_option = click.option("--reason", help="Why: stored in the audit log with your name.")


@click.command("retry")
@ids_option
@click.option("--batch", "batch_id", help="Only rows of this batch_id.")
@click.option("--error-code", help="Only rows that failed with this code (see financial_error_codes).")
@click.option("--all", "all_rows", is_flag=True, help="Every failed row (needed when no other selector).")
@click.option("--dead-letter", is_flag=True, help="Include dead-lettered rows, not only failed ones.")
@filter_option
@reason_option
@json_option
@pass_ctx
def retry(
    ctx: Context,
    ids: tuple[str, ...],
    batch_id: str | None,
    error_code: str | None,
    all_rows: bool,
    dead_letter: bool,
    filter_text: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Re-queue failed (or, with --dead-letter, dead-lettered) rows. Selectors combine with AND."""
    staging_ids = _parse_ids(ids)
    with ctx.connect("retry") as conn:
        n = ops.retry(
            conn,
            staging_ids=staging_ids,
            batch_id=batch_id,
            error_code=error_code,
            all_rows=all_rows,
            include_dead_letter=dead_letter,
            reason=reason,
            filter_text=filter_text,
        )
    if wants_json(ctx, as_json):
        emit({"requeued": n}, True)
    else:
        click.echo(f"Re-queued {n:,} row(s); workers will pick them up now.")


@click.command("worker")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Claim loops, each with its own connection.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=10000,
    show_default=True,
    help="Rows per chunk (one transaction each).",
)
@click.option(
    "--poll-seconds",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    help="Fallback poll interval when no NOTIFY arrives.",
)
@click.option(
    "--maintenance/--no-maintenance",
    default=True,
    show_default=True,
    help="Run `opsconsole maintain` about daily (one of N workers does; needs the admin role).",
)
@pass_ctx
def worker(ctx: Context, concurrency: int, batch_size: int, poll_seconds: float, maintenance: bool) -> None:
    """Run the claim loop until SIGTERM or Ctrl-C (the chunk in flight finishes first)."""
    from opsconsole.pipeline.worker import Worker

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr, force=True
    )
    w = Worker(
        ctx.dsn,
        concurrency=concurrency,
        batch_size=batch_size,
        poll_s=poll_seconds,
        maintenance_check_s=3600.0 if maintenance else None,
    )

    def _stop(signum, _frame) -> None:
        logging.getLogger("opsconsole.worker").info(
            "received %s: finishing the chunk in flight, then stopping", signal.Signals(signum).name
        )
        w.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logging.getLogger("opsconsole.worker").info(
        "worker started: %d loop(s), chunks of %d rows, listening on %s",
        concurrency,
        batch_size,
        channels.STAGING,
    )
    w.run_forever()
    s = w.stats
    logging.getLogger("opsconsole.worker").info(
        "worker stopped: %d chunk(s), %d row(s): processed %d, failed %d, dead_letter %d, duplicate %d",
        s.chunks,
        s.rows,
        s.processed,
        s.failed,
        s.dead_letter,
        s.duplicate,
    )


# The checks an option of reconcile corrects, and how (both an admin's, audited).
RECONCILE_FIXES = {
    "staging_counts_drift": "`opsconsole reconcile --recount` corrects the maintained counts (admin).",
    "fraud_minutes_differ": "`opsconsole reconcile --rebuild-minutes` rebuilds the minutes (admin).",
}


@click.command("reconcile")
@click.option("--all-checks", is_flag=True, help="Also list the checks that found nothing.")
@click.option(
    "--recount",
    is_flag=True,
    help="First correct the maintained staging counts by a count of staging (staging_counts_drift; admin).",
)
@click.option(
    "--rebuild-minutes",
    is_flag=True,
    help="First rebuild the fraud window's minute sums from processed rows (fraud_minutes_differ; admin).",
)
@json_option
@pass_ctx
def reconcile(ctx: Context, all_checks: bool, recount: bool, rebuild_minutes: bool, as_json: bool) -> None:
    """Compare staging, processed, the ledger, financial_transactions and erp_orders.
    Exit code 1 when a check finds mismatches."""
    with ctx.connect("reconcile") as conn:
        fixed = ops.recount(conn) if recount else None
        minutes = ops.rebuild_fraud_minutes(conn) if rebuild_minutes else None
        rows = ops.reconcile(conn)
    bad = [r for r in rows if r["mismatch_count"]]
    if fixed is not None and not wants_json(ctx, as_json):
        moved = ", ".join(f"{k.removesuffix('_delta')} {v:+,}" for k, v in fixed.items() if v)
        click.echo(f"Staging counts corrected: {moved}." if moved else "The staging counts were right.")
    if minutes is not None and not wants_json(ctx, as_json):
        click.echo(f"Fraud window minutes rebuilt from the processed rows: {minutes:,}.")
    if wants_json(ctx, as_json):
        fixes = {k: v for k, v in (("recount", fixed), ("rebuilt_minutes", minutes)) if v is not None}
        emit({**fixes, "checks": rows} if fixes else rows, True)
    elif not bad and not all_checks:
        click.echo(f"All {len(rows)} reconciliation checks are clean.")
    else:
        emit(rows if all_checks else bad, False, title="reconciliation")
    if bad:
        if not wants_json(ctx, as_json):
            err_console.print(f"{len(bad)} check(s) found mismatches.")
            for r in bad:
                if r["check_name"] in RECONCILE_FIXES:
                    err_console.print(
                        f"{r['check_name']}: {RECONCILE_FIXES[r['check_name']]}", markup=False, soft_wrap=True
                    )
        sys.exit(1)


@click.command("backlog")
@json_option
@pass_ctx
def backlog(ctx: Context, as_json: bool) -> None:
    """What is waiting (pending), retrying (failed) or stuck (dead_letter), by error code."""
    with ctx.connect("backlog") as conn:
        rows = ops.backlog(conn)
        rejected = None if wants_json(ctx, as_json) else ops.rejected_before_staging(conn, 24)
    if wants_json(ctx, as_json):
        emit(rows, True)
    elif not rows:
        click.echo("The backlog is empty: nothing pending, failed or dead-lettered.")
    else:
        emit(rows, False, title="pipeline backlog")
    if rejected:
        click.echo(
            f"{rejected:,} transaction(s) without an account were rejected before staging in the last 24 h "
            "(financial_staging_rejects)."
        )


@click.command("purge")
@click.option(
    "--older-than",
    metavar="INTERVAL",
    help="Retention as a PostgreSQL interval, e.g. '7 days' (default: staging_retention in the settings).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Rows to delete at most from the DEFAULT partition (whole days are dropped regardless).",
)
@json_option
@pass_ctx
def purge(ctx: Context, older_than: str | None, limit: int, as_json: bool) -> None:
    """Staging retention: drop old ingestion days (keeping rows still owed a retry or a decision),
    trim old rollups and create the days ahead. Run it daily (cron); admin role."""
    with ctx.connect("purge") as conn:
        result = ops.purge(conn, older_than, limit)
    if wants_json(ctx, as_json):
        emit(result, True)
        return
    dropped = result["partitions_dropped"]
    click.echo(
        f"Deleted {result['staging_rows_deleted']:,} staging rows and {result['rollup_rows_deleted']:,} "
        f"rollup rows; dropped {len(dropped)} day partition(s)"
        + (f" ({', '.join(dropped)})" if dropped else "")
        + f", created {len(result['partitions_created'])} ahead."
    )


@click.command("maintain")
@click.option(
    "--batch-rows",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Rows moved out of a DEFAULT partition per transaction.",
)
@click.option(
    "--older-than", metavar="INTERVAL", help="Staging retention for the purge (default: the settings)."
)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for a maintenance run already in progress.",
)
@json_option
@pass_ctx
def maintain(ctx: Context, batch_rows: int, older_than: str | None, wait_s: float, as_json: bool) -> None:
    """Periodic maintenance in small steps: partitions ahead, rows out of DEFAULT, staging retention,
    statistics. Safe at any time and idempotent; workers run it about daily. Admin role."""
    from opsconsole.ops import maintenance

    with ctx.connect("maintain") as conn:
        report = maintenance.maintain(
            conn,
            batch_rows=batch_rows,
            older_than=older_than,
            wait_s=wait_s,
            say=None if wants_json(ctx, as_json) else lambda line: err_console.print(line, highlight=False),
        )
    if wants_json(ctx, as_json):
        emit(report, True)
        return
    purged = report["purge"]
    defaults = ", ".join(f"{t} {n:,}" for t, n in report["default_rows"].items())
    click.echo(
        f"Created {len(report['partitions_created'])} partition(s) ahead, attached "
        f"{len(report['partitions_attached'])} after moving {report['rows_moved_from_default']:,} row(s) "
        f"out of DEFAULT; purged {purged['staging_rows_deleted']:,} staging and "
        f"{purged['rollup_rows_deleted']:,} rollup row(s), dropped {len(purged['partitions_dropped'])} "
        f"day(s); analyzed {len(report['analyzed'])} table(s) in {report['seconds']:.1f} s. "
        f"Rows left in DEFAULT: {defaults or 'none'}."
    )


def _mover(name: str, action, key: str, done: str, doc: str) -> click.Command:
    """`park` and `unpark`: the same options and output around one ops action each."""

    @ids_option
    @filter_option
    @reason_option
    @json_option
    @pass_ctx
    def command(
        ctx: Context, ids: tuple[str, ...], filter_text: str | None, reason: str | None, as_json: bool
    ) -> None:
        with ctx.connect(name) as conn:
            n = action(conn, staging_ids=_parse_ids(ids), filter_text=filter_text, reason=reason)
        if wants_json(ctx, as_json):
            emit({key: n}, True)
        else:
            click.echo(done.format(n=n))

    command.__doc__ = doc
    return click.command(name)(command)


park = _mover(
    "park",
    ops.park,
    "parked",
    "Parked {n:,} dead-lettered row(s).",
    "Set dead letters aside: a parked row is never claimed or retried until `opsconsole unpark`.",
)
unpark = _mover(
    "unpark",
    ops.unpark,
    "unparked",
    "Brought back {n:,} parked row(s) to dead_letter.",
    "Bring parked rows back to dead_letter, where `opsconsole retry --dead-letter` can take them.",
)


@click.command("what-if")
@ids_option
@filter_option
@json_option
@pass_ctx
def what_if(ctx: Context, ids: tuple[str, ...], filter_text: str | None, as_json: bool) -> None:
    """Before a retry: run the pipeline's validators now on the failed, dead-lettered or parked rows
    named, in a read-only transaction, and count how many would pass, by error code."""
    with ctx.connect("what-if") as conn:
        rows = ops.what_if(conn, staging_ids=_parse_ids(ids), filter_text=filter_text)
    out = [{"outcome": r["error_code"] or "would pass", "rows": r["rows"]} for r in rows]
    if wants_json(ctx, as_json):
        emit(out, True)
    elif not rows:
        click.echo("No failed, dead-lettered or parked row matches.")
    else:
        passing = sum(r["rows"] for r in rows if r["error_code"] is None)
        emit(out, False, title=f"what if: {passing:,} of {sum(r['rows'] for r in rows):,} would pass now")


@click.command("pause")
@click.option("--reason", help="Why: stored in the audit log with your name, shown in every console.")
@json_option
@pass_ctx
def pause(ctx: Context, reason: str | None, as_json: bool) -> None:
    """Pause processing for the whole fleet: each worker finishes its chunk in flight, then claims
    nothing until `opsconsole resume`. Operator role."""
    with ctx.connect("pause") as conn:
        was = ops.pause(conn, reason=reason)
    if wants_json(ctx, as_json):
        emit({"paused": True, "was_paused": was}, True)
    else:
        click.echo("Processing was already paused." if was else "Processing paused for every worker.")


@click.command("resume")
@reason_option
@json_option
@pass_ctx
def resume(ctx: Context, reason: str | None, as_json: bool) -> None:
    """Resume processing for the whole fleet (idle workers wake at once). Operator role."""
    with ctx.connect("resume") as conn:
        was = ops.resume(conn, reason=reason)
    if wants_json(ctx, as_json):
        emit({"paused": False, "was_paused": was}, True)
    else:
        click.echo("Processing resumed." if was else "Processing was not paused; nothing changed.")


COMMANDS = [process, retry, worker, reconcile, backlog, purge, maintain, park, unpark, what_if, pause, resume]
