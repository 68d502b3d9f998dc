"""`opsconsole serve`: the console in a browser (textual-serve), on localhost, read-only by default.

Each browser session starts its own `opsconsole console` process; the connection string reaches it
through the environment (OPSCONSOLE_DSN), never the command line, so it does not show in `ps`.
There is no authentication here: put an authenticating reverse proxy in front (docs/security.md).
"""

from __future__ import annotations

import os
import shlex
import sys

import click

from opsconsole.cli.base import Context, pass_ctx
from opsconsole.cli.console import PANE_CHOICES


def console_command(allow_actions: bool, pane: str | None = None) -> str:
    """The shell command textual-serve runs per browser session."""
    parts = [sys.executable, "-m", "opsconsole.cli", "console"]
    if not allow_actions:
        parts.append("--read-only")
    if pane:
        parts += ["--pane", pane]
    return " ".join(shlex.quote(p) for p in parts)


@click.command("serve")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (localhost by default)."
)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--allow-actions", is_flag=True, help="Let browser users run actions (default: read-only).")
@click.option("--pane", type=click.Choice(PANE_CHOICES), help="The pane to open on.")
@pass_ctx
def serve(ctx: Context, host: str, port: int, allow_actions: bool, pane: str | None) -> None:
    """Serve the console to a browser. No authentication: put an authenticating proxy in front."""
    from textual_serve.server import Server

    from opsconsole.db.connect import connect

    dsn = ctx.dsn
    with connect(dsn, "serve"):
        pass  # one clear sentence now rather than a blank page per browser session
    os.environ["OPSCONSOLE_DSN"] = dsn
    allow_actions = allow_actions and not ctx.read_only
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: listening on {host}; anyone who can reach it gets the console.", err=True)
    Server(console_command(allow_actions, pane), host=host, port=port, title="opsconsole").serve()


COMMANDS = [serve]
