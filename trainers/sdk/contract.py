"""The trainer contract (DESIGN §3), defined once for both sides.

The platform validates callbacks with its pydantic models (``ray_app/jobs/callback_models.py``),
which take their vocabulary and limits from here; the SDK builds every callback body with the
builders below. One definition, so the two cannot drift apart: a task type, an error type, a
limit or a storage key changes here or nowhere.

Standard library only: the platform imports this module (``import sdk.contract`` costs no boto3,
httpx or MLflow), and a plugin author may copy it alone.

What lives here:

- the callback routes and their names;
- the vocabulary: ``ErrorType``, ``TaskType`` and its aliases, ``EventLevel``, the exit codes;
- the limits both sides must agree on (batch size, idempotency key, text lengths, number bounds);
- the wire form of values: metrics (non-finite ones as ``"NaN"``/``"Infinity"``/``"-Infinity"``),
  text (no NUL, no unpaired surrogate), free-form JSON;
- the callback bodies (TypedDicts) and their builders;
- the heartbeat merge rule (what a newer heartbeat overrides);
- the rendezvous variables of a distributed job's ranks and which rank reports;
- ``s3://`` URIs and the object-key layout of datasets, checkpoints and artifacts.
"""
from __future__ import annotations

import enum
import math
import re
from pathlib import PurePosixPath
from typing import Any, Iterable, Literal, Mapping, TypedDict

# --------------------------------------------------------------------------- routes

API_PREFIX = "/v1"
HEARTBEAT = "heartbeat"
EVENT = "event"
DONE = "done"
BATCH = "callbacks"  # POST .../callbacks: several of the above in one request
CALLBACK_KINDS: tuple[str, ...] = (HEARTBEAT, EVENT, DONE)
CallbackKind = Literal["heartbeat", "event", "done"]


def callback_path(job_id: str, kind: str) -> str:
    """``/v1/jobs/{job_id}/{kind}``: the route of one callback (``kind`` one of CALLBACK_KINDS or
    BATCH). The SDK posts to ``{callback_base}/jobs/{job_id}/{kind}``, callback_base ending in /v1."""
    return f"{API_PREFIX}/jobs/{job_id}/{kind}"


# --------------------------------------------------------------------------- exit codes

EXIT_SUCCESS = 0
EXIT_TRAINING_FAILURE = 1
EXIT_CALLBACK_FAILURE = 2  # the backend could not be told the outcome


# --------------------------------------------------------------------------- vocabulary


class ErrorType(str, enum.Enum):
    """Why an attempt failed. A ``str`` enum, so it serialises as its name in JSON.

    Trainers report the first eight; INFRASTRUCTURE_ERROR and TIMEOUT_ERROR are set by the
    platform itself (a lost runner, a silent trainer), and INFRASTRUCTURE_ERROR by rank 0 of a
    distributed job when another rank vanished (torch.distributed's peer errors). Which of them a
    new attempt retries is the platform's policy, not part of the contract."""

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
    # Seed 001's example uses TRAINING_ERROR; an enum alias keeps such trainers working while
    # the wire value stays one of the contract's names.
    TRAINING_ERROR = "FRAMEWORK_ERROR"

    def __str__(self) -> str:  # "DATASET_ERROR", not "ErrorType.DATASET_ERROR"
        return self.value

    @classmethod
    def coerce(cls, value: "ErrorType | str | None") -> "ErrorType":
        """Accept an ErrorType, its name (any case, aliases too) or None; unknown names become
        UNKNOWN_ERROR."""
        if isinstance(value, ErrorType):
            return value
        if not value:
            return cls.UNKNOWN_ERROR
        try:
            return cls(normalize_error_type(value))
        except ValueError:
            return cls.UNKNOWN_ERROR


ERROR_TYPE_ALIASES: dict[str, ErrorType] = {"TRAINING_ERROR": ErrorType.FRAMEWORK_ERROR}
PLATFORM_ERROR_TYPES = frozenset({ErrorType.INFRASTRUCTURE_ERROR, ErrorType.TIMEOUT_ERROR})
TRAINER_ERROR_TYPES = frozenset(set(ErrorType) - PLATFORM_ERROR_TYPES)


def normalize_error_type(value: Any) -> Any:
    """The wire name for an error type given in any case or by an alias (``training_error`` ->
    ``FRAMEWORK_ERROR``); anything else is returned as it is, for the caller to refuse."""
    if isinstance(value, ErrorType):
        return value.value
    if isinstance(value, str):
        name = value.strip().upper()
        alias = ERROR_TYPE_ALIASES.get(name)
        return alias.value if alias is not None else name
    return value


