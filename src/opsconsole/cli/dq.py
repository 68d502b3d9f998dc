"""`opsconsole dq ...`: run data-quality checks, list and add rules, read a rule's history."""

from __future__ import annotations

import sys
from decimal import Decimal

import click

from opsconsole.cli.base import Context, json_option, pass_ctx, wants_json
from opsconsole.ops import dq as ops
from opsconsole.output import emit, err_console

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(scores: list | None) -> str:
    """Recent scores (0..1, oldest first) as block characters; '·' where a run had no score."""
    if not scores:
        return ""
    return "".join(
        "·" if s is None else SPARK[min(int(Decimal(s) * len(SPARK)), len(SPARK) - 1)] for s in scores
    )


def _pct(value) -> str:
    return "—" if value is None else f"{Decimal(value) * 100:.2f}%"


@click.group("dq")
def dq() -> None:
    """Data quality: rules, runs and their history."""


@dq.command("run")
@click.option("--table", help="Only the rules of this table.")
@click.option("--rule", "rule_name", help="Only this rule (runs it even if it is inactive).")
@click.option("--timeout-ms", type=click.IntRange(min=1), help="Time budget of every rule's query.")
@json_option
@pass_ctx
def dq_run(
    ctx: Context, table: str | None, rule_name: str | None, timeout_ms: int | None, as_json: bool
) -> None:
    """Run the checks. Exit code 1 when a rule of severity error or critical fails or cannot run."""
    with ctx.connect("dq") as conn:
        report = ops.run_checks(conn, table=table, rule=rule_name, timeout_ms=timeout_ms)
    if wants_json(ctx, as_json):
        emit(report.as_dict(), True)
    else:
        rows = [
            {
                "rule": r["rule_name"],
                "table": r["table_name"],
                "type": r["rule_type"],
                "severity": r["severity"],
                "status": r["status"],
                "score": _pct(r["score"]),
                "threshold": _pct(r["threshold_value"]),
                "message": r["message"],
            }
            for r in report.results
        ]
        title = f"DQ run {report.run_id}: {report.status}" if report.run_id else "DQ run"
        emit(rows, False, title=title)
        click.echo(
            f"{report.rules_total} rule(s): {report.rules_passed} passed, {report.rules_failed} failed, "
            f"{report.rules_errored} could not run."
        )
    if report.has_severe_failure:
        err_console.print(
            f"{report.severe_failures} rule(s) of severity error or critical failed or could not run.",
            highlight=False,
        )
        sys.exit(1)


@dq.command("rules")
@click.option("--table", help="Only the rules of this table.")
@click.option("--active-only", is_flag=True, help="Hide inactive rules.")
@json_option
@pass_ctx
def dq_rules(ctx: Context, table: str | None, active_only: bool, as_json: bool) -> None:
    """List the rules with their latest result and recent trend."""
    with ctx.connect("dq") as conn:
        rules = ops.list_rules(conn, table=table, include_inactive=not active_only)
    if wants_json(ctx, as_json):
        emit(rules, True)
        return
    rows = [
        {
            "rule": r["rule_name"],
            "table": r["table_name"],
            "type": r["rule_type"],
            "severity": r["severity"],
            "active": "yes" if r["is_active"] else "no",
            "definition": r["definition"],
            "threshold": _pct(r["threshold_value"]),
            "last": r["last_status"] or "never run",
            "score": _pct(r["last_score"]),
            "trend": sparkline(r["recent_scores"]),
        }
        for r in rules
    ]
    emit(rows, False, title="DQ rules")


@dq.command("add")
@click.argument("name")
@click.option("--table", required=True, help="The table the rule checks.")
@click.option("--type", "rule_type", required=True, type=click.Choice(ops.RULE_TYPES), help="Rule type.")
@click.option("--expression", help="Boolean expression over the table's columns (uniqueness: column list).")
@click.option("--column", help="Structured form: the column checked.")
@click.option("--operator", type=click.Choice(ops.OPERATORS), help="Structured form: the comparison.")
@click.option("--value", help='Structured form: a JSON value, e.g. 0, "open" or ["a", "b"].')
@click.option("--references", help="consistency: the referenced TABLE or TABLE.COLUMN.")
@click.option("--max-age", help="freshness: the newest row may be at most this old, e.g. '1 hour'.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Share of rows that must pass (0..1).")  # fmt: skip
@click.option("--severity", type=click.Choice(ops.SEVERITIES), default="warning", show_default=True)
@click.option("--timeout-ms", type=click.IntRange(min=1), help="Time budget of this rule's query.")
@click.option("--description", help="What the rule is for.")
@click.option("--inactive", is_flag=True, help="Store the rule without running it in regular runs.")
@json_option
@pass_ctx
def dq_add(
    ctx: Context,
    name: str,
    table: str,
    rule_type: str,
    expression: str | None,
    column: str | None,
    operator: str | None,
    value: str | None,
    references: str | None,
    max_age: str | None,
    threshold: float,
    severity: str,
    timeout_ms: int | None,
    description: str | None,
    inactive: bool,
    as_json: bool,
) -> None:
    """Add a rule NAME; it is validated before it is stored (and again at every run)."""
    ref_table, ref_column = None, None
    if references:
        ref_table, _, ref_column = references.rpartition(".") if "." in references else (references, "", "")
        ref_column = ref_column or None
    spec = ops.RuleSpec(
        rule_name=name,
        table_name=table,
        rule_type=rule_type,
        rule_expression=expression,
        threshold_value=Decimal(str(threshold)),
        severity=severity,
        column_name=column,
        operator=operator,
        value=ops.parse_value(value),
        reference_table=ref_table,
        reference_column=ref_column,
        max_age=max_age,
        timeout_ms=timeout_ms,
        description=description,
        is_active=not inactive,
    )
    with ctx.connect("dq") as conn:
        row = ops.add_rule(conn, spec)
    if wants_json(ctx, as_json):
        emit(row, True)
    else:
        click.echo(
            f'Added DQ rule "{row["rule_name"]}" (id {row["rule_id"]}): {row["normalized_definition"]}'
        )


@dq.command("history")
@click.argument("rule")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
@pass_ctx
def dq_history(ctx: Context, rule: str, limit: int, as_json: bool) -> None:
    """A rule's results over its recent runs, newest first."""
    with ctx.connect("dq") as conn:
        rows = ops.history(conn, rule, limit)
    if wants_json(ctx, as_json):
        emit(rows, True)
        return
    emit(
        [
            {
                "run": r["run_id"],
                "checked_at": r["checked_at"],
                "status": r["status"],
                "score": _pct(r["score"]),
                "failed_rows": r["failed_rows"],
                "ms": r["duration_ms"],
                "message": r["message"],
            }
            for r in rows
        ],
        False,
        title=f"DQ history: {rule}",
    )


COMMANDS = [dq]
