"""The trainer callback bodies and replies (DESIGN §3), as the platform validates them.

The contract's vocabulary, limits and wire forms are defined once, in ``trainers/sdk/contract.py``
(importable as ``sdk.contract``), which the trainer SDK builds its bodies with; these models add
only what pydantic needs to enforce them. The FastAPI routes and the callback gateway validate
with these models, OpenAPI is generated from them, and their JSON Schema is rendered into
``trainers/README.md`` (``python -m ray_app.jobs.contract_schema --write``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from sdk import contract
from sdk.contract import ErrorType, EventLevel

from ray_app.jobs.model_bases import Strict
from ray_app.jobs.states import JobState
from ray_app.jobs.types import Attempt, Epoch, JsonObject, Metrics, Seq, Step, Text, finite_float

# Which error types a new attempt retries is the platform's policy, not the contract's:
# ray_app/jobs/recovery.py (RETRYABLE_ERRORS).

MAX_CALLBACK_BATCH = contract.MAX_CALLBACK_BATCH

IDEMPOTENCY_KEY = Field(
    default=None,
    max_length=contract.MAX_IDEMPOTENCY_KEY,
    description="Idempotency key: a retried callback with the same key is applied once. "
    "Sent by the SDK as a uuid per logical callback; `attempt`+`seq` is used when absent.",
)
TRACE_ID = Field(default=None, max_length=contract.MAX_TRACE_ID)


class HeartbeatIn(Strict):
    """POST /v1/jobs/{id}/heartbeat — progress, every epoch or every few seconds."""

    event_id: Text | None = IDEMPOTENCY_KEY
    attempt: Attempt | None = Field(default=None, description="must match the token's attempt")
    seq: Seq | None = None
    trace_id: Text | None = TRACE_ID
    epoch: Epoch | None = None
    total_epochs: Epoch | None = None
    step: Step | None = None
    total_steps: Step | None = None
    progress: float | None = finite_float(default=None, ge=0, le=contract.MAX_PROGRESS)
    metrics: Metrics = Field(default_factory=dict, max_length=contract.MAX_METRICS)


class HeartbeatReply(BaseModel):
    status: Literal["ok"] = "ok"
    should_continue: bool
    duplicate: bool = False


class EventIn(Strict):
    """POST /v1/jobs/{id}/event — started, dataset_loaded, checkpoint_saved, error, …"""

    event_id: Text | None = IDEMPOTENCY_KEY
    attempt: Attempt | None = None
    seq: Seq | None = None
    trace_id: Text | None = TRACE_ID
    level: EventLevel = EventLevel.INFO
    event_type: str = Field(min_length=1, max_length=contract.MAX_EVENT_TYPE, pattern=contract.EVENT_TYPE_PATTERN)
    message: Text = Field(default="", max_length=contract.MAX_MESSAGE)
    data: JsonObject = Field(default_factory=dict)

    _level = field_validator("level", mode="before")(contract.normalize_level)


class EventReply(BaseModel):
    status: Literal["ok"] = "ok"
    duplicate: bool = False


class DoneIn(Strict):
    """POST /v1/jobs/{id}/done — once, at the end of the attempt."""

    event_id: Text | None = IDEMPOTENCY_KEY
    attempt: Attempt | None = None
    trace_id: Text | None = TRACE_ID
    status: Literal["succeeded", "failed"]
    error: Text | None = Field(default=None, max_length=contract.MAX_ERROR)
    error_type: ErrorType | None = None
    traceback: Text | None = Field(default=None, max_length=contract.MAX_TRACEBACK)
    final_metrics: Metrics = Field(default_factory=dict, max_length=contract.MAX_METRICS)
    artifacts: dict[Annotated[Text, Field(max_length=contract.MAX_ARTIFACT_NAME)],
                    Annotated[Text, Field(max_length=contract.MAX_ARTIFACT_URI)]] = Field(
        default_factory=dict, max_length=contract.MAX_ARTIFACTS)
    mlflow_run_id: Text | None = Field(default=None, max_length=contract.MAX_MLFLOW_RUN_ID)
    training_time_seconds: float | None = finite_float(default=None, ge=0, le=contract.MAX_TRAINING_TIME_S)

    # any case, and seed 001's TRAINING_ERROR for FRAMEWORK_ERROR
    _error_type = field_validator("error_type", mode="before")(contract.normalize_error_type)


class DoneReply(BaseModel):
    status: Literal["ok"] = "ok"
    state: JobState
    duplicate: bool = False


# ---------------------------------------------------------------- batched callbacks


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


# the body model of each callback route, by the contract's kind
BODY_MODELS: dict[str, type[BaseModel]] = {
    contract.HEARTBEAT: HeartbeatIn, contract.EVENT: EventIn, contract.DONE: DoneIn, contract.BATCH: CallbackBatchIn}
