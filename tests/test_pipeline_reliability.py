"""Reliability of the financial pipeline under chaos, with real worker processes.

Two `python -m opsconsole.cli --dsn ... worker` processes drain a staging table of N rows while a chaos
thread, at random moments, SIGKILLs a worker process (and starts a new one in its place) or
pg_terminate_backend()s worker connections. The staged rows contain every kind of bad row (each
validation rule, a row that raises inside the chunk, retryable failures that never clear and ones
that clear when a late ERP order arrives), exact replays and conflicting payloads for the same
transaction_id, placed within a chunk or two of each other so that both workers race on them.
A test-only statement trigger on the processed table pauses each chunk for CHUNK_PAUSE_S after its
writes and before its commit, so that a worker is nearly always in the middle of a chunk when the
chaos strikes (and the run lasts long enough for it, however fast the machine).

Afterwards: no transaction_id is processed twice, none is lost, every staged row is in the state its
kind predicts (nothing is left pending or due), the ledger, processed, staging and the rollups agree,
reconcile_financial_pipeline() finds nothing, and financial_transactions.is_processed follows the
ledger. Then a replay of already-processed rows changes nothing in processed.

The chaos is bounded: at most OPSCONSOLE_RELIABILITY_EVENTS events (default max(12, N / 5000)), none
after the backlog has drained or after CHAOS_SECONDS; it stops by itself.

Size: N = OPSCONSOLE_RELIABILITY_ROWS, default 100,000, the issue's size (about 45 s on two busy
cores); a smaller N gives a quicker run while iterating. OPSCONSOLE_RELIABILITY_SEED
picks another random schedule (the seed is printed on failure).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import closing
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from opsconsole.errors import is_transient
from opsconsole.ops import pipeline as ops
from opsconsole.pipeline import arrival
from opsconsole.pipeline.copyio import STAGING_COLUMNS
from tests.orders import add_orders

SRC = Path(__file__).resolve().parents[1] / "src"
T0 = dt.datetime(2025, 1, 6, 8, 0, tzinfo=dt.UTC)
N_ROWS = int(os.environ.get("OPSCONSOLE_RELIABILITY_ROWS", "100000"))
SEED = int(os.environ.get("OPSCONSOLE_RELIABILITY_SEED", "20250106"))
MAX_EVENTS = int(os.environ.get("OPSCONSOLE_RELIABILITY_EVENTS", str(max(12, N_ROWS // 5000))))
CHUNK = 1000
CHUNK_PAUSE_S = 0.1
CHAOS_SECONDS = 60.0
MAX_ATTEMPTS = 5  # backoff 0.25, 0.5, 1, 2 s: retryable rows dead-letter within ~4 s of the drain
KNOWN_ORDERS = 50  # erp_orders 1..50 exist from the start
TYPES = ["payment", "refund", "transfer", "fee", "adjustment", "chargeback"]
COLS = STAGING_COLUMNS

# Expected fate of a bad row: (status, error_code); retryable ones after MAX_ATTEMPTS failures.
BAD_FATES = {
    "missing_field": ("dead_letter", "missing_field"),
    "unknown_type": ("dead_letter", "unknown_type"),
    "amount_out_of_bounds": ("dead_letter", "amount_out_of_bounds"),
    "bad_order_reference": ("dead_letter", "bad_order_reference"),
    "order_not_found": ("dead_letter", "order_not_found"),
    "future_timestamp": ("dead_letter", "future_timestamp"),
    "poison": ("dead_letter", "internal_error"),
}
RETRYABLE = {"order_not_found", "future_timestamp", "poison"}
POISON_AMOUNT = Decimal("13.1300")  # a CHECK on processed makes these raise inside the chunk


# --------------------------------------------------------------------------------------------------
# The staged data and what must become of each row
# --------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    rows: list[tuple] = field(default_factory=list)  # staging input, in staging_id order
    kinds: list[str] = field(default_factory=list)  # 'valid' or a BAD_FATES key, per row
    late_orders: list[int] = field(default_factory=list)  # order ids inserted after their rows failed
    late_ids: set[int] = field(default_factory=set)  # transaction ids waiting for those orders

    def valid_ids(self) -> set[int]:
        return {r[0] for r, k in zip(self.rows, self.kinds, strict=True) if k == "valid"}


def _payload(row: tuple) -> tuple:
    """What the ledger's payload hash covers (everything but transaction_id and batch_id)."""
    return (row[1], row[2], Decimal(row[3]), row[4], json.dumps(row[5], sort_keys=True))


