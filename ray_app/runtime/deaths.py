"""Why a runner actor is gone, in one sentence (issue 13, item 12).

Ray's ActorDiedError text is long (about 900 characters) and, for any worker that lost its
connection, lists the OOM killer among "common causes" whether or not memory ran out. The job's
reason should say what happened; the raw text goes to the job's log. The facts come from the GCS
(the actor's death cause and the node's state); the exception's text is the fallback.

Ray does not record a worker's exit status (its raylet sees only the connection close), so a
worker killed by a signal and one that crashed read the same here: "died unexpectedly".
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

log = logging.getLogger("ray_app.controller")

ID_CHARS = 12  # node ids are 56 hex characters; the first 12 tell nodes apart, as `ray status` does


@dataclass(frozen=True)
class RunnerDeath:
    reason: str  # one sentence, for the job
    raw: str  # Ray's full text, for the log
    node_id: str | None = None
    node_lost: bool = False
    retryable: bool = True  # lost (node, worker, killed); not: the runner itself failed to start


def _node(node_id: str | None, ip: str | None) -> str:
    if node_id and ip:
        return f"node {ip} ({node_id[:ID_CHARS]})"
    if node_id:
        return f"node {node_id[:ID_CHARS]}"
    return f"node {ip}" if ip else "its node"


def _first_sentence(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    sentence = match.group(1) if match else text
    return sentence if len(sentence) <= limit else sentence[: limit - 1] + "…"


def explain(raw: str, death_cause: Any = None, node_id: str | None = None,
            node: dict[str, Any] | None = None, pid: int | None = None) -> RunnerDeath:
    """The sentence for a runner that is gone.

    raw: the exception's text; death_cause: the GCS's ActorDeathCause (protobuf) or None;
    node_id: the node the runner ran on; node: that node's `ray.nodes()` entry, if known."""
    ip = (node or {}).get("NodeManagerAddress")
    ctx = None
    if death_cause is not None and death_cause.HasField("actor_died_error_context"):
        ctx = death_cause.actor_died_error_context
        ip = ip or ctx.node_ip_address or None
        pid = pid or ctx.pid or None
    where = _node(node_id, ip)
    who = f"the runner's worker process (pid {pid})" if pid else "the runner's worker process"
    node_dead = node is not None and not node.get("Alive", True)
    reason_name = _enum_name(ctx, "reason") if ctx is not None else ""

    if node_dead or reason_name == "NODE_DIED":
        why = (node or {}).get("DeathReasonMessage") or (
            ctx.node_death_info.reason_message if ctx is not None and ctx.HasField("node_death_info") else "")
        why = f" ({_first_sentence(why, 120).rstrip('.')})" if why else ""
        return RunnerDeath(f"{where} was lost{why}; the runner and its trainer went with it",
                           raw, node_id, node_lost=True)
    if death_cause is not None and death_cause.HasField("oom_context"):
        return RunnerDeath(f"Ray's memory monitor killed {who} on {where}: the node was running out of memory",
                           raw, node_id)
    if death_cause is not None and death_cause.HasField("creation_task_failure_context"):
        return RunnerDeath(f"the runner failed while starting on {where}: {_last_line(raw)}", raw, node_id,
                           retryable=False)
    if death_cause is not None and death_cause.HasField("runtime_env_failed_context"):
        text = death_cause.runtime_env_failed_context.error_message
        return RunnerDeath(f"the runner's environment could not be set up on {where}: "
                           f"{_first_sentence(text)}", raw, node_id, retryable=False)
    if death_cause is not None and death_cause.HasField("actor_unschedulable_context"):
        text = death_cause.actor_unschedulable_context.error_message
        return RunnerDeath(f"the runner could not be scheduled: {_first_sentence(text)}", raw, node_id,
                           retryable=False)
    if reason_name == "RAY_KILL" or "ray.kill" in raw:
        return RunnerDeath(f"the runner actor was killed with ray.kill on {where}", raw, node_id)
    if "out of memory" in raw.lower() and "some common causes" not in raw.lower():
        return RunnerDeath(f"{who} on {where} was killed for lack of memory", raw, node_id)
    if reason_name == "WORKER_DIED" or "worker process has died" in raw or "connection error" in raw:
        return RunnerDeath(f"{who} on {where} died unexpectedly (killed by a signal or crashed; "
                           "Ray saw only its connection close)", raw, node_id)
    return RunnerDeath(f"the runner on {where} is gone: {_first_sentence(_last_line(raw))}", raw, node_id)


def _enum_name(msg: Any, field: str) -> str:
    try:
        return msg.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number[getattr(msg, field)].name
    except (KeyError, AttributeError):
        return ""


def _last_line(raw: str) -> str:
    lines = [line.strip() for line in raw.strip().splitlines() if line.strip()]
    return _first_sentence(lines[-1] if lines else raw)


def of_actor(actor: Any, node_id: str | None, exc: BaseException) -> RunnerDeath:
    """Ask the GCS what it knows (the actor's death cause, its node's state), then explain.
    Blocking (GCS calls): run it off the event loop."""
    raw = " ".join(str(exc).split())
    cause, pid, node = None, None, None
    try:
        from ray_app.runtime import ray_private  # the actor table: no public API has the cause

        info = ray_private.actor_info(ray_private.actor_id_hex(actor))
        cause, pid = info.get("DeathCause"), info.get("Pid") or None
        node_id = info.get("Address", {}).get("NodeID") or node_id
    except Exception:
        pass
    try:
        node = next((n for n in ray.nodes() if n["NodeID"] == node_id), None)
    except Exception:
        pass
    return explain(raw, cause, node_id, node, pid)


async def runner_death(store: Any, actor: Any, job_id: str, attempt: int, trace_id: str, node_id: str | None,
                       exc: BaseException, describe: Callable[[BaseException], str]) -> RunnerDeath:
    """Why an attempt's runner is gone: one sentence for the job, Ray's own text to the job's log
    (and the controller's)."""
    if not isinstance(exc, ray.exceptions.RayActorError):  # not a death: say what it was
        return RunnerDeath(describe(exc), str(exc), node_id, retryable=False)
    death = await asyncio.to_thread(of_actor, actor, node_id, exc)
    log.warning("[TRACE:%s] attempt %d: %s. Ray said: %s", trace_id, attempt, death.reason, death.raw)
    try:
        await store.append_logs(job_id, attempt, [
            ("runner", f"[TRACE:{trace_id}] [RUNNER] {death.reason}. Ray said: {death.raw}")])
    except Exception:  # a log line is not worth losing the attempt's outcome for
        pass
    return death
