"""Request and response bodies of the job API (users, frontends, the CLI; DESIGN §3b).

The task types and their aliases are the trainer contract's (``sdk.contract``): the API accepts
exactly what a trainer's TASK_TYPE and a manifest's task_types accept. The callback bodies are in
``ray_app/jobs/callback_models.py``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from sdk.contract import TaskType, normalize_task_type

from ray_app.jobs.model_bases import Strict, View
from ray_app.scheduling import priority as levels
from ray_app.jobs.ranks import MAX_WORKERS
from ray_app.jobs.states import JobState
from ray_app.jobs.types import JsonObject, Text, Timestamp, finite_float


def task_type_input(value: Any) -> Any:
    """A task type as given (a DICE name or an alias, any case) -> its DICE name; refused with the
    accepted names otherwise."""
    return normalize_task_type(value) if isinstance(value, str) else value


class JobCreate(Strict):
    """POST /v1/jobs."""

    framework: Text = Field(min_length=1, max_length=64, examples=["ultralytics"])
    task_type: TaskType = Field(examples=["object_detection"], description="a DICE task name, or one of its "
                                "aliases (detection/detect, segmentation/segment, classification/classify, pose)")
    model_name: Text = Field(min_length=1, max_length=128, examples=["yolo11n"])
    dataset_id: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9._\-/]+$",
                            description="a dataset uploaded through /v1/datasets, or one placed in S3 "
                            "at datasets/{id}.zip or datasets/{id}/")
    dataset_version: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{8,64}$", description="a version of a registered dataset (its "
        "content hash, or a unique prefix of it); default: its newest valid version")
    epochs: int = Field(default=10, strict=True, ge=1, le=100_000)
    batch_size: int = Field(default=16, strict=True, ge=1, le=65_536)
    learning_rate: float = finite_float(default=0.01, gt=0, le=10)
    image_size: int = Field(default=640, strict=True, ge=8, le=8192)
    project_id: Text = Field(default="default", min_length=1, max_length=128,
                             description="the project the job belongs to (its members see it)")
    workers: int = Field(default=1, strict=True, ge=1, le=MAX_WORKERS, description=(
        "how many workers the job runs on: a gang placed all or nothing (one Ray placement group of "
        "`workers` bundles), each with num_gpus, num_cpus and memory_mb; a trainer runs one rank per worker, or "
        "one per GPU where its manifest says so (distributed.gpus_per_process). More than 1 only for "
        "trainers whose manifest declares `distributed`"))
    placement_strategy: Literal["PACK", "SPREAD"] = Field(default="PACK", description=(
        "PACK: the workers on as few nodes as fit them; SPREAD: on as many different nodes as there are"))
    num_gpus: float = finite_float(default=0, ge=0, le=64, description="GPUs per worker (the job reserves "
                                   "workers x num_gpus); default: the trainer's")
    num_cpus: float | None = finite_float(default=None, ge=0, le=512, description="CPUs per worker; "
                                          "default: the trainer's")
    memory_mb: int | None = Field(default=None, strict=True, ge=1, le=2**24,
                                  description="memory per worker, in MiB (at most 16 TiB)")
    config: JsonObject = Field(default_factory=dict, description="framework arguments")
    advanced_config: JsonObject = Field(default_factory=dict)
    max_attempts: int | None = Field(default=None, strict=True, ge=1, le=20)
    priority: int = Field(default=levels.NORMAL, strict=True, ge=levels.MIN_PRIORITY, le=levels.MAX_PRIORITY, description=(
        "higher first: a queued job of higher priority is offered to the cluster before lower ones, and may "
        "preempt running jobs of lower priority; 0-100 or a level's name: low (20), normal (50), high (80)"),
        examples=["high", 50])
    register_as: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", examples=["shapes-detector"],
        description="a name in the MLflow Model Registry: once the job succeeds, its model is "
        "registered there as a new version (needs an MLflow tracking server or store)")
    resume_from: Text | None = Field(default=None, max_length=1024, description="checkpoint URI")

    _normalize_task = field_validator("task_type", mode="before")(task_type_input)
    _priority_level = field_validator("priority", mode="before")(levels.parse)

    @field_validator("framework", "model_name")
    @classmethod
    def _no_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class RankView(BaseModel):
    """Where one rank of a gang runs (or ran): its node and trainer process."""

    rank: int
    node_id: str | None = Field(default=None, description="the Ray node its runner runs on")
    pid: int | None = Field(default=None, description="its trainer process")


class AttemptView(BaseModel):
    """An attempt that ended: what happened to this try of the job."""

    attempt: int
    outcome: Literal["retried", "preempted", "succeeded", "failed", "cancelled"]
    queued_at: Timestamp | None = None
    started_at: Timestamp | None = None
    ended_at: Timestamp
    node_id: str | None = Field(default=None, description="the Ray node its runner ran on")
    exit_code: int | None = Field(default=None, description="the trainer's exit code (negative: a signal)")
    signal: str | None = None
    error_type: str | None = None
    reason: str | None = None
    resume_from: str | None = Field(default=None, description="the checkpoint this attempt resumed from")
    ranks: list[RankView] | None = Field(default=None, description="every rank's node and process (null for "
                                         "attempts from before gangs)")


class ModelInfo(BaseModel):
    """The job's model in MLflow, logged once the job succeeded (ray_app/serving/mlflow_models.py)."""

    uri: str | None = Field(default=None, description="the run's model (runs:/<run>/model): "
                            "mlflow.pyfunc.load_model(uri).predict([image paths])")
    registered_name: str | None = None
    registered_version: int | None = None
    error: str | None = Field(default=None, description="why it could not be logged or registered")


