"""NOTIFY channels: the names Python listens on are the names the SQL sends on."""

from __future__ import annotations

import re

from opsconsole.db.migrate import sql_dir
from opsconsole.ops import channels


def test_the_sql_notifies_exactly_the_channels_python_names():
    sent = set()
    for path in sql_dir().rglob("*.sql"):
        sent |= set(re.findall(r"pg_notify\(\s*'([a-z0-9_]+)'", path.read_text()))
    assert sent == set(channels.ALL)
