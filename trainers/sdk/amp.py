"""Mixed precision a trainer can turn on without a download (issue 18): whether this device
should train under autocast, decided by an offline check of the job's own model.

Ultralytics' ``check_amp()`` runs a reference model (``yolo26n.pt``, downloaded when missing) on
``bus.jpg`` in FP32 and under autocast and keeps AMP when the boxes agree within 0.5 pixel. The
platform is offline, so ``check_offline`` asks the same question of the job's own model instead:
one seeded synthetic batch through a copy of it in eval mode, in FP32 and under autocast (float16
on CUDA, bfloat16 on the CPU), every output compared in float32 by ``outputs_agree``. ``decide``
adds what is known without a model: no AMP on MPS, none on the GPUs whose float16 is known to
fail, none on a CPU without native bfloat16 (there it is emulated, slower than float32).

Both bundled trainers use it (the Ultralytics trainer through ul_amp's hook into Ultralytics'
trainer, timm's directly). torch is imported only inside the functions.
"""
from __future__ import annotations

import copy
import re
from typing import Any

# Ultralytics' absolute tolerance (check_amp: torch.allclose(fp32_boxes, amp_boxes, atol=0.5)):
# half a pixel on box coordinates, which are the largest outputs of a detection head.
ATOL = 0.5
# Plus a relative term: the raw head outputs compared here include boxes up to the image size
# (hundreds of pixels) for every anchor, not only a reference model's confident detections, and
# at 500 px half a pixel is 0.1%, only twice float16's unit roundoff (2**-11 = 4.9e-4) and a
# quarter of bfloat16's (2**-8 = 3.9e-3); the rounding accumulated over a network's depth would
# then refuse AMP where it works. 1% is ~20 float16 / ~2.5 bfloat16 roundoffs; what the check must
# catch (NaN or inf, kernels that return garbage or zeros) is off by far more.
RTOL = 0.01
SEED = 0
BATCH = 2
IMGSZ = 256  # Ultralytics' smallest size for its check
# Ultralytics' list of GPUs whose float16 is known to give NaN losses or zero mAP (check_amp)
BAD_AMP_GPUS = re.compile(r"(nvidia|geforce|quadro|tesla).*?(1660|1650|1630|t400|t550|t600|t1000|t1200|t2000|k40m)",
                          re.IGNORECASE)


# ------------------------------------------------------------------ comparison
def _leaves(obj: Any, path: str = "out") -> list[tuple[str, Any]]:
    """(path, leaf) for the tensors (and anything else) of nested tuples, lists and dicts."""
    if isinstance(obj, dict):
        return [leaf for k in sorted(obj, key=str) for leaf in _leaves(obj[k], f"{path}[{k!r}]")]
    if isinstance(obj, (list, tuple)):
        return [leaf for i, v in enumerate(obj) for leaf in _leaves(v, f"{path}[{i}]")]
    return [(path, obj)]