class TaskType(str, enum.Enum):
    """The DICE task names: what jobs, manifests and TASK_TYPE hold."""

    OBJECT_DETECTION = "object_detection"
    INSTANCE_SEGMENTATION = "instance_segmentation"
    IMAGE_CLASSIFICATION = "image_classification"
    SEMANTIC_SEGMENTATION = "semantic_segmentation"
    POSE_ESTIMATION = "pose_estimation"

    def __str__(self) -> str:
        return self.value


TASK_TYPES: tuple[str, ...] = tuple(t.value for t in TaskType)

# Accepted on input (the API's task_type, a manifest's task_types, TASK_TYPE) and stored as the
# DICE name: seed 001's short names and Ultralytics' own task names.
TASK_ALIASES: dict[str, TaskType] = {
    "detection": TaskType.OBJECT_DETECTION,
    "detect": TaskType.OBJECT_DETECTION,
    "segmentation": TaskType.INSTANCE_SEGMENTATION,
    "segment": TaskType.INSTANCE_SEGMENTATION,
    "classification": TaskType.IMAGE_CLASSIFICATION,
    "classify": TaskType.IMAGE_CLASSIFICATION,
    "pose": TaskType.POSE_ESTIMATION,
}


def normalize_task_type(value: str | TaskType) -> str:
    """The DICE name for ``value``: a DICE name or an alias, in any case, blanks around ignored.
    Raises ValueError, naming what is accepted, for anything else."""
    if isinstance(value, TaskType):
        return value.value
    if not isinstance(value, str):
        raise ValueError(f"a task type is a string, not {type(value).__name__}")
    name = value.strip().lower()
    alias = TASK_ALIASES.get(name)
    if alias is not None:
        return alias.value
    if name in TASK_TYPES:
        return name
    # the value is not echoed: a client's mistake may be large or hold what it should not send
    raise ValueError(f"not a task type: one of {', '.join(TASK_TYPES)} "
                     f"(or {', '.join(sorted(TASK_ALIASES))})")


class EventLevel(str, enum.Enum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


EVENT_LEVELS: tuple[str, ...] = tuple(level.value for level in EventLevel)
LEVEL_ALIASES: dict[str, EventLevel] = {"warn": EventLevel.WARNING, "critical": EventLevel.ERROR,
                                        "fatal": EventLevel.ERROR}


def normalize_level(value: Any) -> Any:
    """An event level in any case or by an alias (``WARN`` -> ``warning``); anything else is
    returned as it is, for the caller to refuse (the platform) or replace (the SDK: ``info``)."""
    if isinstance(value, EventLevel):
        return value.value
    if isinstance(value, str):
        name = value.strip().lower()
        alias = LEVEL_ALIASES.get(name)
        return alias.value if alias is not None else name
    return value


DONE_STATUSES: tuple[str, ...] = ("succeeded", "failed")
DoneStatus = Literal["succeeded", "failed"]

# Event types the platform and the bundled trainers use; any name matching EVENT_TYPE_PATTERN
# is accepted.
STANDARD_EVENT_TYPES: tuple[str, ...] = (
    "started", "dataset_loaded", "model_initialized", "validation_complete", "checkpoint_saved",
    "error", "stopped", "resumed")

# `checkpoint_saved`: a checkpoint reached storage. Its data names it and says where it is; the
# platform resumes a retried attempt from the newest `last` (or any name but `best`, or `best`
# when nothing else was saved). These two keys are the only ones the platform reads.
CHECKPOINT_SAVED = "checkpoint_saved"
CHECKPOINT_NAME_KEY = "name"
CHECKPOINT_URI_KEY = "checkpoint_path"


def checkpoint_saved_data(name: str, uri: str, size_bytes: int | None = None,
                          epoch: int | None = None) -> dict[str, Any]:
    """The data of a `checkpoint_saved` event."""
    data: dict[str, Any] = {CHECKPOINT_NAME_KEY: name, CHECKPOINT_URI_KEY: uri}
    if size_bytes is not None:
        data["size_bytes"] = size_bytes
    if epoch is not None:
        data["epoch"] = epoch
    return data

# --------------------------------------------------------------------------- distributed jobs

# Set for every trainer process: nothing may download weights or data at run time (DESIGN §9).
# Here, not in the platform, so that whatever starts a trainer (the runner, the model server, the
# GPU check on a machine without the platform) gives it the same environment.
OFFLINE_ENV: dict[str, str] = {
    "PYTHONUNBUFFERED": "1",
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "False",
    "HF_HUB_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "AWS_EC2_METADATA_DISABLED": "true",
}

# A job of W ranks (DESIGN §12): one trainer process per rank, each with the environment above and
# torchrun's rendezvous variables, in torchrun's meanings: rank 0's node address and a free port
# there, the number of ranks, this process's rank, its rank and the number of ranks on its node,
# and its node's index. A single-process job gets WORLD_SIZE=1, RANK=0 (and the rest). A rank
# picks its GPU from DEVICE (the GPUs Ray made visible to this process), never from LOCAL_RANK.
RENDEZVOUS_ENV: tuple[str, ...] = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK",
                                   "LOCAL_WORLD_SIZE", "NODE_RANK")
