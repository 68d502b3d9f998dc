"""Long-running commands ride out a real server restart (pg_ctl restart -m fast, then -m immediate).

`opsconsole simulate` and `opsconsole worker` run as subprocesses against a private embedded server;
the test restarts that server under them and checks that both live on, say so in one line per outage
without a traceback, keep moving rows afterwards, and that nothing was lost (reconcile is clean).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg

from opsconsole.datagen import seed as seeding
from opsconsole.db import migrate
from opsconsole.db.connect import Reconnect
from opsconsole.ops import pipeline as ops


def _cli(dsn: str, *args: str, log) -> subprocess.Popen:
    env = {**os.environ, "OPSCONSOLE_DSN": dsn, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "opsconsole.cli", *args], stdout=log, stderr=log, env=env, cwd="/"
    )


def _scalar(dsn: str, query: str) -> int:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return int(conn.execute(query).fetchone()[0] or 0)


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except psycopg.OperationalError:
            pass  # the server is still coming back
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# the simulator's rows (the seed stages rows of its own)
STAGED = "SELECT count(*) FROM financial_transactions_staging WHERE batch_id LIKE 'sim%'"
DONE = STAGED + " AND processing_status <> 'pending'"


PENDING = "SELECT count(*) FROM financial_transactions_staging WHERE processing_status = 'pending'"


class Traffic:
    """`opsconsole simulate` and `opsconsole worker` as subprocesses writing their logs under
    tmp_path; the simulator has no duplicate or conflict faults, so a transaction id staged twice is
    a batch sent twice. Shared with the Citus test that stops a worker node under them."""

    def __init__(self, dsn: str, tmp_path, rate: int):
        self.dsn = dsn
        self.sim_log = open(tmp_path / "simulate.log", "w+")  # noqa: SIM115
        self.worker_log = open(tmp_path / "worker.log", "w+")  # noqa: SIM115
        self.sim = _cli(
            dsn,
            *("simulate", "--rate", str(rate), "--seed", "7", "--tick", "0.1"),
            *("--duplicate-rate", "0", "--conflict-rate", "0"),
            log=self.sim_log,
        )
        self.worker = _cli(dsn, "worker", "--concurrency", "2", "--poll-seconds", "0.5", log=self.worker_log)

    def alive(self) -> bool:
        return self.sim.poll() is None and self.worker.poll() is None

    def finish(self) -> None:
        """Stop the simulator, let the worker drain the backlog, stop the worker: both exit 0."""
        self.sim.send_signal(signal.SIGTERM)
        assert self.sim.wait(timeout=60) == 0
        _wait(lambda: _scalar(self.dsn, PENDING) == 0, 120, "the drain")
        self.worker.send_signal(signal.SIGTERM)
        assert self.worker.wait(timeout=60) == 0

    def kill(self) -> None:
        for p in (self.sim, self.worker):
            if p.poll() is None:
                p.kill()
                p.wait()

    def logs(self) -> tuple[str, str]:
        self.sim_log.seek(0)
        self.worker_log.seek(0)
        return self.sim_log.read(), self.worker_log.read()

    def check_logs(self, outages: int) -> str:
        """No traceback; one line per outage and one when back, never one per attempt or per claim
        loop. Returns the simulator's log."""
        sim_text, worker_text = self.logs()
        for name, text in (("simulate", sim_text), ("worker", worker_text)):
            assert "Traceback" not in text, f"{name}:\n{text}"
            assert text.count("lost the database") == outages, f"{name}:\n{text}"
            assert text.count("reconnected to the database") == outages, f"{name}:\n{text}"
        return sim_text

    def check_nothing_lost(self) -> None:
        """Reconcile is clean, and the batch in flight at each outage was sent exactly once
        (committed, or re-sent once)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            bad = [r for r in ops.reconcile(conn) if r["mismatch_count"]]
            assert not bad, bad
            doubled = conn.execute(
                "SELECT staging_id, transaction_id, batch_id, amount, processing_status, error_code "
                "FROM financial_transactions_staging WHERE transaction_id IN (SELECT transaction_id "
                "FROM financial_transactions_staging WHERE batch_id LIKE 'sim%%' "
                "GROUP BY transaction_id HAVING count(*) > 1)"
            ).fetchall()
            assert doubled == []


def test_simulate_and_worker_ride_out_fast_and_immediate_restarts(own_server, tmp_path) -> None:
    server = own_server("restart")
    dsn = server.status().dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate.migrate(conn)
    seeding.seed(dsn, seeding.SeedPlan(customers=200, seed=3))

    traffic = Traffic(dsn, tmp_path, rate=500)
    try:
        _wait(lambda: _scalar(dsn, DONE) > 500, 120, "the first simulated rows processed")
        for mode in ("fast", "immediate"):
            staged, done = _scalar(dsn, STAGED), _scalar(dsn, DONE)
            server.restart(mode)
            # rows keep arriving and being processed after the restart
            _wait(lambda s=staged: _scalar(dsn, STAGED) > s + 1500, 60, f"traffic after a {mode} restart")
            _wait(lambda d=done: _scalar(dsn, DONE) > d + 1500, 60, f"processing after a {mode} restart")
            assert traffic.alive(), f"a process died at the {mode} restart"

        # the simulator resumed at its rate (no catch-up burst, no stall): ~500 rows/s over 4 s
        before = _scalar(dsn, STAGED)
        time.sleep(4)
        rate = (_scalar(dsn, STAGED) - before) / 4
        assert 350 < rate < 650, rate

        traffic.finish()
    finally:
        traffic.kill()

    sim_text = traffic.check_logs(outages=2)
    assert "Rode out 2 database outage(s)" in sim_text, sim_text
    traffic.check_nothing_lost()


async def test_the_console_rides_out_a_fast_restart(own_server) -> None:
    """The console's refresh engine and its LISTEN connection come back by themselves after a real
    restart: fresh data shows, and a NOTIFY sent after the restart still refreshes a pane."""
    from opsconsole.tui.app import OpsConsoleApp
    from tests.tui.helpers import SIZE, table_rows, wait_for

    server = own_server("console")
    dsn = server.status().dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate.migrate(conn)
        conn.execute("SELECT record_audit('before_the_restart')")
    app = OpsConsoleApp(dsn, database_label="restart", start_pane="activity", interval=60.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.panes["activity"].data, what="data before the restart")
        await wait_for(pilot, lambda: app.listener.listening, what="LISTEN")
        listen_pid = app.listener.backend_pid
        server.restart("fast")
        # the listener notices at once (its socket closes) and reconnects with backoff
        await wait_for(
            pilot,
            lambda: app.listener.listening and app.listener.backend_pid != listen_pid,
            timeout=30,
            what="LISTEN again after the restart",
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT record_audit('after_the_restart')")
            conn.execute("NOTIFY opsconsole_dq, '{}'")
        # the pushed refresh finds the engine's connection dead, reconnects, and shows fresh rows
        rows = await wait_for(
            pilot,
            lambda: len(table_rows(app, "#audit")) == 2,
            timeout=30,
            what="fresh data after the restart",
        )
        assert rows
        assert app.engine.connected
        assert [r[3] for r in table_rows(app, "#audit")] == ["after_the_restart", "before_the_restart"]


def test_a_loop_that_notices_an_outage_late_adds_no_lines() -> None:
    """One outage, two claim loops that meet it a moment apart (on Citus, a node that is down fails
    each loop's next chunk in turn while another node answers): one line when it starts, one when
    a success has stood for grace_s, whichever loop it came from."""
    lines: list[str] = []
    now = [0.0]
    policy = Reconnect("worker", lines.append, clock=lambda: now[0])
    exc = psycopg.OperationalError("server closed the connection unexpectedly")
    policy.lost(exc, 0)
    now[0] = 1.0
    policy.restored(0)  # loop 0 is back ...
    now[0] = 1.5
    policy.lost(exc, 1)  # ... but loop 1 meets the outage: still the same one
    now[0] = 3.0
    policy.restored(1)
    assert len(lines) == 1
    now[0] = 4.0
    policy.restored(0)  # one second of success: not yet over
    assert len(lines) == 1
    now[0] = 5.5
    policy.restored(0)  # 2.5 s since the first success after the last failure
    assert lines[0].startswith("worker: lost the database (OperationalError: server closed")
    assert lines[1:] == ["worker: reconnected to the database after 3.0 s"]
    assert policy.outages == 1 and not policy.down

    later = Reconnect("worker", lines.append, grace_s=0.0)  # every loss is an outage of its own
    lines.clear()
    for _ in range(2):
        later.lost(exc, 0)
        later.restored(0)
    assert len(lines) == 4 and later.outages == 2


def test_a_loop_in_a_long_backoff_wakes_when_another_is_back_and_stopping_settles() -> None:
    """The CI failure this guards: one claim loop sleeping out an 8-second backoff while the other
    was already back, so the outage never ended before the worker stopped. Now the first success
    wakes every pause, and a process that stops says the database came back if it had."""
    lines: list[str] = []
    policy = Reconnect("worker", lines.append, grace_s=60.0)
    exc = psycopg.OperationalError("server closed the connection unexpectedly")
    policy.lost(exc, 0)
    stop = threading.Event()
    woke: list[float] = []

    def sleeper() -> None:
        started = time.monotonic()
        assert policy.pause(8.0, stop) is False
        woke.append(time.monotonic() - started)

    t = threading.Thread(target=sleeper)
    t.start()
    time.sleep(0.3)
    policy.restored(1)
    t.join(5)
    assert woke and woke[0] < 2.0, woke
    assert len(lines) == 1  # within grace_s: not yet said
    stop.set()
    assert policy.pause(8.0, stop) is True  # a stop ends a pause at once
    policy.settle()
    assert lines[1].startswith("worker: reconnected to the database after")
    assert not policy.down
