"""The console side of each operator action: ask for what is needed, state the blast radius, confirm,
then run it in a worker on its own connection with progress, cancel and an audit row.

Every flow ends in `_launch`, which runs the body through opsconsole.ops.actions.run_audited; the SQL
calls are in opsconsole.ops.sqlcalls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
from textual.message import Message

from opsconsole.db.connect import connect
from opsconsole.ops import sqlcalls
from opsconsole.ops.actions import ActionOutcome, describe_error, is_cancel, run_audited, write_audit
from opsconsole.ops.registry import ActionSpec
from opsconsole.tui.format import interval_text
from opsconsole.tui.jobs import Job

if TYPE_CHECKING:
    from opsconsole.tui.app import OpsConsoleApp

LARGE_ROWS = 1000  # scopes at least this big require typing a word
LARGE_BATCH = 10_000
DEFAULT_BATCH = 1000
BATCH_MAX_SECONDS = 300


class JobProgress(Message):
    def __init__(self, job: Job):
        super().__init__()
        self.job = job


class JobFinished(Message):
    def __init__(self, job: Job, outcome: ActionOutcome, after: Callable[[ActionOutcome], None] | None):
        super().__init__()
        self.job = job
        self.outcome = outcome
        self.after = after


# Panes to refresh after an action finishes.
AFFECTS: dict[str, set[str]] = {
    "process_batch": {"monitor", "backlog", "activity"},
    "continuous": {"monitor", "backlog", "activity"},
    "retry_failed": {"backlog", "monitor", "activity"},
    "run_dq": {"quality", "activity"},
    "run_dq_rule": {"quality", "activity"},
    "refresh_c360": {"customers", "activity"},
    "refresh_catalog": {"catalog", "activity"},
}


def plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n:,} {word}"
    return f"{n:,} {word}" + ("es" if word.endswith(("ch", "sh", "s", "x")) else "s")


class Operations:
    def __init__(self, app: OpsConsoleApp):
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
        due = await self.app.lookup_async(sqlcalls.due_count)
        take = min(size, due)
        lines = [
            f"Process up to [b]{plural(size, 'row')}[/] now: {take:,} of the {plural(due, 'row')} due "
            "(pending, or failed and due for a retry) would be claimed, validated, scored and moved.",
            f"Database: [b]{self.db}[/]",
        ]
        word = "process" if size >= LARGE_BATCH else None
        if not await self.confirm("Process one batch", lines, word=word, verb="Process"):
            return
        args = {"batch_size": size, "max_seconds": BATCH_MAX_SECONDS}
        self._launch(
            spec,
            f"process batch of {size:,}",
            "process_financial_batch",
            args,
            lambda conn, job: sqlcalls.process_batch(conn, size, BATCH_MAX_SECONDS),
            audited_by_callee=True,  # process_financial_batch() audits itself (30_pipeline.sql)
            summary=lambda r: (
                f"{r.get('processed_count', 0):,} processed, {r.get('failed_count', 0):,} failed"
                f" in {interval_text(r.get('batch_duration'))}"
            ),
        )

    async def flow_continuous(self, spec: ActionSpec) -> None:
        size = await self._batch_size("Start continuous processing")
        if size is None:
            return
        due = await self.app.lookup_async(sqlcalls.due_count)
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
            "continuous_processing",
            {"batch_size": size},
            lambda conn, job: continuous_loop(self.app, conn, job, size),
            summary=lambda r: (
                f"stopped after {plural(r.get('batches', 0), 'batch')}: "
                f"{r.get('processed', 0):,} processed, {r.get('failed', 0):,} failed"
            ),
            app_name="worker-console",
            audit_start=True,
        )

    async def flow_retry_failed(self, spec: ActionSpec) -> None:
        backlog = self.app.panes["backlog"]
        context = backlog.op_context(spec.id)
        selected: list[int] = context.get("selected", [])
        code = context.get("error_code")
        batch = context.get("batch_id")

        def counts(conn: psycopg.Connection) -> dict[str, int]:
            out = {
                "all": sqlcalls.count_retryable(conn, everything=True),
                "all_dl": sqlcalls.count_retryable(conn, everything=True, include_dead_letter=True),
            }
            if selected:
                out["selected"] = sqlcalls.count_retryable(
                    conn, staging_ids=selected, include_dead_letter=True
                )
            if code:
                out["code"] = sqlcalls.count_retryable(conn, error_code=code)
            if batch:
                out["batch"] = sqlcalls.count_retryable(conn, batch_id=batch)
            return out

        n = await self.app.lookup_async(counts)
        options: list[tuple[str, str, bool]] = []
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
        kwargs: dict[str, Any] = {}
        what = ""
        if scope == "selected":
            kwargs = {"staging_ids": selected, "include_dead_letter": True}
            what = "selected failed/dead-lettered rows"
        elif scope == "code":
            kwargs = {"error_code": code}
            what = f"failed rows with error code {code}"
        elif scope == "batch":
            kwargs = {"batch_id": batch}
            what = f"failed rows from batch {batch}"
        elif scope == "all":
            kwargs = {"everything": True}
            what = "failed rows (everything)"
        else:
            kwargs = {"everything": True, "include_dead_letter": True}
            what = "failed and dead-lettered rows (everything)"
        count = n[scope]
        lines = [
            f"Retry [b]{count:,}[/] {what} on [b]{self.db}[/].",
            "They go back to the queue and are processed again by the next batch.",
        ]
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
            "retry_failed",
            args,
            lambda conn, job: sqlcalls.retry_failed(conn, reason=reason, **kwargs),
            summary=lambda r: f"re-queued {plural(r.get('requeued', 0), 'row')}",
            after=after,
            audited_by_callee=True,
        )

    async def flow_run_dq(self, spec: ActionSpec) -> None:
        rules = await self.app.lookup_async(sqlcalls.active_rules)
        lines = [
            f"Run all [b]{plural(len(rules), 'active rule')}[/] now; each result is stored in "
            "data_quality_metrics.",
            f"Database: [b]{self.db}[/]",
        ]
        if not await self.confirm("Run data-quality checks", lines, verb="Run"):
            return
        # One call, so that the run keeps one run id; progress is estimated from the last run's length.
        expected_ms = await self.app.lookup_async(sqlcalls.last_dq_run_ms)

        def body(conn: psycopg.Connection, job: Job) -> dict[str, Any]:
            results = sqlcalls.run_dq_checks(conn)
            failed = [r["rule_name"] for r in results if not r.get("passed")]
            return {"rules": len(results), "passed": len(results) - len(failed), "failed": failed}

        job = self._launch(
            spec,
            f"run {plural(len(rules), 'DQ rule')}",
            "dq.run",
            {"rules": len(rules)},
            body,
            summary=lambda r: f"{r.get('passed', 0)} passed, {len(r.get('failed', []))} failed",
            audited_by_callee=True,
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
            results = sqlcalls.run_dq_checks(conn, rule)
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
            "dq.run",
            {"rule": rule},
            body,
            summary=lambda r: f"{'passed' if r.get('passed') else 'failed'} (score {r.get('score')})",
            audited_by_callee=True,
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
            "refresh_customer_360_incremental",
            {},
            lambda conn, job: sqlcalls.refresh_c360(conn),
            summary=lambda r: f"{plural(int(r.get('rows_processed') or 0), 'row')} refreshed",
        )

    async def flow_refresh_catalog(self, spec: ActionSpec) -> None:
        columns = await self.app.lookup_async(lambda c: len(sqlcalls.catalog_snapshot(c)))
        lines = [
            f"Re-read the schema of [b]{self.db}[/] into data_catalog ({plural(columns, 'column')} now) "
            "and show what changed.",
        ]
        if not await self.confirm("Refresh the data catalog", lines, verb="Refresh"):
            return

        def after(outcome: ActionOutcome) -> None:
            if outcome.ok:
                self.app.panes["catalog"].show_changes(outcome.result.get("diff", {}))

        self._launch(
            spec,
            "refresh catalog",
            "refresh_data_catalog",
            {},
            lambda conn, job: sqlcalls.refresh_catalog(conn),
            audited_by_callee=True,  # refresh_data_catalog() audits itself (60_catalog_lineage.sql)
            summary=lambda r: (
                f"{r.get('added', 0)} added, {r.get('removed', 0)} removed, {r.get('changed', 0)} changed"
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
        audited_by_callee: bool = False,
    ) -> Job:
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
        self.app.engine.request(AFFECTS.get(job.spec.id, set()))


def continuous_loop(app: OpsConsoleApp, conn: psycopg.Connection, job: Job, size: int) -> dict[str, Any]:
    """process_financial_batch until stopped; waits on NOTIFY opsconsole_staging when idle."""
    counters = job.counters
    counters.update(batches=0, processed=0, failed=0, rate=0.0)
    started = time.perf_counter()
    conn.execute("LISTEN opsconsole_staging")
    while not job.cancel_event.is_set():
        try:
            result = sqlcalls.process_batch_quietly(conn, size, BATCH_MAX_SECONDS)
        except psycopg.errors.QueryCanceled as exc:
            if job.cancel_event.is_set() and is_cancel(exc):
                break  # stopped mid-batch: that batch rolled back, the totals stand
            raise
        counters["batches"] += 1
        counters["processed"] += int(result.get("processed_count") or 0)
        counters["failed"] += int(result.get("failed_count") or 0)
        counters["rate"] = counters["processed"] / max(0.001, time.perf_counter() - started)
        app.post_message(JobProgress(job))
        if not (result.get("processed_count") or result.get("failed_count")):
            for _ in conn.notifies(timeout=1.0, stop_after=1):
                pass
    return {k: counters[k] for k in ("batches", "processed", "failed")} | {
        "seconds": round(time.perf_counter() - started, 3)
    }