# The rank that speaks for the job: heartbeats, events, done, checkpoints and MLflow. The others get
# no CALLBACK_TOKEN and no MLflow variables; their stdout reaches the job's log, tagged by rank.
REPORTING_RANK = 0
# How long a collective (and the rendezvous) waits for a silent peer, in seconds (sdk.distributed)
DIST_TIMEOUT_ENV = "VTP_DIST_TIMEOUT_S"

# --------------------------------------------------------------------------- limits

MAX_CALLBACK_BATCH = 256  # items in one POST .../callbacks
MAX_IDEMPOTENCY_KEY = 128  # event_id
MAX_TRACE_ID = 64
MAX_EVENT_TYPE = 64
EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_.\-]*$"
MAX_MESSAGE = 8192  # an event's message
MAX_ERROR = 65_536  # done's error
MAX_TRACEBACK = 262_144  # done's traceback
MAX_METRICS = 1024  # names in one heartbeat's metrics or done's final_metrics
MAX_METRIC_NAME = 128
MAX_ARTIFACTS = 1024
MAX_ARTIFACT_NAME = 256
MAX_ARTIFACT_URI = 2048
MAX_MLFLOW_RUN_ID = 128
MAX_JSON_DEPTH = 32  # nesting of free-form objects (event data, config)
# JavaScript's largest exact integer: sequence numbers and cursors stay exact in every client
MAX_SEQ = 2**53 - 1
MAX_ATTEMPT = 1000
MAX_EPOCH = 1_000_000
MAX_STEP = 10**15
MAX_PROGRESS = 100.0
MAX_TRAINING_TIME_S = 1e9

# --------------------------------------------------------------------------- values on the wire

NAN, INF, NEG_INF = "NaN", "Infinity", "-Infinity"
NON_FINITE = frozenset({NAN, INF, NEG_INF})
# unpaired UTF-16 surrogates (no database or UTF-8 response carries them) and NUL (PostgreSQL's
# text refuses it): never valid text anywhere in a body
INVALID_TEXT = re.compile("[\ud800-\udfff\x00]")
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)


def wire_float(value: float) -> float | str:
    """A float as the contract sends it: finite as it is, non-finite by name (JSON has no NaN)."""
    if math.isfinite(value):
        return value
    return NAN if math.isnan(value) else INF if value > 0 else NEG_INF


def wire_metrics(metrics: Mapping[Any, Any] | None) -> dict[str, float | str]:
    """Metrics as the contract sends them: numbers only (numpy/torch scalars unwrapped; bools,
    strings and None left out), as floats, non-finite ones by name. A NaN loss is news (training
    diverged): the platform keeps it and warns once. At most MAX_METRICS names."""
    out: dict[str, float | str] = {}
    for name, value in (metrics or {}).items():
        if hasattr(value, "item") and not isinstance(value, (int, float)):  # numpy / torch scalars
            try:
                value = value.item()
            except Exception:  # noqa: BLE001 - not a scalar: not a metric
                continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            key = clean_text(str(name), MAX_METRIC_NAME)
            if key and (key in out or len(out) < MAX_METRICS):
                out[key] = wire_float(float(value))
    return out


def clean_text(value: str, limit: int | None = None, keep: Literal["head", "tail"] = "head") -> str:
    """Text the platform accepts: NUL and unpaired surrogates replaced by U+FFFD, and at most
    ``limit`` characters (the head or, for a traceback, the tail, marked with ``…``)."""
    if INVALID_TEXT.search(value):
        value = INVALID_TEXT.sub("\ufffd", value)
    if limit is not None and len(value) > limit:
        value = value[:limit - 1] + "…" if keep == "head" else "…" + value[len(value) - limit + 1:]
    return value


