"""The schema runner: versioned migrations first, then the repeatable definitions.

sql/migrations/NNNN_name.sql are versioned: tables, indexes, data moves; each runs once in its own
transaction and is frozen once released (the ledger opsconsole_migrations keeps its sha256). A file
whose first line reads `-- replaces: 0001 0002 ...` is a baseline: a squash of released files. On a
database whose ledger holds every replaced version it is recorded without running; on a fresh one it
runs; a database holding only some of them is refused (upgrade with the previous release first).
A file with the line `-- opsconsole:no-transaction` in its header runs statement by statement outside
a transaction (CREATE INDEX CONCURRENTLY on a live table needs that) and must be safe to run again.

sql/definitions/NN_area.sql are repeatable: every function, view, trigger and the grant policy, one
current definition each. After the versioned pass, when any definition file's checksum differs from
the ledger (opsconsole_definitions) or a versioned file was applied, ALL definition files are applied
again in name order in one transaction (cross-file dependencies stay simple), and recorded.

Before changing anything the runner checks the history against the files and refuses, with one
sentence and nothing changed, when an applied versioned file was edited or an applied file is missing
and no baseline replaces it. It takes an advisory lock (waiting at most `lock_timeout`, which also
bounds every lock its DDL waits for) and pins search_path for its session.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.rows import tuple_row

from opsconsole.db import citus
from opsconsole.errors import MigrationProblem, MigrationRefused

LOCK_KEY = 7_291_004_117  # pg_advisory_lock key for migrations
LOCK_TIMEOUT = "10s"
# pg_catalog is searched first implicitly; objects are created in public; pg_temp is searched last.
SEARCH_PATH = "public, pg_temp"
FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
DEFINITION_RE = re.compile(r"^(\d{2})_([a-z0-9_]+)\.sql$")
DOLLAR_RE = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")
NO_TRANSACTION = "-- opsconsole:no-transaction"
REPLACES_RE = re.compile(r"\A--\s*replaces:\s*((?:\d{4}\s*)+)$", re.MULTILINE)


def sql_dir() -> Path:
    """sql/ inside the installed package, or at the repository root in a checkout."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[1] / "sql", here.parents[3] / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise MigrationProblem("The sql/migrations directory is missing from this installation.")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def no_transaction(self) -> bool:
        """Marked to run statement by statement outside a transaction (for CREATE INDEX CONCURRENTLY)."""
        return any(line.strip() == NO_TRANSACTION for line in self.text.splitlines()[:20])

    @property
    def replaces(self) -> tuple[str, ...]:
        """The released versions this baseline stands for (empty for an ordinary migration)."""
        with self.path.open(encoding="utf-8") as f:
            first = f.readline().strip()
        match = REPLACES_RE.match(first)
        return tuple(match.group(1).split()) if match else ()


@dataclass(frozen=True)
class Definition:
    """A repeatable definitions file (sql/definitions/NN_area.sql)."""

    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def version(self) -> str:
        return "R"


@dataclass(frozen=True)
class MigrationState:
    migration: Migration
    applied_at: str | None
    edited: bool
    recorded: bool = False  # a baseline recorded without running (its replaced files were applied)

    @property
    def state(self) -> str:
        if self.applied_at is None:
            return "pending"
        if self.edited:
            return "edited"
        return "baselined" if self.recorded else "applied"


@dataclass(frozen=True)
class ReplacedState:
    """A released file that is no longer in the tree: applied here, and squashed into `by`."""

    version: str
    name: str
    applied_at: str
    by: str

    @property
    def state(self) -> str:
        return f"replaced by {self.by}"


