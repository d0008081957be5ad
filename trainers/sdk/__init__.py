"""Trainer SDK of the Vision Training Platform (DESIGN §3).

Shipped to every trainer with Ray ``runtime_env.py_modules`` (import it as ``sdk``) and
self-contained so a plugin author can copy this folder: it needs only the standard library,
boto3 and httpx (mlflow is optional and imported lazily).

    from sdk import TrainerSDK, ErrorType, run_main

    def main(sdk: TrainerSDK) -> int:
        sdk.report_started()
        data = sdk.prepare_dataset("yolo")
        for epoch in range(1, sdk.env.epochs + 1):
            if sdk.should_stop:
                break
            sdk.report_progress(epoch, metrics={"loss": ...})
        sdk.report_completed({"mAP50": ...}, checkpoints={"best": sdk.upload_checkpoint(p, "best")})
        return 0

    if __name__ == "__main__":
        run_main(main)
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any, Callable, NoReturn

from . import contract  # noqa: F401  (standard library only: what the platform imports)
from . import distributed  # noqa: F401  (standard library only; torch imported by its functions)
from .contract import format_s3_uri, parse_s3_uri  # noqa: F401
from .env import S3Location, TrainerEnv, normalize_task_type  # noqa: F401
from .errors import (EXIT_CALLBACK_FAILURE, EXIT_SUCCESS, EXIT_TRAINING_FAILURE, CallbackError,  # noqa: F401
                     CheckpointError, ConfigError, DatasetError, ErrorType, NotMainRankError, SDKError,
                     StorageError)

# The names below pull in httpx, the dataset code and (on first use) boto3 and MLflow: imported on
# first access (PEP 562), so that `import sdk.contract` (the platform) and `import sdk.errors`
# stay standard-library only, while `from sdk import TrainerSDK` works as always.
_LAZY = {
    "TrainerSDK": ".core",
    "ArchiveLimits": ".datasets",
    "DatasetCache": ".datasets",
    "convert_dataset": ".datasets",
    "validate_dataset": ".datasets",
}

if TYPE_CHECKING:
    from .core import TrainerSDK
    from .datasets import ArchiveLimits, DatasetCache, convert_dataset, validate_dataset  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # no 1 s+ IMDS probe off EC2
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # once loaded, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "1.0.0"


def exit_code_for(exc: BaseException | None) -> int:
    if exc is None:
        return EXIT_SUCCESS
    if isinstance(exc, CallbackError):
        return EXIT_CALLBACK_FAILURE
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else (EXIT_SUCCESS if exc.code is None else EXIT_TRAINING_FAILURE)
    return EXIT_TRAINING_FAILURE


def run_main(main: Callable[..., Any]) -> NoReturn:
    """Run ``main()`` (or ``main(sdk)``, inside the SDK's context manager) and exit with the
    contract's code: 0 success, 1 training failure, 2 callback failure."""
    code = EXIT_SUCCESS
    try:
        if inspect.signature(main).parameters:
            from .core import TrainerSDK

            with TrainerSDK() as sdk:
                rc = main(sdk)
        else:
            rc = main()
        code = EXIT_SUCCESS if rc is None or rc is True else int(rc)  # 1 == True: compare by identity
    except CallbackError as exc:
        print(f"[EXIT {EXIT_CALLBACK_FAILURE}] callback failure: {exc.reason}", flush=True)
        code = EXIT_CALLBACK_FAILURE
    except SystemExit as exc:
        code = exit_code_for(exc)
    except BaseException as exc:  # noqa: BLE001 - the process is ending; report everything
        print(f"[EXIT {EXIT_TRAINING_FAILURE}] training failed: {type(exc).__name__}: {exc}", flush=True)
        traceback.print_exc()
        code = EXIT_TRAINING_FAILURE
    sys.stdout.flush()
    sys.exit(code)


__all__ = [
    "TrainerSDK", "ErrorType", "run_main", "exit_code_for", "EXIT_SUCCESS", "EXIT_TRAINING_FAILURE",
    "EXIT_CALLBACK_FAILURE", "SDKError", "CallbackError", "CheckpointError", "ConfigError", "DatasetError",
    "StorageError", "TrainerEnv", "S3Location", "normalize_task_type", "DatasetCache", "ArchiveLimits",
    "convert_dataset", "validate_dataset", "parse_s3_uri", "format_s3_uri", "distributed",
]
