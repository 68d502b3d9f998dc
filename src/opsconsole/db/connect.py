"""Opening connections: application_name, timeouts, and one sentence when it fails."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg import conninfo as ci

from opsconsole.config import Target
from opsconsole.errors import ConnectionProblem, first_line, is_node_unreachable

CONNECT_TIMEOUT_S = 5


def target_dsn(target: Target) -> str:
    """The conninfo string for a target, starting the embedded server when that is the target."""
    if target.embedded:
        from opsconsole.db.embedded import EmbeddedServer

        return EmbeddedServer().ensure_running().dsn
    return target.dsn or ""


def describe(dsn: str) -> str:
    """host/db of a conninfo without its password, for headers and error messages."""
    try:
        params = ci.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "an unparsable DSN"
    host = str(params.get("host") or "local socket")
    if host.startswith("/"):
        host = "socket " + host
    port = params.get("port")
    db = params.get("dbname") or params.get("user") or "default database"
    return f"{host}{':' + str(port) if port and not host.startswith('socket') else ''}/{db}"


def connect(
    dsn: str,
    app: str = "cli",
    *,
    autocommit: bool = True,
    statement_timeout_ms: int | None = None,
) -> psycopg.Connection:
    """Connect with application_name 'opsconsole:<app>'; turn libpq failures into one sentence."""
    options = {}
    if statement_timeout_ms is not None:
        options["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
    try:
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            application_name=f"opsconsole:{app}",
            connect_timeout=CONNECT_TIMEOUT_S,
            **options,
        )
    except psycopg.ProgrammingError as exc:
        raise ConnectionProblem(f"The DSN is not valid ({first_line(exc)}); check --dsn.") from None
    except psycopg.OperationalError as exc:
        raise ConnectionProblem(
            f"Cannot connect to {describe(dsn)}: {first_line(exc)}. "
            "Check that the server is up and the DSN is right."
        ) from None


def set_session(
    conn: psycopg.Connection, *, read_only: bool | None = None, statement_timeout_ms: int | None = None
) -> None:
    """Change an open session: read-only by default, and/or its statement_timeout (0: none)."""
    if read_only is not None:
        conn.execute(f"SET default_transaction_read_only = {'on' if read_only else 'off'}")
    if statement_timeout_ms is not None:
        conn.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")


# -- riding out restarts ---------------------------------------------------------------------------


class Reconnect:
    """The retry policy of every long-running command: jittered exponential backoff, one line per outage.

    One object is shared by all the loops of a process (the worker's N claim loops, the simulator),
    so an outage that breaks every connection at once prints one line when it starts and one when
    the database is back, never one per attempt or per loop. `lost()` returns how long to wait
    before the next attempt: `initial` doubling to `cap`, each delay drawn uniformly from its upper
    half so that N processes do not reconnect in lock step; `pause()` waits it out, and wakes early
    once any loop is back, so that no loop sleeps out a long backoff while the database is up.

    The outage is over when the first success since the last failure has stood for `grace_s` with no
    new failure (seen at the next `restored()`, or at `settle()` when the process stops). So a loop
    that meets the outage late, or a Citus node that is down while another node answers a loop's
    chunk, keeps it one outage instead of a flapping pair of lines.
    """

    def __init__(
        self,
        name: str,
        say: Callable[[str], None],
        *,
        initial: float = 0.5,
        cap: float = 15.0,
        grace_s: float = 2.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.name = name
        self.say = say
        self.initial = initial
        self.cap = cap
        self.grace_s = grace_s
        self.rng = rng or random.Random()
        self.clock = clock
        self.outages = 0
        self._lock = threading.Lock()
        self._down: dict[object, int] = {}  # who has failed in this outage -> attempts so far
        self._since: float | None = None  # start of the open outage
        self._ok_since: float | None = None  # the first success since the last failure

    @property
    def down(self) -> bool:
        return self._since is not None

    def lost(self, exc: BaseException, who: object = None) -> float:
        """Record a failed attempt of `who`; returns the seconds to wait before the next one."""
        with self._lock:
            now = self.clock()
            attempts = self._down.get(who, 0)
            self._down[who] = attempts + 1
            self._ok_since = None
            if self._since is None:
                self._since = now
                self.outages += 1
                self.say(
                    f"{self.name}: lost the database ({reason(exc)}); "
                    "reconnecting with backoff, nothing is lost meanwhile"
                )
            base = min(self.cap, self.initial * 2**attempts)
            return self.rng.uniform(base / 2, base)

    def restored(self, who: object = None) -> None:
        """`who` succeeded: the first success wakes the loops that wait; one that has stood for
        `grace_s` ends the outage."""
        with self._lock:
            self._down.pop(who, None)
            if self._since is None:
                return
            now = self.clock()
            if self._ok_since is None:
                self._ok_since = now
            if now - self._ok_since >= self.grace_s:
                self._end()

    def settle(self) -> None:
        """The process is stopping: an outage that a success already answered is over."""
        with self._lock:
            if self._since is not None and self._ok_since is not None:
                self._end()

    def pause(self, seconds: float, stop: threading.Event) -> bool:
        """Wait out a backoff (called right after `lost()`, which cleared `_ok_since`); returns
        early once a loop is back, True when `stop` was set."""
        deadline = time.monotonic() + seconds
        while not stop.wait(max(0.0, min(0.1, deadline - time.monotonic()))):
            if self._ok_since is not None or time.monotonic() >= deadline:
                return False
        return True

    def _end(self) -> None:
        took = self._ok_since - self._since
        self._since = self._ok_since = None
        self._down.clear()
        self.say(f"{self.name}: reconnected to the database after {took:.1f} s")


def reason(exc: BaseException) -> str:
    """The shortest honest description of why a connection failed (for the one outage line)."""
    if isinstance(exc, ConnectionProblem):
        return exc.message.rstrip(".")
    sqlstate = getattr(exc, "sqlstate", None)
    text = first_line(exc)
    if is_node_unreachable(exc):
        return f"a Citus worker node did not answer: {text}"
    return f"{type(exc).__name__} {sqlstate}: {text}" if sqlstate else f"{type(exc).__name__}: {text}"
