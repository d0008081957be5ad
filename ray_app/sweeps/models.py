"""The sweeps API's bodies and answers (POST/GET /v1/sweeps, ray_app/api/routes/sweeps.py)."""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from ray_app.jobs.api_models import JobCreate, ModelInfo
from ray_app.jobs.model_bases import Strict, View
from ray_app.jobs.states import JobState
from ray_app.jobs.types import MetricName, Text, Timestamp
from ray_app.sweeps import space as spaces

MAX_TRIALS = 1000
MAX_CONCURRENT = 64


class SweepState(str, enum.Enum):
    """PENDING: recorded, its Tune driver not started yet; RUNNING: Tune is choosing and running
    trials; then SUCCEEDED (at least one trial succeeded), FAILED (with `error`: every trial
    failed, the metric was never reported, the driver could not run) or CANCELLED."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in (SweepState.SUCCEEDED, SweepState.FAILED, SweepState.CANCELLED)


LIVE_SWEEP_STATES = (SweepState.PENDING.value, SweepState.RUNNING.value)

TrialStatus = Literal["pending", "running", "succeeded", "failed", "stopped_early", "cancelled"]


def trial_status(state: JobState, stopped_early: bool) -> TrialStatus:
    """A trial as a sweep's user reads it: its job's state, with a stop by the sweep's scheduler
    told apart from a cancel (the job is CANCELLED either way: its trainer was asked to stop)."""
    if state is JobState.CANCELLED:
        return "stopped_early" if stopped_early else "cancelled"
    if state in (JobState.PENDING, JobState.QUEUED):
        return "pending"
    return state.value.lower()  # running, succeeded, failed


class Scheduler(Strict):
    """Early stopping: `asha` (asynchronous successive halving: at epochs grace_period,
    grace_period x reduction_factor, ... a trial whose metric is not in the top 1/reduction_factor
    of the trials that reached that epoch stops) or `median` (a trial whose best so far is worse
    than the median of the others' running averages at the same epoch stops)."""

    type: Literal["asha", "median"]
    grace_period: int = Field(default=1, strict=True, ge=1, le=100_000,
                              description="epochs every trial runs before it may be stopped")
    reduction_factor: float = Field(default=3.0, strict=False, gt=1, le=100, allow_inf_nan=False,
                                    description="asha: keep the top 1/reduction_factor at each rung")


class SweepCreate(Strict):
    """POST /v1/sweeps: a base job, a search space over some of its fields, and an objective."""

    name: Text = Field(min_length=1, max_length=128, examples=["lr-and-mosaic"])
    project_id: Text = Field(default="default", min_length=1, max_length=128,
                             description="the sweep's project, and its trials'")
    job: JobCreate = Field(description="the job every trial starts from (its project_id, if given, is the sweep's)")
    space: dict[str, Any] = Field(
        description="path -> domain. Paths: " + ", ".join(spaces.TOP_LEVEL) + ", config.<key>, "
        "advanced_config.<key>. Domains: {\"choice\": [values]}, {\"uniform\": [lo, hi]}, "
        "{\"loguniform\": [lo, hi]} (0 < lo), {\"int\": [lo, hi]} (both included)",
        examples=[{"learning_rate": {"loguniform": [1e-4, 1e-1]}, "config.mosaic": {"choice": [0.0, 1.0]},
                   "batch_size": {"choice": [8, 16]}}])
    metric: MetricName = Field(examples=["mAP50"], description="the metric the trainer reports every epoch "
                               "(a heartbeat's metrics) that the search optimizes")
    mode: Literal["max", "min"] = "max"
    num_trials: int = Field(default=10, strict=True, ge=1, le=MAX_TRIALS,
                            description="trials to run (random, optuna); grid runs every combination once")
    max_concurrent: int = Field(default=2, strict=True, ge=1, le=MAX_CONCURRENT,
                                description="trials running (or waiting for resources) at once")
    search: Literal["random", "grid", "optuna"] = Field(
        default="random", description="random sampling, every combination of the choices (at most "
        f"{spaces.MAX_GRID}), or Optuna's TPE (Bayesian)")
    scheduler: Scheduler | None = Field(default=None, description="early stopping; null: every trial runs "
                                        "its epochs")
    seed: int | None = Field(default=None, strict=True, ge=0, le=2**31 - 1,
                             description="makes random and optuna searches repeatable")
    register_best_as: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", examples=["shapes-detector"],
        description="once the sweep ends, the best trial's model becomes a new version of this "
        "registered MLflow model")

    @model_validator(mode="after")
    def _one_project(self) -> SweepCreate:
        if "project_id" in self.job.model_fields_set and self.job.project_id != self.project_id:
            raise ValueError(f"job.project_id ({self.job.project_id}) must be the sweep's project_id "
                             f"({self.project_id}) or left out")
        return self


class TrialView(View):
    trial: int = Field(description="1, 2, ... in the order the trials were started")
    job_id: str
    state: JobState
    status: TrialStatus
    params: dict[str, Any] = Field(description="the trial's values, by path")
    epochs_run: int = Field(description="epochs whose metric the sweep saw")
    last_metric: float | str | None = None
    best_metric: float | str | None = None
    history: list[tuple[int, float | str | None]] = Field(
        default_factory=list, description="(epoch, metric) for every epoch the trial ran")
    stop_reason: str | None = Field(default=None, description="why it stopped early, failed or was cancelled")
    created_at: Timestamp
    finished_at: Timestamp | None = None


class SweepSummary(View):
    id: str
    name: str
    project_id: str
    state: SweepState
    metric: str
    mode: str
    search: str
    scheduler: dict[str, Any] | None = None
    num_trials: int = Field(description="the trials it runs (a grid's size, for grid search)")
    max_concurrent: int
    counts: dict[str, int] = Field(default_factory=dict, description="trials by status")
    best_job_id: str | None = None
    best_metric: float | str | None = None
    error: str | None = None
    created_by: str | None = None
    cancelled_by: str | None = None
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None


class SweepView(SweepSummary):
    space: dict[str, Any]
    job: dict[str, Any] = Field(description="the base job body")
    register_best_as: str | None = None
    registered_model: ModelInfo | None = None
    mlflow_parent_run_id: str | None = Field(default=None, description="the sweep's MLflow run; its trials' "
                                             "runs are its children")
    seed: int | None = None
    trials: list[TrialView] = Field(default_factory=list)
    best: TrialView | None = Field(default=None, description="the trial with the best metric (among the "
                                   "succeeded trials; among all while none has)")


class SweepPage(BaseModel):
    items: list[SweepSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at the end")
