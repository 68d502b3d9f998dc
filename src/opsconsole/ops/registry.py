"""The operator action registry and the capability probe that decides which actions may run.

One registry feeds the console's key bindings, its footer, the `?` help, the command palette and the
read-only switch. Each action names the database objects it needs; the probe (run on connect, with a
short statement_timeout) tells which exist and what the connected role may do with them, so an
action that cannot work is hidden with a sentence that says why instead of failing when pressed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

# Every relation and function the console reads or calls, probed in one round trip.
KNOWN_RELATIONS: tuple[str, ...] = (
    "ops_audit_log",
    "crm_customers",
    "erp_orders",
    "ecommerce_events",
    "financial_transactions",
    "financial_transactions_staging",
    "financial_transactions_processed",
    "financial_processing_monitor",
    "dq_rule_definitions",
    "data_quality_metrics",
    "dq_latest_results",
    "customer_360_mv",
    "customers_masked",
    "customer_360_masked",
    "lakehouse_customers",
    "data_catalog",
    "data_lineage",
    "financial_processing_rollup",
    "schema_evolution_log",
)
KNOWN_FUNCTIONS: tuple[str, ...] = (
    "process_financial_batch",
    "process_financial_batch_detail",
    "retry_failed",
    "retry_scope_count",
    "park_dead_letters",
    "unpark_dead_letters",
    "backlog_what_if",
    "pause_processing",
    "resume_processing",
    "dq_run",
    "search_customers",
    "lookup_customer",
    "refresh_customer_360_incremental",
    "time_travel_customers",
    "refresh_data_catalog",
    "lineage_upstream",
    "lineage_downstream",
    "ops_timeline",
)

PROBE_SQL = """
SELECT 'rel' AS kind, c.relname::text AS name, c.relkind::text AS detail, NULL::text[] AS argnames,
       has_table_privilege(c.oid, 'SELECT') AS allowed
FROM pg_class c
WHERE c.relname = ANY(%(rels)s) AND c.relnamespace = ANY(
        SELECT n.oid FROM pg_namespace n WHERE n.nspname = ANY(current_schemas(false)))
UNION ALL
SELECT 'fn', p.proname::text, pg_get_function_identity_arguments(p.oid), p.proargnames::text[],
       has_function_privilege(p.oid, 'EXECUTE')
FROM pg_proc p
WHERE p.proname = ANY(%(fns)s) AND p.pronamespace = ANY(
        SELECT n.oid FROM pg_namespace n WHERE n.nspname = ANY(current_schemas(false)))
"""

SERVER_SQL = """
SELECT current_user AS role, current_database() AS database,
       current_setting('server_version') AS version,
       current_setting('server_version_num')::int AS version_num,
       pg_is_in_recovery() AS in_recovery,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser
