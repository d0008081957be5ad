"""One daemon thread that runs queued calls in order, off the training thread.

MLflow's first call in a process costs seconds (its import, then creating or checking the sqlite
store's tables) and every ``log_metrics`` into sqlite tens of milliseconds on a 2-core machine;
the training loop only appends to a bounded queue here and never waits for MLflow.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Callable

Task = Callable[[], None]


class OrderedWorker:
    """FIFO of callables run by one thread, started on first use.

    * ``submit`` never blocks: past ``max_items`` queued calls a new one is dropped (and
      ``on_drop`` told once) rather than slowing training; ``force=True`` (ending the run) skips
      the bound so that the run is always closed.
    * ``wait`` blocks (bounded) until everything submitted so far has run.
    """

    def __init__(self, name: str, max_items: int = 10_000,
                 on_error: Callable[[BaseException], None] | None = None,
                 on_drop: Callable[[], None] | None = None) -> None:
        self._name = name
        self._max = max(1, max_items)
        self._on_error = on_error
        self._on_drop = on_drop
        self._queue: collections.deque[Task] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.ran = 0

    def submit(self, task: Task, *, force: bool = False) -> bool:
        with self._cond:
            if self._closing:
                return False
            if len(self._queue) >= self._max and not force:
                self.dropped += 1
                first_drop = self.dropped == 1
            else:
                self._queue.append(task)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
                self._cond.notify_all()
                return True
        if first_drop and self._on_drop is not None:
            self._on_drop()
        return False

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not self._busy

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far has run; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                if self._thread is None or not self._thread.is_alive():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is None else min(left, 0.5))
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Run what is queued (bounded), then let the thread end; later submits are refused."""
        ok = self.wait(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        return ok

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                task = self._queue.popleft()
                self._busy = True
            try:
                task()
            except BaseException as exc:  # noqa: BLE001 - the worker must outlive any one call
                if self._on_error is not None:
                    self._on_error(exc)
            finally:
                with self._cond:
                    self._busy = False
                    self.ran += 1
                    self._cond.notify_all()
