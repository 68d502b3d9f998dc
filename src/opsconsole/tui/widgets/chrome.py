"""The parts every pane screen shares: the status header, the tab bar and the connection banner.

They render the ConsoleStatus their pane hands them (the `status` reactive): the app pushes a fresh
one into the shown pane when its state changes and once a second, because they show relative times.
Colours come from theme variables so every Textual theme works.
"""

from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult
from textual.content import Content
from textual.markup import escape
from textual.reactive import reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Static

from opsconsole.tui import textual_compat
from opsconsole.tui.clock import human_duration
from opsconsole.tui.state import ConsoleStatus


def shown(widget: Widget) -> bool:
    """Whether the widget's screen is in the current pane's stack (the pane, or under its dialog):
    every pane is mounted, and the hidden ones need not redraw their clocks each second (the app
    refreshes a pane's chrome when it is shown)."""
    try:
        return widget.screen in widget.app.screen_stack
    except Exception:  # not attached (any more)
        return False


def set_text(widget: Static, text: str) -> None:
    """Show `text` in a Static that a refresh rewrites: nothing when it already shows it, a repaint
    when its height stays, a layout of the screen only when its height changes. Static.update lays
    the whole screen out every time (and redraws all of it), so each refresh's unchanged labels
    cost the next key press its frame (P8)."""
    if widget.content == text:
        return
    before = widget.content_size
    widget.update(text, layout=False)
    width, height = widget.styles.width, widget.styles.height
    if width is not None and width.is_auto:
        widget.refresh(layout=True)  # its width follows the text
        return
    if height is not None and not height.is_auto:
        return  # a fixed height: no text changes it
    if not before.width:
        widget.refresh(layout=True)  # not laid out yet (or hidden): let the layout size it
    elif widget.get_content_height(widget.container_size, widget.app.size, before.width) != before.height:
        widget.refresh(layout=True)


class _StatusView(Static):
    """The status arrives once a second and mostly says the same: redraw only when the text changed,
    and lay the screen out again only for a view whose height can change (RELAYOUT); a relayout of
    every pane's chrome each second cost key presses their next frame (issue 12, P8)."""

    status: reactive[ConsoleStatus | None] = reactive(None, always_update=True, init=False, layout=False)
    RELAYOUT = False
    _text: str | None = None  # what is shown

    def on_mount(self) -> None:
        self._text = self.compose_text()
        self.update(self._text)

    def watch_status(self, status: ConsoleStatus | None) -> None:
        self.tick()

    def tick(self) -> None:
        if shown(self):
            text = self.compose_text()
            if text != self._text:
                self._text = text
                self.update(text, layout=self.RELAYOUT)

    def compose_text(self) -> str:  # pragma: no cover - overridden
        return ""


class StatusHeader(_StatusView):
    """database · role · server version · connection state · last refresh · interval."""

    DEFAULT_CSS = """
    StatusHeader { height: 1; background: $panel; color: $foreground; padding: 0 1; }
    """

    def compose_text(self) -> str:
        status = self.status
        if status is None:
            return "[b $accent]opsconsole[/]"
        caps = status.caps
        # (drop order, markup): when the line is wider than the header, the highest drop order goes
        # first (server version, interval, last refresh, role); 0 is never dropped: which database,
        # whether it answers, and every pause or read-only flag.
        parts: list[tuple[int, str]] = [
            (0, f"[b $accent]opsconsole[/] [dim]db[/] {escape(status.database_label)}")
        ]
        if status.fleet and status.fleet.get("paused"):
            who = status.fleet.get("changed_by")
            parts.append((0, f"[reverse $error] PROCESSING PAUSED [/] [dim]by[/] {escape(str(who))}"))
        if caps is not None:
            parts.append((1, f"[dim]role[/] {escape(caps.role)}"))
            parts.append((4, f"[dim]PostgreSQL[/] {escape(status.version_label or caps.short_version)}"))
        if status.connected:
            parts.append((0, "[$success]● connected[/]"))
        elif status.connected is None:
            parts.append((0, "[$warning]○ connecting[/]"))
        else:
            parts.append((0, "[$error]● disconnected[/]"))
        parts.append((2, f"[dim]refreshed[/] {status.clock.ago(status.last_ok)}"))
        if status.paused:
            parts.append((0, "[reverse $warning] paused [/]"))
        else:
            parts.append((3, f"[dim]every[/] {human_duration(status.interval)}"))
        if status.read_only:
            parts.append((0, "[reverse $secondary] read-only [/]"))
        room = self.size.width  # the content area (inside the padding)
        while room > 0 and _cells(parts) > room and max(rank for rank, _ in parts) > 0:
            worst = max(rank for rank, _ in parts)
            parts = [(rank, text) for rank, text in parts if rank != worst]
        return SEPARATOR.join(text for _, text in parts)


SEPARATOR = " [dim]·[/] "


def _cells(parts: list[tuple[int, str]]) -> int:
    """How many cells the header's parts take on screen, separators included."""
    return Content.from_markup(SEPARATOR.join(text for _, text in parts)).cell_length


# Tab labels when the full titles do not fit (a pane not named here uses its title's first word).
SHORT_TITLES = {
    "monitor": "Monitor",
    "backlog": "Backlog",
    "quality": "DQ",
    "customers": "Customers",
    "catalog": "Catalog",
    "activity": "Activity",
}
TINY_TITLES = {
    "monitor": "Mon",
    "backlog": "Back",
    "quality": "DQ",
    "customers": "Cust",
    "catalog": "Cat",
    "activity": "Act",
}


