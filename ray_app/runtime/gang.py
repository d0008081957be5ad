"""An attempt's runners, one per rank, followed as one (DESIGN §12: a job is a gang of ranks).

The controller (reconciler.py) talks to a Gang as it talked to one runner: ready, run, terminate,
status. A single-process job is a gang of one, and behaves exactly as before.

- ready: every rank's runner is placed and its trainer environment built; rank 0's also says
  its node's address and a free port there, the rendezvous point of torch.distributed.
- run: every rank's trainer starts with torchrun's variables (jobs/ranks.py: rendezvous). The
  attempt ends with rank 0's trainer (the others are given a moment, then ended), or as soon as
  any other rank's trainer ends badly or its runner dies: one rank lost ends the attempt for
  all, and the recovery policy retries the gang as one (jobs/recovery.py).
- terminate: every rank's process group, on every node.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import ray

from ray_app.jobs.ranks import Layout, rendezvous

log = logging.getLogger("ray_app.controller")

PEERS_GRACE_S = 10.0  # how long the other ranks may take to exit after rank 0's trainer did
RETRY_UNAVAILABLE_S = 1.0


class RankLost(Exception):
    """A rank's runner is gone (or never answered): what the attempt's end is explained by."""

    def __init__(self, rank: int, actor: Any, node_id: str | None, cause: BaseException):
        super().__init__(f"rank {rank}: {cause}")
        self.rank, self.actor, self.node_id, self.cause = rank, actor, node_id, cause


async def _await(ref: Any) -> Any:
    return await ref


@dataclass
class Gang:
    actors: list[Any]  # rank order; rank 0 reports for the job
    layout: Layout | None = None  # None for a gang re-attached after a controller restart
    infos: list[dict[str, Any]] = field(default_factory=list)  # each rank's ready() answer

    @property
    def leader(self) -> Any:
        return self.actors[0]

    @property
    def size(self) -> int:
        return len(self.actors)

    async def ready(self) -> dict[str, Any]:
        """Rank 0's ready() answer, with every rank's node (`ranks`); RankLost for a rank whose
        runner failed to start (an ActorUnavailableError as it is: the caller asks again)."""
        calls = [asyncio.ensure_future(_await(a.ready.remote(want_port=(r == 0 and self.size > 1))))
                 for r, a in enumerate(self.actors)]
        await asyncio.wait(calls)
        for rank, call in enumerate(calls):
            exc = call.exception()
            if exc is not None:
                if isinstance(exc, ray.exceptions.ActorUnavailableError) or self.size == 1:
                    raise exc
                raise RankLost(rank, self.actors[rank], None, exc)
        self.infos = [c.result() for c in calls]
        return {**self.infos[0], "ranks": [{"rank": r, "node_id": i.get("node_id")} for r, i in enumerate(self.infos)]}

    def rank_envs(self) -> list[dict[str, str]]:
        """Each rank's rendezvous variables (and its share of the worker's CPUs)."""
        if self.size == 1:  # no peers to meet: no rendezvous point
            return [{"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "NODE_RANK": "0"}]
        leader = self.infos[0]
        envs = rendezvous([i.get("node_id") or "" for i in self.infos], leader.get("node_ip") or "127.0.0.1",
                          int(leader.get("port") or 0))
        if self.layout is not None:
            for env, rank in zip(envs, self.layout.ranks, strict=True):
                env["NUM_CPUS"] = f"{rank.num_cpus:g}"
        return envs

    async def run(self) -> dict[str, Any]:
        """Start (or re-attach to) every rank's trainer; returns how the attempt ended: rank 0's
        outcome, or that of the rank whose trainer ended it (`rank` says which). RankLost when a
        rank's runner died."""
        if self.size == 1:  # today's single process: its runner's answer as it is
            return await _await(self.leader.run.remote(self.rank_envs()[0]))
        envs = self.rank_envs()
        pending: dict[asyncio.Future, int] = {}

        def start(rank: int) -> None:
            pending[asyncio.ensure_future(_await(self.actors[rank].run.remote(envs[rank])))] = rank

        for rank in range(self.size):
            start(rank)
        outcomes: dict[int, dict[str, Any]] = {}
        ending: tuple[int, dict[str, Any] | None, BaseException | None] | None = None
        while pending and ending is None:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for call in done:
                rank = pending.pop(call)
                exc = call.exception()
                if isinstance(exc, ray.exceptions.ActorUnavailableError):
                    await asyncio.sleep(RETRY_UNAVAILABLE_S)  # not dead yet: ask again (run re-attaches)
                    start(rank)
                elif exc is not None:
                    ending = ending or (rank, None, exc)
                else:
                    outcomes[rank] = call.result()
                    if rank == 0 or outcomes[rank].get("returncode") != 0:
                        ending = ending or (rank, outcomes[rank], None)
        assert ending is not None or not pending
        if pending:  # the others: rank 0 is done (they get a moment), or a rank ended the attempt
            rank0_succeeded = ending is not None and ending[0] == 0 and (ending[1] or {}).get("returncode") == 0
            grace = PEERS_GRACE_S if rank0_succeeded else 0.0
            finished, _ = await asyncio.wait(pending, timeout=grace) if grace else (set(), None)
            for call in finished:
                pending.pop(call)
            if pending:
                await self.terminate_ranks([pending[c] for c in pending])
                await asyncio.wait(pending, timeout=30)
        rank, outcome, exc = ending if ending is not None else (0, outcomes.get(0), None)
        if exc is not None:
            node = self.infos[rank].get("node_id") if rank < len(self.infos) else None
            raise RankLost(rank, self.actors[rank], node, exc)
        assert outcome is not None
        return {**outcome, "rank": rank, "ranks": {r: o.get("returncode") for r, o in sorted(outcomes.items())}}

    async def terminate_ranks(self, ranks: list[int], grace_s: float = 5.0) -> list[BaseException]:
        calls = [_await(self.actors[r].terminate.remote(grace_s)) for r in ranks]
        results = await asyncio.gather(*calls, return_exceptions=True)
        return [r for r in results if isinstance(r, BaseException)]

    async def terminate(self, grace_s: float) -> dict[str, Any]:
        """Every rank's process group ended (SIGTERM, `grace_s`, SIGKILL); raises the first
        failure (a dead runner: the caller ends what it left behind by its recorded pgid)."""
        failures = await self.terminate_ranks(list(range(self.size)), grace_s)
        if failures:
            raise failures[0]
        return {"alive": False}

    async def status(self) -> dict[str, Any]:
        return await _await(self.leader.status.remote())
