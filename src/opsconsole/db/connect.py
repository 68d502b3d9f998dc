"""Opening connections: application_name, timeouts, and one sentence when it fails."""

from __future__ import annotations

import psycopg
from psycopg import conninfo as ci

from opsconsole.config import Target
from opsconsole.errors import ConnectionProblem

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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # libpq messages look like 'connection to server at ... failed: FATAL:  reason'
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    return line.rstrip(".")
