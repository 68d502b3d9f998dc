"""`opsconsole db`: schema migrations, their status, reset, and the embedded server."""

from __future__ import annotations

import click

from opsconsole.cli.base import Context, json_option, pass_ctx, wants_json
from opsconsole.output import emit, err_console


@click.group()
def db() -> None:
    """Schema migrations and the embedded server."""


@db.command("migrate")
@json_option
@pass_ctx
def db_migrate(ctx: Context, as_json: bool) -> None:
    """Apply pending migrations, then the definitions when they changed (idempotent)."""
    from opsconsole.db import citus, migrate

    with ctx.connect("migrate") as conn:
        applied = migrate.migrate(conn)
        distribution = citus.layout(conn)
    rows = [_applied_row(item, ms) for item, ms in applied]
    if wants_json(ctx, as_json):
        emit(rows, True)
        return
    if rows:
        emit(rows, False, title=f"applied {len(rows)} file(s)")
    else:
        click.echo("Nothing to apply: the database is up to date.")
    if distribution:
        kinds = [t["kind"] for t in distribution]
        click.echo(
            f"Citus: {kinds.count('distributed')} distributed and {kinds.count('reference')} reference "
            "table(s); `opsconsole db status` shows where their shards live."
        )


def _applied_row(item, ms: float | None) -> dict:
    """One applied file: a versioned migration, a baseline recorded without running, or definitions."""
    from opsconsole.db import migrate

    if isinstance(item, migrate.Definition):
        return {"kind": "definitions", "version": "", "name": item.name, "ms": round(ms or 0, 1)}
    return {
        "kind": "baseline recorded" if ms is None else "versioned",
        "version": item.version,
        "name": item.name,
        "ms": None if ms is None else round(ms, 1),
    }


@db.command("status")
@json_option
@pass_ctx
def db_status(ctx: Context, as_json: bool) -> None:
    """List versioned migrations, released files a baseline replaced, and definitions with their state;
    with Citus, which tables are distributed and where their shards live."""
    from opsconsole.db import citus, migrate

    with ctx.connect("migrate") as conn:
        states = migrate.status(conn)
        distribution = citus.layout(conn)
    rows = [_status_row(s) for s in states]
    if wants_json(ctx, as_json):
        # with citus: {"migrations": [...], "distribution": [...]}; on plain PostgreSQL the list as before
        emit({"migrations": rows, "distribution": distribution} if distribution else rows, True)
        return
    rows = [{**r, "applied_at": (r["applied_at"] or "")[:19]} for r in rows]  # the time to the second
    emit(rows, False, title="schema files")
    if distribution:
        emit(distribution, False, title="Citus: distributed and reference tables (shards per node)")
    if any(s.state == "edited" for s in states):
        err_console.print(
            "warning: an applied migration file was edited since it ran; `db migrate` refuses to run "
            "until it is restored (put the change in a new migration)."
        )
    if any(s.state == "replaced by nothing" for s in states):
        err_console.print(
            "warning: an applied migration file is missing and no baseline replaces it; `db migrate` "
            "refuses to run until it is restored."
        )
    if any(
        isinstance(s, (migrate.DefinitionState, migrate.MigrationState)) and s.state in ("pending", "changed")
        for s in states
    ):
        err_console.print("Run `opsconsole db migrate` to apply what is pending or changed.")


def _status_row(s) -> dict:
    """One row of `db status`: kind (baseline, versioned, replaced, definitions), file and state."""
    from opsconsole.db import migrate

    if isinstance(s, migrate.DefinitionState):
        kind, version, name = "definitions", "", s.definition.name
    elif isinstance(s, migrate.ReplacedState):
        kind, version, name = "replaced", s.version, s.name
    else:
        kind = "baseline" if s.migration.replaces else "versioned"
        version, name = s.migration.version, s.migration.name
    return {"kind": kind, "version": version, "name": name, "state": s.state, "applied_at": s.applied_at}


@db.command("reset")
@click.option("--yes", is_flag=True, help="Really drop everything.")
@pass_ctx
def db_reset(ctx: Context, yes: bool) -> None:
    """Drop every platform object and re-apply all migrations and definitions (refuses without --yes)."""
    from opsconsole.db import migrate

    if not yes:
        raise click.UsageError("db reset drops all platform data; pass --yes to confirm.")
    with ctx.connect("migrate") as conn:
        migrate.reset(conn)
        applied = migrate.migrate(conn)
    versioned = sum(1 for item, _ in applied if isinstance(item, migrate.Migration))
    click.echo(
        f"Reset done: dropped the schema, applied {versioned} migration(s) and "
        f"{len(applied) - versioned} definitions file(s)."
    )


@db.group("server")
def db_server() -> None:
    """The embedded PostgreSQL server."""


def _server_rows(status) -> dict:
    return {
        "data_dir": str(status.data_dir),
        "initialized": status.initialized,
        "running": status.running,
        "pid": status.pid,
        "version": status.version,
        "dsn": status.dsn,
        "psql": status.psql_command,
    }


@db_server.command("start")
@json_option
@pass_ctx
def db_server_start(ctx: Context, as_json: bool) -> None:
    """Start the embedded server (or reuse the one already running)."""
    from opsconsole.db.embedded import EmbeddedServer

    status = EmbeddedServer().ensure_running()
    emit(_server_rows(status), wants_json(ctx, as_json), title="embedded server running")


@db_server.command("stop")
@pass_ctx
def db_server_stop(ctx: Context) -> None:
    """Stop the embedded server."""
    from opsconsole.db.embedded import EmbeddedServer

    if EmbeddedServer().stop():
        click.echo("Embedded server stopped.")
    else:
        click.echo("The embedded server was not running.")


@db_server.command("status")
@json_option
@pass_ctx
def db_server_status(ctx: Context, as_json: bool) -> None:
    """Where the embedded server lives, whether it runs, and how to reach it with psql."""
    from opsconsole.db.embedded import EmbeddedServer

    status = EmbeddedServer().status()
    emit(_server_rows(status), wants_json(ctx, as_json), title="embedded server")


COMMANDS = [db]
