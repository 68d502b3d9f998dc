"""The attacks of issue 13, tried by a login in each group role against a migrated, seeded database.

Each test proves the attack refused or harmless in the database itself (rows in the real tables,
rows in the attacker's own objects, a probe table the attacker's code would write to), never by
reading an error message. The lists of what to attack come from the catalog, so a new definer, a new
table it names, or a newly writable schema is attacked without editing this file.

Shadowing and look-alike attacks run with TEMP granted to the attacker (as on a database that predates
the revoke), so the definers' own name resolution is what is tested; TEMP itself is tested separately.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid

import psycopg
import pytest
from psycopg import conninfo, sql

from opsconsole.db import migrate
from opsconsole.pipeline.arrival import insert_counted

GROUPS = ("opsconsole_viewer", "opsconsole_support", "opsconsole_operator", "opsconsole_admin")
RANK = {g: i for i, g in enumerate(GROUPS)}
MONDAY_10 = dt.datetime(2025, 1, 6, 10, 0, tzinfo=dt.UTC)
APP_SCHEMAS = "n.nspname NOT LIKE 'pg\\_%%' AND n.nspname NOT IN ('information_schema', 'attack_probe')"

# Every SECURITY DEFINER function a group role may execute, as an attacker calls it directly:
# (call, audit action it must leave, lowest group that may call it). A definer a role can execute
# and that is in neither ACTIONS nor READS fails test_every_callable_definer_is_listed.
ACTIONS = {
    "search_customers": ("SELECT * FROM search_customers('smith')", "search_customers", "opsconsole_support"),
    "lookup_customer": (
        "SELECT * FROM lookup_customer(1, 'ticket 7')",
        "lookup_customer",
        "opsconsole_support",
    ),
    "lookup_customers": ("SELECT * FROM lookup_customers('jane')", "lookup_customers", "opsconsole_support"),
    "process_financial_batch_detail": (
        "SELECT * FROM process_financial_batch_detail(1)",
        "process_financial_batch",
        "opsconsole_operator",
    ),
    "process_financial_batch": (
        "SELECT * FROM process_financial_batch(1)",
        "process_financial_batch",
        "opsconsole_operator",
    ),
    "retry_failed": ("SELECT retry_failed(p_all => true)", "retry_failed", "opsconsole_operator"),
    "dq_run": ("SELECT * FROM dq_run()", "dq.run", "opsconsole_operator"),
    "ensure_partitions_step": (
        "SELECT * FROM ensure_partitions_step('public.erp_orders'::regclass)",
        "maintain.partitions",
        "opsconsole_admin",
    ),
    "maintenance_analyze": (
        "SELECT maintenance_analyze(ARRAY['public.crm_customers'::regclass])",
        "maintain.analyze",
        "opsconsole_admin",
    ),
    "maintenance_run_report": (
        "SELECT maintenance_run_report(now(), 100)",
        "maintain",
        "opsconsole_admin",
    ),
    "execute_data_quality_checks": (
        "SELECT * FROM execute_data_quality_checks()",
        "dq.run",
        "opsconsole_operator",
    ),
    "refresh_data_catalog": ("SELECT refresh_data_catalog()", "refresh_data_catalog", "opsconsole_operator"),
    "refresh_data_catalog_report": (
        "SELECT * FROM refresh_data_catalog_report()",
        "refresh_data_catalog",
        "opsconsole_operator",
    ),
    "refresh_customer_360_incremental": (
        "SELECT refresh_customer_360_incremental()",
        "refresh_customer_360_incremental",
        "opsconsole_operator",
    ),
    "refresh_customer_360_full": (
        "SELECT refresh_customer_360_full()",
        "refresh_customer_360_full",
        "opsconsole_operator",
    ),
    "dq_add_rule": (
        "SELECT dq_add_rule('attack_rule', 'crm_customers', 'completeness', p_column_name => 'email')",
        "dq.add_rule",
        "opsconsole_admin",
    ),
    "purge_financial_staging": (
        "SELECT purge_financial_staging('3650 days')",
        "purge_financial_staging",
        "opsconsole_admin",
    ),
    "recount_financial_staging": (
        "SELECT * FROM recount_financial_staging()",
        "recount_financial_staging",
        "opsconsole_admin",
    ),
    "financial_fraud_minutes_rebuild": (
        "SELECT financial_fraud_minutes_rebuild()",
        "financial_fraud_minutes_rebuild",
        "opsconsole_admin",
    ),
    "park_dead_letters": (
        "SELECT park_dead_letters(p_filter => 'b1')",
        "park_dead_letters",
        "opsconsole_operator",
    ),
    "unpark_dead_letters": (
        "SELECT unpark_dead_letters(p_filter => 'b1')",
        "unpark_dead_letters",
        "opsconsole_operator",
    ),
    "pause_processing": ("SELECT pause_processing('attack')", "pause_processing", "opsconsole_operator"),
    "resume_processing": ("SELECT resume_processing('attack')", "resume_processing", "opsconsole_operator"),
    "console_export": (
        "SELECT console_export('customers-results', 'csv', 2, ARRAY['crm_customers.email'], 'x.csv')",
        "console.export",
        "opsconsole_viewer",
    ),
}
# The one definer every group may call to write an audit row: a failure report of its own (status
# error/cancelled/denied only, actor = session_user); see test_no_group_can_write_a_free_form_audit_row.
FAILURE_REPORTS = {"record_action_failure"}
# Definers that change nothing: reads through masks or over non-PII tables, not audited.
READS = {
    "customers_masked_rows": "SELECT * FROM customers_masked",
    "lineage_upstream": "SELECT * FROM lineage_upstream('customer_360_mv')",
    "lineage_downstream": "SELECT * FROM lineage_downstream('crm_customers')",
    "reconcile_financial_pipeline": "SELECT * FROM reconcile_financial_pipeline()",
    "retry_scope_count": "SELECT retry_scope_count(NULL, NULL, NULL, true, false, NULL)",
    "partition_bounds": "SELECT * FROM partition_bounds('public.erp_orders'::regclass)",
    "maintenance_partitioned_tables": "SELECT * FROM maintenance_partitioned_tables()",
    "financial_retry_schedule": "SELECT * FROM financial_retry_schedule()",
}

# Built-ins the definers call, in signatures that beat pg_catalog's by an exact type match
# (varchar arguments), or that exist in pg_catalog too (a schema before pg_catalog would win).
LOOKALIKE_FUNCTIONS = [
    ("lower", "character varying", "text", "pg_catalog.lower($1::text)"),
    ("upper", "character varying", "text", "pg_catalog.upper($1::text)"),
    ("btrim", "character varying", "text", "pg_catalog.btrim($1::text)"),
    ("length", "character varying", "integer", "pg_catalog.length($1::text)"),
    ("strpos", "character varying, text", "integer", "pg_catalog.strpos($1::text, $2)"),
    ("left", "character varying, integer", "text", "pg_catalog.left($1::text, $2)"),
    ("lower", "text", "text", "pg_catalog.lower($1)"),
    ("now", "", "timestamp with time zone", "pg_catalog.now()"),
    ("clock_timestamp", "", "timestamp with time zone", "pg_catalog.clock_timestamp()"),
]
LOOKALIKE_OPERATORS = [
    ("=", "character varying", "character varying", "boolean", "$1::text OPERATOR(pg_catalog.=) $2::text"),
    ("=", "character varying", "text", "boolean", "$1::text OPERATOR(pg_catalog.=) $2"),
    ("=", "text", "character varying", "boolean", "$1 OPERATOR(pg_catalog.=) $2::text"),
    ("||", "character varying", "text", "text", "$1::text OPERATOR(pg_catalog.||) $2"),
    ("=", "bigint", "bigint", "boolean", "$1 OPERATOR(pg_catalog.=) $2"),
]


def seed(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO crm_customers (customer_id, first_name, last_name, email, phone, address) VALUES "
        "(1, 'Jane', 'Doe', 'jane.doe@example.com', '+44 20 7946 0958', "
        ' \'{"street": "1 High St", "city": "London", "postcode": "N1 9GU"}\'), '
        "(2, 'Bob', 'Smith', 'bob@example.org', '555-0199', NULL)"
    )
    add_staging(conn, 1, 4)
    conn.execute("SELECT refresh_data_catalog()")
    conn.execute("SELECT refresh_customer_360_full()")


def add_staging(conn: psycopg.Connection, first: int, n: int) -> None:
    insert_counted(
        conn,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
        "amount, transaction_type, batch_id) "
        "SELECT g, 1, %s, 10, 'payment', 'b1' FROM generate_series(%s::bigint, %s::bigint) g",
        (MONDAY_10, first, first + n - 1),
    )


@pytest.fixture
def probe(conn: psycopg.Connection) -> psycopg.Connection:
    """attack_probe.ran: a table anyone may write, where every planted function records that it ran."""
    conn.execute("CREATE SCHEMA attack_probe")
    conn.execute("CREATE TABLE attack_probe.ran (what text NOT NULL, by_user name DEFAULT current_user)")
    conn.execute("GRANT USAGE ON SCHEMA attack_probe TO PUBLIC")
    conn.execute("GRANT SELECT, INSERT ON attack_probe.ran TO PUBLIC")
    return conn


def ran(conn: psycopg.Connection) -> list[dict]:
    return conn.execute("SELECT what, by_user FROM attack_probe.ran ORDER BY 1").fetchall()


def may(group: str, lowest: str) -> bool:
    """Whether `group` inherits `lowest` (support is not above operator: separate branches)."""
    if lowest == "opsconsole_support":
        return group == "opsconsole_support"
    if lowest == "opsconsole_viewer":  # every group is a viewer (support too)
        return True
    return RANK[group] >= RANK[lowest] and group != "opsconsole_support"


def definer_tables(conn: psycopg.Connection) -> dict[str, str]:
    """{relation: CREATE TEMP TABLE ...} for every table, view and materialized view that the body of
    any function in the platform's schemas names (definers and the helpers they call, which run with
    the owner's rights too)."""
    rows = conn.execute(
        f"""
        SELECT c.relname,
               format('CREATE TEMP TABLE %%I (%%s)', c.relname,
                      string_agg(format('%%I %%s', a.attname, format_type(a.atttypid, a.atttypmod)), ', '
                                 ORDER BY a.attnum)) AS ddl
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE {APP_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
          AND EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace pn ON pn.oid = p.pronamespace
                      WHERE pn.nspname = n.nspname
                        AND p.prosrc ~* ('(^|[^a-z0-9_])' || c.relname || '($|[^a-z0-9_])'))
        GROUP BY c.relname
        """,
        (),
    ).fetchall()
    return {r["relname"]: r["ddl"] for r in rows}


