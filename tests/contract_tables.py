"""Stand-ins for tables other areas own, created in a test database only when the real migration has
not been merged yet.

Each stand-in has exactly the columns the shared contract (the brief) and the spec fix, so the data
area's code is exercised against the same shape it will meet once the pipeline, lakehouse and catalog
are installed. When the real table exists, nothing is created and the tests run against it.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import tuple_row

STANDINS = {
    "financial_transactions_staging": """
        CREATE TABLE financial_transactions_staging (
            staging_id            bigserial PRIMARY KEY,
            transaction_id        bigint,
            account_id            bigint,
            transaction_timestamp timestamptz(6),
            amount                numeric(20,4),
            transaction_type      varchar(50),
            reference_data        jsonb,
            batch_id              varchar(100),
            ingestion_timestamp   timestamptz NOT NULL DEFAULT now(),
            processing_status     varchar(20) NOT NULL DEFAULT 'pending',
            error_message         text,
            retry_count           integer NOT NULL DEFAULT 0
        )""",
    "lakehouse_customers": """
        CREATE TABLE lakehouse_customers (
            customer_id    bigint NOT NULL,
            customer_data  jsonb,
            effective_from timestamptz NOT NULL,
            effective_to   timestamptz,
            version_number integer NOT NULL,
            operation_type varchar(10) CHECK (operation_type IN ('INSERT', 'UPDATE', 'DELETE')),
            transaction_id bigint,
            created_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (customer_id, version_number)
        )""",
    "data_lineage": """
        CREATE TABLE data_lineage (
            lineage_id           serial PRIMARY KEY,
            source_table         varchar(200),
            source_column        varchar(100),
            target_table         varchar(200),
            target_column        varchar(100),
            transformation_logic text,
            pipeline_name        varchar(100),
            created_at           timestamptz NOT NULL DEFAULT now()
        )""",
    "schema_evolution_log": """
        CREATE TABLE schema_evolution_log (
            evolution_id        serial PRIMARY KEY,
            table_name          varchar(100),
            schema_version      integer,
            evolution_type      varchar(50),
            ddl_statement       text,
            backward_compatible boolean,
            applied_at          timestamptz NOT NULL DEFAULT now(),
            applied_by          varchar(100)
        )""",
}


def ensure(conn: psycopg.Connection, *names: str) -> list[str]:
    """Create the named stand-ins that do not exist; returns those created."""
    created = []
    cur = conn.cursor(row_factory=tuple_row)
    for name in names or tuple(STANDINS):
        row = cur.execute("SELECT to_regclass(%s) IS NULL", (name,)).fetchone()
        if row and row[0]:
            conn.execute(STANDINS[name])
            created.append(name)
    return created
