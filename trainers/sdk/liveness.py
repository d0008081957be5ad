"""Keep-alive heartbeats while a trainer is busy but silent (DESIGN §3).

Every heartbeat of the trainer can go through :class:`Heartbeats`, and its daemon thread fills
the silences (importing, downloading, building the model, a slow batch, validation, uploads) so
the platform's heartbeat timeout never fires while the process is alive. Used by the Ultralytics
trainer for the whole run and by the timm trainer around its setup (as a context manager).
:class:`KeepAlive` is the SDK's own, for every trainer: heartbeats while the SDK waits for it
(storage retries, uploads, MLflow).
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


class Heartbeats:
    """Heartbeats through ``sdk.heartbeat``, and a daemon thread sending one whenever none was
    sent for ``interval`` seconds.

    Only the training loop advances epoch/step, so a real hang inside training is still caught
    by the platform's stall timeout. Before training the thread counts setup steps (step 1, 2,
    ...): downloading and preparing are progress too, and no metrics are sent.
    """

    def __init__(self, sdk: Any, total_epochs: int, interval: float = 5.0) -> None:
        self.sdk = sdk
        self.interval = interval
        self._lock = threading.Lock()
        # before training: no epoch (a resumed attempt keeps the job's), setup steps count up
        self._state: dict[str, Any] = {"epoch": None, "total_epochs": total_epochs, "step": 0, "total_steps": None}
        self._training = False
        self._last = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vtp-liveness", daemon=True)

    def start(self) -> "Heartbeats":
        self.beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def __enter__(self) -> "Heartbeats":
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()

    def since_last(self) -> float:
        return time.monotonic() - self._last

    def beat(self, metrics: dict[str, Any] | None = None, **state: Any) -> None:
        with self._lock:
            self._state.update(state)
            if state.get("epoch"):
                self._training = True
            self._last = time.monotonic()
            snapshot = dict(self._state)
        if not self._stop.is_set():
            self.sdk.heartbeat(**snapshot, metrics=metrics)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                due = time.monotonic() - self._last >= self.interval
                if due and not self._training:
                    self._state["step"] += 1
            if due:
                self.beat()


class KeepAlive:
    """The SDK's own heartbeats while the SDK itself waits: on storage it retries (a checkpoint
    upload with ``wait=True``, a dataset or checkpoint download, an artifact upload) or on MLflow
    before ``done``. A trainer blocked in such a call cannot heartbeat, and the platform would
    take it for silent; whoever waits inside the SDK is alive, so the SDK says so, for every
    trainer, with ``heartbeat`` repeating the trainer's last state (no epoch or step advances, so
    the platform's stall timeout still bounds the wait).

    ``with keepalive.waiting():`` nests, from any thread; one daemon thread beats every
    ``interval`` seconds while any wait is open and no heartbeat went out meanwhile.
    """

    def __init__(self, beat: Callable[[], None], since_last: Callable[[], float], interval: float,
                 enabled: bool = True) -> None:
        self.enabled = enabled  # False: a rank that does not report (no thread, no beats)
        self._beat = beat  # sends one heartbeat
        self._since_last = since_last  # seconds since the last heartbeat went out
        self.interval = interval
        self._open = 0
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self.beats = 0  # sent by the keep-alive (tests)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        with self._changed:
            self._open += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vtp-keepalive", daemon=True)
                self._thread.start()
            self._changed.notify()
        try:
            yield
        finally:
            with self._changed:
                self._open -= 1

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._open > 0)
            time.sleep(min(1.0, self.interval / 2))
            with self._changed:
                due = self._open > 0 and self._since_last() >= self.interval
            if due:
                try:
                    self._beat()
                    self.beats += 1
                except Exception:  # a keep-alive never breaks the wait it accompanies
                    pass
