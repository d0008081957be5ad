"""The controller's part in sweeps: every live sweep has its Tune driver, and a stopping sweep
ends once its trials have.

A driver that is missing (never started, its actor lost, the cluster restarted) is created and
started: it restores the sweep's Tune experiment where there is one (driver.py). A sweep asked to
stop (cancelled, or failed by a trial) has its driver killed, so that it makes no new trial, and
becomes final once no trial's job is live; the store already asked each trial to stop.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ray.exceptions import RayActorError

from ray_app.config import Settings
from ray_app.store.client import StoreClient
from ray_app.sweeps import driver

log = logging.getLogger("ray_app.sweeps")

CHECK_EVERY_S = 2.0


class SweepSupervisor:
    def __init__(self, settings: Settings, store: StoreClient):
        self.settings, self.store = settings, store
        self.drivers: dict[str, Any] = {}
        self._last = 0.0

    async def check(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last < CHECK_EVERY_S:
            return
        self._last = time.monotonic()
        live = await self.store.live_sweeps()
        for sweep_id in set(self.drivers) - {s["id"] for s in live}:
            # final: its driver has recorded the outcome (or a stop settled it) and has nothing left to do
            self.drivers.pop(sweep_id, None)
            driver.kill_driver(sweep_id)
        for sweep in live:
            try:
                await self._check(sweep)
            except Exception:
                log.exception("sweep %s: supervision failed", sweep["id"])

    async def _check(self, sweep: dict[str, Any]) -> None:
        sweep_id = sweep["id"]
        if sweep["stop_requested"]:
            self.drivers.pop(sweep_id, None)
            if driver.kill_driver(sweep_id):
                log.info("sweep %s: %s asked; its driver stopped", sweep_id, sweep["stop_requested"])
            await self.store.settle_sweep(sweep_id)
            return
        handle = self.drivers.get(sweep_id)
        if handle is None:
            handle = self.drivers[sweep_id] = driver.ensure_driver(self.settings, sweep_id)
        try:
            state = await handle.start.remote()
        except RayActorError:  # lost: made again on the next pass
            self.drivers.pop(sweep_id, None)
            return
        if state == "ended":  # its fit ended without an outcome recorded: start it afresh
            log.warning("sweep %s: its driver ended with the sweep still live; starting another", sweep_id)
            self.drivers.pop(sweep_id, None)
            driver.kill_driver(sweep_id)
