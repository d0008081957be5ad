"""Data-parallel helpers for a trainer that runs as several ranks (DESIGN §12, trainers/README.md,
"Distributed trainers").

The platform starts one process per rank with torchrun's rendezvous variables
(``contract.RENDEZVOUS_ENV``); rank 0 (``contract.REPORTING_RANK``) alone speaks for the job
(heartbeats, events, ``done``, checkpoints, MLflow). A trainer needs little more than
torch.distributed itself; what it must not get wrong is here:

    from sdk import distributed as dist

    dist.init(device.type)                     # NCCL on cuda, Gloo on cpu; no-op for one rank
    for step, batch in enumerate(loader):
        if dist.any_rank(sdk.should_stop):     # every rank stops at the same step, or the others
            break                              # hang in their next collective until it times out
        ...
    means = dist.all_reduce_mean({"loss": loss})            # identical on every rank
    dist.save_on_main(lambda: save_and_upload(model))       # rank 0 writes, all wait for it
    dist.shutdown()

Standard library only at import: torch is imported by the functions that need it, so ``import
sdk`` stays light and works without torch. With WORLD_SIZE unset or 1 every helper is a no-op that
returns its input (``all_reduce_*``), the flag (``any_rank``) or ``fn()`` (``save_on_main``), so a
trainer has one code path for one rank and many.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from .contract import DIST_TIMEOUT_ENV
from .errors import ConfigError

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 300.0  # how long a collective waits for a silent peer (VTP_DIST_TIMEOUT_S)
TIMEOUT_ENV = DIST_TIMEOUT_ENV


def _env_int(name: str, default: int) -> int:
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


# ----------------------------------------------------------------------------- where this rank is
def rank() -> int:
    """This process's rank in the job's gang (RANK; 0 when unset)."""
    return _env_int("RANK", 0)


def world_size() -> int:
    """The number of ranks (WORLD_SIZE; 1 when unset)."""
    return max(1, _env_int("WORLD_SIZE", 1))


def local_rank() -> int:
    """This process's rank on its node (LOCAL_RANK). Not for choosing a GPU: use DEVICE, the GPUs
    Ray made visible to this very process."""
    return _env_int("LOCAL_RANK", 0)


def local_world_size() -> int:
    """The number of ranks on this node (LOCAL_WORLD_SIZE)."""
    return max(1, _env_int("LOCAL_WORLD_SIZE", 1))


def node_rank() -> int:
    """The index of this node among the job's nodes (NODE_RANK)."""
    return _env_int("NODE_RANK", 0)


def is_main() -> bool:
    """Rank 0: the one that reports, saves checkpoints and logs to MLflow."""
    return rank() == 0


def is_distributed() -> bool:
    """More than one rank (WORLD_SIZE > 1)."""
    return world_size() > 1


def timeout_s() -> float:
    """How long a collective (and the rendezvous) waits for a peer: VTP_DIST_TIMEOUT_S, 300 s by
    default. A peer that died is usually noticed at once (its sockets close); this bounds the wait
    for one that hangs."""
    raw = (os.environ.get(TIMEOUT_ENV) or "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r} is not a number") from None
    return value if value > 0 else DEFAULT_TIMEOUT_S


def backend_for(device_type: str) -> str:
    """torch.distributed's backend for a device type: NCCL on GPUs, Gloo on CPUs."""
    return "nccl" if device_type == "cuda" else "gloo"


# ----------------------------------------------------------------------------- the process group
def active() -> bool:
    """Whether a process group is up (``init`` ran in a distributed job)."""
    if not is_distributed():
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def init(device_type: str = "cpu") -> bool:
    """Join the gang: ``init_process_group`` over ``env://`` (MASTER_ADDR/MASTER_PORT, RANK,
    WORLD_SIZE) with the backend for ``device_type`` and the timeout of ``timeout_s``. Returns
    whether a group is up; a no-op (False) for one rank. On cuda, set the process's device first
    (``torch.cuda.set_device``): NCCL uses the current device."""
    if not is_distributed():
        return False
    import torch.distributed as dist

    if dist.is_initialized():
        return True
    missing = [n for n in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(n)]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world_size()} but {' and '.join(missing)} not set")
    if not 0 <= rank() < world_size():
        raise ConfigError(f"RANK={rank()} is not within 0..{world_size() - 1} (WORLD_SIZE={world_size()})")
    dist.init_process_group(backend=backend_for(device_type), init_method="env://", rank=rank(),
                            world_size=world_size(), timeout=timedelta(seconds=timeout_s()))
    return True


def shutdown() -> None:
    """Leave the gang (``destroy_process_group``); a no-op when no group is up."""
    if active():
        import torch.distributed as dist

        dist.destroy_process_group()


