"""Errors a person can meet: each carries one sentence saying what happened and what to do.

The CLI prints the sentence and exits with the error's code; the console shows it in a banner.
Nothing that derives from OpsError should ever reach the user as a traceback.
"""

from __future__ import annotations


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


class PermissionProblem(OpsError):
    """The connected role lacks a privilege the action needs."""

    exit_code = 3