def tab_labels(panes: list[tuple[str, str, str]], current: str, width: int) -> list[str]:
    """The tab labels that fit in `width` cells, from (id, key, title): full titles, then short ones,
    then tiny ones, then only the keys (the current pane keeps its short title)."""

    def fits(labels: list[str]) -> bool:
        return sum(len(label) for label in labels) + len(labels) - 1 <= width

    full = [f" {key} {title} " for _, key, title in panes]
    short = [f" {key} {SHORT_TITLES.get(pid, title.split()[0])} " for pid, key, title in panes]
    tiny = [f" {key} {TINY_TITLES.get(pid, title.split()[0][:4])} " for pid, key, title in panes]
    for labels in (full, short, tiny):
        if fits(labels):
            return labels
    return [short[i] if pid == current else f" {key} " for i, (pid, key, _) in enumerate(panes)]


class PaneTabs(_StatusView):
    """1 Monitor  2 Backlog ...; the current pane highlighted; each tab is clickable. The labels get
    shorter when the terminal is narrow, so every pane's tab shows."""

    DEFAULT_CSS = """
    PaneTabs { height: 1; background: $boost; padding: 0 1; }
    """

    def __init__(self, current: str, **kwargs):
        super().__init__(**kwargs)
        self.current = current

    def on_resize(self) -> None:
        self.update(self.compose_text())

    def compose_text(self) -> str:
        from opsconsole.tui.screens import PANES

        panes = [(p.PANE_ID, p.PANE_KEY, p.PANE_TITLE) for p in PANES]
        width = self.content_size.width or (self.app.size.width - 2)
        tabs = []
        for (pane_id, _, _), label in zip(panes, tab_labels(panes, self.current, width), strict=True):
            label = escape(label)
            if self.current == pane_id:
                tabs.append(f"[reverse b $accent]{label}[/]")
            else:
                tabs.append(f"[@click=app.show_pane('{pane_id}')]{label}[/]")
        return " ".join(tabs)


class Banner(_StatusView):
    """Shown only when something is wrong with the connection."""

    RELAYOUT = True  # height: auto

    DEFAULT_CSS = """
    Banner { height: auto; background: $error 30%; color: $text; padding: 0 1; display: none; }
    Banner.-visible { display: block; }
    """

    def compose_text(self) -> str:
        status = self.status
        visible = status is not None and status.connected is False
        self.set_class(visible, "-visible")
        if status is None or not visible:
            return ""
        wait = max(0.0, status.retry_at - time.monotonic()) if status.retry_at is not None else 0.0
        when = f"retrying in {max(1, round(wait))}s" if wait > 0.05 else "retrying now"
        return (
            f"[b]disconnected, {when}[/]: {escape(status.error or 'the server is not answering')}. "
            "Panes show their last data, marked stale."
        )


class PaneFooter(Footer):
    """Textual's Footer, recomposed only when the bindings it shows changed.

    Footer rebuilds all its keys on every bindings signal, and Textual sends one on every screen
    switch and focus change even when nothing shown differs: that was ~40% of a pane switch's CPU on
    the UI thread (P8). What is shown is the same as long as this signature is."""

    # When the keys need the whole width they run under the docked "^p palette" item and the two
    # garble each other, so the item shows only when the pane's keys leave room for it (the palette
    # still opens with ctrl+p, and `?` lists every key).
    PALETTE_ITEM = 14  # "^p palette" with its padding and separator

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._composed_for: tuple | None = None
        self._rebuild_queued = False

    def _keys_width(self) -> int:
        """Cells the shown keys take: key, a space and the description, padded by one each side."""
        total = 0
        for _, (_, b, _, _) in self.screen.active_bindings.items():
            if b.show:
                total += len(b.key_display or self.app.get_key_display(b)) + len(b.description) + 3
        return total

    def _palette_fits(self) -> bool:
        return self._keys_width() + self.PALETTE_ITEM <= self.app.size.width

    def on_resize(self) -> None:
        if textual_compat.footer_bindings_ready(self) and self.show_command_palette != self._palette_fits():
            self.call_later(self.recompose)

    def _shown_signature(self) -> tuple:
        active = self.screen.active_bindings
        shown = tuple(
            (key, b.action, b.description, b.key_display, b.group, enabled, tooltip)
            for key, (_, b, enabled, tooltip) in active.items()
            if b.show
        )
        palette = active.get(self.app.COMMAND_PALETTE_BINDING)
        return (shown, self.show_command_palette, None if palette is None else palette[2], self.compact)

    def compose(self) -> ComposeResult:
        if textual_compat.footer_bindings_ready(self):
            # decided here, where the keys are known (a reactive set quietly: no second recompose)
            self.set_reactive(Footer.show_command_palette, self._palette_fits())
            self._composed_for = self._shown_signature()
        yield from super().compose()

    def _shows_current(self) -> bool:
        return self._composed_for is not None and self._shown_signature() == self._composed_for

    def bindings_changed(self, screen: Screen) -> None:
        """One rebuild for a burst of signals: opening a filter sends several in one frame (focus,
        classes, the input's own bindings), and each queued a full rebuild of its own (P8). The
        rebuild runs once, after the refresh, for the bindings of that moment."""
        if not (self.is_attached and screen is self.screen):
            super().bindings_changed(screen)  # another screen's signal: Textual only notes it
            return
        if self._rebuild_queued or self._shows_current():
            return
        textual_compat.footer_set_bindings_ready(self)
        if not screen.app.app_focus:
            return
        self._rebuild_queued = True
        self.call_after_refresh(self._rebuild)

    async def _rebuild(self) -> None:
        self._rebuild_queued = False
        if not self._shows_current():
            await self.recompose()
