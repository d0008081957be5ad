"""SIGTERM/SIGINT become a stop request instead of killing the trainer mid-write.

The platform cancels a job by answering ``should_continue=false`` and, after a grace period,
sending SIGTERM; a trainer that checks ``sdk.should_stop`` saves what it can and exits. A second
signal exits at once (SystemExit 128+signum, or KeyboardInterrupt for SIGINT).
The handler only sets flags: printing from a signal handler can deadlock on stdout's lock.
"""
from __future__ import annotations

import signal
import threading
from typing import Any, Callable


class StopSignals:
    def __init__(self, on_first: Callable[[str], None]) -> None:
        self._on_first = on_first
        self._count = 0
        self._previous: dict[int, Any] = {}

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False  # signal.signal only works in the main thread
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return True

    def _handle(self, signum: int, frame: Any) -> None:
        self._count += 1
        if self._count == 1:
            self._on_first(f"received {signal.Signals(signum).name}")
            return
        self.restore()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._previous.items():
            try:
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            except (ValueError, TypeError):
                pass
        self._previous.clear()
