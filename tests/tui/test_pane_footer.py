"""PaneFooter: rebuilt only when the bindings it shows change (P8: Textual's Footer rebuilt all its keys
on every screen switch and focus change, ~40% of a pane switch's UI-thread time)."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Button, Footer
from textual.widgets._footer import FooterKey

from opsconsole.tui.widgets.chrome import PaneFooter


class FooterApp(App):
    BINDINGS = [
        Binding("a", "alpha", "Alpha"),
        Binding("x", "cancel", "Cancel"),
        Binding("h", "hidden", show=False),
    ]

    def __init__(self, footer: type[Footer]) -> None:
        super().__init__()
        self.footer_cls = footer
        self.can_cancel = False

    def compose(self) -> ComposeResult:
        yield Button("one", id="one")
        yield Button("two", id="two")
        yield self.footer_cls()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.can_cancel if action == "cancel" else True


def keys(app: App) -> list[FooterKey]:
    return list(app.screen.query(FooterKey))


async def shown_after_focus_and_toggle(footer: type[Footer]) -> tuple[bool, list[str], list[str]]:
    app = FooterApp(footer)
    async with app.run_test(size=(80, 10)) as pilot:
        await pilot.pause()
        before = keys(app)
        app.query_one("#two").focus()  # a focus change sends a bindings signal; nothing shown differs
        await pilot.pause()
        kept = keys(app) == before and all(a is b for a, b in zip(keys(app), before, strict=True))
        shown_before = [k.key for k in keys(app)]
        app.can_cancel = True
        app.refresh_bindings()
        await pilot.pause()
        return kept, shown_before, [k.key for k in keys(app)]


async def test_pane_footer_keeps_its_keys_until_what_it_shows_changes():
    kept, before, after = await shown_after_focus_and_toggle(PaneFooter)
    assert kept  # the same FooterKey widgets: not rebuilt
    assert "a" in before and "x" not in before and "h" not in before
    assert "x" in after and "a" in after  # the cancel key appeared once it applies


async def test_textual_footer_rebuilds_on_a_focus_change():
    """The cost PaneFooter avoids (if Textual stops rebuilding, PaneFooter can go)."""
    kept, _, after = await shown_after_focus_and_toggle(Footer)
    assert not kept
    assert "x" in after


async def test_a_burst_of_binding_signals_rebuilds_the_footer_once():
    """Opening a filter sends several bindings signals in one frame; each used to queue a rebuild."""
    app = FooterApp(PaneFooter)
    async with app.run_test(size=(80, 10)) as pilot:
        await pilot.pause()
        footer = app.query_one(PaneFooter)
        composed = []
        recompose = footer.recompose

        async def counted() -> None:
            composed.append(1)
            await recompose()

        footer.recompose = counted  # type: ignore[method-assign]
        composed.clear()
        app.can_cancel = True
        for _ in range(3):
            app.screen.bindings_updated_signal.publish(app.screen)
        await pilot.pause()
        await pilot.pause()
        assert len(composed) == 1
        assert "x" in [k.key for k in keys(app)]
        # and back before the rebuild ran: nothing to rebuild
        composed.clear()
        app.can_cancel = False
        app.screen.bindings_updated_signal.publish(app.screen)
        app.can_cancel = True
        await pilot.pause()
        await pilot.pause()
        assert composed == [] and "x" in [k.key for k in keys(app)]
