"""The console as each group role: viewers search masked customers, support searches through the audited
search_customers(), and actions the role lacks are unavailable with the reason."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import conninfo

from tests.tui.helpers import SIZE, table_rows, type_in, wait_for


@pytest.fixture
def role_dsn(db_dsn: str, admin_dsn: str) -> Iterator[Callable[[str], str]]:
    made: list[str] = []

    def make(group: str) -> str:
        name = f"oc_tui_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_dsn, autocommit=True) as a:
            a.execute(f'CREATE ROLE "{name}" LOGIN')
            a.execute(f'GRANT "{group}" TO "{name}"')
        made.append(name)
        return conninfo.make_conninfo(db_dsn, user=name)

    yield make
    with psycopg.connect(admin_dsn, autocommit=True) as a:
        for name in made:
            a.execute(f'DROP ROLE IF EXISTS "{name}"')


def seed(conn) -> None:
    conn.execute(
        "INSERT INTO crm_customers (customer_id, first_name, last_name, email, phone) VALUES"
        " (1, 'Ada', 'Lovelace', 'ada@example.com', '+441234'),"
        " (2, 'Grace', 'Hopper', 'grace@example.com', '+15551')"
    )


async def _search(app, pilot, text: str) -> list:
    await wait_for(pilot, lambda: app.panes["customers"].data is not None, what="the customers pane")
    await type_in(pilot, text)
    await wait_for(pilot, lambda: app.panes["customers"].data.q == text, what="search results")
    await pilot.pause(0.1)
    return table_rows(app, "#results")


async def test_viewer_searches_masked_customers_and_cannot_act(make_app, conn, role_dsn):
    seed(conn)
    app = make_app(dsn=role_dsn("opsconsole_viewer"), start_pane="customers", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        rows = await _search(app, pilot, "Hopper")
        assert rows == []  # names are masked in the database: the real surname is not there to match
        await pilot.press(*["backspace"] * 6, *"G.")
        rows = await wait_for(
            pilot, lambda: table_rows(app, "#results") if app.panes["customers"].data.q == "G." else None
        )
        assert [(r[0], r[1], r[2]) for r in rows] == [("2", "G. H.", "g***@example.com")]
        assert app.panes["customers"].data.source == "customers_masked"
        role = app.caps.role
        assert app.actions_reason("process_batch") == (
            f"role {role} lacks EXECUTE on process_financial_batch()"
        )
    assert conn.execute("SELECT count(*) AS n FROM ops_audit_log").fetchone()["n"] == 0


async def test_support_search_is_unmasked_and_audited(make_app, conn, role_dsn):
    seed(conn)
    app = make_app(dsn=role_dsn("opsconsole_support"), start_pane="customers", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        rows = await _search(app, pilot, "Lovelace")
        assert [(r[0], r[1], r[2]) for r in rows] == [("1", "Ada Lovelace", "ada@example.com")]
        # the pane keeps refreshing, but the audited search is not run again for the same text
        await pilot.pause(2.5 * app.engine.interval)
    searches = conn.execute(
        "SELECT arguments->>'query' AS q, result FROM ops_audit_log WHERE action = 'search_customers' "
        "ORDER BY audit_id"
    ).fetchall()
    # the search text is masked in the audit log (viewers read it): first letter, ***, length
    assert searches and searches[-1] == {"q": "L*** (8)", "result": {"found": 1}}
    assert sum(s["q"] == "L*** (8)" for s in searches) == 1