class JobView(View):
    """A job as the API returns it."""

    id: str
    trace_id: str
    state: JobState
    attempt: int
    max_attempts: int
    framework: str
    task_type: str
    model_name: str
    dataset_id: str
    dataset_version: str | None = Field(default=None, description="the dataset version (content hash) "
                                        "the job trains on; null for a dataset named by its place in S3")
    dataset_uri: str | None = None
    project_id: str
    epochs: int
    batch_size: int
    learning_rate: float
    image_size: int
    workers: int = Field(default=1, description="workers (gang bundles); the resources below are per worker")
    placement_strategy: str = "PACK"
    num_gpus: float
    num_cpus: float | None
    memory_mb: int | None
    config: dict[str, Any]
    advanced_config: dict[str, Any]
    progress: float = 0.0
    epoch: int | None = None
    total_epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    latest_metrics: dict[str, Any] = Field(default_factory=dict)
    final_metrics: dict[str, Any] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    mlflow_run_id: str | None = None
    register_as: str | None = None
    mlflow_model: ModelInfo | None = None
    resume_from: str | None = None
    last_checkpoint: str | None = None
    cancel_requested: bool = False
    created_by: str | None = Field(default=None, description="the user who submitted the job (null: "
                                   "submitted before the platform had users)")
    cancelled_by: str | None = Field(default=None, description="the user who asked to cancel it")
    sweep_id: str | None = Field(default=None, description="the sweep this job is a trial of")
    sweep_trial: int | None = Field(default=None, description="its trial number in that sweep (1, 2, ...)")
    sweep_params: dict[str, Any] | None = Field(default=None, description="the values the sweep's search "
                                                "gave this trial, by path (e.g. config.mosaic)")
    stopped_early: bool = Field(default=False, description="the sweep's scheduler stopped this trial early "
                                "(it is CANCELLED: its trainer was asked to stop), not a failure")
    wait_reason: str | None = Field(default=None, description="why the job, not running yet, waits: "
                                    "its place in the queue (quota, resources, preemption) or its retry backoff")
    priority: int = Field(default=levels.NORMAL, description="0-100, higher first (low 20, normal 50, high 80)")
    preemptions: int = Field(default=0, description="attempts that ended because a job of higher priority "
                             "needed the resources (they do not count against max_attempts)")
    preempt_requested_at: Timestamp | None = Field(default=None, description="when the running attempt was "
                                                   "asked to stop for a job of higher priority")
    retry_at: Timestamp | None = Field(default=None, description="when the next attempt of a job retried "
                                       "after an infrastructure failure starts at the earliest (retry backoff)")
    training_time_seconds: float | None = None
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    last_heartbeat_at: Timestamp | None = None
    attempts: list[AttemptView] = Field(default_factory=list, description="the attempts that ended, in order")
    ranks: list[RankView] = Field(default_factory=list, description="where the current attempt's ranks run, "
                                  "once their processes started (rank 0 reports for the job)")
    output_complete: bool = Field(
        default=False, description="the current attempt's output is all in the logs: its trainer has exited "
        "and the runner stored its last line (a log reader following a final job can stop)")


class JobPage(BaseModel):
    items: list[JobView]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at the end")


class EventView(View):
    seq: int
    attempt: int
    level: str
    event_type: str
    message: str
    data: dict[str, Any]
    source: Literal["trainer", "platform"]
    created_at: Timestamp


class EventPage(BaseModel):
    items: list[EventView]
    next_after: int | None


class MetricView(View):
    attempt: int
    epoch: int
    step: int | None
    metrics: dict[str, Any]
    updated_at: Timestamp


class MetricPage(BaseModel):
    items: list[MetricView]


class LogLine(View):
    seq: int
    attempt: int
    rank: int = Field(default=0, description="the rank whose process printed it (0 for a single process)")
    stream: str
    line: str
    created_at: Timestamp


class LogPage(BaseModel):
    items: list[LogLine]
    next_after: int | None


class PredictResponse(BaseModel):
    job_id: str
    checkpoint: str
    predictions: list[dict[str, Any]]
    inference_seconds: float
    model_cached: bool
