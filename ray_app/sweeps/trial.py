"""SweepTrial: the Tune trainable of a sweep. It trains nothing itself: it submits the trial's job
through the store and tells Tune each epoch's metric as the job's heartbeats bring it.

- Its job's id comes from the sweep and Tune's trial id (`trial_job_id`): a trial Tune starts
  again (the sweep restored after a restart, its actor lost) finds its job and follows it from
  its first epoch, instead of training again; the store makes the trial once (create_trial).
- One `step` is one epoch (sweeps/epochs.py says when an epoch is complete), so Tune's
  `training_iteration` is the trial's epoch count and ASHA's grace period is in epochs.
- The last epoch goes with `done` once the job is final; a failed job is an errored trial (the
  search goes on); an epoch without the sweep's metric fails the sweep with that reason.
- Stopping the job when Tune stops the trial is the driver's callback (driver.py): it runs in
  the driver, where a stop cannot be lost with this actor.
- Following is reading: the job and its metrics are read by SQL on this process's own engine
  (`reader_of`, as the API reads), never through the single writer, where every trial's poll
  would queue with the trainers' heartbeats.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import time
from typing import Any

import ray

from ray_app.sweeps import tune_env  # noqa: F401  # Tune's settings, before Tune's import
from ray import tune

from ray_app.config import CONTROLLER_ACTOR, NAMESPACE
from ray_app.jobs.job import Job
from ray_app.jobs.states import JobState
from ray_app.store.client import StoreClient
from ray_app.store.reads import JobReader
from ray_app.sweeps import epochs
from ray_app.sweeps.models import SweepState

POLL_S = 0.25


class TrialEnded(RuntimeError):
    """The trial's job ended without finishing its epochs (failed, or cancelled by a user)."""


class MetricNotReported(RuntimeError):
    """A complete epoch without the sweep's metric: the sweep fails with this reason."""


@functools.cache
def reader_of(database_url: str) -> JobReader:
    """This process's reader of the job database: the sweeps' follows and checks read there, by
    SQL, never through the single writer (a trial polls its job several times a second)."""
    return JobReader(database_url)


def wake_controller() -> None:
    """A new trial's job goes to the queue on the controller's next pass, not at its next tick
    (as the API nudges it for a job it creates). Fire-and-forget: the tick covers a lost one."""
    try:
        ray.get_actor(CONTROLLER_ACTOR, namespace=NAMESPACE).wake.remote()
    except ValueError:  # no controller (yet): its first tick finds the job
        pass


def trial_job_id(sweep_id: str, tune_trial_id: str) -> str:
    return hashlib.sha256(f"{sweep_id}/{tune_trial_id}".encode()).hexdigest()[:16]


def tune_value(value: Any) -> float:
    """A stored metric as Tune takes it: a number (a non-finite one, kept by the store as its name,
    as a float NaN or infinity)."""
    if isinstance(value, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(value, math.nan)
    return float(value)


class SweepTrial(tune.Trainable):
    """`sweep`: what every trial of the sweep shares (SweepContext.as_dict, driver.py)."""

    def setup(self, config: dict[str, Any], sweep: dict[str, Any]) -> None:  # type: ignore[override]  # Tune passes with_parameters' values as keyword arguments
        self.sweep = sweep
        self.metric: str = sweep["metric"]
        self.loop = asyncio.new_event_loop()
        self.store = StoreClient(sweep["settings"])
        self.reader = reader_of(sweep["settings"].resolved_database_url)
        self._follow(config)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """The next trial on this actor (the driver reuses actors: a new one per trial costs a
        Python process and its imports, seconds between trials); Tune has set the new trial id."""
        self._follow(new_config)
        return True

    def _follow(self, config: dict[str, Any]) -> None:
        from ray_app.sweeps import space as spaces

        sweep = self.sweep
        params = {sweep["paths"][key]: value for key, value in config.items()}
        self.job_id = trial_job_id(sweep["id"], self.trial_id)
        job = self._run(self.store.create_trial(sweep["id"], self.job_id, spaces.apply(sweep["job"], params), params))
        if job.state is JobState.PENDING:
            wake_controller()
        self.trial = job.sweep_trial
        self.reported = -1  # the last epoch told to Tune

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def step(self) -> dict[str, Any]:
        while True:
            job = Job.model_validate(self.reader.get_job(self.job_id))
            rows = self.reader.metrics(self.job_id)
            complete = [(e, v) for e, v in epochs.completed(rows, self.metric, job.total_steps, job.is_final)
                        if e > self.reported]
            if complete:
                epoch, value = complete[0]
                if value is epochs.MISSING:
                    self._metric_missing(job, epoch, rows)
                last = len(complete) == 1 and (job.is_final or epoch >= job.epochs)
                if last and not job.is_final:  # the last epoch goes with `done`, once the job is final
                    time.sleep(POLL_S)
                    continue
                self.reported = epoch
                return self._result(job, epoch, value, done=last and job.state is JobState.SUCCEEDED)
            if job.is_final:
                if job.state is JobState.SUCCEEDED and self.reported >= 0:
                    return self._result(job, self.reported, job.latest_metrics.get(self.metric), done=True)
                if job.state is JobState.SUCCEEDED:
                    self._metric_missing(job, None, rows)
                raise TrialEnded(f"trial {self.trial} (job {self.job_id}) {job.state.value.lower()}: "
                                 f"{job.error or job.cancelled_by or 'no reason given'}")
            time.sleep(POLL_S)

    def _result(self, job: Job, epoch: int, value: Any, done: bool) -> dict[str, Any]:
        return {self.metric: tune_value(value), "epoch": epoch, "job_id": job.id, "trial": self.trial,
                "done": done}

    def _metric_missing(self, job: Job, epoch: int | None, rows: list[dict[str, Any]]) -> None:
        seen = sorted({name for row in rows for name in row["metrics"]})
        where = f"epoch {epoch}" if epoch is not None else "its run"
        reason = (f"the trainer never reports the metric {self.metric!r}: trial {self.trial} (job {job.id}) "
                  f"finished {where} reporting {', '.join(seen) or 'no metrics'}")
        self._run(self.store.request_sweep_stop(self.sweep["id"], SweepState.FAILED.value, reason))
        raise MetricNotReported(reason)

    def cleanup(self) -> None:
        self.loop.close()

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        """Nothing to keep: the job is the state, found again by its id (trial_job_id)."""
        return None

    def load_checkpoint(self, checkpoint: Any) -> None:
        return None