def _device() -> Any:
    """Where a collective's tensors live: the current GPU under NCCL, the CPU under Gloo."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every rank got here; a no-op without a group."""
    if active():
        import torch.distributed as dist

        dist.barrier()


# ----------------------------------------------------------------------------- collectives
def all_reduce_sum(values: Mapping[str, float]) -> dict[str, float]:
    """The sum over ranks of each value (float64, so counts and sums of losses stay exact enough).
    Every rank must pass the same names; they are reduced in sorted order, one collective."""
    out = {k: float(v) for k, v in values.items()}
    if not active() or not out:
        return out
    import torch
    import torch.distributed as dist

    names = sorted(out)
    buf = torch.tensor([out[n] for n in names], dtype=torch.float64, device=_device())
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return dict(zip(names, buf.cpu().tolist()))


def all_reduce_tensor(tensor: Any) -> Any:
    """A tensor summed over ranks (a confusion matrix, a histogram), returned on its own device;
    the tensor itself when no group is up."""
    if not active():
        return tensor
    import torch.distributed as dist

    buf = tensor.to(_device()).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(tensor.device)


def all_reduce_mean(values: Mapping[str, float]) -> dict[str, float]:
    """The mean over ranks of each value (every rank weighs the same; see ``weighted_mean`` for
    ranks that saw different numbers of samples)."""
    sums = all_reduce_sum(values)
    n = world_size() if active() else 1
    return {k: v / n for k, v in sums.items()}


def weighted_mean(values: Mapping[str, float], weight: float) -> dict[str, float]:
    """The mean over ranks of each value weighted by ``weight`` (this rank's sample count): what
    one process would have computed over all the samples. Zero weights in total give zeros."""
    sums = all_reduce_sum({**{f"v:{k}": float(v) * weight for k, v in values.items()}, "w": float(weight)})
    total = sums.pop("w")
    return {k[2:]: (v / total if total else 0.0) for k, v in sums.items()}


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any: the stop decision of a gang. Only rank 0
    hears a cancel (its heartbeat's reply) and each rank its own SIGTERM; a rank that stopped
    alone would leave the others waiting in their next collective. Call it at the same point of
    every step on every rank."""
    if not active():
        return bool(flag)
    import torch
    import torch.distributed as dist

    buf = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_device())
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return bool(buf.item())


class MainRankFailed(RuntimeError):
    """Raised on the ranks > 0 when ``fn`` of ``save_on_main`` failed on rank 0 (which raises its
    own error and reports it)."""


def save_on_main(fn: Callable[[], T]) -> T | None:
    """``fn()`` on rank 0 (writing and uploading a checkpoint), the other ranks waiting for it:
    returns its result on rank 0 and None elsewhere. If ``fn`` raises on rank 0 every rank raises
    (rank 0 its own error, the others MainRankFailed) instead of the others waiting in their next
    collective for a rank 0 that is gone."""
    result: T | None = None
    error: BaseException | None = None
    if is_main():
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, once the others know
            error = exc
    failed = any_rank(error is not None)  # also the barrier: everyone waits for rank 0's save
    if error is not None:
        raise error
    if failed:
        raise MainRankFailed(f"rank 0 failed while saving (this is rank {rank()} of {world_size()})")
    return result


def broadcast_buffers(module: Any, src: int = 0) -> None:
    """Make ``module``'s buffers (BatchNorm's running statistics) rank ``src``'s on every rank.
    DistributedDataParallel keeps parameters identical but each rank's last forward updates its
    buffers from its own batch: call this after an epoch so that evaluation, checkpoints and
    checksums are the same on every rank."""
    if not active():
        return
    import torch.distributed as dist

    for buf in module.buffers():
        dist.broadcast(buf.data, src=src)


def state_checksum(state_dict: Mapping[str, Any]) -> str:
    """sha256 over a state dict's tensors in key order (names, dtypes, shapes and bytes): equal on
    two ranks exactly when their weights are. Values that are not tensors are left out."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # as raw bytes (bfloat16 has no numpy type; a 0-d tensor cannot change its dtype's size)
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


__all__ = ["rank", "world_size", "local_rank", "local_world_size", "node_rank", "is_main", "is_distributed",
           "timeout_s", "backend_for", "active", "init", "shutdown", "barrier", "all_reduce_sum", "all_reduce_tensor",
           "all_reduce_mean",
           "weighted_mean", "any_rank", "save_on_main", "MainRankFailed", "broadcast_buffers", "state_checksum",
           "DEFAULT_TIMEOUT_S", "TIMEOUT_ENV"]