def _structure(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _structure(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_structure(v) for v in obj]
    return type(obj).__name__ if not hasattr(obj, "shape") else "tensor"


def outputs_agree(a: Any, b: Any, atol: float = ATOL, rtol: float = 0.0) -> tuple[bool, str]:
    """Whether two model outputs (tensors, or tuples/lists/dicts of them, nested) agree:
    the same structure and shapes, every value finite in both, and, compared in float32,
    ``|a - b| <= atol + rtol * |a|`` everywhere (``a`` is the reference: FP32).
    Returns (agree, why): why names the first output that does not, or sums up the agreement."""
    import torch

    if _structure(a) != _structure(b):
        return False, f"the outputs differ in structure: {_structure(a)} vs {_structure(b)}"
    worst, worst_path, count = 0.0, "", 0
    for (path, x), (_, y) in zip(_leaves(a), _leaves(b), strict=True):
        if not (torch.is_tensor(x) and torch.is_tensor(y)):
            if x != y:
                return False, f"{path}: {x!r} != {y!r}"
            continue
        if x.shape != y.shape:
            return False, f"{path}: shape {tuple(x.shape)} != {tuple(y.shape)}"
        x, y = x.detach().float(), y.detach().float()
        for name, t in (("fp32", x), ("autocast", y)):
            if not bool(torch.isfinite(t).all()):
                return False, f"{path}: non-finite values ({name})"
        if x.numel() == 0:
            continue
        diff = (x - y).abs()
        excess = diff - (atol + rtol * x.abs())
        if bool((excess > 0).any()):
            i = int(excess.flatten().argmax())
            return False, (f"{path}: |fp32 - autocast| = {diff.flatten()[i].item():.4g} at {x.flatten()[i].item():.4g} "
                           f"exceeds atol={atol} + rtol={rtol}")
        count += 1
        if diff.max().item() > worst:
            worst, worst_path = diff.max().item(), path
    return True, f"{count} outputs agree (largest difference {worst:.3g} in {worst_path or '-'})"


# ------------------------------------------------------------------ check
def dtype_name(dtype: Any) -> str:
    """'bfloat16' for torch.bfloat16: how logs and events name an autocast dtype."""
    return str(dtype).replace("torch.", "")


def report_line(ok: bool, why: str, forced: bool) -> tuple[str, str]:
    """(log level, line) a trainer logs for a check's outcome; ``forced``: the job's config asks
    for AMP, which then stays on whatever the check said."""
    keep = "amp=True (the job's config asks for it)" if forced else f"amp={ok}"
    return ("INFO" if ok else "WARNING",
            f"AMP check (offline, on the job's own model) {'passed' if ok else 'failed'}: {keep}; {why}")


def autocast_dtype(device_type: str) -> Any:
    """The autocast dtype a trainer uses on this device type: float16 on CUDA, bfloat16 elsewhere."""
    import torch

    return torch.float16 if device_type == "cuda" else torch.bfloat16


def check_offline(model: Any, device: Any = None, imgsz: int | None = None, atol: float = ATOL,
                  rtol: float = RTOL, batch: int = BATCH) -> tuple[bool, str]:
    """(agree, why): whether ``model`` gives the same outputs in FP32 and under autocast on one
    seeded synthetic batch (see ``outputs_agree``); False on a mismatch, a non-finite value or any
    error. Never downloads or reads a file; the model's weights, buffers and modes are left as they
    were."""
    import torch

    try:
        if device is None:
            device = next(model.parameters()).device
        device = torch.device(device)
        imgsz = int(imgsz or IMGSZ)
        dtype = autocast_dtype(device.type)
        # A copy: nothing of the job's model changes (weights, BatchNorm statistics, the heads'
        # cached anchors, its training flags). A model that cannot be copied (a compiled one, say)
        # runs itself in eval mode under no_grad (BatchNorm then only reads its statistics) and
        # gets every module's training flag back afterwards.
        try:
            work = copy.deepcopy(model)
        except Exception:
            work = model
        modes = [(m, m.training) for m in work.modules()]
        gen = torch.Generator().manual_seed(SEED)  # a seeded synthetic batch: no file, no network
        x = torch.rand(batch, 3, imgsz, imgsz, generator=gen).to(device)
        try:
            work.eval()
            with torch.no_grad():
                ref = work(x)
                with torch.autocast(device_type=device.type, dtype=dtype):
                    amp = work(x)
        finally:
            for m, training in modes:
                m.training = training
        agree, why = outputs_agree(ref, amp, atol=atol, rtol=rtol)
        return agree, f"{why}; {device.type} {dtype_name(dtype)} autocast, {batch}x3x{imgsz}x{imgsz}"
    except Exception as exc:  # any failure of the check: no AMP
        return False, f"the check failed: {type(exc).__name__}: {exc}"


def decide(model: Any, imgsz: int | None = None) -> tuple[bool, str]:
    """Whether ``model`` (on its device) should train under autocast, and why: no on MPS, on the
    GPUs known to give NaN losses or zero mAP in float16, and on a CPU without native bfloat16;
    elsewhere the offline check's answer (``imgsz``: its batch's size, default IMGSZ)."""
    try:
        device = next(model.parameters()).device
        if device.type == "mps":
            return False, "AMP is not used on mps"
        if device.type == "cpu" and not native_cpu_bf16():
            return False, ("this CPU has no native bfloat16 (AMX or AVX512-BF16): "
                           "autocast would be slower than float32 here")
        if device.type == "cuda" and BAD_AMP_GPUS.search(gpu := _gpu_name(device)):
            return False, f"{gpu} is known to give NaN losses or zero mAP with AMP"
        return check_offline(model, device=device, imgsz=imgsz)
    except Exception as exc:
        return False, f"the check failed: {type(exc).__name__}: {exc}"


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX tiles or AVX512-BF16). There oneDNN's
    bfloat16 convolutions train a YOLO ~1.3x faster per step than float32 (bench/README.md,
    training speed, third run), so AMP (CPU autocast, whose dtype is bfloat16) is worth checking
    for; elsewhere bfloat16 is emulated and slower, and AMP stays off."""
    try:
        import torch

        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except Exception:  # another torch: these are private helpers
        return False


def _gpu_name(device: Any) -> str:
    import torch

    return str(torch.cuda.get_device_name(device))
