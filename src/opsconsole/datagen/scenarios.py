"""Scenarios for `opsconsole simulate --scenario NAME`: stories the console should tell, played against
the database.

- `history`: an hour of healthy pipeline history for the Monitor (the demo's warm-up). The per-minute
  rollups of the hour before now that hold nothing yet are filled with in-SLA minutes: the traffic of
  the given rate, about 1% failed, 0.3% dead-lettered, 1% duplicates, latencies of 10-600 ms, no SLA
  breach. They go through the rollups' own writers (financial_rollup_minutes_apply and
  financial_latency_apply; not financial_rollup_apply, which would also count them as staging rows
  by state): no staging row stands behind these minutes, so they are demo history, said so in their
  audit row.
- `incident`: a blocking session stalls the pipeline. A session (application_name
  opsconsole:incident) holds a SHARE lock on financial_transactions_processed for `hold` seconds, the
  way a long report or a migration waiting on a lock would: every worker's chunk waits, arrivals pile up
  as pending (with a burst of invalid rows), the backlog ages and the drain estimate says "not
  draining". Then the lock goes, the workers drain the backlog, and the rows that waited land as
  SLA-breach minutes. Last, an operator re-queues the failed rows of the error code with the most of
  them (an audited retry) and the data-quality rules run: the Timeline shows the breach minutes, the
  DQ failures and the operator's action in order. It needs a running worker (`make demo` starts one).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from opsconsole.datagen import simulate
from opsconsole.errors import OpsError

SCENARIOS = ("history", "incident")
HISTORY_MINUTES = 60
# Latency histogram buckets of financial_latency_bounds() that healthy minutes use: (lower, upper, weight)
HEALTHY_BUCKETS = ((10, 20, 5), (20, 50, 25), (50, 100, 35), (100, 150, 18), (150, 200, 9), (200, 300, 6),
                   (300, 400, 1.5), (400, 500, 0.5))  # fmt: skip


def healthy_minutes(now: dt.datetime, rate: float, seed: int, minutes: int = HISTORY_MINUTES) -> list[dict]:
    """The rollup deltas and latency histogram of `minutes` in-SLA minutes before now's minute
    (deterministic for a seed and a minute)."""
    base = now.replace(second=0, microsecond=0)
    out = []
    total_weight = sum(w for *_, w in HEALTHY_BUCKETS)
    for back in range(minutes, 0, -1):
        minute = base - dt.timedelta(minutes=back)
        rng = random.Random(seed * 1_000_003 + int(minute.timestamp() // 60))
        u = [rng.random() for _ in range(5)]
        total = max(1, round(rate * 60 * (0.85 + 0.3 * u[0])))
        failed = round(total * 0.01 * (0.5 + u[1]))
        dead = round(total * 0.003 * (0.5 + u[2]))
        duplicate = round(total * 0.01 * (0.5 + u[3]))
        processed = total - failed - dead - duplicate
        hist = []
        left = processed
        lat_sum = 0
        for i, (lower, upper, weight) in enumerate(HEALTHY_BUCKETS):
            n = left if i == len(HEALTHY_BUCKETS) - 1 else min(left, round(processed * weight / total_weight))
            left -= n
            if n:
                hist.append({"minute_bucket": minute.isoformat(), "bucket_lower_ms": lower,
                             "bucket_upper_ms": upper, "row_count": n})  # fmt: skip
                lat_sum += n * (lower + upper) // 2
        top = max((h["bucket_upper_ms"] for h in hist), default=0)
        out.append(
            {
                "rollup": {
                    "minute_bucket": minute.isoformat(),
                    "total_delta": total,
                    "processed_delta": processed,
                    "failed_delta": failed,
                    "dead_letter_delta": dead,
                    "duplicate_delta": duplicate,
                    "latency_count": processed,
                    "latency_sum_ms": lat_sum,
                    "latency_max_ms": int(top - 1 - (top // 4) * u[4]) if top else None,
                    "sla_breaches": 0,
                },
                "latency": hist,
            }
        )
    return out


def play_history(conn: psycopg.Connection, *, rate: float, seed: int) -> dict[str, Any]:
    """Fill the minutes of the last hour that have no rollup yet with healthy minutes; one audit row."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("SELECT now()").fetchone()
        assert row is not None
        now = row[0]
        taken = {
            r[0]
            for r in cur.execute(
                "SELECT minute_bucket FROM financial_processing_rollup WHERE minute_bucket >= %s",
                (now - dt.timedelta(minutes=HISTORY_MINUTES + 1),),
            )
        }
    fresh = [
        m
        for m in healthy_minutes(now, rate, seed)
        if dt.datetime.fromisoformat(m["rollup"]["minute_bucket"]) not in taken
    ]
    with conn.transaction():
        if fresh:
            rollups = json.dumps([m["rollup"] for m in fresh])
            conn.execute("SELECT financial_rollup_minutes_apply(%s::jsonb)", (rollups,))
            conn.execute(
                "SELECT financial_latency_apply(%s::jsonb)",
                (json.dumps([h for m in fresh for h in m["latency"]]),),
            )
        result = {"minutes_written": len(fresh), "minutes_kept": HISTORY_MINUTES - len(fresh),
                  "rows": sum(m["rollup"]["total_delta"] for m in fresh)}  # fmt: skip
        conn.execute(
            "SELECT record_audit('simulate_history', %s::jsonb, %s::jsonb, 'ok', NULL, %s)",
            (json.dumps({"rate": rate, "seed": seed}), json.dumps(result),
             "demo history: rollup minutes without staging rows"),
        )  # fmt: skip
    return result