def callable_definers(conn: psycopg.Connection, role: str) -> set[str]:
    rows = conn.execute(
        f"""
        SELECT DISTINCT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {APP_SCHEMAS} AND p.prosecdef AND has_function_privilege(%s, p.oid, 'EXECUTE')
        """,
        (role,),
    ).fetchall()
    return {r["proname"] for r in rows}


def writable_schemas(conn: psycopg.Connection, role: str) -> list[str]:
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%%' "
        "AND has_schema_privilege(%s, oid, 'CREATE') ORDER BY 1",
        (role,),
    ).fetchall()
    return [r["nspname"] for r in rows]


def audit_actions(conn: psycopg.Connection, actor: str) -> list[str]:
    rows = conn.execute(
        "SELECT action FROM ops_audit_log WHERE actor = %s ORDER BY audit_id", (actor,)
    ).fetchall()
    return [r["action"] for r in rows]


def run_everything(logins: dict[str, psycopg.Connection]) -> None:
    """Every read and action, each by every group allowed to run it."""
    for group, c in logins.items():
        for call in READS.values():
            c.execute(call).fetchall()
        c.execute("SELECT * FROM customer_360_masked").fetchall()
        for name, (call, _action, lowest) in ACTIONS.items():
            if may(group, lowest):
                if name == "dq_add_rule":
                    call = call.replace("attack_rule", f"attack_rule_{c.info.user}")
                c.execute(call).fetchall()


