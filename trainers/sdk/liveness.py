"""Keep-alive heartbeats while a trainer is busy but silent (DESIGN §3).

Every heartbeat of the trainer can go through :class:`Heartbeats`, and its daemon thread fills
the silences (importing, downloading, building the model, a slow batch, validation, uploads) so
the platform's heartbeat timeout never fires while the process is alive. Used by the Ultralytics
trainer for the whole run and by the timm trainer around its setup (as a context manager).
"""
from __future__ import annotations

import threading
import time
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
