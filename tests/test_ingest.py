"""`opsconsole ingest`: every format loads its good rows and rejects its bad ones with the reason; a
file is loaded once; new columns are added only with --evolve; file text never becomes SQL."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import psycopg
import pytest
from click.testing import CliRunner

from opsconsole.cli import main
from opsconsole.pipeline import ingest
from tests.orders import add_orders

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from make_ingest_fixtures import Fixture, make_all  # noqa: E402


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Fixture]:
    return make_all(tmp_path_factory.mktemp("ingest"))


@pytest.fixture
def db(db_dsn: str, conn: psycopg.Connection) -> str:
    return db_dsn


def load(dsn: str, fx: Fixture, **kw) -> ingest.FileResult:
    (result,) = ingest.ingest(dsn, [fx.path], fx.table, **kw)
    return result


@pytest.mark.parametrize("fmt", ["csv", "json", "ndjson", "parquet", "avro"])
def test_each_format_loads_good_rows_and_rejects_bad_ones_with_reasons(
    fmt: str, fixtures: dict[str, Fixture], db: str, conn: psycopg.Connection
) -> None:
    fx = fixtures[fmt]
    result = load(db, fx)
    assert (result.status, result.loaded, result.rejected) == ("loaded", fx.loaded, len(fx.rejects))
    assert result.rows_total == fx.loaded + len(fx.rejects)

    rejects = conn.execute(
        "SELECT row_number, reason, raw_row FROM ingest_rejects WHERE file_id = %s ORDER BY row_number",
        (result.file_id,),
    ).fetchall()
    assert [r["row_number"] for r in rejects] == sorted(fx.rejects)
    for r in rejects:
        assert fx.rejects[r["row_number"]] in r["reason"], (r["row_number"], r["reason"])
    # The raw row is the file's row as read (here: the over-long type and the bad amount survive).
    by_row = {r["row_number"]: r["raw_row"] for r in rejects}
    long_row = next(n for n, why in fx.rejects.items() if "longer than 50" in why)
    assert by_row[long_row]["transaction_type"] == "x" * 60
    amount_key = " Amount " if fmt == "csv" else "amount"
    assert by_row[min(fx.rejects)][amount_key] == "12,5x"

    base = {"csv": 10_000, "json": 20_000, "ndjson": 30_000, "parquet": 40_000, "avro": 50_000}[fmt]
    rows = conn.execute(
        "SELECT * FROM financial_transactions WHERE transaction_id BETWEEN %s AND %s ORDER BY transaction_id",
        (base, base + 7),
    ).fetchall()
    assert len(rows) == 8
    first = rows[0]
    assert first["amount"] == Decimal("-3.5000") and first["account_id"] == 1001
    assert first["transaction_timestamp"] == datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert first["reference_data"] == {"order_id": "500", "currency": "EUR"}
    assert [r["is_processed"] for r in rows] == [bool(i % 2) for i in range(8)]
    assert rows[4]["transaction_timestamp"] == datetime(2025, 3, 1, 12, 4, 0, 123456, tzinfo=UTC)
    (total,) = conn.execute("SELECT count(*) AS n FROM financial_transactions").fetchone().values()
    assert total == fx.loaded

    ledger = conn.execute("SELECT * FROM ingest_files WHERE file_id = %s", (result.file_id,)).fetchone()
    assert ledger["status"] == "loaded" and ledger["file_format"] == fmt
    assert (ledger["rows_total"], ledger["rows_loaded"], ledger["rows_rejected"]) == (
        result.rows_total,
        fx.loaded,
        len(fx.rejects),
    )
    assert ledger["sha256"] == ingest.sha256_of(fx.path) and ledger["duration_ms"] is not None


def test_the_same_file_is_skipped_unless_forced(
    fixtures: dict[str, Fixture], db: str, conn: psycopg.Connection
) -> None:
    fx = fixtures["csv"]
    first = load(db, fx)
    again = load(db, fx)
    assert again.status == "skipped" and again.loaded == 0 and again.skipped == first.rows_total
    assert f"file_id {first.file_id}" in again.note and "--force" in again.note
    assert conn.execute("SELECT count(*) AS n FROM ingest_files").fetchone()["n"] == 1
    # The same bytes under another name are the same file.
    copy = fx.path.with_name("copy_of_transactions.csv")
    copy.write_bytes(fx.path.read_bytes())
    (renamed,) = ingest.ingest(db, [copy], fx.table)
    assert renamed.status == "skipped"
    # --force loads again: now every good row is a duplicate key and is rejected, none doubles.
    forced = load(db, fx, force=True)
    assert forced.status == "loaded" and forced.loaded == 0
    assert forced.rejected == fx.loaded + len(fx.rejects)
    dup_reasons = conn.execute(
        "SELECT count(*) AS n FROM ingest_rejects "
        "WHERE file_id = %s AND reason LIKE '23505: duplicate key%%'",
        (forced.file_id,),
    ).fetchone()["n"]
    assert dup_reasons == fx.loaded + 1  # the 8 reloaded rows and the in-file duplicate
    assert conn.execute("SELECT count(*) AS n FROM financial_transactions").fetchone()["n"] == fx.loaded
    assert conn.execute("SELECT forced FROM ingest_files WHERE file_id = %s", (forced.file_id,)).fetchone()[
        "forced"
    ]


def test_nested_parquet_into_customers_keeps_text_as_written(
    fixtures: dict[str, Fixture], db: str, conn: psycopg.Connection
) -> None:
    fx = fixtures["customers"]
    result = load(db, fx)
    assert (result.loaded, result.rejected) == (2, 1)
    rows = conn.execute(
        "SELECT customer_id, email, address, created_at, source_system FROM crm_customers "
        "WHERE customer_id >= 900000 ORDER BY 1"
    ).fetchall()
    assert [r["customer_id"] for r in rows] == [900_001, 900_002]
    assert rows[1]["email"] == "  ALAN@EXAMPLE.COM "  # the same-person signal is kept, not cleaned
    assert rows[0]["address"] == {"city": "London", "country": "GB"}
    assert rows[0]["source_system"] == "crm"  # defaults apply to columns the file lacks
    reason = conn.execute(
        "SELECT reason FROM ingest_rejects WHERE file_id = %s", (result.file_id,)
    ).fetchone()
    assert reason["reason"] == "updated_at: null in a NOT NULL column"


def test_new_column_is_refused_and_proposed_without_evolve_and_added_with_it(
    fixtures: dict[str, Fixture], db: str, conn: psycopg.Connection
) -> None:
    fx = fixtures["new_column"]
    evolution_before = conn.execute("SELECT count(*) AS n FROM schema_evolution_log").fetchone()["n"]
    refused = load(db, fx)
    assert refused.status == "refused" and refused.loaded == 0
    assert "'Risk Note', 'priority'" in refused.note and "--evolve" in refused.note
    columns = {r["attname"] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'financial_transactions'::regclass AND attnum > 0"
    )}  # fmt: skip
    assert "risk note" not in columns and "priority" not in columns
    assert conn.execute("SELECT count(*) AS n FROM financial_transactions").fetchone()["n"] == 0
    proposed = conn.execute(
        "SELECT evolution_type, ddl_statement, backward_compatible FROM schema_evolution_log "
        "ORDER BY evolution_id OFFSET %s",
        (evolution_before,),
    ).fetchall()
    assert [p["evolution_type"] for p in proposed] == ["ADD_COLUMN", "ADD_COLUMN"]
    assert all(p["backward_compatible"] for p in proposed)
    assert 'ADD COLUMN "risk note" text' in proposed[0]["ddl_statement"]
    assert 'ADD COLUMN "priority" bigint' in proposed[1]["ddl_statement"]
    assert all("proposed" in p["ddl_statement"] and "not applied" in p["ddl_statement"] for p in proposed)
    ledger = conn.execute(
        "SELECT status, note FROM ingest_files WHERE file_id = %s", (refused.file_id,)
    ).fetchone()
    assert ledger["status"] == "refused" and "--evolve" in ledger["note"]

    added = load(db, fx, evolve=True)  # a refused file is not "already loaded"
    assert added.status == "loaded" and added.loaded == 3 and added.added_columns == ["risk note", "priority"]
    types = dict(
        (r["attname"], r["t"])
        for r in conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) AS t FROM pg_attribute "
            "WHERE attrelid = 'financial_transactions'::regclass AND attname IN ('risk note', 'priority')"
        )
    )
    assert types == {"risk note": "text", "priority": "bigint"}
    rows = conn.execute(
        'SELECT transaction_id, "risk note", priority FROM financial_transactions ORDER BY 1'
    ).fetchall()
    assert [(r["transaction_id"], r["risk note"], r["priority"]) for r in rows] == [
        (70001, "ok", 1),
        (70002, "check", 2),
        (70003, None, 3),
    ]
    applied = conn.execute(
        "SELECT count(*) AS n FROM schema_evolution_log WHERE evolution_type = 'ADD_COLUMN' "
        "AND ddl_statement LIKE '%%\"risk note\"%%' AND ddl_statement NOT LIKE '%%not applied%%'"
    ).fetchone()["n"]
    assert applied >= 1


def test_column_names_from_files_never_become_sql(tmp_path: Path, db: str, conn: psycopg.Connection) -> None:
    evil = 'x"; DROP TABLE crm_customers; --'
    path = tmp_path / "evil.csv"
    pl.DataFrame({"transaction_id": ["1", "2"], "account_id": ["7", "7"], evil: ["a", "b"]}).write_csv(path)
    (result,) = ingest.ingest(db, [path], "financial_transactions", evolve=True)
    assert result.status == "loaded" and result.loaded == 2
    assert conn.execute("SELECT to_regclass('crm_customers') IS NOT NULL AS ok").fetchone()["ok"]
    got = conn.execute(
        "SELECT attname FROM pg_attribute "
        "WHERE attrelid = 'financial_transactions'::regclass AND attname LIKE 'x%%'"
    ).fetchone()
    assert got["attname"] == pl.read_csv(path).columns[2].lower()  # as polars read the header
    assert "drop table crm_customers" in got["attname"]


def test_constraint_failures_are_isolated_by_bisection(
    tmp_path: Path, db: str, conn: psycopg.Connection
) -> None:
    conn.execute("CREATE TABLE ingest_check (id bigint PRIMARY KEY, qty integer CHECK (qty > 0), note text)")
    bad = {17, 18, 150, 299}  # a CHECK no polars conversion can see
    frame = pl.DataFrame({"id": list(range(1, 301)), "qty": [-1 if i in bad else i for i in range(1, 301)]})
    path = tmp_path / "check.parquet"
    frame.write_parquet(path)
    (result,) = ingest.ingest(db, [path], "ingest_check")
    assert (result.loaded, result.rejected) == (296, 4)
    rejects = conn.execute(
        "SELECT row_number, reason FROM ingest_rejects WHERE file_id = %s ORDER BY 1", (result.file_id,)
    ).fetchall()
    assert [r["row_number"] for r in rejects] == sorted(bad)
    assert all(
        r["reason"].startswith('23514: new row for relation "ingest_check" violates check') for r in rejects
    )
    assert conn.execute("SELECT count(*) AS n, sum(qty) AS s FROM ingest_check").fetchone() == {
        "n": 296,
        "s": sum(range(1, 301)) - sum(bad),
    }


def test_order_ids_unique_across_partitions_are_enforced_row_by_row(
    tmp_path: Path, db: str, conn: psycopg.Connection
) -> None:
    add_orders(conn, {"order_id": 5, "customer_id": 1, "order_date": datetime(2026, 1, 10).date()})
    path = tmp_path / "orders.ndjson"
    rows = [
        {"order_id": 4, "customer_id": 1, "order_date": "2026-02-01", "partition_date": "2026-02-01"},
        # order 5 exists in January's partition: its claim in erp_order_keys refuses it in March.
        {"order_id": 5, "customer_id": 1, "order_date": "2026-03-01", "partition_date": "2026-03-01"},
        {"order_id": 6, "customer_id": 2, "order_date": "2026-03-02", "partition_date": "2026-03-02"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    (result,) = ingest.ingest(db, [path], "erp_orders")
    assert (result.loaded, result.rejected) == (2, 1)
    reason = conn.execute(
        "SELECT row_number, reason FROM ingest_rejects WHERE file_id = %s", (result.file_id,)
    ).fetchone()
    assert reason["row_number"] == 2 and "duplicate order_id 5" in reason["reason"]
    # the loaded orders claimed their ids (no trigger does: the loader writes erp_order_keys)
    keys = conn.execute("SELECT order_id, partition_date FROM erp_order_keys ORDER BY 1").fetchall()
    assert [(k["order_id"], str(k["partition_date"])) for k in keys] == [
        (4, "2026-02-01"),
        (5, "2026-01-10"),
        (6, "2026-03-02"),
    ]


def test_lineage_and_staging_notification(tmp_path: Path, db: str, conn: psycopg.Connection) -> None:
    path = tmp_path / "staging.csv"
    pl.DataFrame(
        {
            "transaction_id": ["1", "2"],
            "account_id": ["11", "21"],
            "amount": ["5.00", "6.00"],
            "transaction_type": ["payment"] * 2,
        }
    ).write_csv(path)
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN opsconsole_staging")
        (result,) = ingest.ingest(db, [path], "financial_transactions_staging")
        payloads = [json.loads(n.payload) for n in listener.notifies(timeout=1.0)]
    assert result.loaded == 2
    # one notification, from ingest's arrival call (opsconsole.pipeline.arrival), naming the file
    assert payloads == [{"source": "ingest", "rows": 2, "file_id": result.file_id}]
    lineage = conn.execute(
        "SELECT source_column, target_column, pipeline_name FROM data_lineage "
        "WHERE source_table = %s ORDER BY 1",
        (f"file:{path.resolve()}",),
    ).fetchall()
    assert {(r["source_column"], r["target_column"]) for r in lineage} == {
        (None, None),
        ("transaction_id", "transaction_id"),
        ("account_id", "account_id"),
        ("amount", "amount"),
        ("transaction_type", "transaction_type"),
    }
    assert {r["pipeline_name"] for r in lineage} == {"opsconsole ingest"}


def test_cli_summary_and_exit_codes(fixtures: dict[str, Fixture], tmp_path: Path, db: str) -> None:
    runner = CliRunner()
    ok = runner.invoke(
        main,
        ["--dsn", db, "ingest", str(fixtures["ndjson"].path), "--table", "financial_transactions", "--json"],
    )
    assert ok.exit_code == 0, ok.output
    (row,) = json.loads(ok.output)
    assert (row["status"], row["loaded"], row["rejected"], row["skipped"]) == ("loaded", 8, 11, 0)
    assert row["top_reasons"]
    again = runner.invoke(
        main, ["--dsn", db, "ingest", str(fixtures["ndjson"].path), "--table", "financial_transactions"]
    )
    assert again.exit_code == 0 and "skipped" in again.output
    unknown = tmp_path / "data.xlsx"
    unknown.write_bytes(b"not really")
    bad = runner.invoke(main, ["--dsn", db, "ingest", str(unknown), "--table", "financial_transactions"])
    assert bad.exit_code == 1 and "unsupported file type" in bad.output and "Traceback" not in bad.output
    missing = runner.invoke(main, ["--dsn", db, "ingest", str(unknown), "--table", "no_such_table"])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_explicit_identity_values_move_the_sequence(
    tmp_path: Path, db: str, conn: psycopg.Connection
) -> None:
    # Anonymous events draw their ids from ecommerce_events' identity (a default, not an identity of
    # their own): loading explicit ids there moves the shared sequence too.
    path = tmp_path / "events.ndjson"
    events = [
        {"event_id": 500 + i, "session_id": "00000000-0000-4000-8000-000000000001",
         "event_timestamp": "2026-01-01T10:00:00Z", "event_type": "page_view",
         "event_data": {"category": "books"}, "ip_address": "10.0.0.1"}
        for i in range(3)
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(e) for e in events))
    (result,) = ingest.ingest(db, [path], "ecommerce_anonymous_events")
    assert result.loaded == 3
    row = conn.execute(
        "INSERT INTO ecommerce_events (customer_id, event_timestamp, event_type) "
        "VALUES (1, now(), 'page_view') RETURNING event_id"
    ).fetchone()
    assert row["event_id"] == 503
    data = conn.execute(
        "SELECT event_data, host(ip_address) AS ip FROM ecommerce_anonymous_events WHERE event_id = 500"
    ).fetchone()
    assert data == {"event_data": {"category": "books"}, "ip": "10.0.0.1"}
    # The same kind of row loaded into ecommerce_events (keyed by customer) is rejected, saying why.
    anonymous = tmp_path / "anonymous.ndjson"
    anonymous.write_text(
        json.dumps({**events[0], "event_id": 600, "customer_id": 7})
        + "\n"
        + json.dumps({**events[0], "event_id": 601, "customer_id": None})
    )
    (result,) = ingest.ingest(db, [anonymous], "ecommerce_events")
    assert (result.loaded, result.rejected) == (1, 1)
    reason = conn.execute(
        "SELECT reason FROM ingest_rejects WHERE table_name = 'public.ecommerce_events'"
    ).fetchone()["reason"]
    assert reason == "customer_id: null in a NOT NULL column"


@pytest.mark.parametrize(
    "extra",
    [
        "processing_status",
        "next_attempt_at",
        "retry_count",
        "error_code",
        "staging_id",
        "ingestion_timestamp",
    ],
)
def test_staging_file_with_a_bookkeeping_column_is_refused_and_loads_nothing(
    tmp_path: Path, db: str, conn: psycopg.Connection, extra: str
) -> None:
    values = {
        "processing_status": "processed",
        "next_attempt_at": "2099-01-01T00:00:00Z",
        "retry_count": "9",
        "error_code": "X",
        "staging_id": "424242",
        "ingestion_timestamp": "2099-01-01T00:00:00Z",
    }
    path = tmp_path / "staging.csv"
    pl.DataFrame(
        {
            "transaction_id": ["1"],
            "account_id": ["11"],
            "amount": ["5.00"],
            "transaction_type": ["payment"],
            extra.upper(): [values[extra]],
        }
    ).write_csv(path)
    count_cols = (
        "SELECT count(*) AS n FROM pg_attribute WHERE attrelid = 'financial_transactions_staging'::regclass "
        "AND attnum > 0 AND NOT attisdropped"
    )
    before = conn.execute("SELECT count(*) AS n FROM financial_transactions_staging").fetchone()["n"]
    cols_before = conn.execute(count_cols).fetchone()["n"]
    (result,) = ingest.ingest(db, [path], "financial_transactions_staging", evolve=True)
    assert result.status == "refused" and result.loaded == 0
    assert extra in result.note and "nothing was loaded" in result.note
    assert conn.execute("SELECT count(*) AS n FROM financial_transactions_staging").fetchone()["n"] == before
    assert conn.execute(count_cols).fetchone()["n"] == cols_before  # --evolve added nothing either
    ledger = conn.execute("SELECT status FROM ingest_files WHERE file_id = %s", (result.file_id,)).fetchone()
    assert ledger == {"status": "refused"}