# --------------------------------------------------------------------------------------------------
# The catalog: what must hold for the definers to be unsteerable
# --------------------------------------------------------------------------------------------------
def test_every_function_pins_a_path_no_group_can_write_with_pg_temp_last(conn):
    rows = conn.execute(
        f"""
        SELECT p.oid::regprocedure::text AS fn,
               (SELECT substr(c, 13) FROM unnest(p.proconfig) c WHERE c LIKE 'search\\_path=%%') AS path
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        LEFT JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
        WHERE {APP_SCHEMAS} AND d.objid IS NULL
        """
    ).fetchall()
    assert rows
    bad = []
    for r in rows:
        parts = [s.strip().strip('"') for s in (r["path"] or "").split(",")]
        if not r["path"] or parts[0] != "pg_catalog" or parts[-1] != "pg_temp":
            bad.append((r["fn"], r["path"]))
    assert bad == []
    paths = {p for r in rows for p in (s.strip().strip('"') for s in r["path"].split(",")) if p != "pg_temp"}
    writable = conn.execute(
        "SELECT g.role, n.nspname FROM pg_namespace n "
        "CROSS JOIN unnest(%s::text[] || 'public'::text) g(role) "
        "WHERE n.nspname = ANY(%s) AND has_schema_privilege(g.role, n.oid, 'CREATE')",
        (list(GROUPS), sorted(paths)),
    ).fetchall()
    assert writable == []


