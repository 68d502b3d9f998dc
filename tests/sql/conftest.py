"""Fixtures shared by the SQL tests: logins in the platform's group roles."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import conninfo, sql
from psycopg.rows import dict_row


@pytest.fixture
def login_as(db_dsn: str, admin_dsn: str) -> Iterator[Callable[..., psycopg.Connection]]:
    """login_as('opsconsole_viewer') -> an autocommit connection as a fresh login role in that group.

    temp=True also grants TEMP on the test database to that login, as a database that predates the
    revoke would: the attack tests use it to prove the definers ignore temp objects by themselves."""
    made: list[str] = []
    conns: list[psycopg.Connection] = []

    def _login(group: str, *, temp: bool = False) -> psycopg.Connection:
        name = f"oc_test_{group.removeprefix('opsconsole_')}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_dsn, autocommit=True) as a:
            a.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
            a.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(name)))
        made.append(name)
        if temp:
            with psycopg.connect(db_dsn, autocommit=True) as d:
                d.execute(
                    sql.SQL("GRANT TEMP ON DATABASE {} TO {}").format(
                        sql.Identifier(d.info.dbname), sql.Identifier(name)
                    )
                )
        c = psycopg.connect(conninfo.make_conninfo(db_dsn, user=name), autocommit=True, row_factory=dict_row)
        conns.append(c)
        return c

    yield _login
    for c in conns:
        c.close()
    if made:
        with psycopg.connect(db_dsn, autocommit=True) as d:
            for name in made:
                d.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    with psycopg.connect(admin_dsn, autocommit=True) as a:
        for name in made:
            a.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
