"""The pipeline's chaos test on a Citus coordinator, with a worker node restarted in the middle.

The test of tests/test_pipeline_reliability.py runs as it is (one definition of the chaos and of
what must hold afterwards: nothing lost, nothing processed twice, every row in its predicted state,
rollups and reconcile clean, a replay changes nothing), on OPSCONSOLE_CITUS_RELIABILITY_ROWS rows
(default 6,000: two shared cores). Alongside it, a thread restarts one Citus worker node (pg_ctl
restart -m fast of cluster.sh's data directory) once the drain has started, while a writer keeps
changing CRM customers, whose versions go to the distributed lakehouse tables. Writes that meet the
node while it is down fail and are retried; afterwards every customer has exactly one open version
and it holds the customer's current row.

The chaos restart lands wherever it lands; the second test stops a worker node for a few seconds
on purpose under `opsconsole simulate` and `opsconsole worker`, which must ride it out as they ride
out a restart of the server itself (tests/test_restarts.py): no traceback, rows moving afterwards,
nothing lost or sent twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the chaos test's module
import test_pipeline_reliability as reliability  # noqa: E402
import test_restarts as restarts  # noqa: E402

from opsconsole.datagen import seed as seeding  # noqa: E402

ROWS = int(os.environ.get("OPSCONSOLE_CITUS_RELIABILITY_ROWS", "6000"))
CLUSTER_DIR = os.environ.get("OPSCONSOLE_CITUS_CLUSTER_DIR", "")  # cluster.sh's directory
PG_CTL = "/usr/lib/postgresql/15/bin/pg_ctl"


def _worker_node(dsn: str) -> tuple[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        port = conn.execute(
            "SELECT min(nodeport) FROM pg_dist_node WHERE groupid <> 0 AND noderole = 'primary'"
        ).fetchone()[0]
    data_dir = Path(CLUSTER_DIR) / f"n{port}"
    return str(data_dir), port


def _pg_ctl(data_dir: str, action: str) -> None:
    """pg_ctl as the OS user postgres, who owns cluster.sh's nodes."""
    command = f"{PG_CTL} -D {data_dir} -l {data_dir}.log -m fast -w {action}"
    subprocess.run(
        ["su", "postgres", "-s", "/bin/sh", "-c", command], check=True, capture_output=True, timeout=120
    )


def _needs_node_control() -> None:
    if not CLUSTER_DIR:
        pytest.skip("OPSCONSOLE_CITUS_CLUSTER_DIR is not set: stopping a node needs cluster.sh's directory")
    if os.geteuid() != 0:
        pytest.skip("stopping a Citus node needs root (the nodes run as the OS user postgres)")


