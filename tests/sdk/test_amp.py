"""The SDK's offline AMP check (issue 18, sdk/amp.py): the job's own model compared in FP32 and
under autocast on a seeded synthetic batch, instead of Ultralytics' downloaded reference model.
Small torch modules on the platform's torch; the check on a real yolo11n runs in the Ultralytics
trainer's venv (tests/trainer_ultralytics/test_amp_check.py), on a timm model in the timm trainer's
tests.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sdk import amp

T = torch.tensor


# ------------------------------------------------------------------ outputs_agree
def test_nested_outputs_within_tolerance_agree():
    a = (T([[1.0, 2.0], [300.0, 4.0]]), [T([0.5]), {"boxes": T([10.0, 20.0]), "scores": T([0.1])}])
    b = (T([[1.2, 1.9], [300.4, 4.0]]).bfloat16(), [T([0.5]).half(), {"scores": T([0.3]), "boxes": T([10.0, 20.49])}])
    ok, why = amp.outputs_agree(a, b, atol=0.5)
    assert ok, why
    assert "4 outputs agree" in why


@pytest.mark.parametrize("a,b,words", [
    ((T([1.0]), [T([2.0])]), (T([1.0]), [T([2.6])]), "out[1][0]: |fp32 - autocast| = 0.6"),
    ({"x": T([1.0, 2.0])}, {"x": T([1.0, 1.0])}, "out['x']"),
    (T([1.0, 2.0]), T([1.0, 2.0, 3.0]), "shape (2,) != (3,)"),
    ((T([1.0]), T([2.0])), (T([1.0]),), "structure"),
    ({"a": T([1.0])}, {"b": T([1.0])}, "structure"),
    ((T([1.0]), T([1.0])), (T([1.0]), T([float("nan")])), "non-finite values (autocast)"),
    (T([1.0, 2.0]), T([1.0, float("inf")]).half(), "non-finite values (autocast)"),
    (T([float("-inf")]), T([float("-inf")]), "non-finite values (fp32)"),
])
def test_outputs_that_differ_are_refused_with_where(a, b, words):
    ok, why = amp.outputs_agree(a, b, atol=0.5)
    assert not ok
    assert words in why, why


def test_the_relative_term_scales_with_the_reference():
    a, b = T([500.0, 1.0]), T([503.0, 1.0])  # 0.6% off at 500 px
    assert not amp.outputs_agree(a, b, atol=0.5)[0]
    assert amp.outputs_agree(a, b, atol=0.5, rtol=0.01)[0]
    assert not amp.outputs_agree(T([1.0]), T([1.6]), atol=0.5, rtol=0.01)[0]  # 0.01 x 1 + 0.5 < 0.6


# ------------------------------------------------------------------ check_offline on small models
class Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stride = T([8.0])
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 4, 1))

    def forward(self, x):
        y = self.body(x)
        return y, {"pooled": y.mean((2, 3))}


class Overflows(Conv):
    """Squares values of ~1e6: fine in FP32, inf in float16 (CUDA's autocast dtype, max 65504).
    bfloat16 has float32's range, so on the CPU the float16 is made by hand under autocast."""

    def forward(self, x):
        y = self.body(x) * 1e6
        if torch.is_autocast_enabled("cpu"):
            y = y.half()
        return y * y


class NanUnderAutocast(Conv):
    def forward(self, x):
        y = self.body(x)
        return y * math.nan if torch.is_autocast_enabled("cpu") else y


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_model_that_agrees_passes_and_is_left_as_it_was():
    torch.manual_seed(0)
    model = Conv().train()
    model.body[1].eval()  # a module in its own mode (a frozen BatchNorm) keeps it
    before = snapshot(model)
    assert amp.check_offline(model, imgsz=64)[0]
    after = snapshot(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and model.body[0].training and not model.body[1].training
    ok, why = amp.check_offline(model, imgsz=64)
    assert ok and "cpu bfloat16 autocast, 2x3x64x64" in why, why


def test_non_finite_under_autocast_fails():
    torch.manual_seed(0)
    ok, why = amp.check_offline(NanUnderAutocast(), imgsz=64)
    assert not ok and "non-finite values (autocast)" in why, why
    ok, why = amp.check_offline(Overflows(), imgsz=64)
    assert not ok and "non-finite" in why, why


def test_a_failing_model_is_false_not_an_error():
    class Broken(Conv):
        def forward(self, x):
            raise RuntimeError("no kernel for this dtype")

    ok, why = amp.check_offline(Broken(), imgsz=64)
    assert not ok and "RuntimeError: no kernel for this dtype" in why
    assert amp.check_offline(Broken(), imgsz=64)[0] is False


def test_on_a_cpu_autocast_is_checked_only_where_bfloat16_is_native(monkeypatch):
    assert isinstance(amp.native_cpu_bf16(), bool)  # this machine's answer, whichever it is
    torch.manual_seed(0)
    monkeypatch.setattr(amp, "native_cpu_bf16", lambda: False)  # bfloat16 emulated: slower, off
    assert amp.decide(Conv()) == (False, "this CPU has no native bfloat16 (AMX or AVX512-BF16): "
                                         "autocast would be slower than float32 here")
    monkeypatch.setattr(amp, "native_cpu_bf16", lambda: True)  # AMX: the offline check decides
    ok, why = amp.decide(Conv(), imgsz=64)
    assert ok and "cpu bfloat16 autocast, 2x3x64x64" in why, why
    ok, why = amp.decide(NanUnderAutocast(), imgsz=64)
    assert not ok and "non-finite" in why, why
    assert amp.autocast_dtype("cpu") is torch.bfloat16 and amp.autocast_dtype("cuda") is torch.float16