def test_temp_is_revoked_from_every_group_and_public(empty_db_dsn, admin_dsn):
    """On a database `opsconsole db migrate` built (test databases are clones of a template, and a
    clone does not inherit the template's database privileges, so this one is migrated here)."""
    with psycopg.connect(empty_db_dsn, autocommit=True) as owner:
        migrate.migrate(owner)
        grants = owner.execute(
            "SELECT g.role FROM unnest(%s::text[] || 'public'::text) g(role) "
            "WHERE has_database_privilege(g.role, current_database(), 'TEMP')",
            (list(GROUPS),),
        ).fetchall()
        assert grants == []
    made = []
    try:
        for group in GROUPS:
            name = f"oc_test_temp_{group.removeprefix('opsconsole_')}_{uuid.uuid4().hex[:6]}"
            with psycopg.connect(admin_dsn, autocommit=True) as a:
                a.execute(
                    sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                        sql.Identifier(name), sql.Identifier(group)
                    )
                )
            made.append(name)
            with psycopg.connect(conninfo.make_conninfo(empty_db_dsn, user=name), autocommit=True) as c:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute("CREATE TEMP TABLE attack_temp (x int)")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute("CREATE FUNCTION pg_temp.attack_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'")
                gone = c.execute("SELECT to_regclass('pg_temp.attack_temp') IS NULL").fetchone()
                assert gone == (True,)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as a:
            for name in made:
                a.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_every_callable_definer_is_listed(conn):
    """A definer that any group can execute is either an audited action or a listed read."""
    callable_by = {name for g in GROUPS for name in callable_definers(conn, g)}
    assert callable_by - set(ACTIONS) - set(READS) - FAILURE_REPORTS == set()
    for name, (_call, _action, lowest) in ACTIONS.items():
        assert name in callable_definers(conn, lowest), name


# --------------------------------------------------------------------------------------------------
# Temp-table shadowing of every table a definer reads or writes
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("group", GROUPS)
def test_temp_shadows_of_every_definer_table_are_ignored(conn, login_as, group):
    seed(conn)
    shadows = definer_tables(conn)
    for must in ("data_catalog", "crm_customers", "ops_audit_log", "financial_transactions_staging"):
        assert must in shadows
    attacker = login_as(group, temp=True)
    for ddl in shadows.values():
        attacker.execute(ddl)
    # Bait: a catalog that calls every PII column public, a forged customer.
    attacker.execute(
        "INSERT INTO pg_temp.data_catalog (database_name, schema_name, table_name, column_name, "
        "data_classification) SELECT current_database(), 'public', t, c, 'public' "
        "FROM unnest(ARRAY['crm_customers', 'customer_360_mv']) t, "
        "unnest(ARRAY['first_name', 'last_name', 'email', 'phone', 'address']) c"
    )
    attacker.execute(
        "INSERT INTO pg_temp.crm_customers (customer_id, first_name, last_name, email) "
        "VALUES (1, 'Eve', 'Forged', 'eve@attack.test')"
    )
    attacker.execute("GRANT SELECT ON pg_temp.data_catalog TO PUBLIC")
    before = {
        name: attacker.execute(
            sql.SQL("SELECT count(*) AS n FROM pg_temp.{}").format(sql.Identifier(name))
        ).fetchone()["n"]
        for name in shadows
    }
    masked = attacker.execute(
        "SELECT customer_id, first_name, last_name, email FROM customers_masked ORDER BY 1"
    ).fetchall()
    assert masked == [
        {"customer_id": 1, "first_name": "J.", "last_name": "D.", "email": "j***@example.com"},
        {"customer_id": 2, "first_name": "B.", "last_name": "S.", "email": "b***@example.org"},
    ]
    c360 = attacker.execute(
        "SELECT first_name, email FROM customer_360_masked ORDER BY customer_id"
    ).fetchall()
    assert c360 == [
        {"first_name": "J.", "email": "j***@example.com"},
        {"first_name": "B.", "email": "b***@example.org"},
    ]
    # Every action the group may run, each by the attacker: the real tables take the effect and the
    # audit row; the attacker's copies are left exactly as the attacker made them.
    run_everything({group: attacker})
    after = {
        name: attacker.execute(
            sql.SQL("SELECT count(*) AS n FROM pg_temp.{}").format(sql.Identifier(name))
        ).fetchone()["n"]
        for name in shadows
    }
    assert after == before
    expected = {action for call, action, lowest in ACTIONS.values() if may(group, lowest)}
    assert set(audit_actions(conn, attacker.info.user)) == expected
    if may(group, "opsconsole_support"):
        found = attacker.execute("SELECT first_name FROM lookup_customer(1, 'ticket 8')").fetchall()
        assert found == [{"first_name": "Jane"}]