"""


@dataclass(frozen=True)
class FunctionInfo:
    name: str
    arguments: str  # identity arguments, e.g. "integer, interval"
    argnames: tuple[str, ...]
    executable: bool


@dataclass
class Capabilities:
    """What the connected database holds and what the connected role may do with it."""

    role: str = "?"
    database: str = "?"
    version: str = "?"
    version_num: int = 0
    in_recovery: bool = False
    superuser: bool = False
    relations: dict[str, tuple[str, bool]] = field(default_factory=dict)  # name -> (relkind, can_select)
    functions: dict[str, list[FunctionInfo]] = field(default_factory=dict)

    @property
    def short_version(self) -> str:
        return self.version.split(" ")[0]

    def has_relation(self, name: str) -> bool:
        return name in self.relations

    def has_function(self, name: str) -> bool:
        return name in self.functions

    def why_not_readable(self, names: tuple[str, ...]) -> str | None:
        """None when every relation exists and is readable, else one sentence saying why not."""
        for name in names:
            if name not in self.relations:
                return missing(name)
            if not self.relations[name][1]:
                return f"role {self.role} lacks SELECT on {name}"
        return None

    def why_not_callable(self, names: tuple[str, ...]) -> str | None:
        for name in names:
            infos = self.functions.get(name)
            if not infos:
                return missing(name, function=True)
            if not any(f.executable for f in infos):
                return f"role {self.role} lacks EXECUTE on {name}()"
        return None


def missing(name: str, function: bool = False) -> str:
    what = f"{name}()" if function else name
    return f"{what} does not exist (run `opsconsole db migrate`)"


def probe(conn: psycopg.Connection) -> Capabilities:
    """One round trip for the server facts, one for the objects and privileges."""
    with conn.cursor() as cur:
        cur.execute(SERVER_SQL)
        role, database, version, version_num, in_recovery, superuser = cur.fetchone()
        caps = Capabilities(role, database, version, version_num, in_recovery, bool(superuser))
        cur.execute(PROBE_SQL, {"rels": list(KNOWN_RELATIONS), "fns": list(KNOWN_FUNCTIONS)})
        for kind, name, detail, argnames, allowed in cur.fetchall():
            if kind == "rel":
                caps.relations.setdefault(name, (detail, bool(allowed)))
            else:
                info = FunctionInfo(name, detail or "", tuple(argnames or ()), bool(allowed))
                caps.functions.setdefault(name, []).append(info)
    return caps


# ---------------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionSpec:
    """One operator action. `panes` are where its key works (it is in the palette everywhere)."""

    id: str
    title: str
    key: str
    panes: tuple[str, ...]
    description: str
    needs_functions: tuple[str, ...] = ()
    needs_relations: tuple[str, ...] = ()
    mutating: bool = True  # hidden by --read-only
    footer_label: str = ""

    @property
    def label(self) -> str:
        return self.footer_label or self.title

    def unavailable_reason(self, caps: Capabilities | None, read_only: bool) -> str | None:
        """None when the action may run; otherwise why not, as a short sentence."""
        if read_only and self.mutating:
            return "the console runs read-only (--read-only)"
        if caps is None:
            return "not connected to the database yet"
        if self.mutating and caps.in_recovery:
            return "the server is a read-only standby"
        # (no record_audit: each action function writes its own audit row, and no group role may call it)
        reason = caps.why_not_callable(self.needs_functions if self.mutating else ())
        if reason:
            return reason
        return caps.why_not_readable(self.needs_relations)


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec(
        "process_batch",
        "Process one batch now",
        "b",
        ("monitor", "backlog"),
        "Run process_financial_batch() once on a batch size you choose.",
        needs_functions=("process_financial_batch",),
        needs_relations=("financial_transactions_staging",),
        footer_label="Process batch",
    ),
    ActionSpec(
        "continuous",
        "Start/stop continuous processing",
        "c",
        ("monitor", "backlog"),
        "Run the pipeline worker's claim loop in the background until stopped, with live counters.",
        needs_functions=("process_financial_batch_detail",),
        needs_relations=("financial_transactions_staging",),
        footer_label="Continuous",
    ),
    ActionSpec(
        "retry_failed",
        "Retry failed rows",
        "r",
        ("backlog",),
        "Re-queue failed (optionally dead-lettered) staging rows: the selection, an error code, a batch "
        "or everything, through retry_failed().",
        needs_functions=("retry_failed", "retry_scope_count"),
        needs_relations=("financial_transactions_staging",),
        footer_label="Retry",
    ),
    ActionSpec(
        "park_dead_letters",
        "Park dead letters",
        "k",
        ("backlog",),
        "Set dead letters aside (parked: never claimed or retried): the selection, else what the filter "
        "shows, else the row under the cursor, through park_dead_letters().",
        needs_functions=("park_dead_letters",),
        needs_relations=("financial_transactions_staging",),
        footer_label="Park",
    ),
    ActionSpec(
        "unpark_dead_letters",
        "Bring parked rows back",
        "u",
        ("backlog",),
        "Return parked rows to dead_letter, where a retry can take them (unpark_dead_letters()).",
        needs_functions=("unpark_dead_letters",),
        needs_relations=("financial_transactions_staging",),
        footer_label="Unpark",
    ),
    ActionSpec(
        "what_if",
        "What if: validate now",
        "w",
        ("backlog",),
        "Run the pipeline's validators now on the selection (else what the filter shows, else the cursor "
        "row) in a read-only transaction: how many would pass, by error code.",
        needs_relations=("financial_transactions_staging",),
        mutating=False,
        footer_label="What if",
    ),
    ActionSpec(
        "fleet_pause",
        "Pause/resume processing (every worker)",
        "P",
        ("monitor", "backlog"),
        "Pause or resume processing for the whole fleet: every worker, the CLI's and the consoles', "
        "obeys the flag (pause_processing() / resume_processing()).",
        needs_functions=("pause_processing", "resume_processing"),
        footer_label="Fleet pause",
    ),
    ActionSpec(
        "run_dq",
        "Run all data-quality checks",
        "r",
        ("quality",),
        "Run every active rule as one run (dq_run(), as `opsconsole dq run` does).",
        needs_functions=("dq_run",),
        needs_relations=("dq_rule_definitions",),
        footer_label="Run all",
    ),
    ActionSpec(
        "run_dq_rule",
        "Run one data-quality rule",
        "o",
        ("quality",),
        "Run the rule under the cursor only.",
        needs_functions=("dq_run",),
        needs_relations=("dq_rule_definitions",),
        footer_label="Run rule",
    ),
    ActionSpec(
        "refresh_c360",
        "Refresh customer 360",
        "ctrl+r",
        ("customers",),
        "Run refresh_customer_360_incremental() for the customers whose sources changed.",
        needs_functions=("refresh_customer_360_incremental",),
        footer_label="Refresh 360",
    ),
    ActionSpec(
        "refresh_catalog",
        "Refresh the data catalog",
        "r",
        ("catalog",),
        "Run refresh_data_catalog() and show which columns were added, removed or changed.",
        needs_functions=("refresh_data_catalog",),
        needs_relations=("data_catalog",),
        footer_label="Refresh catalog",
    ),
)

ACTIONS_BY_ID: dict[str, ActionSpec] = {a.id: a for a in ACTIONS}


def actions_for_pane(pane: str) -> list[ActionSpec]:
    return [a for a in ACTIONS if pane in a.panes]
