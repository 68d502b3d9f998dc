"""The console side of each operator action: ask for what is needed, state the blast radius, confirm,
then run it in a worker on its own connection with progress, cancel and an audit row.

Every flow ends in `_launch`, which runs the action's one implementation in ops/ (the same function
the CLI calls, so the audit log names it the same) through opsconsole.ops.actions.run_audited, which
adds the audit row of a failed or cancelled run. Continuous processing runs the worker's claim loop
(opsconsole.pipeline.worker) in the job's thread.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import psycopg

from opsconsole.db.connect import connect
from opsconsole.ops import catalog, customers, dq, pipeline
from opsconsole.ops.actions import ActionOutcome, describe_error, run_audited, write_audit
from opsconsole.ops.registry import ActionSpec
from opsconsole.pipeline.worker import Worker
from opsconsole.tui.clock import Clock
from opsconsole.tui.format import interval_text
from opsconsole.tui.jobs import Job
from opsconsole.tui.messages import JobFinished, JobProgress
from opsconsole.tui.screens.base import PaneScreen

T = TypeVar("T")


class OperationsHost(Protocol):
    """What the action flows need from the app that hosts them (the app implements it; this module
    does not know the App class): dialogs, notifications, workers, the lookup slot, the panes that
    give an action its context (cursor, selection), and the running jobs."""

    dsn: str
    database_label: str
    clock: Clock
    jobs: dict[int, Job]
    panes: dict[str, PaneScreen]

    def notify(self, message: str, *args: Any, **kwargs: Any) -> None: ...
    def run_worker(self, work: Any, **kwargs: Any) -> Any: ...
    def post_message(self, message: Any) -> bool: ...
    async def push_screen_wait(self, screen: Any) -> Any: ...
    async def lookup_async(self, fn: Callable[[psycopg.Connection], T]) -> T: ...
    def refresh_bindings(self) -> None: ...
    def refresh_chrome(self) -> None: ...
    def refresh_panes(self, panes: set[str]) -> None: ...
    def refresh_fleet(self) -> None: ...


LARGE_ROWS = 1000  # scopes at least this big require typing a word
LARGE_BATCH = 10_000
DEFAULT_BATCH = 1000
BATCH_MAX_TIME = dt.timedelta(seconds=300)
CONTINUOUS = "continuous_processing"  # the audit action name of a console's processing session


# Panes to refresh after an action finishes.
AFFECTS: dict[str, set[str]] = {
    "process_batch": {"monitor", "backlog", "activity"},
    "continuous": {"monitor", "backlog", "activity"},
    "retry_failed": {"backlog", "monitor", "activity"},
    "park_dead_letters": {"backlog", "monitor", "activity"},
    "unpark_dead_letters": {"backlog", "monitor", "activity"},
    "fleet_pause": {"monitor", "backlog", "activity"},
    "run_dq": {"quality", "activity"},
    "run_dq_rule": {"quality", "activity"},
    "refresh_c360": {"customers", "activity"},
    "refresh_catalog": {"catalog", "activity"},
}


def what_if_line(rows: list[dict[str, Any]]) -> str:
    """ "What if": how many of the rows would pass the validators now, and why the rest would not."""
    total = sum(r["rows"] for r in rows)
    passing = sum(r["rows"] for r in rows if r["error_code"] is None)
    failing = ", ".join(f"{r['error_code']} {r['rows']:,}" for r in rows if r["error_code"] is not None)
    return f"What if: [b]{passing:,} of {total:,}[/] would pass validation now" + (
        f" (still failing: {failing})." if failing else "."
    )


def plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n:,} {word}"
    return f"{n:,} {word}" + ("es" if word.endswith(("ch", "sh", "s", "x")) else "s")


class Operations:
    def __init__(self, app: OperationsHost):
        self.app = app

    @property
    def db(self) -> str:
        return self.app.database_label

    def running(self, action_id: str) -> Job | None:
        for job in self.app.jobs.values():
            if job.running and job.spec.id == action_id:
                return job
        return None

    def start(self, spec: ActionSpec) -> None:
        if spec.id == "continuous" and (job := self.running("continuous")) is not None:
            job.cancel()
            self.app.notify("Stopping continuous processing…", timeout=3)
            return
        if self.running(spec.id) is not None:
            self.app.notify(f"{spec.title} is already running (x cancels it).", severity="warning")
            return
        flow = getattr(self, f"flow_{spec.id}")
        self.app.run_worker(self._guard(spec, flow), group="flow", exit_on_error=False)

    async def _guard(self, spec: ActionSpec, flow: Callable[[ActionSpec], Any]) -> None:
        try:
            await flow(spec)
        except (psycopg.Error, OSError) as exc:
            self.app.notify(f"{spec.title}: {describe_error(exc)}", severity="error", title="not started")

    # -- dialogs --------------------------------------------------------------------------------
    async def confirm(
        self, title: str, lines: list[str], *, word: str | None = None, verb: str = "Run"
    ) -> bool:
        from opsconsole.tui.screens.modals import ConfirmScreen

        return bool(await self.app.push_screen_wait(ConfirmScreen(title, lines, word=word, verb=verb)))

    async def prompt(
        self, title: str, label: str, default: str, check: Callable[[str], str | None]
    ) -> str | None:
        from opsconsole.tui.screens.modals import PromptScreen

        return await self.app.push_screen_wait(PromptScreen(title, label, default, check))

    async def choose(self, title: str, options: list[tuple[str, str, bool]]) -> str | None:
        from opsconsole.tui.screens.modals import ChoiceScreen

        return await self.app.push_screen_wait(ChoiceScreen(title, options))

    # -- flows ----------------------------------------------------------------------------------
    async def _batch_size(self, title: str) -> int | None:
        def check(text: str) -> str | None:
            if not text.strip().isdigit() or not 1 <= int(text) <= 1_000_000:
                return "a whole number from 1 to 1,000,000"
            return None

        answer = await self.prompt(title, "Batch size (rows):", str(DEFAULT_BATCH), check)
        return int(answer) if answer else None

    async def flow_process_batch(self, spec: ActionSpec) -> None:
        size = await self._batch_size("Process one batch")
        if size is None:
            return
        due = await self.app.lookup_async(pipeline.due_count)
        take = min(size, due)
        lines = [
            f"Process up to [b]{plural(size, 'row')}[/] now: {take:,} of the {plural(due, 'row')} due "
            "(pending, or failed and due for a retry) would be claimed, validated, scored and moved.",
            f"Database: [b]{self.db}[/]",
        ]
        word = "process" if size >= LARGE_BATCH else None
        if not await self.confirm("Process one batch", lines, word=word, verb="Process"):
            return
        args = {"batch_size": size, "max_time_s": BATCH_MAX_TIME.total_seconds()}
        self._launch(
            spec,
            f"process batch of {size:,}",
            pipeline.PROCESS_BATCH,
            args,
            lambda conn, job: pipeline.process_batch(conn, size, BATCH_MAX_TIME).as_dict(),
            summary=lambda r: (
                f"{r.get('processed', 0):,} processed,"
                f" {r.get('failed', 0) + r.get('dead_letter', 0):,} failed"
                f" in {interval_text(dt.timedelta(milliseconds=r.get('duration_ms') or 0))}"
            ),
        )

    async def flow_continuous(self, spec: ActionSpec) -> None:
        size = await self._batch_size("Start continuous processing")
        if size is None:
            return
        due = await self.app.lookup_async(pipeline.due_count)
        lines = [
            f"Keep processing batches of [b]{plural(size, 'row')}[/] in the background until you "
            "stop it (c again, or x).",
            f"{plural(due, 'row')} due now. Database: [b]{self.db}[/]",
        ]
        if not await self.confirm("Start continuous processing", lines, verb="Start"):
            return
        self._launch(
            spec,
            "continuous processing",
            CONTINUOUS,
            {"batch_size": size},
            lambda conn, job: continuous_loop(self.app, self.app.dsn, job, size),
            summary=lambda r: (
                f"stopped after {plural(r.get('batches', 0), 'batch')}: "
                f"{r.get('processed', 0):,} processed, {r.get('failed', 0):,} failed"
            ),
            audit_start=True,
            audited_by_callee=False,  # the loop's batches are not audited one by one: the session is
        )

    async def flow_retry_failed(self, spec: ActionSpec) -> None:
        backlog = self.app.panes["backlog"]
        context = backlog.op_context(spec.id)
        selected: list[int] = context.get("selected", [])
        code = context.get("error_code")
        batch = context.get("batch_id")
        flt = context.get("filter")

        scopes: dict[str, dict[str, Any]] = {
            "all": {"all_rows": True},
            "all_dl": {"all_rows": True, "include_dead_letter": True},
        }
        if flt:
            # what the filter shows: the same text, matched by the same SQL (backlog_row_matches)
            scopes["filter"] = {"filter_text": flt, "include_dead_letter": True}
        if selected:
            scopes["selected"] = {"staging_ids": selected, "include_dead_letter": True}
        if code:
            scopes["code"] = {"error_code": code}
        if batch:
            scopes["batch"] = {"batch_id": batch}

        def counts(conn: psycopg.Connection) -> dict[str, int]:
            # the blast radius of each scope, counted by the same SQL predicate retry_failed() applies
            return {name: pipeline.retry_scope_count(conn, **kw) for name, kw in scopes.items()}

        n = await self.app.lookup_async(counts)
        options: list[tuple[str, str, bool]] = []
        if flt:
            options.append(
                (
                    "filter",
                    f"what the filter '{flt}' shows ({n['filter']:,} failed or dead-lettered;"
                    " parked rows stay)",
                    n["filter"] > 0,
                )
            )
        if selected:
            options.append(
                (
                    "selected",
                    f"the {plural(len(selected), 'selected row')} ({n['selected']:,} retryable)",
                    n["selected"] > 0,
                )
            )
        if code:
            options.append(("code", f"failed rows with error code {code} ({n['code']:,})", n["code"] > 0))
        if batch:
            options.append(("batch", f"failed rows of batch {batch} ({n['batch']:,})", n["batch"] > 0))
        options.append(("all", f"every failed row ({n['all']:,})", n["all"] > 0))
        options.append(("all_dl", f"every failed and dead-lettered row ({n['all_dl']:,})", n["all_dl"] > 0))
        scope = await self.choose("Retry which rows?", options)
        if scope is None:
            return
        kwargs = scopes[scope]
        what = {
            "filter": f"failed and dead-lettered rows the filter '{flt}' shows",
            "selected": "selected failed/dead-lettered rows",
            "code": f"failed rows with error code {code}",
            "batch": f"failed rows from batch {batch}",
            "all": "failed rows (everything)",
            "all_dl": "failed and dead-lettered rows (everything)",
        }[scope]
        count = n[scope]
        lines = [
            f"Retry [b]{count:,}[/] {what} on [b]{self.db}[/].",
            "They go back to the queue and are processed again by the next batch.",
        ]
        if scope in ("filter", "selected"):
            ids, text = (selected, None) if scope == "selected" else (None, flt)
            outcome = await self.app.lookup_async(
                lambda conn: pipeline.what_if(conn, staging_ids=ids, filter_text=text)
            )
            lines.append(what_if_line(outcome))
        large = count >= LARGE_ROWS or scope.startswith("all")
        if not await self.confirm(
            f"Retry {plural(count, 'row')}", lines, word="retry" if large else None, verb="Retry"
        ):
            return
        reason = f"console: retry {scope}"
        args = {k: v for k, v in kwargs.items()} | {"scope": scope, "expected": count}

        def after(outcome: ActionOutcome) -> None:
            if outcome.ok:
                backlog.clear_selection()

        self._launch(
            spec,
            f"retry {plural(count, 'row')}",
            pipeline.RETRY,
            args,
            lambda conn, job: {"requeued": pipeline.retry(conn, reason=reason, **kwargs)},
            summary=lambda r: f"re-queued {plural(r.get('requeued', 0), 'row')}",
            after=after,
        )

    # -- Backlog: park, unpark, what if --------------------------------------------------------------
    def _backlog_rows(self, spec: ActionSpec) -> tuple[list[int] | None, str | None, str] | None:
        """The rows a Backlog action takes: the selection, else what the filter shows, else the row
        under the cursor; with a phrase that names them."""
        context = self.app.panes["backlog"].op_context(spec.id)
        if context.get("selected"):
            ids = list(context["selected"])
            return ids, None, f"the {plural(len(ids), 'selected row')}"
        if context.get("filter"):
            return None, context["filter"], f"the rows the filter '{context['filter']}' shows"
        if context.get("cursor_id") is not None:
            return [context["cursor_id"]], None, f"row {context['cursor_id']}"
        self.app.notify("Select rows (space), filter them (/) or put the cursor on one.", severity="warning")
        return None

    async def flow_what_if(self, spec: ActionSpec) -> None:
        from opsconsole.tui.screens.modals import DetailScreen

        scope = self._backlog_rows(spec)
        if scope is None:
            return
        ids, text, phrase = scope
        rows = await self.app.lookup_async(
            lambda conn: pipeline.what_if(conn, staging_ids=ids, filter_text=text)
        )
        body = [
            f"The pipeline's validators, run now on {phrase} in a read-only transaction (nothing changed):",
            what_if_line(rows),
            "",
            *[f"  {r['error_code'] or 'would pass':<24} {r['rows']:>8,}" for r in rows],
        ]
        self.app.push_screen(DetailScreen("What if: validate now", body))

    async def _move(self, spec: ActionSpec, *, park: bool) -> None:
        scope = self._backlog_rows(spec)
        if scope is None:
            return
        ids, text, phrase = scope
        state = "dead_letter" if park else "parked"

        def count(conn: psycopg.Connection) -> int:
            return pipeline.move_scope_count(conn, state, staging_ids=ids, filter_text=text)

        n = await self.app.lookup_async(count)
        if n == 0:
            what = "dead-lettered" if park else "parked"
            self.app.notify(f"No {what} row among {phrase}.", severity="warning")
            return
        if park:
            title, verb = f"Park {plural(n, 'dead letter')}", "Park"
            lines = [
                f"Park [b]{n:,}[/] dead-lettered rows ({phrase}) on [b]{self.db}[/]: no worker claims and no "
                "retry takes a parked row until it is brought back (u).",
            ]
        else:
            title, verb = f"Bring back {plural(n, 'parked row')}", "Bring back"
            lines = [f"Return [b]{n:,}[/] parked rows ({phrase}) to dead_letter on [b]{self.db}[/]."]
        if not await self.confirm(title, lines, word="park" if park and n >= LARGE_ROWS else None, verb=verb):
            return
        reason = "console: " + ("park" if park else "unpark")
        backlog = self.app.panes["backlog"]

        def after(outcome: ActionOutcome) -> None:
            if outcome.ok:
                backlog.clear_selection()

        if park:
            self._launch(
                spec,
                f"park {plural(n, 'row')}",
                pipeline.PARK,
                {"staging_ids": ids, "filter": text, "expected": n},
                lambda conn, job: {
                    "parked": pipeline.park(conn, staging_ids=ids, filter_text=text, reason=reason)
                },
                summary=lambda r: f"parked {plural(r.get('parked', 0), 'row')}",
                after=after,
            )
        else:
            self._launch(
                spec,
                f"bring back {plural(n, 'row')}",
                pipeline.UNPARK,
                {"staging_ids": ids, "filter": text, "expected": n},
                lambda conn, job: {
                    "unparked": pipeline.unpark(conn, staging_ids=ids, filter_text=text, reason=reason)
                },
                summary=lambda r: f"brought back {plural(r.get('unparked', 0), 'row')}",
                after=after,
            )

    async def flow_park_dead_letters(self, spec: ActionSpec) -> None:
        await self._move(spec, park=True)

    async def flow_unpark_dead_letters(self, spec: ActionSpec) -> None:
        await self._move(spec, park=False)

    # -- the fleet's pause switch ------------------------------------------------------------------
    async def flow_fleet_pause(self, spec: ActionSpec) -> None:
        state = await self.app.lookup_async(pipeline.fleet_state)
        pausing = not state.get("paused")
        if pausing:
            lines = [
                f"Pause processing for [b]every worker[/] on [b]{self.db}[/]: each finishes its chunk in "
                "flight, then claims nothing until someone resumes (P again, or `opsconsole resume`).",
                "Rows keep arriving and wait as pending; every console shows the pause in its header.",
            ]
            title, verb = "Pause processing (fleet)", "Pause"
        else:
            since = self.app.clock.ago(state.get("changed_at"))
            lines = [
                f"Resume processing on [b]{self.db}[/]; paused by {state.get('changed_by')} {since}"
                + (f" ({state['reason']})" if state.get("reason") else "")
                + ".",
            ]
            title, verb = "Resume processing (fleet)", "Resume"
        if not await self.confirm(title, lines, verb=verb):
            return
        self._launch(
            spec,
            "pause processing" if pausing else "resume processing",
            pipeline.PAUSE if pausing else pipeline.RESUME,
            {},
            lambda conn, job: {
                "paused": pausing,
                "was_paused": (pipeline.pause if pausing else pipeline.resume)(conn, reason="console"),
            },
            summary=lambda r: "every worker paused" if r.get("paused") else "processing resumed",
            after=lambda outcome: self.app.refresh_fleet(),
        )

    async def flow_run_dq(self, spec: ActionSpec) -> None:
        rules = await self.app.lookup_async(dq.active_rule_names)
        lines = [
            f"Run all [b]{plural(len(rules), 'active rule')}[/] now; each result is stored in "
            "data_quality_metrics.",
            f"Database: [b]{self.db}[/]",
        ]
        if not await self.confirm("Run data-quality checks", lines, verb="Run"):
            return
        # One call, so that the run keeps one run id; progress is estimated from the last run's length.
        expected_ms = await self.app.lookup_async(dq.last_run_ms)

        def body(conn: psycopg.Connection, job: Job) -> dict[str, Any]:
            results = dq.run_checks(conn).results
            failed = [r["rule_name"] for r in results if not r.get("passed")]
            return {"rules": len(results), "passed": len(results) - len(failed), "failed": failed}

        job = self._launch(
            spec,
            f"run {plural(len(rules), 'DQ rule')}",
            dq.RUN,
            {"rules": len(rules)},
            body,
            summary=lambda r: f"{r.get('passed', 0)} passed, {len(r.get('failed', []))} failed",
            failures_audited_by_callee=True,  # dq.run_checks audits a refused run itself
        )
        job.expected_s = expected_ms / 1000 if expected_ms else None

    async def flow_run_dq_rule(self, spec: ActionSpec) -> None:
        rule = self.app.panes["quality"].op_context(spec.id).get("rule_name")
        if not rule:
            self.app.notify("Put the cursor on a rule first.", severity="warning")
            return
        if not await self.confirm(
            "Run one rule", [f"Run rule [b]{rule}[/] now on [b]{self.db}[/]."], verb="Run"
        ):
            return

        def body(conn: psycopg.Connection, job: Job) -> dict[str, Any]:
            results = dq.run_checks(conn, rule=rule).results
            r = results[0] if results else {}
            return {
                "rule_name": rule,
                "passed": r.get("passed"),
                "score": r.get("score"),
                "message": r.get("message"),
            }

        self._launch(
            spec,
            f"run rule {rule}",
            dq.RUN,
            {"rule": rule},
            body,
            summary=lambda r: f"{'passed' if r.get('passed') else 'failed'} (score {r.get('score')})",
            failures_audited_by_callee=True,
        )

    async def flow_refresh_c360(self, spec: ActionSpec) -> None:
        lines = [
            "Recompute the customer-360 rows of customers whose sources changed since the last refresh.",
            f"Database: [b]{self.db}[/]",
        ]
        if not await self.confirm("Refresh customer 360", lines, verb="Refresh"):
            return
        self._launch(
            spec,
            "refresh customer 360",
            customers.REFRESH_INCREMENTAL,
            {"full": False},
            lambda conn, job: customers.refresh(conn, full=False),
            summary=lambda r: f"{plural(int(r.get('rows_processed') or 0), 'row')} refreshed",
            failures_audited_by_callee=True,  # customers.refresh audits a failed refresh itself
        )

    async def flow_refresh_catalog(self, spec: ActionSpec) -> None:
        columns = await self.app.lookup_async(catalog.column_count)
        lines = [
            f"Re-read the schema of [b]{self.db}[/] into data_catalog ({plural(columns, 'column')} now) "
            "and show what changed.",
        ]
        if not await self.confirm("Refresh the data catalog", lines, verb="Refresh"):
            return

        def after(outcome: ActionOutcome) -> None:
            if outcome.ok:
                self.app.panes["catalog"].show_changes(outcome.result.get("diff", {}))

        def body(conn: psycopg.Connection, job: Job) -> dict[str, Any]:
            result = catalog.refresh_catalog(conn)
            return {**result.as_dict(), "diff": result.diff}

        self._launch(
            spec,
            "refresh catalog",
            catalog.REFRESH,
            {},
            body,
            summary=lambda r: (
                f"{len(r['diff']['added'])} added, {len(r['diff']['removed'])} removed,"
                f" {len(r['diff']['changed'])} changed"
            ),
            after=after,
        )

    # -- running --------------------------------------------------------------------------------
    def _launch(
        self,
        spec: ActionSpec,
        title: str,
        audit_action: str,
        arguments: dict[str, Any],
        body: Callable[[psycopg.Connection, Job], dict[str, Any]],
        *,
        summary: Callable[[dict[str, Any]], str],
        after: Callable[[ActionOutcome], None] | None = None,
        app_name: str = "action",
        audit_start: bool = False,
        audited_by_callee: bool = True,
        failures_audited_by_callee: bool = False,
    ) -> Job:
        """Run body in a thread on a connection of its own. The action writes its own audit row when it
        succeeds (audited_by_callee; in SQL or in its ops function) and, with
        failures_audited_by_callee, when it fails too; run_audited writes the rest."""
        app = self.app
        job = Job(spec, title, arguments, app.clock.monotonic())
        job.counters["summary"] = summary
        app.jobs[job.id] = job
        app.refresh_bindings()
        app.refresh_chrome()

        def work() -> None:
            outcome: ActionOutcome
            try:
                conn = connect(app.dsn, app_name)
            except Exception as exc:
                outcome = ActionOutcome(
                    audit_action, "error", {"error": describe_error(exc)}, 0.0, describe_error(exc)
                )
                app.post_message(JobFinished(job, outcome, after))
                return
            job.conn = conn
            try:
                if audit_start:
                    write_audit(conn, audit_action + ".start", arguments, None, "ok", None, "console")
                outcome = run_audited(
                    conn,
                    audit_action,
                    arguments,
                    lambda c: body(c, job),
                    reason="console",
                    audit_conn=lambda: connect(app.dsn, app_name),
                    audited_by_callee=audited_by_callee,
                    failures_audited_by_callee=failures_audited_by_callee,
                )
            finally:
                job.conn = None
                conn.close()
            app.post_message(JobFinished(job, outcome, after))

        app.run_worker(work, thread=True, group="jobs", exit_on_error=False)
        return job

    def finished(self, message: JobFinished) -> None:
        job, outcome = message.job, message.outcome
        job.status = outcome.status
        job.finished = self.app.clock.monotonic()
        if outcome.ok:
            try:
                job.message = job.counters["summary"](outcome.result)
            except Exception:
                job.message = "done"
            self.app.notify(f"{job.title}: {job.message}", title="done", timeout=6)
        elif outcome.status == "cancelled":
            job.message = outcome.message or "cancelled"
            self.app.notify(f"{job.title}: cancelled; the server rolled it back.", severity="warning")
        else:
            job.message = outcome.message
            self.app.notify(
                f"{job.title} failed: {outcome.message}", severity="error", title="error", timeout=10
            )
        job.counters["outcome"] = outcome
        if message.after is not None:
            message.after(outcome)
        self.app.refresh_panes(AFFECTS.get(job.spec.id, set()))


def continuous_loop(app: OperationsHost, dsn: str, job: Job, size: int) -> dict[str, Any]:
    """The worker's claim loop (pipeline.worker.Worker.run_loop) in this job's thread, until stopped;
    each chunk updates the job's counters. Stopping cancels the chunk in flight (it rolls back)."""
    counters = job.counters
    counters.update(batches=0, processed=0, failed=0, rate=0.0)
    started = time.perf_counter()

    def on_chunk(result: pipeline.BatchResult) -> None:
        counters["batches"] += 1
        counters["processed"] += result.processed
        counters["failed"] += result.failed + result.dead_letter
        counters["rate"] = counters["processed"] / max(0.001, time.perf_counter() - started)
        app.post_message(JobProgress(job))

    worker = Worker(
        dsn,
        batch_size=size,
        poll_s=1.0,
        max_chunk_time=BATCH_MAX_TIME,
        name="console",
        on_chunk=on_chunk,
        app_name="worker-console",
    )
    job.on_cancel = lambda: worker.stop(cancel=True)
    if job.cancel_event.is_set():
        return {"batches": 0, "processed": 0, "failed": 0, "seconds": 0.0}
    worker.run_loop()
    return {k: counters[k] for k in ("batches", "processed", "failed")} | {
        "seconds": round(time.perf_counter() - started, 3)
    }
