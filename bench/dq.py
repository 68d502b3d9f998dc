"""P7: ten DQ rules over 1M rows, single-pass engine vs the spec's engine made to run.

bench_p7(quick) builds a scratch database on the benchmark server, migrates it, loads
financial_transactions (1M rows, or 100k with quick=True), replaces the sample rules with ten predicate
rules on that table, loads bench/baseline_dq.sql, and times both engines back to back, median of 3:

  value    = execute_data_quality_checks() (one scan for the ten rules, 0002_data_quality.sql)
  baseline = bench_spec_dq_checks() (the spec's engine made to run: two scans per rule)
  ratio    = baseline / value, target >= 1.8

detail also carries a fairer reference (one scan per rule) and the row counts the engines agreed on.
The server is OPSCONSOLE_BENCH_DSN when set, else the connection the CLI would use (--dsn precedence,
ending with the embedded server). Run alone: python bench/dq.py [--quick].
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg import conninfo

BENCH_DB = "opsconsole_bench_p7"
TARGET = 1.8
HERE = Path(__file__).resolve().parent

RULES = [
    # account_id cannot be NULL (it leads financial_transactions' key since 0027): a bad account is one
    # that is not positive
    ("ft_account_positive", "validity", "account_id > 0"),
    ("ft_type_not_null", "completeness", "transaction_type IS NOT NULL"),
    ("ft_batch_not_null", "completeness", "batch_id IS NOT NULL"),
    ("ft_reference_present", "completeness", "reference_data IS NOT NULL"),
    ("ft_amount_positive", "validity", "amount > 0"),
    ("ft_amount_bounded", "validity", "abs(amount) < 1000000"),
    (
        "ft_type_known",
        "validity",
        "transaction_type IN ('payment', 'refund', 'transfer', 'fee', 'adjustment', 'chargeback')",
    ),
    ("ft_batch_format", "validity", "batch_id LIKE 'b-%'"),
    ("ft_recent", "accuracy", "transaction_timestamp >= CURRENT_DATE - INTERVAL '7 days'"),
    ("ft_not_future", "accuracy", "transaction_timestamp <= now()"),
]


def server_dsn() -> str:
    explicit = os.environ.get("OPSCONSOLE_BENCH_DSN")
    if explicit:
        return explicit
    sys.path.insert(0, str(HERE.parent / "src"))
    from opsconsole.config import resolve_target
    from opsconsole.db.connect import target_dsn

    return target_dsn(resolve_target(None, None))


def build(admin_dsn: str, rows: int) -> str:
    """A fresh migrated database holding `rows` transactions, the ten rules and the baseline engines."""
    sys.path.insert(0, str(HERE.parent / "src"))
    from opsconsole.db import migrate

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    dsn = conninfo.make_conninfo(admin_dsn, dbname=BENCH_DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate.migrate(conn)
        conn.execute(
            """INSERT INTO financial_transactions (transaction_id, account_id, transaction_timestamp, amount,
                                                   transaction_type, reference_data, batch_id)
               SELECT g,
                      CASE WHEN g %% 97 = 0 THEN -(g %% 50000) ELSE 1 + g %% 50000 END,
                      now() - (g %% 1000) * interval '20 minutes',
                      CASE WHEN g %% 53 = 0 THEN -(g %% 500) ELSE (g %% 5000) + 0.25 END,
                      (ARRAY['payment', 'refund', 'transfer', 'fee', 'adjustment', 'chargeback',
                             'bogus'])[1 + g %% 7],
                      CASE WHEN g %% 11 = 0 THEN NULL ELSE jsonb_build_object('order_id', g) END,
                      CASE WHEN g %% 89 = 0 THEN NULL ELSE 'b-' || (g / 10000) END
               FROM generate_series(1, %s) g""",
            (rows,),
        )
        conn.execute("VACUUM ANALYZE financial_transactions")
        conn.execute("DELETE FROM dq_rule_definitions")
        for name, rule_type, expression in RULES:
            conn.execute(
                "INSERT INTO dq_rule_definitions (rule_name, table_name, rule_type, rule_expression,"
                " threshold_value, severity) VALUES (%s, 'financial_transactions', %s, %s, 0.9, 'info')",
                (name, rule_type, expression),
            )
        conn.execute((HERE / "baseline_dq.sql").read_text(encoding="utf-8").encode())
    return dsn


def _time(conn: psycopg.Connection, sql: str) -> tuple[float, list]:
    started = time.perf_counter()
    rows = conn.execute(sql).fetchall()
    return time.perf_counter() - started, rows


def bench_p7(quick: bool = False, dsn: str | None = None) -> dict:
    """Measure P7; returns {id, value, baseline, ratio, target, ok, unit, detail}."""
    rows = 100_000 if quick else 1_000_000
    admin = dsn or server_dsn()
    bench_dsn = build(admin, rows)
    ours_sql = "SELECT rule_name, score FROM execute_data_quality_checks() ORDER BY rule_name"
    spec_sql = "SELECT rule_name, score FROM bench_spec_dq_checks() ORDER BY rule_name"
    per_rule_sql = "SELECT bench_one_query_per_rule()"
    try:
        with psycopg.connect(bench_dsn, autocommit=True) as conn:
            # Warm the cache once for each, then alternate, so neither gets a systematically warmer run.
            _, ours_rows = _time(conn, ours_sql)
            _, spec_rows = _time(conn, spec_sql)
            ours, spec, per_rule = [], [], []
            for _ in range(3):
                ours.append(_time(conn, ours_sql)[0])
                spec.append(_time(conn, spec_sql)[0])
                per_rule.append(_time(conn, per_rule_sql)[0])
            server_version = conn.info.server_version
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    value, baseline, one_per_rule = (statistics.median(x) for x in (ours, spec, per_rule))
    ratio = baseline / value
    return {
        "id": "P7",
        "value": round(value, 4),
        "baseline": round(baseline, 4),
        "ratio": round(ratio, 2),
        "target": TARGET,
        "ok": ratio >= TARGET and ours_rows == spec_rows,
        "unit": "s",
        "detail": {
            "what": f"10 DQ rules over {rows:,} rows: single pass vs the spec's engine (2 scans per rule)",
            "rows": rows,
            "rules": len(RULES),
            "runs_s": {"single_pass": ours, "spec_engine": spec, "one_query_per_rule": per_rule},
            "one_query_per_rule_s": round(one_per_rule, 4),
            "ratio_vs_one_query_per_rule": round(one_per_rule / value, 2),
            "same_scores": ours_rows == spec_rows,
            "server_version": server_version,
        },
    }


if __name__ == "__main__":
    print(json.dumps(bench_p7(quick="--quick" in sys.argv[1:]), indent=2))
