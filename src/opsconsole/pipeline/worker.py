"""The claim loop as a daemon: `opsconsole worker [--concurrency N]`.

Each loop has its own connection (autocommit) and calls process_financial_batch_detail with
p_batch_size = one chunk, so every chunk is its own transaction (claims never overlap: a chunk holds
its account buckets' advisory locks until it commits). When nothing is due it LISTENs on
'opsconsole_staging' and wakes on the first notification, polling every `poll_s` seconds as the
fallback (a NOTIFY can be missed while reconnecting, and failed rows become due by the clock, not by a
notification).

Stopping: stop() (SIGTERM / Ctrl-C in the CLI) lets the chunk in flight commit, then each loop ends.
Losing the server (a restart, a failover, pg_terminate_backend): the loops share one Reconnect
policy (opsconsole.db.connect), so an outage logs one line when it starts and one when the database
is back, whatever the number of loops and attempts; they retry with jittered backoff. The chunk in
flight rolled back with the connection, so its rows are simply claimed again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from opsconsole.db.connect import Reconnect
from opsconsole.errors import first_line, is_disconnect, is_node_unreachable
from opsconsole.ops import pipeline as ops

log = logging.getLogger("opsconsole.worker")


@dataclass
class WorkerStats:
    chunks: int = 0
    rows: int = 0
    processed: int = 0
    failed: int = 0
    dead_letter: int = 0
    duplicate: int = 0
    reconnects: int = 0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, r: ops.BatchResult) -> None:
        with self.lock:
            self.chunks += r.chunks
            self.rows += r.claimed
            self.processed += r.processed
            self.failed += r.failed
            self.dead_letter += r.dead_letter
            self.duplicate += r.duplicate


class Worker:
    """N claim loops over one database. start() returns at once; stop() asks them to finish.

    The console's continuous processing runs one loop in its own thread (run_loop), with on_chunk
    reporting each chunk to the screen and stop(cancel=True) as its stop key (the chunk in flight is
    cancelled and rolls back)."""

    def __init__(
        self,
        dsn: str,
        concurrency: int = 1,
        batch_size: int = 10000,
        poll_s: float = 2.0,
        max_chunk_time: dt.timedelta = dt.timedelta(seconds=30),
        name: str = "worker",
        on_chunk: Callable[[ops.BatchResult], None] | None = None,
        app_name: str | None = None,
        maintenance_check_s: float | None = None,
    ):
        if concurrency < 1:
            raise ops.PipelineProblem("--concurrency must be at least 1.")
        self.dsn = dsn
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.max_chunk_time = max_chunk_time
        self.name = name
        self.on_chunk = on_chunk
        self.app_name = app_name  # application_name suffix; default worker-<slot>
        self._conns: dict[int, psycopg.Connection] = {}  # each loop's current connection
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.reconnect = Reconnect(name, log.warning)
        self.maintenance_check_s = maintenance_check_s  # None: this worker never runs maintenance

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self.concurrency):
            t = threading.Thread(target=self._loop, args=(i,), name=f"{self.name}-{i}", daemon=True)
            self._threads.append(t)
            t.start()
        if self.maintenance_check_s:
            t = threading.Thread(target=self._maintenance_loop, name=f"{self.name}-maintenance", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self, cancel: bool = False) -> None:
        """Ask the loops to end; with cancel, also cancel the chunk each one has in flight."""
        self._stop.set()
        if cancel:
            for conn in list(self._conns.values()):
                with contextlib.suppress(Exception):  # closed or gone already: nothing in flight
                    conn.cancel_safe(timeout=5)

    def run_loop(self, slot: int = 0) -> None:
        """One claim loop in the calling thread, until stop()."""
        self._loop(slot)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the loops to end; True when all have."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            t.join(remaining)
        return not any(t.is_alive() for t in self._threads)

    def run_forever(self) -> None:
        """start() and wait until stop() is called (from a signal handler) and the loops end."""
        self.start()
        while not self.join(timeout=0.2):
            pass

    # -- one loop ----------------------------------------------------------------------------------
    def _connect(self, slot: int) -> psycopg.Connection:
        from opsconsole.db.connect import connect
        from opsconsole.ops import channels

        conn = connect(self.dsn, self.app_name or f"worker-{slot}")
        channels.listen(conn, channels.STAGING)
        self._conns[slot] = conn
        return conn

    def _loop(self, slot: int) -> None:
        label = f"{self.name}-{slot}"
        conn: psycopg.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self._connect(slot)
                    self.reconnect.restored(slot)
                if ops.fleet_paused(conn):  # `opsconsole pause`: claim nothing until resumed
                    self._wait_for_work(conn)  # resume_processing() NOTIFYs opsconsole_staging
                    continue
                result = ops.process_batch(conn, self.batch_size, self.max_chunk_time, worker=label)
                self.reconnect.restored(slot)  # ends an outage of a Citus node (the link stayed up)
                if result.claimed:
                    self.stats.add(result)
                    log.info("%s: chunk %s", label, result.summary())
                    if self.on_chunk is not None:
                        self.on_chunk(result)
                    continue  # more may be due: claim again at once
                self._wait_for_work(conn)
            except (psycopg.Error, ops.OpsError) as exc:
                link_lost = is_disconnect(exc) or conn is None or conn.broken or conn.closed
                if link_lost or is_node_unreachable(exc):
                    # Server gone, connection killed, unreachable, or a Citus worker node the chunk
                    # needed: the chunk in flight rolled back, so its rows are simply claimed again.
                    # One line per outage either way (Reconnect); a node's outage keeps the link.
                    with self.stats.lock:
                        self.stats.reconnects += 1
                    if link_lost:
                        _close(conn)
                        conn = None
                    self.reconnect.pause(self.reconnect.lost(exc, slot), self._stop)
                elif isinstance(exc, psycopg.OperationalError | ops.OpsError):
                    # e.g. a deadlock or a cancelled statement: the chunk rolled back, the link is fine
                    with self.stats.lock:
                        self.stats.errors += 1
                    log.warning("%s: chunk rolled back (%s); claiming again", label, first_line(exc))
                    self._stop.wait(0.1)
                else:
                    # A SQL error outside the row-level isolation (e.g. a missing migration): keep
                    # going, slowly, so an operator can fix it without restarting the worker.
                    with self.stats.lock:
                        self.stats.errors += 1
                    log.error(
                        "%s: processing failed: %s; retrying in %.1f s",
                        label,
                        first_line(exc),
                        self.poll_s,
                    )
                    self._stop.wait(self.poll_s)
        _close(conn)
        self.reconnect.settle()  # stopping: say the database came back if a chunk since said so
        log.info("%s: stopped", label)

    def _maintenance_loop(self) -> None:
        """About daily, `opsconsole maintain` on its own connection: every maintenance_check_s this
        worker asks whether a run is due and, if no other session holds the maintenance lock, does it
        (ops.maintenance.run_if_due), so exactly one of N workers runs it. A role that may not run
        maintenance says so once and this loop ends; the claim loops are not affected."""
        from opsconsole.db.connect import connect
        from opsconsole.errors import PermissionProblem
        from opsconsole.ops import maintenance

        label = f"{self.name}-maintenance"
        conn: psycopg.Connection | None = None
        wait = min(60.0, self.maintenance_check_s or 60.0)  # the first check a minute after start
        while not self._stop.wait(wait):
            wait = self.maintenance_check_s or 3600.0
            try:
                if conn is None:
                    conn = connect(self.dsn, label)
                    self.reconnect.restored(label)
                report = maintenance.run_if_due(conn, say=lambda line: log.info("%s: %s", label, line))
                if report is not None:
                    log.info(
                        "%s: maintenance done in %.1f s: %d partition(s) created, %d attached, %d row(s) "
                        "moved out of DEFAULT",
                        label,
                        report["seconds"],
                        len(report["partitions_created"]),
                        len(report["partitions_attached"]),
                        report["rows_moved_from_default"],
                    )
            except PermissionProblem as exc:
                log.warning("%s: this worker does not run maintenance: %s", label, exc.message)
                break
            except (psycopg.Error, ops.OpsError) as exc:
                if is_disconnect(exc) or conn is None or conn.broken or conn.closed:
                    _close(conn)
                    conn = None
                    wait = self.reconnect.lost(exc, label)
                else:
                    log.warning("%s: maintenance did not finish: %s", label, getattr(exc, "message", exc))
        _close(conn)

    def _wait_for_work(self, conn: psycopg.Connection) -> None:
        """Sleep until a NOTIFY on opsconsole_staging, the poll interval, or stop()."""
        deadline = time.monotonic() + self.poll_s
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # short slices so that stop() is honoured promptly
            for _ in conn.notifies(timeout=min(remaining, 0.25), stop_after=1):
                return


def _close(conn: psycopg.Connection | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):  # closing a dead connection must not take the loop down
            conn.close()
