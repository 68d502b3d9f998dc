"""The SQL tree keeps its two kinds apart: one CREATE per function/view/trigger, all in definitions.

Versioned migrations hold tables, indexes and data moves; sql/definitions/ holds every function,
view and trigger exactly once, each repeatable (CREATE OR REPLACE) and pinning its search_path.
"""

from __future__ import annotations

import re
from collections import Counter

from opsconsole.db import migrate

CREATE_RE = re.compile(
    r"^CREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE|VIEW|TRIGGER|EVENT\s+TRIGGER)\s+([a-z_0-9.]+)",
    re.IGNORECASE | re.MULTILINE,
)
PIN = "SET search_path = pg_catalog, public, pg_temp"


def _arg_count(text: str, start: int) -> int:
    """Top-level arguments of the parenthesised list that starts at or after `start`."""
    i = text.index("(", start) + 1
    depth, count, seen = 1, 1, False
    while depth:
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 1:
            count += 1
        elif ch == "-" and text[i + 1] == "-":  # a comment inside the argument list
            i = text.index("\n", i)
            continue
        elif not ch.isspace() and depth == 1:
            seen = True
        i += 1
    return count if seen else 0


def _creates(text: str) -> list[tuple[str, str, re.Match]]:
    found = []
    for m in CREATE_RE.finditer(text):
        kind, name = " ".join(m.group(2).upper().split()), m.group(3)
        if kind in ("FUNCTION", "PROCEDURE"):
            name = f"{name}/{_arg_count(text, m.end())}"
        elif kind == "TRIGGER":
            name += " ON " + re.search(r"\bON\s+([a-z_0-9.]+)", text[m.end() :], re.IGNORECASE).group(1)
        found.append((kind, name, m))
    return found


def test_versioned_migrations_create_no_function_view_or_trigger() -> None:
    for m in migrate.discover():
        assert _creates(m.text) == [], f"{m.path.name} creates code objects; move them to sql/definitions/"


def test_each_definition_is_created_once_repeatably_with_a_pinned_search_path() -> None:
    counts: Counter[tuple[str, str]] = Counter()
    for d in migrate.discover_definitions():
        text = d.text
        for kind, name, m in _creates(text):
            counts[(kind, name)] += 1
            if kind != "EVENT TRIGGER":  # created inside schema_evolution_install(), drop-if-exists first
                assert m.group(1), f"{d.path.name}: CREATE {kind} {name} must be CREATE OR REPLACE"
            if kind in ("FUNCTION", "PROCEDURE"):
                header = text[m.end() : text.index("$", m.end())]
                assert PIN in header, f"{d.path.name}: {name} does not pin {PIN}"
    assert counts, "no definitions found"
    assert [key for key, n in counts.items() if n > 1] == []


def test_every_function_of_the_schema_pins_its_search_path(conn) -> None:
    loose = conn.execute(
        "SELECT p.oid::regprocedure::text AS fn, p.proconfig FROM pg_proc p"
        " WHERE p.pronamespace = 'public'::regnamespace"
        " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass"
        "                 AND d.objid = p.oid AND d.deptype = 'e')"
        " AND NOT ('search_path=pg_catalog, public, pg_temp' = ANY (coalesce(p.proconfig, '{}')))"
    ).fetchall()
    assert loose == []