# --------------------------------------------------------------------------------------------------
# Look-alike functions and operators in every schema the role can write (and pg_temp)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("group", GROUPS)
def test_lookalike_functions_and_operators_never_run_as_the_owner(conn, login_as, probe, group):
    seed(conn)
    attacker = login_as(group, temp=True)
    schemas = [*writable_schemas(conn, attacker.info.user), "pg_temp"]
    planted = 0
    for schema in schemas:
        for name, args, returns, real in LOOKALIKE_FUNCTIONS:
            attacker.execute(
                sql.SQL("CREATE FUNCTION {}.{}({}) RETURNS {} LANGUAGE sql AS {}").format(
                    sql.Identifier(schema),
                    sql.Identifier(name),
                    sql.SQL(args),
                    sql.SQL(returns),
                    sql.Literal(
                        f"INSERT INTO attack_probe.ran (what) VALUES ('{schema}.{name}({args})'); "
                        f"SELECT {real}"
                    ),
                )
            )
            planted += 1
        for i, (op, left, right, returns, real) in enumerate(LOOKALIKE_OPERATORS):
            fn = sql.Identifier(schema, f"attack_op_{i}")
            attacker.execute(
                sql.SQL("CREATE FUNCTION {}({}, {}) RETURNS {} LANGUAGE sql AS {}").format(
                    fn,
                    sql.SQL(left),
                    sql.SQL(right),
                    sql.SQL(returns),
                    sql.Literal(
                        f"INSERT INTO attack_probe.ran (what) VALUES ('{schema}.{op}({left},{right})'); "
                        f"SELECT {real}"
                    ),
                )
            )
            attacker.execute(
                sql.SQL("CREATE OPERATOR {}.{} (LEFTARG = {}, RIGHTARG = {}, FUNCTION = {})").format(
                    sql.Identifier(schema), sql.SQL(op), sql.SQL(left), sql.SQL(right), fn
                )
            )
            planted += 1
    assert planted >= len(LOOKALIKE_FUNCTIONS) + len(LOOKALIKE_OPERATORS)
    # Every group's reads and actions, each by a fresh login of that group (the attacker's session
    # for its own group, so its pg_temp is in play).
    logins = {g: (attacker if g == group else login_as(g)) for g in GROUPS}
    run_everything(logins)
    assert ran(conn) == []
    # The planted code does run when called by name: the probe works.
    attacker.execute(sql.SQL("SELECT {}.lower('X'::varchar)").format(sql.Identifier(schemas[0])))
    assert ran(conn) != []


# --------------------------------------------------------------------------------------------------
# Direct calls of each action function, and forged audit rows
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("group", GROUPS)
def test_each_definer_called_directly_is_refused_or_audited(conn, login_as, group):
    seed(conn)
    c = login_as(group)
    callable_now = callable_definers(conn, c.info.user)
    for call in READS.values():
        c.execute(call).fetchall()
    assert audit_actions(conn, c.info.user) == []
    for name, (call, action, lowest) in ACTIONS.items():
        add_staging(conn, 1000 + 10 * list(ACTIONS).index(name), 2)  # something to process
        before = audit_actions(conn, c.info.user)
        if name not in callable_now:
            assert not may(group, lowest), name
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(call)
            assert audit_actions(conn, c.info.user) == before
            continue
        assert may(group, lowest), name
        c.execute(call).fetchall()
        assert audit_actions(conn, c.info.user) == [*before, action], name