@dataclass(frozen=True)
class DefinitionState:
    definition: Definition
    applied_at: str | None
    changed: bool

    @property
    def state(self) -> str:
        if self.applied_at is None:
            return "pending"
        return "changed" if self.changed else "applied"


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or sql_dir() / "migrations"
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = FILE_RE.match(path.name)
        if not match:
            raise MigrationProblem(f"{path.name} is not named NNNN_name.sql; rename it.")
        found.append(Migration(match.group(1), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationProblem("Two migration files share a version number; renumber one.")
    return found


def discover_definitions(directory: Path | None = None) -> list[Definition]:
    """The repeatable files in apply order (by name); none when the directory does not exist."""
    directory = directory if directory is not None else sql_dir() / "definitions"
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.sql")):
        if not DEFINITION_RE.match(path.name):
            raise MigrationProblem(f"{path.name} is not named NN_area.sql; rename it.")
        found.append(Definition(path.stem, path))
    return found


def digest(directory: Path | None = None, definitions: Path | None = None) -> str:
    """One hash over every schema file (names and contents): equal digests, equal schemas."""
    h = hashlib.sha256()
    for item in [*discover(directory), *_definitions(directory, definitions)]:
        h.update(item.path.name.encode())
        h.update(item.checksum.encode())
    return h.hexdigest()


def _definitions(directory: Path | None, definitions: Path | None) -> list[Definition]:
    """Definitions beside the default migrations; a custom migrations directory gets only those given."""
    if definitions is not None:
        return discover_definitions(definitions)
    if directory is None:
        return discover_definitions(sql_dir() / "definitions")
    return []


LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS public.opsconsole_migrations (
    version     text PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    applied_by  text NOT NULL DEFAULT session_user,
    duration_ms numeric NOT NULL
);
-- 'applied' ran the file; 'recorded' marks a baseline whose replaced files had all run.
ALTER TABLE public.opsconsole_migrations
    ADD COLUMN IF NOT EXISTS how text NOT NULL DEFAULT 'applied';
CREATE TABLE IF NOT EXISTS public.opsconsole_definitions (
    name        text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    applied_by  text NOT NULL DEFAULT session_user,
    duration_ms numeric NOT NULL
);
"""


@dataclass(frozen=True)
class _Applied:
    name: str
    checksum: str
    applied_at: str
    how: str


def _rows(conn: psycopg.Connection, query: str, params: tuple | None = None) -> list[tuple]:
    """Rows as tuples whatever row factory the caller's connection uses."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchall()


def _ledger_complete(conn: psycopg.Connection) -> bool:
    """Both ledger tables exist with today's columns (so LEDGER_DDL, itself DDL, can be skipped)."""
    ((complete,),) = _rows(
        conn,
        "SELECT to_regclass('public.opsconsole_definitions') IS NOT NULL AND EXISTS ("
        " SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('public.opsconsole_migrations')"
        " AND attname = 'how' AND NOT attisdropped)",
    )
    return complete


def _ledger(conn: psycopg.Connection) -> tuple[dict[str, _Applied], dict[str, tuple[str, str]]]:
    """(versioned rows by version, definition rows by name); empty when the ledger does not exist."""
    ((has_versions, has_definitions, has_how),) = _rows(
        conn,
        "SELECT to_regclass('public.opsconsole_migrations') IS NOT NULL,"
        " to_regclass('public.opsconsole_definitions') IS NOT NULL,"
        " EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('public.opsconsole_migrations')"
        "         AND attname = 'how' AND NOT attisdropped)",
    )
    versions: dict[str, _Applied] = {}
    if has_versions:
        how = "how" if has_how else "'applied'"
        for v, n, c, at, h in _rows(
            conn, f"SELECT version, name, checksum, applied_at::text, {how} FROM public.opsconsole_migrations"
        ):
            versions[v] = _Applied(n, c, at, h)
    definitions: dict[str, tuple[str, str]] = {}
    if has_definitions:
        for n, c, at in _rows(
            conn, "SELECT name, checksum, applied_at::text FROM public.opsconsole_definitions"
        ):
            definitions[n] = (c, at)
    return versions, definitions


def _replaced_by(files: list[Migration]) -> dict[str, str]:
    """version -> the baseline file that replaces it."""
    return {v: m.path.name for m in files for v in m.replaces}


def check_history(files: list[Migration], applied: dict[str, _Applied]) -> None:
    """Refuse (MigrationRefused) when the database's history does not match the files."""
    by_version = {m.version: m for m in files}
    replaced = _replaced_by(files)
    for version, row in sorted(applied.items()):
        m = by_version.get(version)
        if m is None:
            if version not in replaced:
                raise MigrationRefused(
                    f"Migration {version}_{row.name}.sql is applied in this database but missing from "
                    "sql/migrations and no baseline replaces it; restore the file (nothing was changed)."
                )
        elif m.checksum != row.checksum:
            raise MigrationRefused(
                f"Migration {m.path.name} was edited after it was applied here (its checksum differs); "
                "restore it and put the change in a new migration (nothing was changed)."
            )
    for m in files:
        wanted = m.replaces
        if not wanted or m.version in applied:
            continue
        have = [v for v in wanted if v in applied]
        if have and len(have) != len(wanted):
            missing = " ".join(v for v in wanted if v not in applied)
            raise MigrationRefused(
                f"This database is part-way through the release that {m.path.name} replaces (missing "
                f"{missing}); upgrade it with the previous release first (nothing was changed)."
            )


def status(
    conn: psycopg.Connection, directory: Path | None = None, definitions: Path | None = None
) -> list[MigrationState | ReplacedState | DefinitionState]:
    """Every versioned file, every replaced released file, then every definitions file, with state."""
    applied, defs_applied = _ledger(conn)
    files = discover(directory)
    replaced = _replaced_by(files)
    states: list[MigrationState | ReplacedState | DefinitionState] = []
    present = {m.version for m in files}
    for version in sorted(v for v in applied if v not in present):
        row = applied[version]
        states.append(ReplacedState(version, row.name, row.applied_at, replaced.get(version, "nothing")))
    for m in files:
        row = applied.get(m.version)
        if row is None:
            states.append(MigrationState(m, None, False))
        else:
            states.append(
                MigrationState(m, row.applied_at, row.checksum != m.checksum, row.how == "recorded")
            )
    for d in _definitions(directory, definitions):
        got = defs_applied.get(d.name)
        if got is None:
            states.append(DefinitionState(d, None, False))
        else:
            states.append(DefinitionState(d, got[1], got[0] != d.checksum))
    return states


def _lock(conn: psycopg.Connection, lock_timeout: str) -> None:
    conn.execute("SELECT set_config('lock_timeout', %s, false)", (lock_timeout,))
    conn.execute("SELECT set_config('search_path', %s, false)", (SEARCH_PATH,))
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    except psycopg.errors.LockNotAvailable:
        holder = _rows(
            conn,
            "SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objid = %s AND l.database = ("
            "   SELECT oid FROM pg_database WHERE datname = current_database())",
            (LOCK_KEY & 0xFFFFFFFF,),
        )
        who = f" (pid {holder[0][0]}, {holder[0][1] or 'no application_name'})" if holder else ""
        raise MigrationRefused(
            f"Another migrator holds the migration lock{who} and did not finish within {lock_timeout}; "
            "try again when it is done (nothing was changed)."
        ) from None


def _run(conn: psycopg.Connection, what: str, sql: bytes) -> None:
    """Execute one file's text inside the caller's transaction, turning errors into one sentence."""
    try:
        conn.execute(sql)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise MigrationProblem(
            f"{what} needs a privilege this role lacks ({exc.diag.message_primary}); "
            "run migrations as the database owner or an admin."
        ) from None
    except psycopg.errors.LockNotAvailable:
        raise MigrationProblem(
            f"{what} waited longer than the lock timeout for a table lock held by other sessions and was "
            "rolled back; try again when the database is quieter."
        ) from None
    except psycopg.Error as exc:
        diag = exc.diag
        where = f" at {diag.context.splitlines()[0]}" if diag.context else ""
        raise MigrationProblem(
            f"{what} failed and was rolled back: {diag.message_primary or exc}{where}."
        ) from None


def migrate(
    conn: psycopg.Connection,
    directory: Path | None = None,
    definitions: Path | None = None,
    *,
    lock_timeout: str = LOCK_TIMEOUT,
) -> list[tuple[Migration | Definition, float | None]]:
    """Apply pending migrations, then the definitions when needed.

    Returns what was done in order: (file, duration in ms), with None as the duration of a baseline
    recorded without running. `directory` defaults to sql/migrations with sql/definitions beside it;
    a custom `directory` gets definitions only when `definitions` is given.
    """
    if not conn.autocommit:
        raise MigrationProblem("migrate() needs an autocommit connection; it manages transactions.")
    files = discover(directory)
    defs = _definitions(directory, definitions)
    done: list[tuple[Migration | Definition, float | None]] = []
    ((saved_path, saved_timeout, saved_statement),) = _rows(
        conn,
        "SELECT current_setting('search_path'), current_setting('lock_timeout'),"
        " current_setting('statement_timeout')",
    )
    try:
        _lock(conn, lock_timeout)
    except BaseException:
        _restore(conn, saved_path, saved_timeout, saved_statement)
        raise
    try:
        applied, defs_applied = _ledger(conn)
        check_history(files, applied)
        # With Citus: roles that exist on the coordinator but not on the workers (docs/scaling.md)
        citus.sync_platform_roles(conn)
        if not _ledger_complete(conn):
            conn.execute(LEDGER_DDL)
        for m in files:
            if m.version in applied:
                continue
            started = time.perf_counter()
            if m.no_transaction:
                _run_statements(conn, m)
                elapsed = (time.perf_counter() - started) * 1000
                _record(conn, m, elapsed)
                _restore(conn, SEARCH_PATH, lock_timeout, saved_statement)  # as below
                done.append((m, elapsed))
                continue
            with conn.transaction():
                if m.replaces and all(v in applied for v in m.replaces):
                    conn.execute(
                        "INSERT INTO public.opsconsole_migrations"
                        " (version, name, checksum, duration_ms, how) VALUES (%s, %s, %s, 0, 'recorded')",
                        (m.version, m.name, m.checksum),
                    )
                    done.append((m, None))
                    continue
                _run_file(conn, f"Migration {m.path.name}", m.text, citus.installed(conn))
                elapsed = (time.perf_counter() - started) * 1000
                _record(conn, m, elapsed)
            # A file's own SET lock_timeout/statement_timeout (squawk asks for them) ends with the file:
            # the next file, the definitions, the distribution and the caller's session get the runner's.
            _restore(conn, SEARCH_PATH, lock_timeout, saved_statement)
            done.append((m, elapsed))
        stale = any(defs_applied.get(d.name, ("",))[0] != d.checksum for d in defs)
        gone = set(defs_applied) - {d.name for d in defs}
        ran_versioned = any(ms is not None for _, ms in done)
        if defs and (stale or gone or ran_versioned):
            done.extend(_apply_definitions(conn, defs))
        # With Citus: distribute what sql/citus/distribute.sql lists (a no-op elsewhere, and when done).
        citus.distribute(conn, sql_dir())
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        _restore(conn, saved_path, saved_timeout, saved_statement)
    return done


def _restore(conn: psycopg.Connection, search_path: str, lock_timeout: str, statement_timeout: str) -> None:
    """Set the session's search_path and timeouts (the caller's own, given back at the end)."""
    conn.execute(
        "SELECT set_config('search_path', %s, false), set_config('lock_timeout', %s, false),"
        " set_config('statement_timeout', %s, false)",
        (search_path, lock_timeout, statement_timeout),
    )


def _record(conn: psycopg.Connection, m: Migration, elapsed: float) -> None:
    conn.execute(
        "INSERT INTO public.opsconsole_migrations (version, name, checksum, duration_ms)"
        " VALUES (%s, %s, %s, %s)",
        (m.version, m.name, m.checksum, round(elapsed, 1)),
    )


def _run_file(conn: psycopg.Connection, what: str, text: str, per_statement: bool) -> None:
    """One file inside the caller's transaction: as one string, or statement by statement on Citus,
    which sends the whole query string of some DDL on to the workers (a file of many statements
    there failed with "cannot insert multiple commands into a prepared statement")."""
    if not per_statement:
        _run(conn, what, text.encode())
        return
    for statement in split_statements(text):
        _run(conn, what, statement.encode())


def _run_statements(conn: psycopg.Connection, m: Migration) -> None:
    """A no-transaction migration: each statement on its own (CREATE INDEX CONCURRENTLY needs that).

    A failure leaves the statements before it applied and the file unrecorded, so such a file must be
    safe to run again (IF NOT EXISTS; drop an INVALID index left by a failed concurrent build).
    """
    statements = split_statements(m.text)
    for n, statement in enumerate(statements, 1):
        try:
            _run(conn, f"Statement {n} of {len(statements)} of {m.path.name}", statement.encode())
        except MigrationProblem as exc:
            raise MigrationProblem(
                f"{exc.message} It ran outside a transaction (no-transaction migration): the statements "
                "before it stay applied; fix the file and migrate again."
            ) from None


def split_statements(text: str) -> list[str]:
    """Top-level SQL statements of `text`: semicolons inside quotes, dollar quotes and comments do not
    count. Empty statements (comments only) are dropped."""
    out, start, i, n = [], 0, 0, len(text)
    while i < n:
        ch = text[i]
        if text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if ch in ("'", '"'):
            j = i + 1
            while j < n and not (text[j] == ch and not text.startswith(ch * 2, j)):
                j += 2 if text.startswith(ch * 2, j) else 1
            i = j + 1
            continue
        if ch == "$" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            tag = DOLLAR_RE.match(text, i)
            if tag:
                j = text.find(tag.group(0), tag.end())
                i = n if j < 0 else j + len(tag.group(0))
                continue
        if ch == ";":
            out.append(text[start : i + 1])
            start = i + 1
        i += 1
    out.append(text[start:])
    return [s.strip() for s in out if _has_code(s)]


def _has_code(statement: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in statement.splitlines())


def _apply_definitions(conn: psycopg.Connection, defs: list[Definition]) -> list[tuple[Definition, float]]:
    """Every definitions file in order in ONE transaction, then the ledger rewritten to match."""
    done: list[tuple[Definition, float]] = []
    on_citus = citus.installed(conn)
    with conn.transaction():
        citus.allow_shard_triggers(conn)  # CREATE OR REPLACE TRIGGER on distributed tables
        for d in defs:
            started = time.perf_counter()
            _run_file(conn, f"Definitions file {d.path.name}", d.text, on_citus)
            done.append((d, (time.perf_counter() - started) * 1000))
        conn.execute(
            "DELETE FROM public.opsconsole_definitions WHERE NOT (name = ANY (%s))", ([d.name for d in defs],)
        )
        for d, ms in done:
            conn.execute(
                "INSERT INTO public.opsconsole_definitions (name, checksum, duration_ms) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum,"
                " applied_at = clock_timestamp(), applied_by = session_user,"
                " duration_ms = EXCLUDED.duration_ms",
                (d.name, d.checksum, round(ms, 1)),
            )
    return done


def reset(conn: psycopg.Connection) -> None:
    """Drop everything the migrations created in this database (schema public and event triggers)."""
    with conn.transaction():
        for (name,) in conn.execute(
            "SELECT evtname FROM pg_event_trigger WHERE evtname LIKE 'opsconsole%'"
        ).fetchall():
            conn.execute(f'DROP EVENT TRIGGER IF EXISTS "{name}"')
        if citus.installed(conn):
            citus.reset_platform(conn)  # Citus keeps views of its own in public
            return
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")
        conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