def jsonable(value: Any, depth: int = 0) -> Any:
    """Free-form data (event ``data``) in a form the platform accepts: JSON types only (paths,
    numpy scalars and other objects by their value or their text), finite numbers (others by
    name), valid text, at most MAX_JSON_DEPTH levels (deeper ones as text)."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return wire_float(value)
    if isinstance(value, str):
        return clean_text(value)
    if depth >= MAX_JSON_DEPTH:
        return clean_text(repr(value), MAX_MESSAGE)
    if isinstance(value, Mapping):
        return {clean_text(str(k)): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, depth + 1) for v in value]
    if hasattr(value, "item"):  # numpy / torch scalars
        try:
            return jsonable(value.item(), depth)
        except Exception:  # noqa: BLE001 - not a scalar: by its text
            pass
    if hasattr(value, "tolist"):  # small arrays
        try:
            return jsonable(value.tolist(), depth)
        except Exception:  # noqa: BLE001
            pass
    return clean_text(str(value), MAX_MESSAGE)


def valid_event_type(name: str) -> bool:
    return isinstance(name, str) and 0 < len(name) <= MAX_EVENT_TYPE and bool(_EVENT_TYPE.match(name))


def coerce_event_type(name: Any) -> str:
    """An event type the platform accepts, from any name: lower case, other characters as ``_``,
    a leading letter, at most MAX_EVENT_TYPE characters (``"Epoch End"`` -> ``epoch_end``)."""
    text = re.sub(r"[^a-z0-9_.\-]", "_", str(name).strip().lower())
    if not text or not text[0].isalpha() or not text.isascii():
        text = "x_" + text
    return text[:MAX_EVENT_TYPE]


# --------------------------------------------------------------------------- bodies


class Envelope(TypedDict, total=False):
    """What every callback may carry. ``event_id`` is the idempotency key (a retried callback
    with the same key is applied once; ``attempt`` + ``seq`` when absent); ``attempt``, when
    given, must be the token's."""

    event_id: str
    attempt: int
    seq: int  # heartbeats and events only
    trace_id: str


class HeartbeatBody(Envelope, total=False):
    """POST /v1/jobs/{id}/heartbeat."""

    epoch: int | None
    total_epochs: int | None
    step: int | None
    total_steps: int | None
    progress: float | None  # 0-100
    metrics: dict[str, float | str | None]


class EventBody(Envelope, total=False):
    """POST /v1/jobs/{id}/event (``event_type`` required)."""

    level: str  # EventLevel
    event_type: str
    message: str
    data: dict[str, Any]


class DoneBody(Envelope, total=False):
    """POST /v1/jobs/{id}/done (``status`` required), once per attempt; no ``seq``."""

    status: DoneStatus
    error: str | None
    error_type: str | None  # ErrorType
    traceback: str | None
    final_metrics: dict[str, float | str | None]
    artifacts: dict[str, str]  # name -> URI (s3://...)
    mlflow_run_id: str | None
    training_time_seconds: float | None


class BatchItem(TypedDict):
    kind: CallbackKind
    body: HeartbeatBody | EventBody | DoneBody


class BatchBody(TypedDict):
    """POST /v1/jobs/{id}/callbacks: up to MAX_CALLBACK_BATCH items, applied in order; ``done``
    only as the last item."""

    items: list[BatchItem]


class HeartbeatReply(TypedDict, total=False):
    status: str  # "ok"
    should_continue: bool  # false: stop now (cancelled, or the job is final)
    duplicate: bool


class EventReply(TypedDict, total=False):
    status: str
    duplicate: bool


class DoneReply(TypedDict, total=False):
    status: str
    state: str  # the job's state after it
    duplicate: bool


class BatchItemResult(TypedDict, total=False):
    status: int  # what the item's own route would have answered
    reply: dict[str, Any] | None  # that route's body on 200
    detail: str | None  # the reason otherwise


class BatchReply(TypedDict):
    results: list[BatchItemResult]
    should_continue: bool


def envelope(event_id: str | None = None, attempt: int | None = None, seq: int | None = None,
             trace_id: str | None = None) -> Envelope:
    body: Envelope = {}
    if event_id is not None:
        body["event_id"] = clean_text(event_id, MAX_IDEMPOTENCY_KEY)
    if attempt is not None:
        body["attempt"] = attempt
    if seq is not None:
        body["seq"] = seq
    if trace_id is not None:
        body["trace_id"] = clean_text(trace_id, MAX_TRACE_ID)
    return body


