"""When the console lets Python's cyclic garbage collector do a full collection.

A full (generation 2) collection walks every tracked object. A Textual screen keeps thousands of
rendered lines, and each Textual Strip carries seven small caches, so with six panes shown the heap
holds ~100k tracked objects and a full collection stops the UI thread for 50-100 ms on this machine:
a key pressed at that moment waits for it (P8, key press -> screen update, p95 < 100 ms).

Almost all of that memory is freed by reference counting anyway; the collector is only needed for
reference cycles. So, while the console runs:
- the objects that live as long as the app (its screens and widgets, mounted up front) are moved
  out of the collector's sight (`gc.freeze()`),
- the automatic full collection is switched off (young generations are still collected as usual),
- and a full collection runs at a quiet moment instead: no key or mouse input for QUIET_S, at most
  every EVERY_S; if the user never pauses, at least every AT_LEAST_S regardless.
Everything is put back when the app stops (tests run many apps in one process).
"""

from __future__ import annotations

import gc
import time

EVERY_S = 30.0
QUIET_S = 2.0
AT_LEAST_S = 300.0
NEVER = 1_000_000_000  # a generation-2 threshold the collector never reaches


class GcPolicy:
    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.active = False
        self.collections = 0
        self._saved: tuple[int, int, int] | None = None
        self._last_input = clock()
        self._last_full = clock()

    def start(self) -> None:
        """Freeze what exists now (the app, mounted) and take over full collections."""
        if self.active:
            return
        gc.freeze()
        self._saved = gc.get_threshold()
        gc.set_threshold(self._saved[0], self._saved[1], NEVER)
        self._last_full = self.clock()
        self.active = True

    def stop(self) -> None:
        if not self.active:
            return
        self.active = False
        if self._saved is not None:
            gc.set_threshold(*self._saved)
        gc.unfreeze()

    def input_seen(self) -> None:
        self._last_input = self.clock()

    def due(self) -> bool:
        if not self.active:
            return False
        now = self.clock()
        since_full = now - self._last_full
        quiet = now - self._last_input >= QUIET_S
        return (quiet and since_full >= EVERY_S) or since_full >= AT_LEAST_S

    def tick(self) -> bool:
        """Called every second on the UI thread: collect if due. Returns whether it collected."""
        if not self.due():
            return False
        gc.collect()
        self._last_full = self.clock()
        self.collections += 1
        return True
