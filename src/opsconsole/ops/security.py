"""Roles: grant a login role one of the four opsconsole group roles, and say what a role may do.

The group roles and what each may do are defined in sql/migrations/0013_baseline.sql (the roles and
opsconsole_grant_policy) and sql/definitions/99_grants.sql (opsconsole_apply_grants());
docs/security.md explains them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from opsconsole.errors import OpsError, PermissionProblem

GROUP_ROLES: dict[str, str] = {
    "opsconsole_viewer": "monitor, backlog, DQ results, catalog, lineage, audit log; customers masked",
    "opsconsole_support": "viewer plus customer lookup with PII (every lookup audited)",
    "opsconsole_operator": "viewer plus processing, retries, catalog/DQ/customer 360 refresh",
    "opsconsole_admin": "operator plus DQ rule changes, purges and schema changes",
}


def normalise_role(role: str) -> str:
    """'viewer' and 'opsconsole_viewer' both name the viewer group."""
    name = role.strip().lower()
    return name if name.startswith("opsconsole_") else f"opsconsole_{name}"


@dataclass(frozen=True)
class GrantResult:
    user: str
    role: str
    already_member: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def grant_role(conn: psycopg.Connection, user: str, role: str) -> GrantResult:
    """GRANT <group role> TO <user>, with one sentence for each way it can fail."""
    group = normalise_role(role)
    if group not in GROUP_ROLES:
        choices = ", ".join(r.removeprefix("opsconsole_") for r in GROUP_ROLES)
        raise OpsError(f"Unknown role {role!r}; choose one of: {choices}.")
    found = conn.execute(
        "SELECT (SELECT rolcanlogin FROM pg_roles WHERE rolname = %s), "
        "EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s)",
        (user, group),
    ).fetchone()
    assert found is not None
    can_login, group_exists = found
    if not group_exists:
        raise OpsError(f"Role {group} does not exist on this server; run `opsconsole db migrate` first.")
    if can_login is None:
        raise OpsError(f"There is no database role named {user!r}; create it first (CREATE ROLE ... LOGIN).")
    already = conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (user, group)).fetchone()
    if already and already[0]:
        return GrantResult(user, group, True)
    try:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(user)))
    except psycopg.errors.InsufficientPrivilege:
        raise PermissionProblem(
            f"Your database role may not grant {group}; "
            "connect as a superuser or a role with ADMIN OPTION on it."
        ) from None
    return GrantResult(user, group, False)
