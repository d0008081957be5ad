"""The queue's API bodies: a project's quota (what a platform admin sets) and the queue as
`GET /v1/queue` shows it (the controller's last pass, scheduling/queue.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ray_app.jobs.model_bases import Strict
from ray_app.jobs.types import finite_float


class QuotaSet(Strict):
    """PUT /v1/projects/{id}/quota: the fields given change, the others stay; null is unlimited."""

    max_gpus: float | None = finite_float(default=None, ge=0, le=1_000_000, description="the most GPUs the "
                                          "project's jobs may hold at once (null: unlimited)")
    max_cpus: float | None = finite_float(default=None, ge=0, le=1_000_000, description="the most CPUs")
    max_running_jobs: int | None = Field(default=None, strict=True, ge=0, le=1_000_000,
                                         description="the most jobs offered to the cluster at once")
    weight: float = finite_float(default=1.0, gt=0, le=1000, description="its fair share against other "
                                 "projects' (2: twice the share of a project of weight 1)")
    preemptible: bool = Field(default=True, strict=True, description="false: its jobs are never preempted")


class Capacity(BaseModel):
    cpus: float
    gpus: float


class QuotaView(BaseModel):
    max_gpus: float | None = None
    max_cpus: float | None = None
    max_running_jobs: int | None = None


class InUse(BaseModel):
    gpus: float
    cpus: float
    running_jobs: int


class ProjectShare(BaseModel):
    project_id: str
    quota: QuotaView
    weight: float
    preemptible: bool
    in_use: InUse = Field(description="what its jobs offered to the cluster hold (or will, once placed)")
    share: float = Field(description="its weighted dominant share (DRF over CPUs and GPUs, what it holds plus "
                         "its decayed recent use, divided by its weight): the lowest goes next")
    recent: Capacity = Field(description="its decayed average use (CPUs, GPUs) over the half-life")
    usage: dict[str, float] = Field(description="its decayed resource-seconds (cpu_seconds, gpu_seconds)")
    waiting: int = Field(description="its jobs waiting in the queue")


class QueueEntry(BaseModel):
    position: int | None = Field(description="1 = offered next; null: in its retry backoff")
    job_id: str
    project_id: str
    priority: int
    priority_name: str
    state: str
    waiting_for: str = Field(description="why it waits (a quota, resources, a preemption), in words")
    framework: str
    model_name: str
    workers: int
    num_cpus: float | None
    num_gpus: float
    created_by: str | None = None
    created_at: str
    sweep_id: str | None = None
    preemptions: int = 0


class QueueTotals(BaseModel):
    total: Capacity
    free: Capacity


class QueueView(BaseModel):
    jobs: list[QueueEntry] = Field(description="the jobs not running yet, in the order they are offered")
    total: int | None = Field(default=None, description="how many jobs you can see wait (`jobs` holds the "
                              "first `limit` of them)")
    projects: list[ProjectShare]
    capacity: QueueTotals | None = None
    preemption: bool = True
    fair_share_half_life_s: float | None = None
    decided_at: str | None = Field(default=None, description="when the controller's pass that decided this ran")
    pass_ms: float | None = Field(default=None, description="how long that pass took, in milliseconds")