def play_incident(
    dsn: str,
    *,
    hold: float = 90.0,
    rate: float = 300.0,
    invalid: float = 0.15,
    tail: float = 45.0,
    say: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """The incident described in the module docstring; returns what happened, for --json."""
    from opsconsole.db.connect import connect
    from opsconsole.ops import dq as dq_ops
    from opsconsole.ops import pipeline

    stop = stop or threading.Event()
    report: dict[str, Any] = {"hold_s": hold, "rate": rate, "invalid": invalid}
    with connect(dsn, "incident") as conn:
        workers = sum(1 for w in pipeline.worker_sessions(conn) if w["loop"] == "claim")
        if workers == 0:
            say("No pipeline worker is connected: start one (`opsconsole worker`) to see the backlog drain.")
    traffic_stop = threading.Event()
    cfg = simulate.SimConfig(
        seed=int(time.time()),
        rate=rate,
        events_rate=10.0,
        market_rate=2.0,
        faults=simulate.FaultRates(
            invalid=invalid, duplicate=0.01, conflict=0.005, late=0.0, out_of_order=0.0
        ),
    )
    stats: dict[str, Any] = {}

    def traffic() -> None:
        stats["sim"] = simulate.run(dsn, cfg, stop=traffic_stop).as_dict()

    feeder = threading.Thread(target=traffic, name="incident-traffic", daemon=True)
    feeder.start()
    blocker = connect(dsn, "incident")
    try:
        say(f"{_now()} incident: a session locks financial_transactions_processed (SHARE) for {hold:.0f} s; "
            f"workers stall, {rate:.0f} rows/s keep arriving, {invalid:.0%} of them invalid")  # fmt: skip
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE financial_transactions_processed IN SHARE MODE")
        stop.wait(hold)
        blocker.execute("ROLLBACK")
        say(f"{_now()} the lock is gone: the workers drain the backlog (watch the drain estimate)")
        stop.wait(tail)
    finally:
        blocker.close()
        traffic_stop.set()
        feeder.join(30)
    with connect(dsn, "incident") as conn:
        pipeline.wait_until_idle(conn, timeout_s=30)
        failed = [r for r in pipeline.failed_by_code(conn) if r["failed"]]
        if failed:  # the operator re-queues the code with the most rows awaiting a retry
            code = max(failed, key=lambda r: r["failed"])["error_code"]
            n = pipeline.retry(conn, error_code=code, reason="incident review: re-queue after the stall")
            say(f"{_now()} an operator re-queues {n} failed {code} rows (audited)")
            report["retried"] = {"error_code": code, "rows": n}
        try:
            run = dq_ops.run_checks(conn)
            report["dq"] = {"status": run.status, "rules_failed": getattr(run, "rules_failed", 0)}
            say(f"{_now()} data-quality rules ran: {run.status}, {report['dq']['rules_failed']} failing")
        except OpsError as exc:  # a DQ problem must not hide the incident's story
            say(f"{_now()} data-quality run failed: {exc.message}")
    report["traffic"] = {k: stats.get("sim", {}).get(k) for k in ("staging_rows", "achieved_rate")}
    say(f"{_now()} incident over: the Monitor's time cursor ([ and ]) and the Timeline (7) tell the story")
    return report


def _now() -> str:
    return time.strftime("%H:%M:%S")
