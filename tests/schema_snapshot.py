"""A database's schema as a set of (kind, object, definition) rows, for comparing two databases.

Used by the upgrade test (a database of the previous release, migrated, against a fresh install) and
meant for any other "same schema?" question (a Citus cluster against a single node, say). Everything
is read from the catalogs through the server's own deparsers (pg_get_functiondef, pg_get_viewdef,
pg_get_indexdef, pg_get_triggerdef, pg_get_constraintdef), so two schemas are equal exactly when the
server would print them the same way.

Columns are compared by table and name, NOT by ordinal position: a table that had a column dropped
keeps a hole in its attnum sequence, which no deparsed definition shows, and the order of the columns
is compared separately through the visible order only (see `column_order`).
Partitions are compared by parent, name and bound; their columns, indexes, constraints and triggers
are their parent's (clones), so only the parent's are listed.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg.rows import tuple_row

Row = tuple[str, str, str]

# Relations of the schema that are not partitions; `c` is pg_class.
_OWN_RELATION = "c.relnamespace = %(nsp)s::regnamespace AND NOT c.relispartition"

QUERIES: dict[str, str] = {
    "function": """
        SELECT p.oid::regprocedure::text,
               concat_ws(E'\\n', pg_get_functiondef(p.oid), 'config: ' || coalesce(p.proconfig::text, '-'),
                         'security definer: ' || p.prosecdef, 'acl: ' || coalesce(p.proacl::text, '-'))
        FROM pg_proc p
        WHERE p.pronamespace = %(nsp)s::regnamespace AND p.prokind IN ('f', 'p', 'w')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                          AND d.objid = p.oid AND d.deptype = 'e')
    """,
    "aggregate": """
        SELECT p.oid::regprocedure::text, coalesce(p.proacl::text, '-')
        FROM pg_proc p
        WHERE p.pronamespace = %(nsp)s::regnamespace AND p.prokind = 'a'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                          AND d.objid = p.oid AND d.deptype = 'e')
    """,
    "view": f"""
        SELECT c.relname::text, c.relkind::text || ': ' || pg_get_viewdef(c.oid)
        FROM pg_class c WHERE {_OWN_RELATION} AND c.relkind IN ('v', 'm')
    """,
    "relation": f"""
        SELECT c.relname::text,
               concat_ws(' ', c.relkind::text, 'persistence=' || c.relpersistence::text,
                         'rls=' || c.relrowsecurity::text,
                         'options=' || coalesce(c.reloptions::text, '-'),
                         'partitioned by ' || pg_get_partkeydef(c.oid))
        FROM pg_class c WHERE {_OWN_RELATION} AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype = 'e')
    """,
    "column": f"""
        SELECT c.relname || '.' || a.attname,
               concat_ws(' ', format_type(a.atttypid, a.atttypmod),
                         CASE WHEN a.attnotnull THEN 'not null' END,
                         'collate ' || nullif(co.collname, 'default'),
                         CASE a.attgenerated WHEN 's' THEN 'generated always as '
                              ELSE 'default ' END || pg_get_expr(ad.adbin, ad.adrelid),
                         CASE a.attidentity WHEN 'a' THEN 'identity always'
                              WHEN 'd' THEN 'identity by default' END)
        FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
        WHERE {_OWN_RELATION} AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype = 'e')
    """,
    "column_order": f"""
        SELECT c.relname::text, string_agg(a.attname, ', ' ORDER BY a.attnum)
        FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE {_OWN_RELATION} AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
        GROUP BY c.relname
    """,
    "index": f"""
        SELECT i.relname::text, pg_get_indexdef(i.oid)
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
        WHERE {_OWN_RELATION}
    """,
    "constraint": f"""
        SELECT c.relname || '.' || k.conname, pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
        WHERE {_OWN_RELATION}
    """,
    "trigger": f"""
        SELECT c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE {_OWN_RELATION} AND NOT t.tgisinternal
    """,
    "privilege": """
        SELECT c.relname::text, coalesce(c.relacl::text, '-')
        FROM pg_class c
        WHERE c.relnamespace = %(nsp)s::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
        UNION ALL
        SELECT 'schema ' || n.nspname, coalesce(n.nspacl::text, '-')
        FROM pg_namespace n WHERE n.oid = %(nsp)s::regnamespace
    """,
    "partition": """
        SELECT p.relname || ' > ' || c.relname, pg_get_expr(c.relpartbound, c.oid)
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relnamespace = %(nsp)s::regnamespace AND c.relkind IN ('r', 'p')
    """,
    "sequence": """
        SELECT s.seqrelid::regclass::text,
               concat_ws(' ', format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
                         s.seqcache, s.seqcycle, 'owned by ' || (
                             SELECT d.refobjid::regclass || '.' || a.attname
                             FROM pg_depend d
                             JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                             WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                               AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
        WHERE c.relnamespace = %(nsp)s::regnamespace
    """,
    "type": """
        SELECT t.typname::text, t.typtype::text || ' ' || coalesce((
            SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', '
                              ORDER BY a.attnum)
            FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped), '')
            || coalesce(' ' || (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                                FROM pg_enum e WHERE e.enumtypid = t.oid), '')
        FROM pg_type t
        LEFT JOIN pg_class c ON c.oid = t.typrelid
        WHERE t.typnamespace = %(nsp)s::regnamespace AND t.typtype IN ('c', 'e', 'd', 'r')
          AND (c.oid IS NULL OR c.relkind = 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                          AND d.objid = t.oid AND d.deptype = 'e')
    """,
    "event_trigger": """
        SELECT e.evtname::text,
               concat_ws(' ', e.evtevent, e.evtfoid::regproc::text, e.evtenabled::text, e.evttags::text)
        FROM pg_event_trigger e
    """,
    "extension": """
        SELECT x.extname::text, x.extnamespace::regnamespace::text FROM pg_extension x
    """,
}


def snapshot(
    conn: psycopg.Connection, schema: str = "public", kinds: Iterable[str] | None = None
) -> set[Row]:
    """The schema `schema` of the connected database as a set of (kind, object, definition)."""
    rows: set[Row] = set()
    for kind in kinds or QUERIES:
        with conn.cursor(row_factory=tuple_row) as cur:
            for name, definition in cur.execute(QUERIES[kind], {"nsp": schema}).fetchall():
                rows.add((kind, name, definition))
    return rows


def difference(a: set[Row], b: set[Row]) -> list[str]:
    """Readable lines for every object whose definition differs: '- kind object: def' for a's side,
    '+ ...' for b's, sorted by object so that the two sides of one change sit together."""
    lines = []
    for sign, rows in (("-", a - b), ("+", b - a)):
        lines.extend(f"{sign} {kind} {name}: {definition}" for kind, name, definition in rows)
    return sorted(lines, key=lambda line: (line[2:].split(":", 1)[0], line[0]))
