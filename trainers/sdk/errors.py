"""Error types of the trainer contract and the SDK's exceptions.

Every SDK exception carries an ``error_type`` so that ``report_failed`` (and the context
manager) can tell the platform *why* a job failed; the platform decides from it whether to
retry (infrastructure errors) or not (dataset/config/validation errors).
"""
from __future__ import annotations

from .contract import EXIT_CALLBACK_FAILURE, EXIT_SUCCESS, EXIT_TRAINING_FAILURE, ErrorType

# the contract's exit codes and error types (contract.py), re-exported where they always were
__all__ = ["EXIT_SUCCESS", "EXIT_TRAINING_FAILURE", "EXIT_CALLBACK_FAILURE", "ErrorType", "SDKError",
           "DatasetError", "CheckpointError", "ConfigError", "StorageError", "CallbackError", "NotMainRankError", "error_type_of",
           "is_peer_loss"]


class SDKError(Exception):
    """Base of the SDK's own errors; ``error_type`` says how to report it."""

    error_type: ErrorType = ErrorType.UNKNOWN_ERROR


class DatasetError(SDKError):
    """The dataset is missing, malformed, hostile, or fails validation."""

    error_type = ErrorType.DATASET_ERROR


class CheckpointError(SDKError):
    """A checkpoint is missing, corrupt or unusable, or the storage refused it (final: a new
    attempt would meet the same checkpoint). Unreachable storage is a StorageError instead."""

    error_type = ErrorType.CHECKPOINT_ERROR


class ConfigError(SDKError):
    """An environment variable or CONFIG value is missing or invalid."""

    error_type = ErrorType.CONFIG_ERROR


class StorageError(SDKError):
    """S3 could not be reached, or refused an operation.

    ``unreachable``: the endpoint did not answer or answered "not now" (connection refused or
    reset, timeout, 5xx, throttling). That is infrastructure: the SDK retries it for a while,
    and the platform retries the attempt (NETWORK_ERROR). A refusal (4xx: credentials, bucket,
    permissions, a missing object) would be refused again, and is reported as such.
    """

    error_type = ErrorType.NETWORK_ERROR

    def __init__(self, message: str, unreachable: bool = True) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class NotMainRankError(SDKError):
    """A rank > 0 of a distributed job tried what only rank 0 does (uploading a checkpoint or an
    artifact): a trainer's bug, refused rather than two ranks writing the same object."""

    error_type = ErrorType.FRAMEWORK_ERROR


class CallbackError(SystemExit):
    """The backend could not be told the outcome (unreachable, or refused the token).

    A subclass of ``SystemExit`` on purpose: trainers written like seed 001 wrap everything in
    ``except Exception`` and would turn this into exit code 1; the contract says a callback
    failure exits 2. SystemExit passes through ``except Exception`` and, uncaught, ends the
    process with ``code`` (2) while ``finally`` blocks still run.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(EXIT_CALLBACK_FAILURE)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


# What torch.distributed raises when another rank of the gang vanished (killed, its node lost) or
# stopped answering, seen here (torch 2.14, bench and tests/sdk/test_distributed.py):
#   Gloo, peer gone:      RuntimeError "[.../gloo/transport/tcp/pair.cc:545] Read error [...]:
#                         Connection reset by peer" (or "Connection closed by peer")
#   Gloo, peer silent:    RuntimeError "[.../gloo/transport/tcp/unbound_buffer.cc:78] Timed out
#                         waiting 300000ms for recv operation to complete"
#   rendezvous:           torch.distributed.DistStoreError "Timed out after 6 seconds waiting for
#                         clients. 1/2 clients joined.", DistNetworkError "The client socket has
#                         timed out ...", both DistError subclasses (module torch.distributed)
#   NCCL:                 torch.distributed.DistBackendError ("NCCL communicator was aborted",
#                         the watchdog's "collective operation timeout")
# Gloo's are plain RuntimeErrors, so they are known by their text; the others by their class,
# by name and module: the SDK never imports torch.
_DIST_ERROR_NAMES = frozenset({"DistError", "DistBackendError", "DistNetworkError", "DistStoreError"})
_PEER_LOSS_TEXT = ("gloo/transport", "connection reset by peer", "connection closed by peer",
                   "processgroupgloo", "processgroupnccl", "nccl communicator", "nccl error",
                   "watchdog caught collective operation timeout")


def is_peer_loss(exc: BaseException) -> bool:
    """Whether ``exc`` is torch.distributed's news that another rank is gone or silent: the gang's
    failure, not this rank's (INFRASTRUCTURE_ERROR: the platform retries the whole gang)."""
    cls = type(exc)
    if any(c.__name__ in _DIST_ERROR_NAMES and c.__module__.startswith("torch") for c in cls.__mro__):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _PEER_LOSS_TEXT)


def error_type_of(exc: BaseException, default: ErrorType = ErrorType.UNKNOWN_ERROR) -> ErrorType:
    """Best guess of the ErrorType for an arbitrary exception; ``default`` when nothing matches
    (a trainer passes FRAMEWORK_ERROR: whatever its framework raised).

    Out of memory, by class or text: MemoryError, torch's ``OutOfMemoryError`` (by name: the SDK
    does not import torch), "CUDA out of memory", a full disk, and a DataLoader worker "killed by
    signal" (the kernel's OOM killer). Another rank of a distributed job lost (``is_peer_loss``):
    INFRASTRUCTURE_ERROR, so that rank 0, the one that reports, does not fail the job for good
    with a FRAMEWORK_ERROR when a peer's process or node died."""
    if isinstance(exc, SDKError):
        return exc.error_type
    name = type(exc).__name__
    text = f"{name} {exc}".lower()
    if (isinstance(exc, MemoryError) or name == "OutOfMemoryError" or "out of memory" in text
            or "no space left" in text or "killed by signal" in text):
        return ErrorType.RESOURCE_ERROR
    if is_peer_loss(exc):
        return ErrorType.INFRASTRUCTURE_ERROR
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return ErrorType.NETWORK_ERROR
    if isinstance(exc, (ValueError, KeyError, TypeError)) and "config" in text:
        return ErrorType.CONFIG_ERROR
    return default
