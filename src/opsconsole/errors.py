"""Errors a person can meet: each carries one sentence saying what happened and what to do.

The CLI prints the sentence and exits with the error's code; the console shows it in a banner.
Nothing that derives from OpsError should ever reach the user as a traceback.
"""

from __future__ import annotations

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


def from_database(
    exc: psycopg.Error,
    what: str,
    *,
    objects: str = "the opsconsole schema",
    fallback: type[OpsError] | None = None,
) -> OpsError | None:
    """The one wording for database errors a person can meet while trying to `what`.

    A missing privilege or a missing object (schema not migrated) always has a sentence; any other
    database error becomes `fallback` when given, and None (not an expected failure) when not.
    """
    primary = (exc.diag.message_primary or str(exc).splitlines()[0]).rstrip(".")
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
    if fallback is not None:
        return fallback(f"Cannot {what}: {primary}.")
    return None


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
