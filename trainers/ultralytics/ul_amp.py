"""Ultralytics' AMP check without a download (issue 18).

Ultralytics' trainer calls ``check_amp(self.model)`` during ``_setup_train`` when AMP is asked for;
its check runs a reference model (``yolo26n.pt``) that it downloads when missing. The platform is
offline: ``patch_ultralytics`` puts ``check_amp`` (below) in its place, which asks the SDK's offline
check (``sdk.amp.decide``: the job's own model in FP32 and under autocast on one seeded synthetic
batch) at Ultralytics' own size for it. This module imports torch and ultralytics only inside its
functions.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from sdk import amp

Report = Callable[[bool, str], None]
_report: Report | None = None
_force = False  # the job's config asks for AMP: kept whatever the check says (which is still run and reported)
last_result: tuple[bool, str] | None = None  # the latest check_amp outcome in this process


def _default_imgsz(model: Any) -> int:
    """Ultralytics' size for its check: max(256, 4 x the largest stride), a multiple of it."""
    stride = getattr(model, "stride", None)
    try:
        s = int(max(stride.tolist())) if hasattr(stride, "tolist") else int(stride or 32)
    except (TypeError, ValueError):
        s = 32
    s = max(s, 1)
    return int(math.ceil(max(amp.IMGSZ, 4 * s) / s) * s)


def check_amp(model: Any) -> bool:
    """Stands in for ``ultralytics.utils.checks.check_amp`` in Ultralytics' trainer: the same
    answers where it gives them without a model (no AMP on MPS, none on the GPUs it lists), none
    on a CPU without native bfloat16 (Ultralytics never uses AMP on a CPU; on one with AMX the
    platform does, bench/README.md), the offline check otherwise; the outcome goes to the
    reporter given to ``patch_ultralytics``, and AMP stays on anyway when that was told to force it."""
    global last_result
    ok, why = amp.decide(model, imgsz=_default_imgsz(model))
    last_result = (ok, why)
    if _report is not None:
        _report(ok, why)
    return ok or _force


def cpu_scaler_off(trainer: Any) -> None:
    """Ultralytics' trainer makes a CUDA GradScaler whatever its device; bfloat16 (the CPU's
    autocast dtype) has float32's range and needs no loss scaling: on a CPU the scaler is off."""
    import torch

    if getattr(trainer, "device", None) is not None and trainer.device.type == "cpu":
        trainer.scaler = torch.amp.GradScaler("cpu", enabled=False)


def patch_ultralytics(report: Report | None = None, force: bool = False) -> bool:
    """Replace the ``check_amp`` Ultralytics' trainer module imported (``from
    ultralytics.utils.checks import check_amp`` in ultralytics/engine/trainer.py, called as
    ``check_amp(self.model)``) by ``check_amp`` above. False when that name is not there (another
    Ultralytics): the caller should then not ask for AMP, whose check would try to download.
    ``force``: AMP stays on whatever the check says (a job's explicit amp=True)."""
    global _report, _force
    import ultralytics.engine.trainer as ul_trainer

    _report, _force = report, force
    if not callable(getattr(ul_trainer, "check_amp", None)):
        return False
    ul_trainer.check_amp = check_amp
    return True
