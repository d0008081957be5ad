"""Request and response bodies: the job API (users) and the callback contract (trainers).

These models are the single definition of the contract: the FastAPI routes validate with them,
OpenAPI at /docs is generated from them, and the trainer SDK sends exactly these fields.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ray_app.jobs.states import JobState
from ray_app.jobs.types import (
    Attempt,
    Epoch,
    JsonObject,
    Metrics,
    Seq,
    Step,
    Text,
    Timestamp,
    finite_float,
    readable,
)

# --------------------------------------------------------------------------- vocabulary


class TaskType(str, enum.Enum):
    OBJECT_DETECTION = "object_detection"
    INSTANCE_SEGMENTATION = "instance_segmentation"
    IMAGE_CLASSIFICATION = "image_classification"
    SEMANTIC_SEGMENTATION = "semantic_segmentation"
    POSE_ESTIMATION = "pose_estimation"


# seed 001's short names, accepted on input and stored as the DICE names
TASK_ALIASES: dict[str, TaskType] = {
    "detection": TaskType.OBJECT_DETECTION,
    "segmentation": TaskType.INSTANCE_SEGMENTATION,
    "classification": TaskType.IMAGE_CLASSIFICATION,
    "pose": TaskType.POSE_ESTIMATION,
}


def normalize_task_type(value: Any) -> Any:
    if isinstance(value, str):
        return TASK_ALIASES.get(value.strip().lower(), value.strip().lower())
    return value


class ErrorType(str, enum.Enum):
    DATASET_ERROR = "DATASET_ERROR"
    CHECKPOINT_ERROR = "CHECKPOINT_ERROR"
    CONFIG_ERROR = "CONFIG_ERROR"
    RESOURCE_ERROR = "RESOURCE_ERROR"
    NETWORK_ERROR = "NETWORK_ERROR"
    FRAMEWORK_ERROR = "FRAMEWORK_ERROR"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    UNKNOWN_ERROR = "UNKNOWN_ERROR"
    # set by the platform itself, never by a trainer
    INFRASTRUCTURE_ERROR = "INFRASTRUCTURE_ERROR"
    TIMEOUT_ERROR = "TIMEOUT_ERROR"


# An attempt that failed for one of these reasons is retried (DESIGN §5); the others are final.
RETRYABLE_ERRORS = frozenset(
    {ErrorType.RESOURCE_ERROR, ErrorType.NETWORK_ERROR, ErrorType.INFRASTRUCTURE_ERROR}
)

IDEMPOTENCY_KEY = Field(
    default=None,
    max_length=128,
    description="Idempotency key: a retried callback with the same key is applied once. "
    "Sent by the SDK as a uuid per logical callback; `attempt`+`seq` is used when absent.",
)

class _View(BaseModel):
    """A response built from stored values: made readable first (types.readable), so no row,
    however it was written, can fail a read."""

    @model_validator(mode="before")
    @classmethod
    def _readable(cls, data: Any) -> Any:
        return readable(data) if isinstance(data, dict) else data


class _Strict(BaseModel):
    """A request body: unknown fields refused; value rules in ray_app/jobs/types.py."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# --------------------------------------------------------------------------- job API


class JobCreate(_Strict):
    """POST /v1/jobs."""

    framework: Text = Field(min_length=1, max_length=64, examples=["ultralytics"])
    task_type: TaskType = Field(examples=["object_detection"])
    model_name: Text = Field(min_length=1, max_length=128, examples=["yolo11n"])
    dataset_id: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9._\-/]+$")
    epochs: int = Field(default=10, strict=True, ge=1, le=100_000)
    batch_size: int = Field(default=16, strict=True, ge=1, le=65_536)
    learning_rate: float = finite_float(default=0.01, gt=0, le=10)
    image_size: int = Field(default=640, strict=True, ge=8, le=8192)
    project_id: Text = Field(default="default", min_length=1, max_length=128)
    num_gpus: float = finite_float(default=0, ge=0, le=64)
    num_cpus: float | None = finite_float(default=None, ge=0, le=512)
    memory_mb: int | None = Field(default=None, strict=True, ge=1, le=2**24, description="at most 16 TiB")
    config: JsonObject = Field(default_factory=dict, description="framework arguments")
    advanced_config: JsonObject = Field(default_factory=dict)
    max_attempts: int | None = Field(default=None, strict=True, ge=1, le=20)
    resume_from: Text | None = Field(default=None, max_length=1024, description="checkpoint URI")

    _normalize_task = field_validator("task_type", mode="before")(normalize_task_type)

    @field_validator("framework", "model_name")
    @classmethod
    def _no_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class AttemptView(BaseModel):
    """An attempt that ended: what happened to this try of the job."""

    attempt: int
    outcome: Literal["retried", "succeeded", "failed", "cancelled"]
    queued_at: Timestamp | None = None
    started_at: Timestamp | None = None
    ended_at: Timestamp
    node_id: str | None = Field(default=None, description="the Ray node its runner ran on")
    exit_code: int | None = Field(default=None, description="the trainer's exit code (negative: a signal)")
    signal: str | None = None
    error_type: str | None = None
    reason: str | None = None
    resume_from: str | None = Field(default=None, description="the checkpoint this attempt resumed from")


