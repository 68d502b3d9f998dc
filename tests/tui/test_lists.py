"""The one list behaviour every pane's lists share (widgets/data_list.py): `/` filters, `s`/`S` sort,
a header click sorts, the pane's title shows both, `e`/`E` export what is shown and `y` copies the
cursor row, each recorded as console.export by the database; columns fit the terminal's width."""

from __future__ import annotations

import csv
import json

import pytest
from psycopg.rows import dict_row

from tests.tui.helpers import SIZE, table_rows, type_in, wait_for
from tests.tui.test_console_basics import seed_audit
from tools.drive import wait_loaded


def exports(conn) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT actor, arguments, result, status FROM ops_audit_log WHERE action = 'console.export'"
            " ORDER BY audit_id"
        ).fetchall()


def title(app) -> str:
    return str(app.screen.query_one("#pane-frame").border_title)


async def test_activity_filters_sorts_by_key_and_header_click_and_titles_it(make_app, conn):
    seed_audit(conn)
    app = make_app(start_pane="activity", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "activity")
        assert [r[3] for r in table_rows(app, "#audit")][:5] == [f"action_{i}" for i in (4, 3, 2, 1, 0)]

        # / filters as you type, on any value of the row
        await type_in(pilot, "op3")
        await wait_for(pilot, lambda: [r[2] for r in table_rows(app, "#audit")] == ["op3"], what="filter")
        assert "filter “op3”" in title(app)
        await pilot.press("enter")  # back to the rows, the filter stays
        assert app.focused is app.screen.query_one("#audit")
        await pilot.press("escape")  # clears it
        await wait_for(pilot, lambda: len(table_rows(app, "#audit")) == 5, what="all rows back")
        assert "filter" not in title(app)

        # s: sort by the first column, then the next; S reverses
        await pilot.press("s")
        assert "sort when ▲" in title(app)
        assert [r[3] for r in table_rows(app, "#audit")] == [f"action_{i}" for i in range(5)]
        await pilot.press("S")
        assert "sort when ▼" in title(app)
        assert [r[3] for r in table_rows(app, "#audit")] == [f"action_{i}" for i in (4, 3, 2, 1, 0)]
        await pilot.press("s")  # the next column with a value of its own: who ("ago" is "when")
        assert "sort who ▲" in title(app)

        # a click on a header sorts by it; a second click reverses
        table = app.screen.query_one("#audit")
        status_index = [c.key.value for c in table.ordered_columns].index("status")
        await pilot.click(
            "#audit",
            offset=(sum(c.get_render_width(table) for c in table.ordered_columns[:status_index]) + 2, 0),
        )
        assert "sort status ▲" in title(app)
        assert [r[5] for r in table_rows(app, "#audit")] == ["error", "error", "ok", "ok", "ok"]
        await pilot.click(
            "#audit",
            offset=(sum(c.get_render_width(table) for c in table.ordered_columns[:status_index]) + 2, 0),
        )
        assert "sort status ▼" in title(app)
        assert [r[5] for r in table_rows(app, "#audit")][0] == "ok"


async def test_export_writes_what_is_shown_and_the_database_records_it(make_app, conn, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seed_audit(conn)
    app = make_app(start_pane="activity", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "activity")
        await type_in(pilot, "error")
        await wait_for(pilot, lambda: len(table_rows(app, "#audit")) == 2, what="filter")
        await pilot.press("enter", "s", "s")  # sorted by who, ascending
        await pilot.press("e")
        await wait_for(pilot, lambda: list(tmp_path.glob("*.csv")), what="the CSV file")
        path = next(tmp_path.glob("*.csv"))
        with path.open() as fh:
            rows = list(csv.DictReader(fh))
        assert [r["who"] for r in rows] == ["op1", "op3"]
        assert [r["status"] for r in rows] == ["error", "error"]
        assert json.loads(rows[0]["scope"]) == {"batch_id": "b-1"}
        await wait_for(pilot, lambda: any(str(path) in n for n in app.notices), what="the notice")

        await pilot.press("E")
        await wait_for(pilot, lambda: list(tmp_path.glob("*.json")), what="the JSON file")
        data = json.loads(next(tmp_path.glob("*.json")).read_text())
        assert [r["who"] for r in data] == ["op1", "op3"]

        # y copies the cursor row (OSC 52; the headless app keeps it in app.clipboard)
        app.screen.query_one("#audit").move_cursor(row=1)
        await pilot.press("y")
        await wait_for(pilot, lambda: app.clipboard, what="the clipboard")
        assert json.loads(app.clipboard)["who"] == "op3"

    recorded = exports(conn)
    assert [r["arguments"]["format"] for r in recorded] == ["csv", "json", "clipboard"]
    assert [r["result"]["rows"] for r in recorded] == [2, 2, 1]
    assert recorded[0]["arguments"]["target"] == str(path)
    assert recorded[0]["arguments"]["list"] == "activity-actions"
    assert "ops_audit_log.actor" in recorded[0]["result"]["classifications"]["internal"]


async def test_an_export_the_database_does_not_record_writes_nothing(make_app, conn, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seed_audit(conn)
    conn.execute("REVOKE EXECUTE ON FUNCTION console_export(text, text, integer, text[], text) FROM PUBLIC")
    conn.execute(
        "ALTER FUNCTION console_export(text, text, integer, text[], text) RENAME TO console_export_gone"
    )
    app = make_app(start_pane="activity", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "activity")
        await pilot.press("e")
        await wait_for(pilot, lambda: any("not recorded" in n for n in app.notices), what="the refusal")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
async def test_activity_columns_fit_the_width(make_app, conn, size):
    seed_audit(conn)
    conn.execute(
        "UPDATE ops_audit_log SET action = 'a_very_long_action_name_that_needs_room_to_show'"
        " WHERE actor = 'op4'"
    )
    app = make_app(start_pane="activity", listen=False)
    async with app.run_test(size=size) as pilot:
        await wait_loaded(app, "activity")
        await pilot.pause(0.2)
        table = app.screen.query_one("#audit")
        keys = [c.key.value for c in table.ordered_columns]
        width = sum(c.get_render_width(table) for c in table.ordered_columns)
        assert width <= table.size.width
        assert {"when", "action", "status"} <= set(keys)
        if size[0] == 80:
            assert "ms" not in keys
        else:
            assert keys == ["when", "ago", "actor", "action", "scope", "status", "result", "ms"]
            assert "a_very_long_action_name_that_needs_room_to_show" in [
                r[3] for r in table_rows(app, "#audit")
            ]
            assert table.ordered_columns[3].width >= len("a_very_long_action_name_that_needs_room_to_show")