def build_plan(n: int, rng: random.Random) -> Plan:
    """About n staged rows: mostly valid and unique, 3% exact replays, 1% conflicting payloads, and
    every kind of bad row, replays and conflicts within ~1.5 chunks of their twin."""
    small = max(5, n // 1000)
    n_dup, n_conflict = n * 3 // 100, n // 100
    n_bad = 4 * max(5, n // 500) + 3 * small + 4
    n_good = n - n_dup - n_conflict - n_bad
    keyed: list[tuple[float, tuple, str]] = []

    def good_row(tid: int) -> tuple:
        ref = {"order_id": tid % KNOWN_ORDERS + 1} if tid % 10 == 0 else None
        return (
            tid,
            tid % 997,
            T0 + dt.timedelta(seconds=tid % 1_000_000),  # always in the past
            Decimal(tid % 5000) / 10 + 1,
            TYPES[tid % len(TYPES)],
            ref,
            f"b{tid // 1000}",
        )

    for tid in range(1, n_good + 1):
        keyed.append((float(tid), good_row(tid), "valid"))
    picked = rng.sample(range(1, n_good + 1), n_dup + n_conflict)
    near = 1.5 * CHUNK

    def pos_near(tid: int) -> float:
        return min(max(tid + rng.uniform(-near, near), 0.0), n_good + 1.0)

    for tid in picked[:n_dup]:  # exact replay (another batch_id: not part of the payload)
        row = good_row(tid)
        keyed.append((pos_near(tid), row[:6] + ("replay",), "valid"))
    for tid in picked[n_dup:]:  # same id, different amount: one wins, the other is a conflict
        row = good_row(tid)
        keyed.append((pos_near(tid), row[:3] + (row[3] + 1,) + row[4:], "valid"))

    def bad(kind: int) -> int:
        # half reuse a valid id (validation comes before the ledger), half have their own
        return rng.randint(1, n_good) if rng.random() < 0.5 else 50_000_000 + kind * 1_000_000 + len(keyed)

    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    missing = [0, 2, 3, 4]  # (not the account: a staging row has one, 0031)
    for i in range(max(5, n // 500)):
        t = bad(1)
        base = list(good_row(t))
        gone = missing[i % len(missing)]
        base[gone] = None
        keyed.append((rng.uniform(0, n_good), tuple(base), "missing_field"))
        keyed.append(
            (rng.uniform(0, n_good), good_row(bad(2))[:4] + ("wire",) + (None, "bad"), "unknown_type")
        )
        amount = Decimal("1e9") if i % 2 else Decimal("-1e9")
        keyed.append(
            (
                rng.uniform(0, n_good),
                good_row(bad(3))[:3] + (amount, "payment", None, "bad"),
                "amount_out_of_bounds",
            )
        )
        ref = [{"order_id": "abc"}, {"order_id": []}, {"order_id": -5}, {"order_id": 1.5}][i % 4]
        keyed.append((rng.uniform(0, n_good), good_row(bad(4))[:5] + (ref, "bad"), "bad_order_reference"))
    plan = Plan()
    for i in range(small):
        t = 60_000_000 + i
        keyed.append(
            (rng.uniform(0, n_good), good_row(t)[:5] + ({"order_id": 900_000 + i}, "nf"), "order_not_found")
        )
        t = 70_000_000 + i
        keyed.append((rng.uniform(0, n_good), good_row(t)[:5] + ({"order_id": 800_000 + i}, "late"), "valid"))
        plan.late_orders.append(800_000 + i)
        plan.late_ids.add(t)
        t = 80_000_000 + i
        keyed.append(
            (rng.uniform(0, n_good), (t, 1, future, Decimal(10), "payment", None, "fut"), "future_timestamp")
        )
    for i in range(4):
        t = 90_000_000 + i
        keyed.append((rng.uniform(0, n_good), (t, 2, T0, POISON_AMOUNT, "payment", None, "poison"), "poison"))
    keyed.sort(key=lambda k: k[0])
    plan.rows = [k[1] for k in keyed]
    plan.kinds = [k[2] for k in keyed]
    return plan


def copy_rows(conn: psycopg.Connection, rows: list[tuple]) -> None:
    sql = f"COPY financial_transactions_staging ({', '.join(COLS)}) FROM STDIN"
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(sql) as copy:
            for r in rows:
                copy.write_row(r[:5] + (Jsonb(r[5]) if r[5] is not None else None, r[6]))
        arrival.staged(cur, len(rows), source="test")


# --------------------------------------------------------------------------------------------------
# Worker processes and the chaos that hits them
# --------------------------------------------------------------------------------------------------
class Fleet:
    """Worker processes (`opsconsole worker`), each logging to its own file."""

    def __init__(self, dsn: str, logdir: Path):
        self.dsn = dsn
        self.logdir = logdir
        self.procs: list[subprocess.Popen] = []
        self.lock = threading.Lock()

    def start_one(self) -> subprocess.Popen:
        log = open(self.logdir / f"worker-{len(self.procs)}.log", "w")  # noqa: SIM115 (closed by the child)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "opsconsole.cli",
                "--dsn",
                self.dsn,
                "worker",
                "--batch-size",
                str(CHUNK),
                "--poll-seconds",
                "0.2",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=dict(os.environ, PYTHONPATH=str(SRC)),
        )
        log.close()
        with self.lock:
            self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen]:
        with self.lock:
            return [p for p in self.procs if p.poll() is None]

    def kill_all(self) -> None:
        for p in self.alive():
            p.kill()
            p.wait()

    def logs(self) -> list[str]:
        return [f.read_text() for f in sorted(self.logdir.glob("worker-*.log"))]


class Chaos(threading.Thread):
    """At random moments: SIGKILL a worker process and start another, or pg_terminate_backend() worker
    connections, aiming at workers in the middle of a chunk. At most max_events events, none after
    stop() or the deadline. The first two events are one of each kind, so both always happen."""

    BUSY = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name LIKE 'opsconsole:worker-%' AND state = 'active' "
        "AND query LIKE '%process_financial_batch_detail%'"
    )

    def __init__(self, fleet: Fleet, dsn: str, rng: random.Random, max_events: int, seconds: float):
        super().__init__(name="chaos", daemon=True)
        self.fleet, self.dsn, self.rng = fleet, dsn, rng
        # the kill first: early in the drain both workers are mid-chunk, so the kill lands in one (a
        # small drain, as on Citus, may end before a later kill finds every worker busy)
        self.kinds = ["kill", "terminate"] + [
            rng.choice(["terminate", "kill"]) for _ in range(max_events - 2)
        ]
        self.deadline = time.monotonic() + seconds
        self.done = threading.Event()
        # (kind, hits): for a kill, 1 when every live worker was mid-chunk (so the victim was);
        # for a terminate, the number of mid-chunk connections terminated
        self.events: list[tuple[str, int]] = []
        self.error: BaseException | None = None

    def stop(self) -> None:
        self.done.set()

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                for kind in self.kinds:
                    if self.done.wait(self.rng.uniform(0.2, 0.8)) or time.monotonic() > self.deadline:
                        return
                    if kind == "kill":
                        self._kill(conn)
                    else:
                        self._terminate(conn)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def _busy(self, conn: psycopg.Connection, want: int) -> list[int]:
        """Backends of workers running a chunk; waits up to 1.5 s for `want` of them."""
        deadline = time.monotonic() + 1.5
        while True:
            pids = [r[0] for r in conn.execute(self.BUSY)]
            if len(pids) >= want or time.monotonic() > deadline or self.done.is_set():
                return pids
            time.sleep(0.01)

    def _kill(self, conn: psycopg.Connection) -> None:
        alive = self.fleet.alive()
        if not alive:
            return
        busy = self._busy(conn, len(alive))
        victim = self.rng.choice(alive)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.events.append(("kill", int(len(busy) >= len(alive))))
        time.sleep(self.rng.uniform(0.05, 0.3))
        self.fleet.start_one()

    def _terminate(self, conn: psycopg.Connection) -> None:
        busy = self._busy(conn, 1)
        pool = busy or [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name LIKE 'opsconsole:worker-%'"
            )
        ]
        if not pool:
            return
        victims = pool if self.rng.random() < 0.3 else [self.rng.choice(pool)]
        hit = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(p)) FROM unnest(%s::int[]) p", (victims,)
        ).fetchone()[0]
        self.events.append(("terminate", hit if busy else 0))


