"""Short lock waits with bounded, jittered retries: how maintenance shares tables with the pipeline.

A maintenance step that needs a strong lock (ATTACH, DETACH, DROP of a partition, the advisory lock
that serialises purges) waits at most `lock_timeout` (LOCK_TIMEOUT, 1 s) for it: while it waits,
loaders and claims queue behind it, so the wait bounds their delay. When the wait times out the step
rolls back whole (it changed nothing) and is tried again after a jittered backoff that lets the queue
drain; after `attempts` tries it gives up with one sentence.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from opsconsole.errors import OpsError

T = TypeVar("T")

LOCK_TIMEOUT = "1s"
ATTEMPTS = 8  # 0.25 + 0.5 + 1 + 2 + 4 + 8 + 8 s of backoff at most: about half a minute in all
FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 8.0


class LockBusy(OpsError):
    """A maintenance step could not get its lock within its attempts; nothing of that step changed."""

    exit_code = 4


def with_lock_retry(
    conn: psycopg.Connection,
    what: str,
    step: Callable[[psycopg.Connection], T],
    *,
    attempts: int = ATTEMPTS,
    first_backoff_s: float = FIRST_BACKOFF_S,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `step(conn)` in its own transaction with SET LOCAL lock_timeout; retry on a lock timeout.

    `conn` must be in autocommit mode. Raises LockBusy (one sentence) after `attempts` timeouts."""
    backoff = first_backoff_s
    for attempt in range(1, attempts + 1):
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                return step(conn)
        except psycopg.errors.LockNotAvailable:
            if attempt == attempts:
                break
            sleep(random.uniform(backoff / 2, backoff))
            backoff = min(MAX_BACKOFF_S, backoff * 2)
    raise LockBusy(
        f"Gave up on {what}: another session held a conflicting lock through {attempts} tries of "
        f"{LOCK_TIMEOUT} each (a long transaction? see pg_stat_activity); this step changed nothing."
    )
