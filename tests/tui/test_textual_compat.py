"""Textual internals: all listed in tui/textual_compat.py, all present in the installed Textual."""

from __future__ import annotations

import re
from pathlib import Path

from opsconsole.tui import textual_compat

TUI = Path(textual_compat.__file__).parent
# private Textual names the console touches; they may appear only in textual_compat.py
PRIVATE = ("_init_mode", "_bindings_ready", "_two_way_dict", "_row_locations", "_update_count")


def test_every_internal_the_console_uses_exists_in_this_textual():
    assert textual_compat.missing() == []


def test_private_textual_names_are_used_only_through_textual_compat():
    offenders = []
    for path in TUI.rglob("*.py"):
        if path.name == "textual_compat.py":
            continue
        text = path.read_text()
        offenders += [f"{path.name}: {name}" for name in PRIVATE if re.search(rf"\b{name}\b", text)]
        offenders += [f"{path.name}: textual._ import" for _ in re.finditer(r"from textual\._", text)]
    assert offenders == []
    listed = Path(textual_compat.__file__).read_text()
    for name in (*PRIVATE, "delay_update", "refresh_styles"):
        assert name in listed


def test_a_missing_internal_is_one_sentence(monkeypatch):
    from textual.widgets import Footer

    monkeypatch.delattr(Footer, "bindings_changed")
    try:
        textual_compat.check()
    except textual_compat.TextualMismatch as exc:
        message = str(exc)
    else:  # pragma: no cover - the check did not notice
        raise AssertionError("check() passed without Footer.bindings_changed")
    assert "Footer.bindings_changed" in message and "pip install" in message
