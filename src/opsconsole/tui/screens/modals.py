"""Dialogs: confirm (Cancel focused; big scopes need a typed word), prompt, choice, help, details."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option


class ConfirmScreen(ModalScreen[bool]):
    """States the blast radius. Cancel has the focus, so Enter alone never confirms; with `word`, the
    Confirm button stays disabled until that word is typed."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, lines: list[str], *, word: str | None = None, verb: str = "Run"):
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.lines = lines
        self.word = word
        self.verb = verb

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog confirm"):
            yield Label(f"[b]{escape(self.title_text)}[/]", classes="dialog-title")
            for line in self.lines:
                yield Static(line, classes="dialog-line")
            if self.word:
                yield Static(
                    f"This is a large scope: type [b]{self.word}[/] to enable {self.verb}.",
                    classes="dialog-line warn",
                )
                yield Input(placeholder=self.word, id="word")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel", variant="primary")
                yield Button(self.verb, id="confirm", variant="error", disabled=bool(self.word))

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#confirm", Button).disabled = event.value.strip() != self.word

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == self.word:
            self.query_one("#confirm", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")

    def action_cancel(self) -> None:
        self.dismiss(False)


class PromptScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, label: str, default: str, check: Callable[[str], str | None]):
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.label = label
        self.default = default
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"[b]{escape(self.title_text)}[/]", classes="dialog-title")
            yield Label(self.label)
            yield Input(value=self.default, id="answer")
            yield Static("", id="problem", classes="dialog-line warn")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("OK", id="ok", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#answer", Input).focus()

    def _submit(self) -> None:
        value = self.query_one("#answer", Input).value.strip()
        problem = self.check(value)
        if problem:
            self.query_one("#problem", Static).update(f"Expected {problem}.")
            return
        self.dismiss(value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ChoiceScreen(ModalScreen[str | None]):
    """Pick one option (id, label, enabled)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, options: list[tuple[str, str, bool]]):
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.options = options

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"[b]{escape(self.title_text)}[/]", classes="dialog-title")
            yield OptionList(
                *[
                    Option(escape(label), id=oid, disabled=not enabled)
                    for oid, label, enabled in self.options
                ],
                id="choices",
            )
            yield Static("[dim]Enter picks, Esc cancels[/]")

    def on_mount(self) -> None:
        choices = self.query_one(OptionList)
        choices.focus()
        for index, (_, _, enabled) in enumerate(self.options):
            if enabled:
                choices.highlighted = index
                break

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every binding and every action, with why an action is unavailable."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    INSTALLED = "opsconsole-help"

    def __init__(self, rows: list[tuple[str, str, str, str]]):
        super().__init__(classes="dialog-screen")
        self.rows = rows

    @classmethod
    def show(cls, app: App, rows: list[tuple[str, str, str, str]]) -> None:
        """Push the help. Composing it and laying out its long table again on every `?` cost 50-100 ms
        of the UI thread (P8), so the screen stays installed and is shown again while its rows (the
        pane's keys, what the role may do) are the same."""
        kept = app.get_screen(cls.INSTALLED) if app.is_screen_installed(cls.INSTALLED) else None
        if kept is not None and kept in app.screen_stack:
            return  # open already, under another dialog
        if kept is not None and (not isinstance(kept, cls) or kept.rows != rows):
            app.uninstall_screen(cls.INSTALLED)
            kept = None
        if kept is None:
            kept = cls(rows)
            app.install_screen(kept, cls.INSTALLED)
        app.push_screen(cls.INSTALLED)

    def on_screen_resume(self) -> None:
        if self.is_mounted:  # shown again: from the top, scrollable by keys
            body = self.query_one("#help-body", VerticalScroll)
            body.scroll_home(animate=False)
            body.focus()

    def compose(self) -> ComposeResult:
        table = Table(box=box.SIMPLE_HEAD, expand=True, show_edge=False, pad_edge=False)
        table.add_column("where", no_wrap=True, style="dim")
        table.add_column("key", no_wrap=True, style="bold")
        table.add_column("what", overflow="fold")
        table.add_column("state", overflow="fold")
        for where, key, what, state in self.rows:
            table.add_row(
                where, key, what, Text(state, style="dim" if state.startswith("unavailable") else "")
            )
        with Vertical(classes="dialog help"):
            yield Label("[b]Keys and actions[/]  [dim](Esc closes; ctrl+p opens the command palette)[/]")
            with VerticalScroll(id="help-body"):
                yield Static(table, id="help-table")

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()

    def action_close(self) -> None:
        self.dismiss(None)


class DetailScreen(ModalScreen[None]):
    """A titled, scrollable stack of renderables (drill-downs, histories, what changed)."""

    BINDINGS = [Binding("escape,q,enter", "close", "Close")]

    def __init__(self, title: str, parts: list[RenderableType | str], **kwargs: Any):
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.parts = parts

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog detail"):
            yield Label(f"[b]{escape(self.title_text)}[/]  [dim](Esc closes)[/]", classes="dialog-title")
            with VerticalScroll(id="detail-body"):
                for part in self.parts:
                    yield Static(part, classes="detail-part", markup=isinstance(part, str))

    def on_mount(self) -> None:
        self.query_one("#detail-body").focus()

    def action_close(self) -> None:
        self.dismiss(None)
