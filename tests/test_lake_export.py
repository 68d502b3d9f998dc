"""`opsconsole lake export`: a table, or the customers at an instant, to Parquet; read back equal."""

from __future__ import annotations

import json

import polars as pl
from click.testing import CliRunner

from opsconsole.cli import main


def run(dsn: str, *args: str):
    return CliRunner().invoke(main, ["--dsn", dsn, *args])


def said(result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_export_as_of_an_instant_reads_back_equal_to_time_travel(db_dsn, conn, tmp_path):
    conn.execute(
        "INSERT INTO crm_customers (customer_id, first_name, email, address)"
        " VALUES (1, 'Ann', 'a@v1', '{\"city\": \"Oslo\"}'), (2, 'Bo', 'b@v1', NULL)"
    )
    t1 = conn.execute("SELECT clock_timestamp() AS t").fetchone()["t"]
    conn.execute("UPDATE crm_customers SET email = 'a@v2' WHERE customer_id = 1")
    conn.execute("DELETE FROM crm_customers WHERE customer_id = 2")

    path = tmp_path / "customers_t1.parquet"
    result = run(
        db_dsn,
        "lake",
        "export",
        "--table",
        "lakehouse_customers",
        "--as-of",
        t1.isoformat(),
        str(path),
        "--json",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["rows"], summary["table"], summary["format"]) == (
        2,
        "public.lakehouse_customers",
        "parquet",
    )

    frame = pl.read_parquet(path).sort("customer_id")
    expected = conn.execute(
        "SELECT customer_id, version_number, customer_data->>'email' AS email,"
        " customer_data->>'first_name' AS first_name FROM time_travel_customers(%s) ORDER BY 1",
        (t1,),
    ).fetchall()
    got = frame.select("customer_id", "lake_version", "email", "first_name").rows()
    assert got == [(r["customer_id"], r["version_number"], r["email"], r["first_name"]) for r in expected]
    assert got == [(1, 1, "a@v1", "Ann"), (2, 1, "b@v1", "Bo")]
    assert json.loads(frame["address"][0]) == {"city": "Oslo"}
    assert frame.schema["created_at"] == pl.Datetime("us", "UTC")

    now = tmp_path / "customers_now.parquet"
    assert (
        run(db_dsn, "lake", "export", "--table", "lakehouse_customers", "--as-of", "now", str(now)).exit_code
        == 0
    )
    assert pl.read_parquet(now).select("customer_id", "email", "lake_version").rows() == [(1, "a@v2", 2)]
    audit = conn.execute("SELECT count(*) AS n FROM ops_audit_log WHERE action = 'lake.export'").fetchone()
    assert audit["n"] == 2


def test_export_a_whole_table_keeps_types(db_dsn, conn, tmp_path):
    conn.execute(
        "INSERT INTO financial_transactions (transaction_id, account_id, transaction_timestamp, amount,"
        " transaction_type, reference_data) VALUES"
        " (10, 7, '2025-01-02T03:04:05Z', 12.3400, 'payment', '{\"order_id\": \"o-1\"}'),"
        " (11, 7, NULL, NULL, 'refund', NULL)"
    )
    path = tmp_path / "ft.parquet"
    result = run(db_dsn, "lake", "export", "--table", "financial_transactions", str(path))
    assert result.exit_code == 0, result.output
    frame = pl.read_parquet(path).sort("transaction_id")
    assert frame.schema["amount"] == pl.Decimal(38, 4)
    assert frame.select("transaction_id", "account_id", "transaction_type", "is_processed").rows() == [
        (10, 7, "payment", False),
        (11, 7, "refund", False),
    ]
    assert str(frame["amount"][0]) == "12.3400"
    assert frame["transaction_timestamp"][0].isoformat() == "2025-01-02T03:04:05+00:00"


def test_export_refusals_are_one_sentence(db_dsn, tmp_path):
    cases = [
        (["--table", "crm_customers", "--as-of", "2025-01-01"], "keeps no history"),
        (["--table", "no_such_table"], "no platform table or view named no_such_table"),
        (["--table", "lakehouse_customers", "--as-of", "yesterday-ish"], "is not a timestamp"),
    ]
    for args, text in cases:
        result = run(db_dsn, "lake", "export", *args, str(tmp_path / "x.parquet"))
        assert result.exit_code == 1, result.output
        assert text in said(result) and "Traceback" not in result.output
    missing_dir = run(
        db_dsn, "lake", "export", "--table", "crm_customers", str(tmp_path / "nope" / "x.parquet")
    )
    assert missing_dir.exit_code == 1 and "does not exist" in said(missing_dir)
    assert not (tmp_path / "x.parquet").exists()


def test_delta_export_keeps_one_version_per_export(db_dsn, conn, tmp_path):
    """Exports as of successive instants into one path read back, version by version, as time travel."""
    from deltalake import DeltaTable

    conn.execute("INSERT INTO crm_customers (customer_id, first_name, email) VALUES (1, 'Ann', 'a@v1')")
    t1 = conn.execute("SELECT clock_timestamp() AS t").fetchone()["t"]
    conn.execute("UPDATE crm_customers SET email = 'a@v2' WHERE customer_id = 1")
    conn.execute("INSERT INTO crm_customers (customer_id, first_name, email) VALUES (2, 'Bo', 'b@v1')")
    path = tmp_path / "customers_delta"
    for as_of in (t1.isoformat(), "now"):
        result = run(
            db_dsn,
            "lake",
            "export",
            "--table",
            "lakehouse_customers",
            "--as-of",
            as_of,
            "--format",
            "delta",
            str(path),
        )
        assert result.exit_code == 0, result.output
    v0 = (
        pl.read_delta(str(path), version=0).sort("customer_id").select("customer_id", "email", "lake_version")
    )
    v1 = (
        pl.read_delta(str(path), version=1).sort("customer_id").select("customer_id", "email", "lake_version")
    )
    assert v0.rows() == [(1, "a@v1", 1)]
    assert v1.rows() == [(1, "a@v2", 2), (2, "b@v1", 1)]
    history = DeltaTable(str(path)).history()
    as_ofs = sorted(h.get("opsconsole.as_of") for h in history)
    assert as_ofs == sorted([t1.isoformat(), "now"])


def test_delta_export_without_deltalake_says_how_to_install_it(db_dsn, tmp_path):
    """deltalake is an optional extra: a machine without it gets one sentence naming the extra."""
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['deltalake'] = None\n"  # as if it were not installed
        "from opsconsole.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    args = ["--dsn", db_dsn, "lake", "export", "--table", "crm_customers", "--format", "delta"]
    done = subprocess.run(
        [sys.executable, "-c", script, *args, str(tmp_path / "out")], capture_output=True, text=True
    )
    assert done.returncode == 1, done.stderr
    message = " ".join(done.stderr.split())
    assert "pip install 'opsconsole[delta]'" in message
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
