"""`opsconsole console` (and `opsconsole` with no command): the Textual console."""

from __future__ import annotations

import click

from opsconsole.cli.base import Context, pass_ctx

PANE_CHOICES = ("monitor", "backlog", "quality", "customers", "catalog", "activity")


def database_label(dsn: str) -> str:
    """host/db for the header; a Unix-socket host is shown as 'local' (its path is long and dull)."""
    from psycopg import conninfo

    from opsconsole.db.connect import describe

    text = describe(dsn)
    if text.startswith("socket "):
        try:
            params = conninfo.conninfo_to_dict(dsn)
        except Exception:
            return text
        return f"local/{params.get('dbname') or params.get('user') or 'default'}"
    return text


def run_console(ctx: Context, read_only: bool, interval: float = 2.0, pane: str | None = None) -> None:
    """Check that the database answers (one clear sentence if not), then open the console."""
    from opsconsole.db.connect import connect
    from opsconsole.errors import OpsError

    try:
        from opsconsole.tui.app import OpsConsoleApp
    except RuntimeError as exc:  # tui.textual_compat: this Textual lacks an internal the console uses
        if type(exc).__name__ != "TextualMismatch":
            raise
        raise OpsError(str(exc)) from None

    from opsconsole import config
    from opsconsole.tui.keys import check_keymap

    keymap = config.console_keys()  # a bad [keys] table is one sentence, before anything connects
    check_keymap(keymap, config.config_path())
    target = ctx.target
    dsn = ctx.dsn
    with connect(dsn, "console"):
        pass
    label = "embedded" if target.embedded else database_label(dsn)
    app = OpsConsoleApp(
        dsn,
        database_label=label,
        read_only=read_only,
        interval=interval,
        start_pane=pane,
        keymap=keymap,
        remember_choices=True,
    )
    app.profile = ctx.profile
    app.run()


@click.command("console")
@click.option("--read-only", is_flag=True, help="Hide every action; only look.")
@click.option(
    "--interval",
    type=click.FloatRange(0.5, 600),
    default=2.0,
    show_default=True,
    help="Seconds between pane refreshes (+/- change it live).",
)
@click.option("--pane", type=click.Choice(PANE_CHOICES), help="The pane to open on.")
@click.option("--keys", "list_keys", is_flag=True, help="List the binding ids [keys] can rebind, and exit.")
@pass_ctx
def console(ctx: Context, read_only: bool, interval: float, pane: str | None, list_keys: bool) -> None:
    """Open the operations console (live panes and operator actions)."""
    if list_keys:
        from opsconsole.tui.keys import binding_ids

        for binding_id, (key, what) in binding_ids().items():
            click.echo(f"{binding_id:<30} {key:<18} {what}")
        return
    run_console(ctx, read_only or ctx.read_only, interval, pane)


COMMANDS = [console]
