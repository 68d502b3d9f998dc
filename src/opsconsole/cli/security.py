"""`opsconsole db grant USER ROLE`: give a login role one of the opsconsole group roles."""

from __future__ import annotations

import click

from opsconsole.cli.base import Context, json_option, pass_ctx, wants_json
from opsconsole.ops.security import GROUP_ROLES
from opsconsole.output import emit


@click.command("grant")
@click.argument("user")
@click.argument("role", metavar="ROLE")
@json_option
@pass_ctx
def grant(ctx: Context, user: str, role: str, as_json: bool) -> None:
    """Grant ROLE (viewer, support, operator or admin) to the login role USER."""
    from opsconsole.ops.security import grant_role

    with ctx.connect("grant") as conn:
        result = grant_role(conn, user, role)
    if wants_json(ctx, as_json):
        emit(result.as_dict(), as_json=True)
    elif result.already_member:
        click.echo(f"{user} is already a member of {result.role}; nothing changed.")
    else:
        click.echo(f"Granted {result.role} to {user}: {GROUP_ROLES[result.role]}.")
    if result.temp_open and not wants_json(ctx, as_json):
        click.echo(result.temp_advice)


COMMANDS: list[click.Command] = []
DB_COMMANDS = [grant]
