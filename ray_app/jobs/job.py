"""`Job`: a job as the store holds it, the one shape every part of the platform passes around.

The store keeps each job as its database row; the typed store client (store/client.py) hands it
out as a `Job`, so the controller, the API and the model server read attributes a type checker and
a reader can follow (`job.state is JobState.RUNNING`), not dictionary keys.

It is what the API shows (`JobView`, the public contract) plus the store's own bookkeeping; the
API's response model drops the bookkeeping fields when it serializes a `Job`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ray_app.jobs.api_models import JobView


class Job(JobView):
    num: int  # creation order: list cursors
    traceback: str | None = None
    done: dict[str, Any] | None = None  # the current attempt's accepted done body
    cancel_requested_at: datetime | None = None
    queued_at: datetime | None = None
    last_progress_at: datetime | None = None

    @property
    def is_final(self) -> bool:
        return self.state.is_terminal
