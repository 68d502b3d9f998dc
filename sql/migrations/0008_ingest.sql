-- 0008 file ingestion: the checksum ledger of loaded files and the rows that could not be loaded.
--
-- `opsconsole ingest` loads each file in one transaction: its ingest_files row, its good rows in the
-- target table and its rejected rows here all commit together, or none of them do.

CREATE TABLE ingest_files (
    file_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sha256         char(64) NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    path           text NOT NULL,                 -- as given on the command line, made absolute
    table_name     text NOT NULL,                 -- the target, schema-qualified
    file_format    text NOT NULL CHECK (file_format IN ('parquet', 'csv', 'json', 'ndjson', 'avro')),
    size_bytes     bigint NOT NULL CHECK (size_bytes >= 0),
    status         text NOT NULL CHECK (status IN ('loaded', 'refused')),
    rows_total     bigint NOT NULL DEFAULT 0,
    rows_loaded    bigint NOT NULL DEFAULT 0,
    rows_rejected  bigint NOT NULL DEFAULT 0,
    forced         boolean NOT NULL DEFAULT false,  -- loaded again with --force after an earlier load
    note           text,                            -- why a file was refused, columns added, ...
    loaded_at      timestamptz NOT NULL DEFAULT now(),
    loaded_by      text NOT NULL DEFAULT session_user,
    duration_ms    numeric(12,3)
);
COMMENT ON TABLE ingest_files IS
    'One row per ingest attempt that committed: a file (by sha256) loaded into a table, or refused.';
-- "Was this content already loaded into this table?" is the question asked before every load.
CREATE INDEX ingest_files_sha_table_idx ON ingest_files (sha256, table_name) WHERE status = 'loaded';
CREATE INDEX ingest_files_loaded_at_idx ON ingest_files (loaded_at DESC);

CREATE TABLE ingest_rejects (
    reject_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    file_id     bigint NOT NULL REFERENCES ingest_files (file_id) ON DELETE CASCADE,
    file_path   text NOT NULL,
    table_name  text NOT NULL,
    row_number  bigint NOT NULL CHECK (row_number >= 1),  -- 1-based data row in the file (header excluded)
    reason      text NOT NULL,                            -- 'amount: cannot convert ''abc'' to numeric(20,4)'
    raw_row     jsonb NOT NULL,                           -- the row as read from the file
    rejected_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ingest_rejects IS 'Rows of ingested files that could not be converted or broke a constraint.';
CREATE INDEX ingest_rejects_file_idx ON ingest_rejects (file_id, row_number);