def progress_percent(epoch: int | None, total_epochs: int | None, step: int | None = None,
                     total_steps: int | None = None) -> float:
    """Progress in percent from epoch/step counts (epochs count from 1; steps within an epoch,
    or of the whole run when no epoch is given)."""
    if not epoch or not total_epochs:
        return 100.0 * step / total_steps if step and total_steps else 0.0
    if step is not None and total_steps:
        return 100.0 * ((epoch - 1) + step / total_steps) / total_epochs
    return 100.0 * epoch / total_epochs


def heartbeat_body(*, epoch: int | None = None, total_epochs: int | None = None, step: int | None = None,
                   total_steps: int | None = None, progress: float | None = None,
                   metrics: Mapping[str, Any] | None = None, **env: Any) -> HeartbeatBody:
    """A heartbeat; ``progress`` (percent, clamped to 0-100) is derived from the counts when not
    given. ``env``: the envelope's fields (event_id, attempt, seq, trace_id)."""
    if progress is None:
        progress = progress_percent(epoch, total_epochs, step, total_steps)
    pct = float(progress or 0.0)
    pct = 0.0 if math.isnan(pct) else min(max(pct, 0.0), MAX_PROGRESS)
    body: HeartbeatBody = {**envelope(**env)}
    body.update(  # type: ignore[call-arg]  # mypy types TypedDict.update without keywords
        epoch=epoch, total_epochs=total_epochs, step=step, total_steps=total_steps,
        progress=round(pct, 3), metrics=wire_metrics(metrics))
    return body


def event_body(event_type: str, message: str = "", level: str | EventLevel = EventLevel.INFO,
               data: Mapping[str, Any] | None = None, **env: Any) -> EventBody:
    """An event. ``level`` by name or alias (an unknown one is ``info``); ``event_type`` must
    match EVENT_TYPE_PATTERN (see ``coerce_event_type``); the message is cut to MAX_MESSAGE."""
    lvl = normalize_level(level)
    if lvl not in EVENT_LEVELS:
        lvl = EventLevel.INFO.value
    body: EventBody = {**envelope(**env)}
    body.update(  # type: ignore[call-arg]  # mypy types TypedDict.update without keywords
        level=lvl, event_type=str(event_type), message=clean_text(str(message), MAX_MESSAGE),
        data=jsonable(dict(data or {})))
    return body


def done_body(status: DoneStatus, *, error: str | None = None, error_type: ErrorType | str | None = None,
              traceback: str | None = None, final_metrics: Mapping[str, Any] | None = None,
              artifacts: Mapping[str, Any] | None = None, mlflow_run_id: str | None = None,
              training_time_seconds: float | None = None, **env: Any) -> DoneBody:
    """The attempt's outcome. ``error_type`` only for ``failed`` (coerced: an unknown name is
    UNKNOWN_ERROR); texts cut to their limits (a traceback keeps its end); empty artifacts left
    out. Carries no ``seq``: done is once per attempt."""
    if status not in DONE_STATUSES:
        raise ValueError(f"status must be one of {', '.join(DONE_STATUSES)}, not {status!r}")
    env.pop("seq", None)
    seconds = None
    if training_time_seconds is not None and math.isfinite(training_time_seconds):
        seconds = round(min(max(float(training_time_seconds), 0.0), MAX_TRAINING_TIME_S), 3)
    body: DoneBody = {**envelope(**env)}
    body.update(  # type: ignore[call-arg]  # mypy types TypedDict.update without keywords
        status=status,
        error=clean_text(str(error), MAX_ERROR) if error else None,
        error_type=str(ErrorType.coerce(error_type)) if status == "failed" else None,
        traceback=clean_text(str(traceback), MAX_TRACEBACK, keep="tail") if traceback else None,
        final_metrics=wire_metrics(final_metrics),
        artifacts={clean_text(str(k), MAX_ARTIFACT_NAME): clean_text(str(v), MAX_ARTIFACT_URI)
                   for k, v in (artifacts or {}).items() if v},
        mlflow_run_id=clean_text(str(mlflow_run_id), MAX_MLFLOW_RUN_ID) if mlflow_run_id else None,
        training_time_seconds=seconds)
    return body


def batch_body(items: Iterable[tuple[str, Mapping[str, Any]]]) -> BatchBody:
    """``(kind, body)`` pairs in order as one POST .../callbacks body."""
    out: list[BatchItem] = [{"kind": kind, "body": dict(body)} for kind, body in items]  # type: ignore[typeddict-item]
    if not 0 < len(out) <= MAX_CALLBACK_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_CALLBACK_BATCH} callbacks, not {len(out)}")
    if any(item["kind"] == DONE for item in out[:-1]):
        raise ValueError("done can only be the last item of a batch")
    return {"items": out}


