"""The console's clock and the one place where times become text.

Every relative time ("3s ago", "oldest pending 4m") and every displayed timestamp goes through the
app's Clock. Tests and screenshots use a FrozenClock: `now()` stands still and displayed timestamps are
shifted onto a fixed instant, so a seeded database gives the same picture on every run.
"""

from __future__ import annotations

import datetime as dt
import time

UTC = dt.UTC


class Clock:
    """Wall clock; timestamps are shown in the local time zone."""

    frozen = False

    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def display(self, ts: dt.datetime) -> dt.datetime:
        return ts.astimezone()

    def since(self, ts: dt.datetime | None) -> float | None:
        """Seconds from ts to now (never negative), None when ts is None."""
        if ts is None:
            return None
        return max(0.0, (self.now() - ts).total_seconds())

    def ago(self, ts: dt.datetime | None) -> str:
        seconds = self.since(ts)
        return "never" if seconds is None else f"{human_duration(seconds)} ago"

    def time(self, ts: dt.datetime | None, seconds: bool = True) -> str:
        if ts is None:
            return "—"
        return self.display(ts).strftime("%H:%M:%S" if seconds else "%H:%M")

    def stamp(self, ts: dt.datetime | None) -> str:
        if ts is None:
            return "—"
        return self.display(ts).strftime("%Y-%m-%d %H:%M:%S")


class FrozenClock(Clock):
    """now() is fixed at `anchor`; timestamps display as if `anchor` were `shown_as` (UTC)."""

    frozen = True

    def __init__(self, anchor: dt.datetime, shown_as: dt.datetime | None = None):
        self.anchor = anchor
        self.shown_as = shown_as or anchor
        self._mono = 1000.0

    def now(self) -> dt.datetime:
        return self.anchor

    def monotonic(self) -> float:
        return self._mono

    def display(self, ts: dt.datetime) -> dt.datetime:
        return (ts + (self.shown_as - self.anchor)).astimezone(UTC)


def human_duration(seconds: float) -> str:
    """Compact: 0s, 42s, 3m, 3m 20s, 2h 5m, 3d 4h."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m}m {r}s" if r and m < 10 else f"{m}m"
    if s < 86400:
        h, r = divmod(s, 3600)
        return f"{h}h {r // 60}m" if r // 60 else f"{h}h"
    d, r = divmod(s, 86400)
    return f"{d}d {r // 3600}h" if r // 3600 else f"{d}d"
