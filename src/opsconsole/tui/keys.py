"""The console's key bindings by id, for the [keys] table of the config file: which ids exist, and a
check that names a wrong one in one sentence before the console opens."""

from __future__ import annotations

from pathlib import Path

from opsconsole.errors import ConfigProblem


def binding_ids() -> dict[str, tuple[str, str]]:
    """{binding id: (default key, what it does)} for every rebindable binding: the app's own
    (app.*), each pane's (<pane>.<action>) and every list's (list.*)."""
    from opsconsole.tui.app import OpsConsoleApp
    from opsconsole.tui.screens import PANES
    from opsconsole.tui.widgets.data_list import DataList

    found: dict[str, tuple[str, str]] = {}
    lists = DataList.BINDINGS  # every list's (list.*): `/`, sort, export, copy
    for binding in [*OpsConsoleApp.BINDINGS, *(b for pane in PANES for b in pane.BINDINGS), *lists]:
        if getattr(binding, "id", None):
            found[binding.id] = (binding.key, binding.description)
    return found


def check_keymap(keymap: dict[str, str], path: Path) -> None:
    known = binding_ids()
    for binding_id in keymap:
        if binding_id not in known:
            raise ConfigProblem(
                f"In {path}, [keys] names no binding '{binding_id}'; the binding ids are listed in "
                "docs/keys.md and by `opsconsole console --keys`."
            )
