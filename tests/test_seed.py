"""`opsconsole seed`: deterministic, referentially consistent demo data in every source table."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import conninfo
from psycopg.rows import dict_row

from opsconsole.cli import main
from opsconsole.datagen import seed as seeding
from opsconsole.errors import OpsError
from tests.orders import add_orders

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
N = 200

# Content hash per table: every column except ingestion-time defaults the seed does not set.
HASHED = {
    "crm_customers": ("customer_id", "t"),
    "erp_orders": ("order_id", "t"),
    "erp_order_keys": ("order_id", "t"),
    "ecommerce_events": ("event_id", "t"),
    "ecommerce_anonymous_events": ("event_id", "t"),
    "financial_transactions": ("transaction_id", "t"),
    "external_market_data": ("tick_id", "t"),
    "lakehouse_customers": (
        "customer_id, version_number",
        "(t.customer_id, t.customer_data, t.effective_from, t.effective_to, t.version_number, "
        "t.operation_type, t.transaction_id, t.created_at)",
    ),
    "financial_transactions_staging": (
        "staging_id",
        "(t.transaction_id, t.account_id, t.transaction_timestamp, t.amount, t.transaction_type, "
        "t.reference_data, t.batch_id)",
    ),
}


def content_hashes(conn: psycopg.Connection) -> dict[str, str]:
    out = {}
    for table, (order, row) in HASHED.items():
        query = f"SELECT md5(string_agg({row}::text, '|' ORDER BY {order})) AS h FROM {table} t"
        out[table] = conn.execute(query).fetchone()["h"]
    return out


def run_seed(dsn: str, seed: int = 7, **kw) -> dict:
    return seeding.seed(dsn, seeding.SeedPlan(customers=N, seed=seed, as_of=AS_OF), **kw)


@pytest.fixture
def seeded(db_dsn: str, conn: psycopg.Connection) -> dict:
    return run_seed(db_dsn)


@pytest.fixture(scope="module")
def seeded_once(admin_dsn: str, template_db: str) -> Iterator[tuple[dict, str]]:
    """One seeded database shared by the tests that only read it."""
    name = f"opsconsole_seed_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}" STRATEGY FILE_COPY')
    dsn = conninfo.make_conninfo(admin_dsn, dbname=name)
    try:
        yield run_seed(dsn), dsn
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def ro(seeded_once: tuple[dict, str]) -> Iterator[tuple[dict, psycopg.Connection]]:
    summary, dsn = seeded_once
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        yield summary, c


def test_same_seed_gives_identical_tables_and_another_seed_does_not(
    seeded: dict, db_dsn: str, conn: psycopg.Connection
) -> None:
    first = content_hashes(conn)
    assert all(first.values()), first  # every table got rows
    again = run_seed(db_dsn, truncate_first=True)
    assert again["truncated"]
    assert content_hashes(conn) == first
    run_seed(db_dsn, seed=8, truncate_first=True)
    other = content_hashes(conn)
    assert [t for t in first if other[t] == first[t]] == [], "a different seed must change every table"


def test_counts_and_proportions(ro: tuple[dict, psycopg.Connection]) -> None:
    seeded, conn = ro
    rows = {t["table"]: t["rows"] for t in seeded["tables"]}
    assert rows["crm_customers"] == N
    assert rows["erp_orders"] == 6 * N
    assert rows["external_market_data"] == 2000
    # the pending backlog; a transaction without an account is rejected before staging (0031)
    assert rows["financial_transactions_staging"] + rows["financial_staging_rejects"] == 100
    events = rows["ecommerce_events"] + rows["ecommerce_anonymous_events"]
    assert 18 * N <= events <= 22 * N
    assert 0.10 <= rows["ecommerce_anonymous_events"] / events <= 0.20  # 15% of sessions are anonymous
    assert 7 * N <= rows["financial_transactions"] <= 9.5 * N
    assert 1.6 * N <= rows["lakehouse_customers"] <= 2.2 * N
    assert rows["data_lineage"] <= len(seeding.LINEAGE)  # flows other migrations recorded are kept
    history = rows.pop("financial_transactions_staging (history)", 0)  # with the pipeline installed
    rows["financial_transactions_staging"] += history
    for table, n in rows.items():
        actual = conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"]
        # data_lineage may also hold rows of other areas' migrations.
        assert actual >= n if table == "data_lineage" else actual == n, table


def test_orders_reference_customers_and_transactions_reference_orders(
    ro: tuple[dict, psycopg.Connection],
) -> None:
    seeded, conn = ro
    q = conn.execute
    assert q("SELECT count(*) FROM erp_orders o LEFT JOIN crm_customers c USING (customer_id) "
             "WHERE c.customer_id IS NULL").fetchone()["count"] == 0  # fmt: skip
    # An order is never placed before its customer existed.
    assert q("SELECT count(*) FROM erp_orders o JOIN crm_customers c USING (customer_id) "
             "WHERE o.created_at < c.created_at").fetchone()["count"] == 0  # fmt: skip
    assert q("SELECT count(*) FROM erp_orders WHERE partition_date <> order_date").fetchone()["count"] == 0
    assert q("SELECT count(DISTINCT order_number) FROM erp_orders").fetchone()["count"] == 6 * N
    assert q("SELECT count(*) FROM erp_order_keys").fetchone()["count"] == 6 * N
    span = q("SELECT min(order_date) AS lo, max(order_date) AS hi FROM erp_orders").fetchone()
    assert span["lo"] >= (AS_OF - timedelta(days=730)).date() and span["hi"] < AS_OF.date()
    currencies = {r["currency_code"] for r in q("SELECT DISTINCT currency_code FROM erp_orders")}
    assert {"USD", "EUR", "GBP", "JPY"} <= currencies
    statuses = {r["status"] for r in q("SELECT DISTINCT status FROM erp_orders")}
    assert {"cancelled", "delivered", "returned"} <= statuses

    # Every transaction references a real ERP order by its order_id (as text), from an account of
    # the order's customer (account_id = customer_id * 10 + 1 or + 2).
    orphans = q(
        "SELECT count(*) FROM financial_transactions f LEFT JOIN erp_orders o "
        "ON o.order_id::text = f.reference_data->>'order_id' WHERE o.order_id IS NULL"
    ).fetchone()["count"]
    assert orphans == 0
    wrong_account = q(
        "SELECT count(*) FROM financial_transactions f JOIN erp_orders o "
        "ON o.order_id::text = f.reference_data->>'order_id' WHERE f.account_id / 10 <> o.customer_id"
    ).fetchone()["count"]
    assert wrong_account == 0
    kinds = {
        r["transaction_type"]: r
        for r in q(
            "SELECT transaction_type, count(*) AS n, max(amount) AS hi, min(amount) AS lo, "
            "count(*) FILTER (WHERE is_processed) AS done FROM financial_transactions GROUP BY 1"
        )
    }
    assert {"payment", "refund", "fee"} <= set(kinds)
    assert kinds["refund"]["hi"] < 0 and kinds["payment"]["lo"] > 0
    total = q(
        "SELECT count(*) FILTER (WHERE is_processed) AS p, count(*) AS n FROM financial_transactions"
    ).fetchone()
    assert 0 < total["p"] < total["n"]
    # No paid transaction for an order that was never paid (pending).
    assert q("SELECT count(*) FROM financial_transactions f JOIN erp_orders o "
             "ON o.order_id::text = f.reference_data->>'order_id' WHERE o.status = 'pending'"
             ).fetchone()["count"] == 0  # fmt: skip


def test_events_sessions_devices_and_payloads(ro: tuple[dict, psycopg.Connection]) -> None:
    seeded, conn = ro
    q = conn.execute
    types = {r["event_type"] for r in q("SELECT DISTINCT event_type FROM ecommerce_events")}
    assert types == {"page_view", "product_view", "add_to_cart", "purchase"}
    # The customer-360 device rule finds all three classes.
    devices = {
        r["d"]
        for r in q(
            "SELECT DISTINCT CASE WHEN user_agent ILIKE '%mobile%' THEN 'mobile' "
            "WHEN user_agent ILIKE '%tablet%' THEN 'tablet' ELSE 'desktop' END AS d FROM ecommerce_events"
        )
    }
    assert devices == {"mobile", "tablet", "desktop"}
    bad_payload = q(
        "SELECT count(*) FROM ecommerce_events WHERE event_type <> 'page_view' AND NOT ("
        "event_data ? 'category' AND jsonb_typeof(event_data->'product') = 'object' "
        "AND event_data->'product' ? 'id' AND event_data->'product' ? 'name' "
        "AND jsonb_typeof(event_data->'price') = 'number')"
    ).fetchone()["count"]
    assert bad_payload == 0
    # A session opens with a page view, belongs to one customer (or none) and one device.
    firsts = q(
        "SELECT count(*) FILTER (WHERE event_type <> 'page_view') AS bad, count(*) AS n FROM ("
        "SELECT DISTINCT ON (session_id) event_type FROM ecommerce_events "
        "ORDER BY session_id, event_timestamp) s"
    ).fetchone()
    assert firsts["bad"] == 0 and firsts["n"] >= 3 * N
    mixed = q(
        "SELECT count(*) FROM (SELECT session_id FROM ecommerce_events GROUP BY session_id "
        "HAVING count(DISTINCT customer_id) > 1 OR count(DISTINCT user_agent) > 1) s"
    ).fetchone()["count"]
    assert mixed == 0
    unknown = q(
        "SELECT count(*) FROM ecommerce_events e LEFT JOIN crm_customers c USING (customer_id) "
        "WHERE e.customer_id IS NOT NULL AND c.customer_id IS NULL"
    ).fetchone()["count"]
    assert unknown == 0
    # Anonymous visits are whole sessions of their own table, opening with a page view too.
    anonymous = q(
        "SELECT count(*) AS n, count(DISTINCT session_id) AS sessions,"
        " count(*) FILTER (WHERE session_id IN (SELECT session_id FROM ecommerce_events)) AS shared"
        " FROM ecommerce_anonymous_events"
    ).fetchone()
    assert anonymous["sessions"] > 0 and anonymous["n"] >= anonymous["sessions"] and anonymous["shared"] == 0
    families = {r["f"] for r in q("SELECT DISTINCT family(ip_address) AS f FROM ecommerce_events")}
    assert families == {4, 6}
    # Ingestion time follows event time; a few events arrive late (minutes to hours).
    lag = q(
        "SELECT count(*) FILTER (WHERE processed_at < event_timestamp) AS neg, "
        "count(*) FILTER (WHERE processed_at - event_timestamp > interval '1 minute') AS late "
        "FROM ecommerce_events"
    ).fetchone()
    assert lag["neg"] == 0 and lag["late"] > 0
    # The identity moved past the explicit ids of both tables (they share it): plain inserts get
    # fresh event_ids.
    before = q(
        "SELECT greatest((SELECT max(event_id) FROM ecommerce_events),"
        " (SELECT max(event_id) FROM ecommerce_anonymous_events)) AS m"
    ).fetchone()["m"]
    named = q(
        "INSERT INTO ecommerce_events (customer_id, event_timestamp, event_type)"
        " VALUES (1, now(), 'page_view') RETURNING event_id"
    ).fetchone()["event_id"]
    anon = q(
        "INSERT INTO ecommerce_anonymous_events (session_id, event_timestamp, event_type)"
        " VALUES (gen_random_uuid(), now(), 'page_view') RETURNING event_id"
    ).fetchone()["event_id"]
    assert before < named < anon


def test_same_person_in_two_systems(ro: tuple[dict, psycopg.Connection]) -> None:
    seeded, conn = ro
    pairs = conn.execute(
        "SELECT a.customer_id AS a, b.customer_id AS b, a.email AS ea, b.email AS eb, b.source_system "
        "FROM crm_customers a JOIN crm_customers b ON lower(btrim(a.email)) = lower(btrim(b.email)) "
        "AND a.customer_id < b.customer_id "
        "WHERE a.first_name = b.first_name AND a.last_name = b.last_name"
    ).fetchall()
    assert len(pairs) >= 2
    assert all(p["ea"] != p["eb"] for p in pairs)  # other case and/or whitespace
    assert all(p["source_system"] in ("ecommerce", "erp") for p in pairs)


def test_lakehouse_versions_chain_and_end_at_the_crm_row(seeded: dict, conn: psycopg.Connection) -> None:
    q = conn.execute
    gaps = q(
        "SELECT count(*) FROM (SELECT customer_id, max(version_number) AS mx, count(*) AS n, "
        "min(version_number) AS mn FROM lakehouse_customers GROUP BY 1) s WHERE mn <> 1 OR mx <> n"
    ).fetchone()["count"]
    assert gaps == 0
    chain = q(
        "SELECT count(*) FILTER (WHERE nxt IS NULL AND effective_to IS NOT NULL) AS open_bad, "
        "count(*) FILTER (WHERE nxt IS NOT NULL AND effective_to IS DISTINCT FROM nxt) AS link_bad, "
        "count(*) FILTER (WHERE effective_to <= effective_from) AS order_bad, "
        "count(*) FILTER (WHERE version_number = 1 AND operation_type <> 'INSERT') AS first_bad, "
        "count(*) FILTER (WHERE version_number > 1 AND operation_type <> 'UPDATE') AS later_bad "
        "FROM (SELECT *, lead(effective_from) OVER (PARTITION BY customer_id ORDER BY version_number) AS nxt "
        "FROM lakehouse_customers) v"
    ).fetchone()
    assert dict(chain) == {"open_bad": 0, "link_bad": 0, "order_bad": 0, "first_bad": 0, "later_bad": 0}
    differ = q(
        "SELECT count(*) FROM crm_customers c JOIN lakehouse_customers l ON l.customer_id = c.customer_id "
        "AND l.effective_to IS NULL WHERE l.customer_data->>'email' <> c.email "
        "OR l.customer_data->>'phone' <> c.phone OR l.customer_data->'address' <> c.address "
        "OR l.effective_from <> c.updated_at"
    ).fetchone()["count"]
    assert differ == 0
    assert q("SELECT count(DISTINCT customer_id) FROM lakehouse_customers").fetchone()["count"] == N
    if q("SELECT to_regclass('lakehouse_customer_chains') IS NOT NULL AS c").fetchone()["c"]:
        # The lakehouse's own capture continues each seeded chain gap-free.
        last = q("SELECT max(version_number) AS v FROM lakehouse_customers WHERE customer_id = 1").fetchone()[
            "v"
        ]
        q("UPDATE crm_customers SET phone = '+1 555 0100' WHERE customer_id = 1")
        newest = q(
            "SELECT version_number, operation_type, customer_data->>'phone' AS phone, effective_to "
            "FROM lakehouse_customers WHERE customer_id = 1 ORDER BY version_number DESC LIMIT 1"
        ).fetchone()
        assert dict(newest) == {
            "version_number": last + 1,
            "operation_type": "UPDATE",
            "phone": "+1 555 0100",
            "effective_to": None,
        }


def test_staging_backlog_is_pending_and_lineage_is_not_duplicated(
    seeded: dict, db_dsn: str, conn: psycopg.Connection
) -> None:
    backlog = conn.execute(
        "SELECT processing_status, count(*) AS n FROM financial_transactions_staging "
        "WHERE batch_id LIKE 'seed-%%' GROUP BY 1"
    ).fetchall()
    aside = conn.execute(
        "SELECT count(*) AS n FROM financial_staging_rejects WHERE batch_id LIKE 'seed-%%'"
        " AND source = 'seed' AND account_id IS NULL AND reason LIKE 'account_id is missing%%'"
    ).fetchone()["n"]
    assert [(r["processing_status"], r["n"]) for r in backlog] == [("pending", 100 - aside)]
    assert (
        conn.execute(
            "SELECT count(*) AS n FROM financial_transactions_staging WHERE account_id IS NULL"
        ).fetchone()["n"]
        == 0
    )
    # Staging ids continue after the seeded transactions (no accidental collision).
    assert (
        conn.execute(
            "SELECT count(*) FROM financial_transactions_staging s "
            "JOIN financial_transactions f USING (transaction_id) WHERE s.batch_id LIKE 'seed-%%'"
        ).fetchone()["count"]
        == 0
    )
    # Every platform flow is recorded once, whoever wrote it first; a second seed adds nothing.
    for source, _scol, target, _tcol, _logic, pipeline in seeding.LINEAGE:
        n = conn.execute(
            "SELECT count(*) AS n FROM data_lineage WHERE source_table IN (%s, 'public.' || %s) "
            "AND target_table IN (%s, 'public.' || %s)",
            (source, source, target, target),
        ).fetchone()["n"]
        assert n >= 1, (source, target, pipeline)
    before = conn.execute("SELECT count(*) FROM data_lineage").fetchone()["count"]
    run_seed(db_dsn, truncate_first=True)
    assert conn.execute("SELECT count(*) FROM data_lineage").fetchone()["count"] == before


def test_settled_history_goes_through_the_pipeline(ro: tuple[dict, psycopg.Connection]) -> None:
    seeded, conn = ro
    """With the financial pipeline installed, is_processed comes from its ledger: the settled history
    is staged and processed, so processed rows, ledger and flags agree and reconciliation is clean."""
    if not conn.execute(
        "SELECT to_regprocedure('reconcile_financial_pipeline()') IS NOT NULL AS p"
    ).fetchone()["p"]:
        flags = conn.execute(
            "SELECT count(*) FILTER (WHERE is_processed) AS p, count(*) AS n FROM financial_transactions"
        ).fetchone()
        assert 0 < flags["p"] < flags["n"]  # no pipeline: the seed sets the flags itself
        return
    by_table = {t["table"]: t for t in seeded["tables"]}
    history = by_table["financial_transactions_staging (history)"]["rows"]
    assert by_table["financial_transactions_processed"]["rows"] == history > 0
    flags = conn.execute(
        "SELECT count(*) FILTER (WHERE is_processed) AS p, count(*) AS n FROM financial_transactions"
    ).fetchone()
    assert flags["p"] == history and flags["p"] < flags["n"]
    assert conn.execute("SELECT count(*) AS n FROM financial_transaction_ledger").fetchone()["n"] == history
    mismatches = conn.execute(
        "SELECT check_name, mismatch_count FROM reconcile_financial_pipeline() WHERE mismatch_count > 0"
    ).fetchall()
    assert mismatches == []


def test_without_history_nothing_is_processed_and_still_consistent(
    db_dsn: str, conn: psycopg.Connection
) -> None:
    pipeline = conn.execute(
        "SELECT to_regprocedure('reconcile_financial_pipeline()') IS NOT NULL AS p"
    ).fetchone()["p"]
    summary = run_seed(db_dsn, history=False)
    tables = {t["table"] for t in summary["tables"]}
    assert "financial_transactions_staging (history)" not in tables
    assert "financial_transactions_processed" not in tables
    processed = conn.execute(
        "SELECT count(*) FILTER (WHERE is_processed) AS p FROM financial_transactions"
    ).fetchone()
    if not pipeline:
        assert processed["p"] > 0  # no ledger to follow: the seed sets the flags itself
        return
    assert processed["p"] == 0
    assert (
        conn.execute(
            "SELECT count(*) AS n FROM reconcile_financial_pipeline() WHERE mismatch_count > 0"
        ).fetchone()["n"]
        == 0
    )


def test_plain_indexes_are_rebuilt_and_the_order_key_trigger_is_back(
    db_dsn: str, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = (
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "AND tablename IN ('ecommerce_events', 'erp_orders', 'financial_transactions', 'crm_customers')"
    )
    before = {r["indexname"]: r["indexdef"] for r in conn.execute(query)}
    monkeypatch.setattr(seeding, "REBUILD_INDEXES_ABOVE", 0)  # every table takes the rebuild path
    run_seed(db_dsn)
    after = {r["indexname"]: r["indexdef"] for r in conn.execute(query)}
    assert after == before and "ecommerce_events_customer_idx" in after
    invalid = conn.execute("SELECT count(*) AS n FROM pg_index WHERE NOT indisvalid").fetchone()["n"]
    assert invalid == 0
    disabled = conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgenabled <> 'O' "
        "AND tgrelid IN ('erp_orders'::regclass, 'crm_customers'::regclass)"
    ).fetchone()["count"]
    assert disabled == 0
    # the seed claimed its order ids in erp_order_keys
    with pytest.raises(psycopg.errors.UniqueViolation, match="duplicate order_id 1"):
        add_orders(conn, {"order_id": 1, "customer_id": 1, "order_date": datetime(2020, 1, 1).date()})


def test_a_demo_sized_seed_runs_no_ddl(db_dsn: str, conn: psycopg.Connection) -> None:
    """Below the rebuild threshold no index is dropped, so the schema evolution log stays quiet."""
    has_log = conn.execute("SELECT to_regclass('schema_evolution_log') IS NOT NULL AS x").fetchone()["x"]
    count = "SELECT count(*) AS n FROM schema_evolution_log" if has_log else "SELECT 0 AS n"
    before = conn.execute(count).fetchone()["n"]
    run_seed(db_dsn)
    assert conn.execute(count).fetchone()["n"] == before


def test_refuses_to_mix_with_existing_data(seeded: dict, db_dsn: str) -> None:
    with pytest.raises(OpsError, match="--truncate"):
        run_seed(db_dsn)
    skipped = run_seed(db_dsn, if_empty=True)
    assert skipped["status"] == "skipped" and skipped["existing"]["crm_customers"] == N


def test_an_unmigrated_database_gets_one_sentence(empty_db_dsn: str) -> None:
    result = CliRunner().invoke(main, ["--dsn", empty_db_dsn, "seed", "--customers", "50"])
    assert result.exit_code != 0
    said = " ".join(result.output.split())  # the message wraps at the terminal's width
    assert "run `opsconsole db migrate` first" in said and "Traceback" not in said
    with psycopg.connect(empty_db_dsn) as c:  # and nothing was created
        created = "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        assert c.execute(created).fetchone()[0] == 0


def test_cli_seed_json(db_dsn: str) -> None:
    result = CliRunner().invoke(
        main, ["--dsn", db_dsn, "seed", "--customers", "50", "--seed", "3", "--as-of", "2026-06-01", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["status"] == "seeded" and summary["customers"] == 50
    assert {t["table"]: t["rows"] for t in summary["tables"]}["erp_orders"] == 300
    again = CliRunner().invoke(main, ["--dsn", db_dsn, "seed", "--customers", "50"])
    assert again.exit_code == 1
    assert "--truncate" in again.output and "Traceback" not in again.output
