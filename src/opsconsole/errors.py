"""Errors a person can meet: each carries one sentence saying what happened and what to do.

The CLI prints the sentence and exits with the error's code; the console shows it in a banner.
Nothing that derives from OpsError should ever reach the user as a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg


class OpsError(Exception):
    """An expected failure with a human sentence and a process exit code."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ConnectionProblem(OpsError):
    """The database could not be reached (bad DSN, server down, auth failure)."""

    exit_code = 2


class ConfigProblem(OpsError):
    """The configuration (profile file, options) is unusable."""

    exit_code = 2


class MigrationProblem(OpsError):
    """A migration could not be applied, or the migration history does not match the files."""

    exit_code = 1


class MigrationRefused(MigrationProblem):
    """The runner would not start: the history does not match the files, or another migrator runs.

    Nothing was changed; exit code 2 like any other refusal to begin.
    """

    exit_code = 2


class PermissionProblem(OpsError):
    """The connected role lacks a privilege the action needs."""

    exit_code = 3


def first_line(exc: BaseException) -> str:
    """The first line of an error's message, without its final period: a message relayed by libpq or
    a Citus node goes on with hints and details, and a sentence, a log line or a pane's border has
    room for one line."""
    diag = getattr(exc, "diag", None)
    text = getattr(exc, "message", None) or (diag.message_primary if diag is not None else None) or str(exc)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__).rstrip(".")


def from_database(
    exc: psycopg.Error,
    what: str,
    *,
    objects: str = "the opsconsole schema",
    fallback: type[OpsError] | None = None,
) -> OpsError | None:
    """The one wording for database errors a person can meet while trying to `what`.

    A missing privilege, a missing object (schema not migrated), a lost connection or a Citus worker
    node that did not answer always has a sentence; any other database error becomes `fallback`
    when given, and None (not an expected failure) when not.
    """
    primary = first_line(exc)
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return PermissionProblem(
            f"Your database role may not {what} ({primary}); "
            "ask an admin for the opsconsole role that allows it (see `opsconsole db grant`)."
        )
    if isinstance(exc, (psycopg.errors.UndefinedFunction, psycopg.errors.UndefinedTable)):
        return OpsError(
            f"This database lacks {objects} ({primary}), so it cannot {what}; "
            "run `opsconsole db migrate` first."
        )
    if is_node_unreachable(exc):
        return ConnectionProblem(
            f"Cannot {what}: a Citus worker node did not answer ({primary}). The statement rolled back, "
            "nothing was changed; `opsconsole db status` shows the nodes. Try again once the node is back."
        )
    if is_disconnect(exc):
        return ConnectionProblem(
            f"Cannot {what}: the database connection was lost ({primary}). Its open transaction rolled "
            "back; try again once the server answers."
        )
    if fallback is not None:
        return fallback(f"Cannot {what}: {primary}.")
    return None


# -- which database errors are worth sending again ---------------------------------------------------


def is_disconnect(exc: BaseException) -> bool:
    """Errors that mean the connection (or the server) is gone, as opposed to a bad query.

    AdminShutdown (a fast restart, pg_terminate_backend), CannotConnectNow (the server is starting),
    a closed socket, a refused connection: yes. A statement timeout (QueryCanceled) or a lock
    timeout (LockNotAvailable) is a per-query problem on a healthy link: no."""
    if isinstance(exc, ConnectionProblem | psycopg.InterfaceError):
        return True
    if isinstance(exc, psycopg.OperationalError):
        if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
            return False
        return not is_node_unreachable(exc)  # the coordinator's link is fine
    return False


# Citus's words when a statement needed a worker node it could not reach (restarting, down): its own
# ("failure on connection marked as essential: host:port", an internal error XX000 with no code of
# its own; "connection to the remote node user@host:port failed ..."), or libpq's, relayed as XX000
# when the node's link broke mid-statement (seen: "terminating connection due to administrator
# command" while the node shut down). One server never raises the relayed ones as XX000: there they
# are a lost connection of the session itself (57P01 and the like, OperationalError).
_NODE_UNREACHABLE = (
    "failure on connection marked as essential",
    "connection to the remote node",
    "connection establishment for node",
    "could not establish any connections to the node",
)
_NODE_LINK_LOST = (
    "terminating connection due to administrator command",
    "server closed the connection unexpectedly",
    "could not receive data from server",
    "no connection to the server",
    "connection not open",
    "the database system is shutting down",
    "the database system is starting up",
)


def is_node_unreachable(exc: BaseException) -> bool:
    """A Citus worker node the statement needed could not be reached, on a healthy link to the
    coordinator: the statement rolled back whole, and the same work can be sent again."""
    if not isinstance(exc, psycopg.Error) or isinstance(exc, psycopg.InterfaceError):
        return False
    message = ((exc.diag.message_primary or str(exc)) if exc.diag else str(exc)).strip()
    if message.startswith(_NODE_UNREACHABLE):
        return True
    return isinstance(exc, psycopg.errors.InternalError_) and message.lower().startswith(_NODE_LINK_LOST)


def unreachable_node(exc: BaseException) -> str | None:
    """The host:port of the Citus worker node that did not answer, from Citus's message."""
    if not is_node_unreachable(exc):
        return None
    found = re.search(r"([^\s@:]+:\d+)", exc.diag.message_primary or str(exc))
    return found.group(1) if found else None


def is_transient(exc: BaseException) -> bool:
    """Worth sending again after a pause: the server or the link went away, or a Citus node did."""
    return is_disconnect(exc) or is_node_unreachable(exc)


@contextmanager
def database_errors(
    what: str, *, objects: str = "the opsconsole schema", fallback: type[OpsError] | None = None
) -> Iterator[None]:
    """Raise from_database()'s sentence instead of the database error, when it has one."""
    try:
        yield
    except psycopg.Error as exc:
        problem = from_database(exc, what, objects=objects, fallback=fallback)
        if problem is None:
            raise
        raise problem from None
