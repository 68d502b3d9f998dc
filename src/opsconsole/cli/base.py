"""Shared pieces of every CLI command: the resolved connection context and output switches."""

from __future__ import annotations

from dataclasses import dataclass

import click

from opsconsole.config import Target, resolve_target


@dataclass
class Context:
    dsn_option: str | None
    profile: str | None
    as_json: bool
    read_only: bool = False
    _target: Target | None = None
    _dsn: str | None = None

    @property
    def target(self) -> Target:
        if self._target is None:
            self._target = resolve_target(self.dsn_option, self.profile)
        return self._target

    @property
    def dsn(self) -> str:
        if self._dsn is None:
            from opsconsole.db.connect import target_dsn

            self._dsn = target_dsn(self.target)
        return self._dsn

    def connect(self, app: str = "cli", **kwargs):
        from opsconsole.db.connect import connect

        return connect(self.dsn, app, **kwargs)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
pass_ctx = click.make_pass_decorator(Context)


def wants_json(ctx: Context, local: bool) -> bool:
    """--json may be given before the subcommand (global) or after it (local)."""
    return local or ctx.as_json
