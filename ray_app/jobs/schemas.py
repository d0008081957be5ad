"""Deprecated: the old home of the API's bodies, split in two along its seam. Import from

- ``ray_app.jobs.api_models``: the job API (JobCreate, JobView, pages, AttemptView, ...);
- ``ray_app.jobs.callback_models``: the trainer callbacks (HeartbeatIn, EventIn, DoneIn, the
  batch, the replies);
- ``sdk.contract``: the contract's vocabulary (ErrorType, TaskType, EventLevel, aliases, limits).

Kept only so that code written against the old path keeps importing while it moves; nothing is
defined here.
"""

from __future__ import annotations

from sdk.contract import TASK_ALIASES, ErrorType, EventLevel, TaskType, normalize_task_type  # noqa: F401

from ray_app.jobs.api_models import (  # noqa: F401
    AttemptView,
    EventPage,
    EventView,
    JobCreate,
    JobPage,
    JobView,
    LogLine,
    LogPage,
    MetricPage,
    MetricView,
)
from ray_app.jobs.callback_models import (  # noqa: F401
    IDEMPOTENCY_KEY,
    MAX_CALLBACK_BATCH,
    CallbackBatchIn,
    CallbackBatchReply,
    CallbackItemResult,
    DoneIn,
    DoneItem,
    DoneReply,
    EventIn,
    EventItem,
    EventReply,
    HeartbeatIn,
    HeartbeatItem,
    HeartbeatReply,
)
