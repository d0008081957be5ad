"""A job as a gang of ranks (DESIGN §12): how many processes it runs, where, with what.

Pure policy, below the API and the controller, which both ask it: the API to refuse a job whose
resources its trainer would leave idle (422 naming the field), the controller to lay out the
placement group and the runners.

A job asks for `workers` (W, the groups of ranks Ray places as one placement group of W bundles)
and per worker `num_gpus`/`num_cpus`/`memory_mb`. Its trainer's manifest says what one of its
processes can use (`distributed`):

    distributed:
      max_workers: 64         # workers a job may ask for (1: one node only)
      gpus_per_process: 1     # a process uses at most this many GPUs: a worker with more runs
                              # num_gpus / gpus_per_process ranks (one per GPU for timm).
                              # Omitted: one process per worker uses all its GPUs (the
                              # framework's own data parallelism inside, as Ultralytics does)
      max_gpus_per_worker: 8  # optional cap

A manifest without `distributed` is a single process: one worker, at most one GPU. Every GPU a
job reserves is used, or the job is refused: a trainer that cannot use several never gets them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Strategy = Literal["PACK", "SPREAD"]
MAX_WORKERS = 64  # the API's bound on `workers`


class Distributed(BaseModel):
    """A manifest's `distributed` block."""

    model_config = ConfigDict(extra="forbid")
    max_workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
    gpus_per_process: float | None = Field(default=None, gt=0)
    max_gpus_per_worker: float | None = Field(default=None, ge=0)


# what a trainer without a `distributed` block can use: one process, one GPU at most
SINGLE_PROCESS = Distributed(max_workers=1, gpus_per_process=None, max_gpus_per_worker=1)


class LayoutError(ValueError):
    """A job its trainer cannot run as asked; `field` is the job field to name in the 422."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Rank:
    rank: int
    worker: int  # the placement group's bundle it runs in
    num_gpus: float
    num_cpus: float
    memory_mb: int | None


@dataclass(frozen=True)
class Layout:
    workers: int
    per_worker: int  # ranks per worker
    strategy: Strategy
    ranks: tuple[Rank, ...]

    @property
    def world_size(self) -> int:
        return len(self.ranks)


def layout(trainer: str, spec: Distributed | None, workers: int, num_gpus: float, num_cpus: float | None,
           memory_mb: int | None, strategy: Strategy = "PACK") -> Layout:
    """The ranks of a job, or LayoutError when its trainer would not use what it asks for."""
    declared = spec is not None
    spec = spec or SINGLE_PROCESS
    if workers > spec.max_workers:
        why = (f"its manifest's distributed.max_workers is {spec.max_workers}" if declared
               else "it declares no `distributed` block: one process")
        raise LayoutError("workers", f"the {trainer} trainer runs at most {spec.max_workers} "
                          f"worker{'s' if spec.max_workers != 1 else ''} ({why}); asked for {workers}")
    cap = spec.max_gpus_per_worker
    if cap is not None and num_gpus > cap:
        why = ("its manifest's distributed.max_gpus_per_worker" if declared
               else "one process on one GPU: it declares no `distributed` block")
        raise LayoutError("num_gpus", f"the {trainer} trainer uses at most {cap:g} GPU{'s' if cap != 1 else ''} "
                          f"per worker ({why}); asked for {num_gpus:g}, which would leave GPUs idle")
    per_worker = 1
    gpp = spec.gpus_per_process
    if gpp is not None and num_gpus > gpp:
        share = num_gpus / gpp
        if not math.isclose(share, round(share)):
            raise LayoutError("num_gpus", f"the {trainer} trainer runs one process per {gpp:g} GPU"
                              f"{'s' if gpp != 1 else ''} (distributed.gpus_per_process): num_gpus per worker "
                              f"must be a multiple of it, not {num_gpus:g}")
        per_worker = round(share)
    cpus = 1.0 if num_cpus is None else float(num_cpus)
    ranks = tuple(
        Rank(rank=w * per_worker + i, worker=w, num_gpus=num_gpus / per_worker, num_cpus=cpus / per_worker,
             memory_mb=None if memory_mb is None else max(1, memory_mb // per_worker))
        for w in range(workers) for i in range(per_worker))
    return Layout(workers=workers, per_worker=per_worker, strategy=strategy, ranks=ranks)


def rendezvous(node_of_rank: list[str], master_addr: str, master_port: int) -> list[dict[str, str]]:
    """torchrun's variables for each rank, from the nodes the ranks landed on (Ray decides:
    two workers may share a node under PACK): NODE_RANK numbers the nodes in the order of their
    first rank, LOCAL_RANK numbers the ranks on one node."""
    nodes: list[str] = []
    for node in node_of_rank:
        if node not in nodes:
            nodes.append(node)
    per_node = {node: node_of_rank.count(node) for node in nodes}
    seen: dict[str, int] = {}
    envs = []
    for rank, node in enumerate(node_of_rank):
        local = seen.get(node, 0)
        seen[node] = local + 1
        envs.append({"MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port),
                     "WORLD_SIZE": str(len(node_of_rank)), "RANK": str(rank), "LOCAL_RANK": str(local),
                     "LOCAL_WORLD_SIZE": str(per_node[node]), "NODE_RANK": str(nodes.index(node))})
    return envs