@pytest.mark.parametrize("group", GROUPS)
def test_no_group_can_write_a_free_form_audit_row(conn, login_as, group):
    c = login_as(group)
    writers = conn.execute(
        f"""
        SELECT p.oid::regprocedure::text AS fn FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {APP_SCHEMAS} AND has_function_privilege(%s, p.oid, 'EXECUTE')
          AND p.pronargs > 0 AND p.proname ~ 'audit'
        """,
        (c.info.user,),
    ).fetchall()
    assert writers == []
    for attempt in (
        "SELECT record_audit('forged', '{}'::jsonb, NULL, 'ok', NULL, NULL)",
        "INSERT INTO ops_audit_log (action, actor) VALUES ('forged', 'someone_else')",
        "UPDATE ops_audit_log SET action = 'forged'",
        "DELETE FROM ops_audit_log",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute(attempt)
    assert conn.execute("SELECT count(*) AS n FROM ops_audit_log WHERE action = 'forged'").fetchone() == {
        "n": 0
    }
    # The failure report cannot claim a success, and what it writes is the caller's own failure.
    for status in ("ok", None, "OK"):
        with pytest.raises(psycopg.Error) as info:
            c.execute("SELECT record_action_failure('forged', '{}'::jsonb, %s)", (status,))
        assert not isinstance(info.value, psycopg.errors.InsufficientPrivilege)
    c.execute("SELECT record_action_failure('forged', '{}'::jsonb, 'error', 1, 'it broke', 'ticket 9')")
    rows = conn.execute(
        "SELECT actor, status, result FROM ops_audit_log WHERE action = 'forged' ORDER BY audit_id"
    ).fetchall()
    assert rows == [{"actor": c.info.user, "status": "error", "result": {"error": "it broke"}}]


@pytest.mark.parametrize("group", GROUPS)
def test_no_group_can_forge_staging_arrivals(conn, login_as, group):
    # The arrival counts move the Monitor, the Backlog pane, health and reconcile: only the loaders
    # (the owner) may move them, by staging rows. A caller who tries, directly or through the
    # rollups' own writers, is refused by the database and changes nothing.
    c = login_as(group)
    before = conn.execute("SELECT total, pending FROM financial_staging_totals").fetchone()
    for attempt in (
        "SELECT financial_staging_arrived('[{\"total_delta\": 1000, \"pending_delta\": 1000}]', '{}')",
        'SELECT financial_rollup_apply(\'[{"total_delta": 1000, "pending_delta": 1000}]\')',
        "SELECT financial_staging_counts_apply('[{\"total_delta\": 1000}]')",
        "INSERT INTO financial_staging_counts (backend_pid, total) VALUES (1, 1000)",
        "UPDATE financial_processing_rollup SET pending_count = pending_count + 1000",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute(attempt)
    assert conn.execute("SELECT total, pending FROM financial_staging_totals").fetchone() == before


# --------------------------------------------------------------------------------------------------
# Injection through DQ rule text and dq_assert_parses
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("group", GROUPS)
def test_dq_assert_parses_never_executes(conn, login_as, probe, group):
    """Each group (refused or not), and the owner, whose rights the DQ engine runs it with."""
    c = login_as(group)
    for who in (c, conn):
        for text in ATTACK_TEXTS:
            # refused, or not valid SQL: either way the probe below must stay empty
            with contextlib.suppress(psycopg.Error):
                who.execute("SELECT dq_assert_parses(%s)", (text,))
    assert ran(conn) == []
    for who in (c, conn):
        assert who.execute("SELECT current_setting('attack.ran', true) AS v").fetchone()["v"] in (None, "")
        assert who.execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone() == {"n": 0}
        probes = who.execute("SELECT count(*) AS n FROM pg_proc WHERE proname = 'opsconsole_dq_probe'")
        assert probes.fetchone() == {"n": 0}
    # Valid SQL passes and invalid SQL is refused: the check does parse.
    conn.execute("SELECT dq_assert_parses('SELECT count(*) FROM crm_customers WHERE $1 IS NOT NULL')")
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT dq_assert_parses('SELECT no_such_column FROM crm_customers')")


ATTACK_TEXTS = (
    "select 1; insert into attack_probe.ran (what) values ('dq_assert_parses: second statement')",
    "insert into attack_probe.ran (what) values ('dq_assert_parses: an insert') returning 1",
    "select set_config('attack.ran', 'yes', false)",
    "with x as (insert into attack_probe.ran (what) values ('dq_assert_parses: cte') returning 1) "
    "select * from x",
    "select 1 $$; insert into attack_probe.ran (what) values ('dq_assert_parses: quote breakout'); select $$",
    "select 1'; insert into attack_probe.ran (what) values ('dq_assert_parses: quote breakout 2'); select '",
)


def test_dq_rule_text_cannot_cast_to_a_quoted_type_or_call_anything(conn, login_as, probe):
    seed(conn)
    # A table whose column is named like a type: '"regclass"' after '::' used to pass as a column.
    conn.execute('CREATE TABLE attack_dq (id int, "regclass" text, "text" text)')
    conn.execute("SELECT opsconsole_apply_grants()")
    admin = login_as("opsconsole_admin")
    for expression in (
        "'pg_class'::\"regclass\" IS NOT NULL",
        "id::\"text\" = '1'",
        "set_config('attack.ran', 'yes', false) = 'yes'",
        "attack_probe.ran IS NULL",
        "(select count(*) from attack_probe.ran) = 0",
        "true); insert into attack_probe.ran (what) values ('rule'); select (true",
    ):
        with pytest.raises(psycopg.Error) as info:
            admin.execute(
                "SELECT dq_add_rule('attack', 'attack_dq', 'validity', p_rule_expression => %s)",
                (expression,),
            )
        assert not isinstance(info.value, psycopg.errors.InsufficientPrivilege)
    assert (
        conn.execute(
            "SELECT count(*) AS n FROM dq_rule_definitions WHERE table_name = 'attack_dq'"
        ).fetchone()["n"]
        == 0
    )
    operator = login_as("opsconsole_operator")
    operator.execute("SELECT * FROM execute_data_quality_checks()").fetchall()
    assert ran(conn) == []
    assert admin.execute("SELECT current_setting('attack.ran', true) AS v").fetchone()["v"] in (None, "")


# --------------------------------------------------------------------------------------------------
# PII in derived stores: what a viewer can read holds none of it raw
# --------------------------------------------------------------------------------------------------
PII = ("jane", "doe@example", "smith", "7946", "secret street")


def _texts(value) -> list[str]:
    """The text a row shows, in its columns and inside its JSON values; not its timestamps or
    numbers, whose digits can spell a PII fragment by chance (a microsecond .794612 holds '7946')."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _texts(v)]
    return []


def leaked(rows: list[dict]) -> list[str]:
    text = " ".join(_texts(list(rows))).lower()
    return [p for p in PII if p in text]


def test_viewer_reads_no_raw_pii_in_audit_rejects_dq_messages_or_ddl_log(conn, login_as):
    seed(conn)
    support = login_as("opsconsole_support")
    support.execute("SELECT * FROM search_customers('Smith')").fetchall()
    support.execute("SELECT * FROM lookup_customers('jane.doe@example.com')").fetchall()
    support.execute("SELECT * FROM lookup_customers('7946')").fetchall()
    # a DQ rule whose check fails on the data: the server's message quotes the value
    conn.execute(
        "SELECT dq_add_rule('email_is_number', 'crm_customers', 'validity', "
        "p_rule_expression => 'email::integer > 0')"
    )
    operator = login_as("opsconsole_operator")
    results = operator.execute("SELECT * FROM execute_data_quality_checks()").fetchall()
    assert any(r["rule_name"] == "email_is_number" and not r["passed"] for r in results)
    # client DDL carrying a value
    conn.execute("ALTER TABLE crm_customers ADD COLUMN nickname text DEFAULT 'Secret Street Jane'")
    # a rejected CRM row as ingest stores it
    conn.execute(
        "INSERT INTO ingest_files (sha256, path, table_name, file_format, size_bytes, status, rows_total) "
        "VALUES (repeat('a', 64), '/tmp/crm.csv', 'public.crm_customers', 'csv', 1, 'loaded', 1)"
    )
    conn.execute(
        "INSERT INTO ingest_rejects (file_id, file_path, table_name, row_number, reason, raw_row) "
        "SELECT max(file_id), '/tmp/crm.csv', 'public.crm_customers', 1, "
        "'email: cannot convert ''jane.doe@example.com''', "
        '\'{"email": "jane.doe@example.com"}\' FROM ingest_files'
    )
    # the stores hold what happened ...
    assert (
        conn.execute("SELECT count(*) AS n FROM ops_audit_log WHERE action LIKE '%%customers'").fetchone()[
            "n"
        ]
        == 3
    )
    assert conn.execute(
        "SELECT count(*) AS n FROM data_quality_metrics "
        "WHERE metric_name = 'email_is_number' AND status = 'error'"
    ).fetchone() == {"n": 1}
    assert (
        conn.execute(
            "SELECT count(*) AS n FROM schema_evolution_log WHERE object_name = 'nickname'"
        ).fetchone()["n"]
        >= 1
    )
    # ... and a viewer reads none of it raw
    viewer = login_as("opsconsole_viewer")
    audit = viewer.execute("SELECT action, arguments, result, reason FROM ops_audit_log").fetchall()
    assert audit and leaked(audit) == []
    dq = viewer.execute("SELECT message, details FROM data_quality_metrics").fetchall()
    latest = viewer.execute("SELECT * FROM dq_latest_results").fetchall()
    assert dq and latest and leaked(dq) == [] and leaked(latest) == []
    for store in ("ingest_rejects", "schema_evolution_log", "schema_evolution_state"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            viewer.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(store)))
    # the admin, who may read every relation, finds the reject to fix it; the logged client DDL keeps
    # its names and shape, not its literals
    admin = login_as("opsconsole_admin")
    ddl = admin.execute(
        "SELECT ddl_statement FROM schema_evolution_log WHERE object_name = 'nickname'"
    ).fetchall()
    assert ddl and all("ADD COLUMN nickname" in r["ddl_statement"] for r in ddl) and leaked(ddl) == []
    assert admin.execute("SELECT raw_row FROM ingest_rejects").fetchall() == [
        {"raw_row": {"email": "jane.doe@example.com"}}
    ]


def test_dq_refuses_tables_whose_policies_run_code(conn, probe):
    """A table of another owner with a row-security policy: reading it as the engine's owner would
    run that owner's policy code with the engine's rights. Refused; without policies it is accepted."""
    owner = f"oc_test_tblowner_{uuid.uuid4().hex[:6]}"
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(owner)))
    try:
        conn.execute(sql.SQL("CREATE SCHEMA attack_owner AUTHORIZATION {}").format(sql.Identifier(owner)))
        conn.execute("CREATE TABLE attack_owner.plain (id int)")
        conn.execute("CREATE TABLE attack_owner.guarded (id int)")
        conn.execute(
            "CREATE FUNCTION attack_owner.spy(int) RETURNS boolean LANGUAGE sql AS "
            "$$ INSERT INTO attack_probe.ran (what) VALUES ('policy'); SELECT true $$"
        )
        conn.execute("CREATE POLICY spy ON attack_owner.guarded USING (attack_owner.spy(id))")
        conn.execute("ALTER TABLE attack_owner.guarded ENABLE ROW LEVEL SECURITY")
        for rel in ("plain", "guarded", "spy(integer)"):
            kind = "FUNCTION" if "(" in rel else "TABLE"
            conn.execute(
                sql.SQL(f"ALTER {kind} attack_owner.{rel} OWNER TO {{}}").format(sql.Identifier(owner))
            )
        conn.execute("INSERT INTO attack_owner.guarded VALUES (1)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "SELECT dq_add_rule('spy', 'attack_owner.guarded', 'completeness', p_column_name => 'id')"
            )
        conn.execute(
            "SELECT dq_add_rule('plain', 'attack_owner.plain', 'completeness', p_column_name => 'id')"
        )
        rules = conn.execute(
            "SELECT rule_name FROM dq_rule_definitions WHERE table_name LIKE 'attack_owner.%%'"
        )
        assert rules.fetchall() == [{"rule_name": "plain"}]
        assert ran(conn) == []
    finally:
        conn.execute("DROP SCHEMA IF EXISTS attack_owner CASCADE")
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(owner)))