class _Link:
    """The test's own session for the counts it polls and the late orders it adds. On Citus a
    statement that needs a worker node being restarted fails whole (the chaos test of tests/citus
    restarts one); on a healthy link to the coordinator, or with the link itself ended when the
    statement was running on the node at its fast shutdown (the coordinator passes on the node's
    FATAL): wait, connect again if need be, and send it again, as a loader or an operator would."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self._conn: psycopg.Connection | None = None

    def send(self, send):
        for attempt in range(60):
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(self.dsn, autocommit=True)
            try:
                return send(self._conn)
            except psycopg.Error as exc:
                if attempt == 59 or not (self._conn.broken or is_transient(exc)):
                    raise
                time.sleep(0.5)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _add_late_orders(link: _Link, order_ids: list[int]) -> None:
    """The late ERP batch, written as a loader writes it: in one transaction, so a retry adds it once."""
    link.send(
        lambda c: add_orders(c, *({"order_id": o, "customer_id": 1, "order_date": T0} for o in order_ids))
    )


def _count(link: _Link, where: str) -> int:
    sql = f"SELECT count(*) FROM financial_transactions_staging WHERE {where}"
    return link.send(lambda c: c.execute(sql).fetchone()[0])


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (seed {SEED})")
        time.sleep(poll_s)


def _processed_digest(conn: psycopg.Connection) -> tuple:
    return conn.execute(
        "SELECT count(*), md5(string_agg(p::text, '|' ORDER BY p.transaction_id)) "
        "FROM financial_transactions_processed p"
    ).fetchone()


# --------------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------------
def test_two_workers_under_chaos_lose_nothing_and_process_nothing_twice(db_dsn, tmp_path):
    rng = random.Random(SEED)
    plan = build_plan(N_ROWS, rng)
    valid_ids = plan.valid_ids()
    with psycopg.connect(db_dsn, autocommit=True) as conn, closing(_Link(db_dsn)) as link:
        conn.execute(
            "UPDATE financial_pipeline_settings SET max_attempts = %s, backoff_base = '250 ms', "
            "backoff_max = '2 s'",
            (MAX_ATTEMPTS,),
        )
        # every code on the settings' short schedule (order_not_found's own spans hours)
        conn.execute(
            "UPDATE financial_error_codes SET max_attempts = NULL, backoff_base = NULL, backoff_max = NULL"
        )
        conn.execute(
            "ALTER TABLE financial_transactions_processed "
            f"ADD CONSTRAINT reliability_poison CHECK (amount <> {POISON_AMOUNT})"
        )
        # one statement per execute: on Citus (processed distributed) the DDL is forwarded to the
        # workers, which refuse several commands in one string
        conn.execute(
            f"""
            CREATE FUNCTION reliability_pause() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep({CHUNK_PAUSE_S}); RETURN NULL; END $$
            """
        )
        conn.execute(
            "CREATE TRIGGER reliability_pause AFTER INSERT ON financial_transactions_processed "
            "FOR EACH STATEMENT EXECUTE FUNCTION reliability_pause()"
        )
        add_orders(
            conn, *({"order_id": g, "customer_id": 1, "order_date": T0} for g in range(1, KNOWN_ORDERS + 1))
        )
        # Source rows that exist before processing: every 7th id with a single payload, and some bad-only
        # ids (which must stay unprocessed). Conflicting ids are left out: which payload wins is a race.
        by_id: dict[int, set] = defaultdict(set)
        for r, k in zip(plan.rows, plan.kinds, strict=True):
            if k == "valid":
                by_id[r[0]].add(_payload(r))
        single = sorted(t for t, p in by_id.items() if len(p) == 1)
        bad_only = sorted(
            {r[0] for r, k in zip(plan.rows, plan.kinds, strict=True) if k != "valid" and r[0] is not None}
            - valid_ids
        )
        first: dict[int, tuple] = {}  # a transaction's payload: its first valid row (if any)
        for r, _ in sorted(zip(plan.rows, plan.kinds, strict=True), key=lambda rk: rk[1] != "valid"):
            first.setdefault(r[0], r)
        # (a source row needs an account: financial_transactions is keyed (account_id, transaction_id))
        source_before = single[::7] + [t for t in bad_only[::3] if first[t][1] is not None]
        source_after = single[3::7]

        def insert_source(ids: list[int]) -> None:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO financial_transactions (transaction_id, account_id, transaction_timestamp, "
                    "amount, transaction_type, reference_data, batch_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [
                        first[t][:5] + (Jsonb(first[t][5]) if first[t][5] is not None else None, first[t][6])
                        for t in ids
                    ],
                )

        insert_source(source_before)
        copy_rows(conn, plan.rows)
        assert _count(link, "true") == len(plan.rows)

        fleet = Fleet(db_dsn, tmp_path)
        chaos = None
        try:
            fleet.start_one()
            fleet.start_one()
            _wait(lambda: _count(link, "processing_status <> 'pending'") > 0, 60, "the first chunk")
            chaos = Chaos(fleet, db_dsn, rng, MAX_EVENTS, CHAOS_SECONDS)
            chaos.start()

            # The drain, under chaos. Late ERP orders arrive once their rows have failed.
            late_in = False
            started = time.monotonic()
            deadline = started + 60 + N_ROWS / 500
            while _count(link, "processing_status = 'pending'") > 0:
                assert time.monotonic() < deadline, f"the backlog did not drain (seed {SEED})"
                if not late_in and _count(link, "batch_id = 'late' AND processing_status = 'failed'") > 0:
                    _add_late_orders(link, plan.late_orders)
                    late_in = True
                time.sleep(0.05)
            drained_s = time.monotonic() - started
            chaos.stop()
            chaos.join(10)
            assert not chaos.is_alive()
            assert chaos.error is None, chaos.error
            assert late_in, "no late-order row failed before the drain ended"
            while len(fleet.alive()) < 2:  # chaos always replaces a killed worker; be sure anyway
                fleet.start_one()
            # The retry tail: retryable rows fail with backoff until they are dead-lettered.
            _wait(
                lambda: _count(link, "processing_status IN ('pending', 'failed')") == 0, 60, "the retry tail"
            )
            insert_source(source_after)  # these get is_processed from the trigger, not the chunk

            check_outcome(conn, plan, valid_ids, source_before + source_after, bad_only)

            # A replay of processed rows (and conflicting versions) changes nothing in processed.
            before = _processed_digest(conn)
            replay_ids = rng.sample(single, min(2000, len(single)))
            replays = [first[t][:6] + ("replay2",) for t in replay_ids]
            conflicts = [
                first[t][:3] + (first[t][3] + 7,) + first[t][4:6] + ("replay2",) for t in replay_ids[:50]
            ]
            copy_rows(conn, replays + conflicts)
            _wait(lambda: _count(link, "processing_status = 'pending'") == 0, 60, "the replay")
            assert _processed_digest(conn) == before
            fates = Counter(
                conn.execute(
                    "SELECT processing_status, error_code FROM financial_transactions_staging "
                    "WHERE batch_id = 'replay2'"
                ).fetchall()
            )
            assert fates == {
                ("duplicate", "duplicate"): len(replays),
                ("dead_letter", "payload_conflict"): 50,
            }
            assert not [r for r in ops.reconcile(conn) if r["mismatch_count"]]

            # Clean stop: SIGTERM finishes the chunk in flight; exit 0.
            final = fleet.alive()
            assert len(final) == 2
            for p in final:
                p.send_signal(signal.SIGTERM)
            assert [p.wait(timeout=30) for p in final] == [0, 0]
        finally:
            if chaos is not None:
                chaos.stop()
            fleet.kill_all()

    kinds = Counter(k for k, _ in chaos.events)
    assert kinds["kill"] >= 1 and kinds["terminate"] >= 1, chaos.events
    # at least one worker was SIGKILLed, and one connection terminated, in the middle of a chunk
    assert any(n for k, n in chaos.events if k == "kill"), chaos.events
    assert any(n for k, n in chaos.events if k == "terminate"), chaos.events
    logs = "\n".join(fleet.logs())
    assert "Traceback" not in logs
    assert "lost the database" in logs  # a terminated backend: its worker noticed
    for text in fleet.logs():
        # a worker that lost its connection and lived on reconnected (others were SIGKILLed first)
        if "lost the database" in text and "worker stopped" in text:
            assert "reconnected" in text.split("lost the database", 1)[1], text
    assert len(fleet.procs) == 2 + kinds["kill"]
    print(f"seed {SEED}: {len(plan.rows)} rows drained in {drained_s:.1f} s, chaos {chaos.events}")


def check_outcome(conn, plan: Plan, valid_ids: set[int], source_ids: list[int], bad_only: list[int]) -> None:
    got = conn.execute(
        "SELECT staging_id, transaction_id, processing_status, error_code, error_message, retry_count "
        "FROM financial_transactions_staging ORDER BY staging_id"
    ).fetchall()
    assert len(got) == len(plan.rows)

    # Every row is terminal: nothing pending, nothing failed (all retries have been spent or succeeded).
    states = Counter(g[2] for g in got)
    assert set(states) <= {"processed", "dead_letter", "duplicate"}, states

    # Each valid transaction_id: exactly one processed row; the others are replays or conflicts of it.
    winner_payload: dict[int, tuple] = {}
    for g, row, kind in zip(got, plan.rows, plan.kinds, strict=True):
        if kind == "valid" and g[2] == "processed":
            assert row[0] not in winner_payload, f"transaction_id {row[0]} processed twice"
            winner_payload[row[0]] = _payload(row)
    if set(winner_payload) != valid_ids:
        lost = sorted(valid_ids - set(winner_payload))[:5]
        detail = conn.execute(
            "SELECT transaction_id, processing_status, error_code, error_message, retry_count, "
            "reference_data FROM financial_transactions_staging WHERE transaction_id = ANY(%s)",
            (lost,),
        ).fetchall()
        raise AssertionError(f"lost: {detail}")
    for g, row, kind in zip(got, plan.rows, plan.kinds, strict=True):
        sid, tid, status, code, message, retries = g
        if kind == "valid":
            if status == "processed":
                assert code is None
            elif winner_payload[tid] == _payload(row):
                assert (status, code) == ("duplicate", "duplicate"), g
            else:
                assert (status, code) == ("dead_letter", "payload_conflict"), g
        else:
            assert (status, code) == BAD_FATES[kind], (kind, g)
            assert retries == (MAX_ATTEMPTS if kind in RETRYABLE else 1), (kind, g)
        if status != "processed":
            assert message, g
    assert all(tid in winner_payload for tid in plan.late_ids)  # retried until the order arrived

    # The ledger, processed and staging agree, and so do the rollups.
    ledger = {r[0] for r in conn.execute("SELECT transaction_id FROM financial_transaction_ledger")}
    assert ledger == valid_ids
    n_processed, n_distinct = conn.execute(
        "SELECT count(*), count(DISTINCT transaction_id) FROM financial_transactions_processed"
    ).fetchone()
    assert n_processed == n_distinct == len(valid_ids) == states["processed"]
    rollup = conn.execute(
        "SELECT sum(total_transactions), sum(pending_count), sum(processed_count), sum(failed_count), "
        "sum(dead_letter_count), sum(duplicate_count), sum(latency_count) FROM financial_processing_rollup"
    ).fetchone()
    assert tuple(int(x) for x in rollup) == (
        len(plan.rows),
        0,
        states["processed"],
        0,
        states["dead_letter"],
        states["duplicate"],
        states["processed"],
    )
    hist = conn.execute("SELECT sum(row_count) FROM financial_latency_rollup").fetchone()[0]
    assert hist == states["processed"]

    # reconcile finds nothing; is_processed is exactly "in the ledger"
    assert not [r for r in ops.reconcile(conn) if r["mismatch_count"]]
    flags = dict(conn.execute("SELECT transaction_id, is_processed FROM financial_transactions").fetchall())
    assert len(flags) == len(source_ids)
    assert {t for t, f in flags.items() if f} == set(source_ids) - set(bad_only)
    assert not any(flags[t] for t in bad_only if t in flags)


@pytest.mark.parametrize("n", [300])
def test_plan_covers_every_kind(n):
    """The generator itself: every bad kind, replays and conflicts are present (else the test above
    could pass vacuously)."""
    plan = build_plan(n, random.Random(1))
    kinds = Counter(plan.kinds)
    assert set(BAD_FATES) <= set(kinds)
    per_id = defaultdict(set)
    for r, k in zip(plan.rows, plan.kinds, strict=True):
        if k == "valid":
            per_id[r[0]].add(_payload(r))
    copies = Counter(r[0] for r, k in zip(plan.rows, plan.kinds, strict=True) if k == "valid")
    assert sum(1 for t, c in copies.items() if c > 1 and len(per_id[t]) == 1) == n * 3 // 100
    assert sum(1 for p in per_id.values() if len(p) > 1) == n // 100