# --------------------------------------------------------------------------- heartbeat merge rule

# A newer heartbeat's non-null value of these replaces the older one's; progress only moves
# forward (the platform keeps the larger); metrics merge name by name, the newer value winning
# (the platform keeps them per epoch and in the job's latest metrics). Identity (event_id, seq)
# is the newer one's.
HEARTBEAT_OVERRIDES: tuple[str, ...] = ("epoch", "total_epochs", "step", "total_steps")


def merge_heartbeats(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The one heartbeat whose effect on the platform equals applying ``old`` then ``new`` (of the
    same epoch, or ``old`` without metrics): how the SDK coalesces a backlog."""
    merged = dict(new)
    for name in HEARTBEAT_OVERRIDES:
        if merged.get(name) is None and old.get(name) is not None:
            merged[name] = old[name]
    progresses = [p for p in (old.get("progress"), new.get("progress")) if p is not None]
    if progresses:
        merged["progress"] = max(progresses)
    if old.get("metrics"):
        merged["metrics"] = {**old["metrics"], **(new.get("metrics") or {})}
    return merged


# --------------------------------------------------------------------------- storage

S3_SCHEME = "s3://"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); the key may be empty."""
    if not isinstance(uri, str) or not uri.startswith(S3_SCHEME):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len(S3_SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI without a bucket: {uri!r}")
    return bucket, key


def format_s3_uri(bucket: str, key: str) -> str:
    return f"{S3_SCHEME}{bucket}/{key.lstrip('/')}"


# The object layout, in the datasets bucket (STORAGE_BUCKET or EXTERNAL_BUCKET_DATASETS) and the
# checkpoints bucket (STORAGE_BUCKET or INTERNAL_BUCKET_CHECKPOINTS):
#   datasets/{dataset_id}.zip  or  datasets/{dataset_id}/...   (DICE: annotations.json + images/)
#   datasets/{dataset_id}@{sha256}.zip (.tar, .tar.gz, .tgz)     a version uploaded through the API
#   checkpoints/job-{job_id}/{best,last,epoch-N}.pt
#   artifacts/job-{job_id}/...
DATASETS_PREFIX = "datasets/"
CHECKPOINT_NAMES = ("best", "last")  # and epoch-N
CHECKPOINT_SUFFIX = ".pt"


def dataset_archive_key(dataset_id: str) -> str:
    return f"{DATASETS_PREFIX}{dataset_id}.zip"


def dataset_prefix(dataset_id: str) -> str:
    return f"{DATASETS_PREFIX}{dataset_id}/"


def dataset_uri(bucket: str, dataset_id: str) -> str:
    """DATASET_S3_URI: the archive next to it (``.zip``) or the prefix under it holds the dataset."""
    return format_s3_uri(bucket, f"{DATASETS_PREFIX}{dataset_id}")


def dataset_version_key(dataset_id: str, sha256: str, filename: str) -> str:
    """A version uploaded through the API (DATASET_S3_URI names it): ``datasets/{id}@{sha256}``
    with the archive's suffix. Beside, not under, the ``datasets/{id}`` of a dataset placed by hand."""
    lower = filename.lower()
    suffix = next((s for s in (".tar.gz", ".tgz", ".tar", ".zip") if lower.endswith(s)), ".zip")
    return f"{DATASETS_PREFIX}{dataset_id}@{sha256}{suffix}"


def checkpoints_prefix(job_id: str) -> str:
    return f"checkpoints/job-{job_id}/"


def checkpoint_key(job_id: str, name: str) -> str:
    """``checkpoints/job-{id}/{name}.pt`` (a name with a suffix keeps it)."""
    return checkpoints_prefix(job_id) + (name if PurePosixPath(name).suffix else name + CHECKPOINT_SUFFIX)


def artifacts_prefix(job_id: str) -> str:
    return f"artifacts/job-{job_id}/"


def artifact_key(job_id: str, relative: str) -> str:
    """``artifacts/job-{id}/{relative}``; refuses a path that would leave the job's prefix."""
    rel = relative.lstrip("/")
    if not rel or ".." in PurePosixPath(rel).parts:
        raise ValueError(f"invalid artifact key {relative!r}")
    return artifacts_prefix(job_id) + rel