class JobView(_View):
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
    project_id: str
    epochs: int
    batch_size: int
    learning_rate: float
    image_size: int
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
    resume_from: str | None = None
    last_checkpoint: str | None = None
    cancel_requested: bool = False
    training_time_seconds: float | None = None
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    last_heartbeat_at: Timestamp | None = None
    attempts: list[AttemptView] = Field(default_factory=list, description="the attempts that ended, in order")


class JobPage(BaseModel):
    items: list[JobView]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at the end")


class EventView(_View):
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


class MetricView(_View):
    attempt: int
    epoch: int
    step: int | None
    metrics: dict[str, Any]
    updated_at: Timestamp


class MetricPage(BaseModel):
    items: list[MetricView]


class LogLine(_View):
    seq: int
    attempt: int
    stream: str
    line: str
    created_at: Timestamp


class LogPage(BaseModel):
    items: list[LogLine]
    next_after: int | None


# --------------------------------------------------------------------------- callbacks


class HeartbeatIn(_Strict):
    """POST /v1/jobs/{id}/heartbeat — progress, every epoch or every few seconds."""

    event_id: Text | None = IDEMPOTENCY_KEY
    attempt: Attempt | None = Field(default=None, description="must match the token's attempt")
    seq: Seq | None = None
    trace_id: Text | None = Field(default=None, max_length=64)
    epoch: Epoch | None = None
    total_epochs: Epoch | None = None
    step: Step | None = None
    total_steps: Step | None = None
    progress: float | None = finite_float(default=None, ge=0, le=100)
    metrics: Metrics = Field(default_factory=dict, max_length=1024)


class HeartbeatReply(BaseModel):
    status: Literal["ok"] = "ok"
    should_continue: bool
    duplicate: bool = False


class EventLevel(str, enum.Enum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class EventIn(_Strict):
    """POST /v1/jobs/{id}/event — started, dataset_loaded, checkpoint_saved, error, …"""

    event_id: Text | None = IDEMPOTENCY_KEY
    attempt: Attempt | None = None
    seq: Seq | None = None
    trace_id: Text | None = Field(default=None, max_length=64)
    level: EventLevel = EventLevel.INFO
    event_type: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.\-]*$")
    message: Text = Field(default="", max_length=8192)
    data: JsonObject = Field(default_factory=dict)

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class EventReply(BaseModel):
    status: Literal["ok"] = "ok"
    duplicate: bool = False


class DoneIn(_Strict):
    """POST /v1/jobs/{id}/done — once, at the end of the attempt."""

    event_id: Text | None = IDEMPOTENCY_KEY
    attempt: Attempt | None = None
    trace_id: Text | None = Field(default=None, max_length=64)
    status: Literal["succeeded", "failed"]
    error: Text | None = Field(default=None, max_length=65_536)
    error_type: ErrorType | None = None
    traceback: Text | None = Field(default=None, max_length=262_144)
    final_metrics: Metrics = Field(default_factory=dict, max_length=1024)
    artifacts: dict[Annotated[Text, Field(max_length=256)], Annotated[Text, Field(max_length=2048)]] = Field(
        default_factory=dict, max_length=1024)
    mlflow_run_id: Text | None = Field(default=None, max_length=128)
    training_time_seconds: float | None = finite_float(default=None, ge=0, le=1e9)

    @field_validator("error_type", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.upper()
            return "FRAMEWORK_ERROR" if value == "TRAINING_ERROR" else value  # seed 001 alias
        return value


class DoneReply(BaseModel):
    status: Literal["ok"] = "ok"
    state: JobState
    duplicate: bool = False


# ---------------------------------------------------------------- batched callbacks
MAX_CALLBACK_BATCH = 256


class HeartbeatItem(BaseModel):
    kind: Literal["heartbeat"]
    body: HeartbeatIn


class EventItem(BaseModel):
    kind: Literal["event"]
    body: EventIn


class DoneItem(BaseModel):
    kind: Literal["done"]
    body: DoneIn


class CallbackBatchIn(BaseModel):
    """POST /v1/jobs/{id}/callbacks — heartbeats and events that queued up in a trainer (a slow or
    unreachable backend), sent in one request and applied in order in one transaction. Each item
    keeps its own idempotency key, so a retried batch applies each item once. The attempt's `done`
    may close the batch (last item only): the job is then final in the same round trip as the
    events before it, which a slow backend would otherwise make two."""

    items: list[Annotated[HeartbeatItem | EventItem | DoneItem, Field(discriminator="kind")]] = Field(
        min_length=1, max_length=MAX_CALLBACK_BATCH)

    @model_validator(mode="after")
    def _done_last(self) -> "CallbackBatchIn":
        if any(item.kind == "done" for item in self.items[:-1]):
            raise ValueError("done can only be the last item of a batch: nothing follows the attempt's end")
        return self


class CallbackItemResult(BaseModel):
    """One item's outcome: `status` is what its own route would have answered (200, 404, 409,
    500), `reply` that route's body on 200, `detail` the reason otherwise."""

    status: int
    reply: dict[str, Any] | None = None
    detail: str | None = None


class CallbackBatchReply(BaseModel):
    results: list[CallbackItemResult]
    should_continue: bool = Field(description="false once the job is cancelled or final: stop training")
