"""The pipeline's chaos test on a Citus coordinator, with a worker node restarted in the middle.

The test of tests/test_pipeline_reliability.py runs as it is (one definition of the chaos and of
what must hold afterwards: nothing lost, nothing processed twice, every row in its predicted state,
rollups and reconcile clean, a replay changes nothing), on OPSCONSOLE_CITUS_RELIABILITY_ROWS rows
(default 6,000: two shared cores). Alongside it, a thread restarts one Citus worker node (pg_ctl
restart -m fast of cluster.sh's data directory) once the drain has started, while a writer keeps
changing CRM customers, whose versions go to the distributed lakehouse tables. Writes that meet the
node while it is down fail and are retried; afterwards every customer has exactly one open version
and it holds the customer's current row.
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
            subprocess.run(
                [
                    "su",
                    "postgres",
                    "-s",
                    "/bin/sh",
                    "-c",
                    f"{PG_CTL} -D {self.data_dir} -l {self.data_dir}.log -m fast -w restart",
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
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
    if not CLUSTER_DIR:
        pytest.skip("OPSCONSOLE_CITUS_CLUSTER_DIR is not set: the node restart needs cluster.sh's directory")
    if os.geteuid() != 0:
        pytest.skip("restarting a Citus node needs root (the nodes run as the OS user postgres)")
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