def _logs(traffic: restarts.Traffic) -> str:
    """What the two commands printed and what the coordinator holds open, for a failure's message."""
    parts = [
        f"--- {name}\n" + "".join(text.splitlines(True)[-40:])
        for name, text in zip(("simulate", "worker"), traffic.logs(), strict=True)
    ]
    with psycopg.connect(traffic.dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, application_name, state, wait_event_type, wait_event, left(query, 120) "
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        prepared = conn.execute(
            "SELECT * FROM run_command_on_workers('SELECT count(*) FROM pg_prepared_xacts')"
        ).fetchall()
    parts.append("--- coordinator sessions\n" + "\n".join(map(str, rows)))
    parts.append("--- prepared transactions on the workers\n" + "\n".join(map(str, prepared)))
    return "\n".join(parts)


class NodeRestart(threading.Thread):
    """Restarts one worker node once staging rows start moving; CRM writes go on around it."""

    def __init__(self, dsn: str, data_dir: str):
        super().__init__(name="node-restart", daemon=True)
        self.dsn, self.data_dir = dsn, data_dir
        self.stop = threading.Event()
        self.restarted_at: float | None = None
        self.write_failures = 0
        self.writes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stop.is_set():
                    moved = conn.execute(
                        "SELECT count(*) FROM financial_transactions_staging "
                        "WHERE processing_status <> 'pending'"
                    ).fetchone()[0]
                    if moved:
                        break
                    time.sleep(0.1)
            writer = threading.Thread(target=self._write_crm, daemon=True)
            writer.start()
            time.sleep(1.0)
            _pg_ctl(self.data_dir, "restart")
            self.restarted_at = time.monotonic()
            time.sleep(2.0)  # writes after the node is back
            self.stop.set()
            writer.join(30)
        except BaseException as exc:  # surfaced by the test
            self.error = exc
            self.stop.set()

    def _write_crm(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                    while not self.stop.is_set():
                        i += 1
                        conn.execute(
                            "INSERT INTO crm_customers (customer_id, first_name, email) VALUES (%s, %s, %s) "
                            "ON CONFLICT (customer_id) DO UPDATE SET first_name = EXCLUDED.first_name",
                            (1_000_000 + i % 50, f"name-{i}", f"c{i % 50}@example.com"),
                        )
                        self.writes += 1
                        time.sleep(0.05)
            except psycopg.Error:
                self.write_failures += 1
                time.sleep(0.2)


def test_chaos_with_a_worker_node_restart_loses_nothing(citus_dsn, tmp_path, monkeypatch):
    _needs_node_control()
    data_dir, _port = _worker_node(citus_dsn)
    assert Path(data_dir, "PG_VERSION").exists(), data_dir
    monkeypatch.setattr(reliability, "N_ROWS", ROWS)
    monkeypatch.setattr(reliability, "MAX_EVENTS", max(6, ROWS // 1000))

    restart = NodeRestart(citus_dsn, data_dir)
    restart.start()
    try:
        reliability.test_two_workers_under_chaos_lose_nothing_and_process_nothing_twice(citus_dsn, tmp_path)
    finally:
        restart.join(180)
    assert restart.error is None, restart.error
    assert restart.restarted_at is not None, "the worker node was not restarted during the run"
    assert restart.writes > 0

    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        # the lakehouse (distributed) after the restart: one open version per customer, and it is current
        bad = conn.execute(
            """
            SELECT c.customer_id
            FROM crm_customers c
            LEFT JOIN lakehouse_customers_current l ON l.customer_id = c.customer_id
            WHERE c.customer_id >= 1000000
              AND (l.customer_id IS NULL OR l.customer_data ->> 'first_name' IS DISTINCT FROM c.first_name)
            """
        ).fetchall()
        assert bad == []
        open_versions = conn.execute(
            "SELECT customer_id, count(*) FROM lakehouse_customers WHERE effective_to IS NULL "
            "GROUP BY 1 HAVING count(*) > 1"
        ).fetchall()
        assert open_versions == []
    print(
        f"node restart: {restart.writes} CRM writes, {restart.write_failures} failed while the node was down"
    )


def test_simulate_and_worker_ride_out_a_stopped_worker_node(citus_dsn, tmp_path):
    """A worker node down for a few seconds: the coordinator's links stay up, but every statement
    that needs the node fails whole (Citus says "failure on connection marked as essential" or
    "connection to the remote node ... failed"). Both commands wait and send the work again."""
    _needs_node_control()
    data_dir, _port = _worker_node(citus_dsn)
    seeding.seed(citus_dsn, seeding.SeedPlan(customers=200, seed=3))
    traffic = restarts.Traffic(citus_dsn, tmp_path, rate=300)
    stopped = False
    try:
        restarts._wait(
            lambda: restarts._scalar(citus_dsn, restarts.DONE) > 300, 120, "the first rows processed"
        )
        _pg_ctl(data_dir, "stop")
        stopped = True
        time.sleep(4)  # several simulator ticks and worker claims meet the missing node
        _pg_ctl(data_dir, "start")
        stopped = False
        staged, done = (
            restarts._scalar(citus_dsn, restarts.STAGED),
            restarts._scalar(citus_dsn, restarts.DONE),
        )
        try:
            restarts._wait(
                lambda: restarts._scalar(citus_dsn, restarts.STAGED) > staged + 600, 60, "traffic after"
            )
            restarts._wait(
                lambda: restarts._scalar(citus_dsn, restarts.DONE) > done + 600, 60, "processing after"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_logs(traffic)}") from None
        assert traffic.alive(), "a process died while the node was down"
        traffic.finish()
    finally:
        if stopped:
            _pg_ctl(data_dir, "start")
        traffic.kill()

    # one line when the node went, one when it was back. (Its wording depends on what Citus
    # relays: its own "a worker node did not answer" sentence, or the node's 57P01, which reads
    # like a lost session and is ridden out the same way.)
    sim_text, worker_text = traffic.logs()
    traffic.check_logs(outages=1)
    traffic.check_nothing_lost()
    print(
        "".join(
            line for line in sim_text.splitlines(True) + worker_text.splitlines(True) if "database" in line
        )
    )


def test_a_stopped_worker_node_gets_a_sentence_not_a_traceback(citus_dsn):
    """What an operator sees while a worker node is down: the CLI says which node did not answer and
    that nothing changed (exit 2, no traceback), a console pane says it and that it will try again;
    once the node is back the same command works."""
    from opsconsole.tui.refresh import pane_error

    _needs_node_control()
    data_dir, port = _worker_node(citus_dsn)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "opsconsole.cli", "--dsn", citus_dsn, "reconcile"]
    _pg_ctl(data_dir, "stop")
    try:
        out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        with psycopg.connect(citus_dsn, autocommit=True) as conn:
            try:
                conn.execute("SELECT count(*) FROM financial_transactions_processed").fetchone()
                raise AssertionError("a query over every shard ran with a worker node stopped")
            except psycopg.Error as exc:
                shown = pane_error(exc, 1000)
    finally:
        _pg_ctl(data_dir, "start")
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    assert "a Citus worker node did not answer" in out.stderr and str(port) in out.stderr, out.stderr
    assert "nothing was changed" in out.stderr, out.stderr
    assert shown == f"Citus worker node 127.0.0.1:{port} did not answer; the next refresh tries again", shown

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, (again.stdout, again.stderr)
