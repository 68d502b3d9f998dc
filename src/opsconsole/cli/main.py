"""The command line: parse, call into db/ and ops/, print a table or --json. Kept thin."""

from __future__ import annotations

import importlib
import sys

import click
import psycopg
from rich.markup import escape

from opsconsole.cli.base import Context, json_option, pass_ctx, wants_json
from opsconsole.errors import OpsError, from_database
from opsconsole.output import emit, err_console

# Each area's commands live in opsconsole.cli.<area> and expose COMMANDS (a list of click
# commands or groups); they are attached to the main group below.
COMMAND_MODULES: tuple[str, ...] = (
    "db",
    "dq",
    "catalog",
    "pipeline",
    "console",
    "customers",
    "data",
    "security",
    "serve",
    "monitoring",
)


class OpsGroup(click.Group):
    """Turns expected failures (OpsError) into one sentence on stderr and their exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OpsError as exc:
            err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
            sys.exit(exc.exit_code)
        except psycopg.Error as exc:
            # the expected ones get one sentence and their code: the role lacks a grant (3), the
            # schema is not migrated, the connection or (Citus) a worker node went away mid-command
            what = (
                "do this" if isinstance(exc, psycopg.errors.InsufficientPrivilege) else "finish the command"
            )
            problem = from_database(exc, what)
            if problem is None:
                raise
            err_console.print(f"[bold red]error:[/] {escape(problem.message)}", highlight=False)
            sys.exit(problem.exit_code)
        except KeyboardInterrupt:
            err_console.print("interrupted.")
            sys.exit(130)


@click.group(cls=OpsGroup, invoke_without_command=True)
@click.option("--dsn", envvar=None, help="PostgreSQL connection string (highest precedence).")
@click.option("--profile", help="Profile name from ~/.config/opsconsole/config.toml.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--read-only", is_flag=True, help="Console: hide every action (also `console --read-only`).")
@click.version_option(package_name="opsconsole")
@click.pass_context
def main(ctx: click.Context, dsn: str | None, profile: str | None, as_json: bool, read_only: bool) -> None:
    """opsconsole: operations console for the data platform. With no command, opens the console."""
    ctx.obj = Context(dsn, profile, as_json, read_only=read_only)
    if ctx.invoked_subcommand is None:
        from opsconsole.cli.console import run_console

        run_console(ctx.obj, read_only)


@main.command("where")
@json_option
@pass_ctx
def where(ctx: Context, as_json: bool) -> None:
    """Say which database the precedence rules pick, and why."""
    from opsconsole.db.connect import describe

    target = ctx.target
    row = {
        "source": target.source,
        "database": "embedded" if target.embedded else describe(target.dsn or ""),
    }
    emit(row, wants_json(ctx, as_json), title="connection target")


from opsconsole.cli import db as _db  # noqa: E402  (the db group other modules extend)

for _module in COMMAND_MODULES:
    _mod = importlib.import_module(f"opsconsole.cli.{_module}")
    for _command in _mod.COMMANDS:
        main.add_command(_command)
    for _command in getattr(_mod, "DB_COMMANDS", ()):
        _db.db.add_command(_command)
