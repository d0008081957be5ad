"""The Ultralytics trainer's offline AMP check (issue 18): ul_amp puts the SDK's check of the job's
own model (sdk/amp.py, tested in tests/sdk/test_amp.py) where Ultralytics' trainer would download
yolo26n.pt for its own.

The hook's rules run here on a small torch module (the platform's torch, no Ray); the check on a
real yolo11n and the hook into Ultralytics' trainer run in the trainer's venv (ultralytics is
installed there only), as the timm trainer's tests do.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
TRAINER_DIR = REPO / "trainers" / "ultralytics"
VENVS = Path.home() / ".cache" / "vtp-test-venvs"  # what the platform fixtures use
for p in (TRAINER_DIR, TRAINER_DIR.parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import ul_amp  # noqa: E402
from sdk import amp  # noqa: E402
from tests.sdk.test_amp import Conv  # noqa: E402

T = torch.tensor


def test_on_a_cpu_amp_is_checked_only_where_bfloat16_is_native(monkeypatch):
    reports = []
    monkeypatch.setattr(ul_amp, "_report", lambda ok, why: reports.append((ok, why)))
    monkeypatch.setattr(ul_amp, "_force", False)
    torch.manual_seed(0)
    model = Conv()
    monkeypatch.setattr(amp, "native_cpu_bf16", lambda: False)  # bfloat16 emulated: slower, off
    assert ul_amp.check_amp(model) is False
    assert reports[-1] == (False, "this CPU has no native bfloat16 (AMX or AVX512-BF16): "
                                  "autocast would be slower than float32 here")
    monkeypatch.setattr(amp, "native_cpu_bf16", lambda: True)  # AMX: the offline check decides
    assert ul_amp.check_amp(model) is True
    assert reports[-1][0] and "cpu bfloat16 autocast" in reports[-1][1], reports
    monkeypatch.setattr(ul_amp, "_force", True)  # the job's amp=True holds even where it is slower
    monkeypatch.setattr(amp, "native_cpu_bf16", lambda: False)
    assert ul_amp.check_amp(model) is True and reports[-1][0] is False


def test_on_a_cpu_the_trainer_has_no_loss_scaler():
    from types import SimpleNamespace

    cpu = SimpleNamespace(device=torch.device("cpu"), scaler=torch.amp.GradScaler("cpu", enabled=True))
    ul_amp.cpu_scaler_off(cpu)
    assert not cpu.scaler.is_enabled()  # bfloat16 needs no loss scaling
    gpu_scaler = object()
    gpu = SimpleNamespace(device=torch.device("cuda"), scaler=gpu_scaler)
    ul_amp.cpu_scaler_off(gpu)
    assert gpu.scaler is gpu_scaler  # float16 on a GPU keeps Ultralytics' scaler


def test_the_default_size_is_ultralytics_own():
    assert ul_amp._default_imgsz(Conv()) == 256
    m = Conv()
    m.stride = T([8.0, 16.0, 64.0])
    assert ul_amp._default_imgsz(m) == 256
    m.stride = T([128.0])
    assert ul_amp._default_imgsz(m) == 512


# ------------------------------------------------------------------ in the trainer's venv: yolo11n and the hook
IN_VENV = r"""
import os, socket, sys, types
from pathlib import Path
trainer_dir, work = Path(sys.argv[1]), Path(sys.argv[2])
sys.path[:0] = [str(trainer_dir), str(trainer_dir.parent)]
import ul_runtime
ul_runtime.prepare_environment(work)
import torch
from ultralytics.nn.tasks import DetectionModel
import ultralytics.engine.trainer as ul_trainer
import ul_amp
from sdk import amp

opened, connects = [], []
def audit(event, args):
    if event == "open":
        opened.append(str(args[0]))
    elif event.startswith("socket.") and event != "socket.__new__":
        connects.append((event, args))
def refuse(self, *a, **k):
    raise OSError("network access during the AMP check")

torch.manual_seed(0)
model = DetectionModel("yolo11n.yaml", nc=3, verbose=False).train()
before = {k: v.detach().clone() for k, v in model.state_dict().items()}
modes = [m.training for m in model.modules()]
socket.socket.connect = refuse
sys.addaudithook(audit)
ok, why = amp.check_offline(model)
print("check:", ok, why)
assert ok, why
assert amp.check_offline(model)[0] is True
assert not connects, connects
assert not [p for p in opened if "yolo26n" in p or p.endswith((".pt", ".jpg"))], opened
after = model.state_dict()
assert before.keys() == after.keys()
changed = [k for k in before if not torch.equal(before[k], after[k])]
assert not changed, changed
assert [m.training for m in model.modules()] == modes
assert model.training

# train.py puts ul_amp.check_amp where Ultralytics' trainer calls check_amp(self.model)
import importlib.util
spec = importlib.util.spec_from_file_location("ul_train", trainer_dir / "train.py")
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)
original = ul_trainer.check_amp
logs = []
sdk = types.SimpleNamespace(env=types.SimpleNamespace(work_dir=str(work)), log=lambda lvl, msg: logs.append((lvl, msg)))
job = train.UltralyticsJob(sdk)
args = {"amp": True}
job.offline_amp_check(args, forced=False)
assert ul_trainer.check_amp is ul_amp.check_amp and original is not ul_amp.check_amp
assert args["amp"] is True and not logs
if amp.native_cpu_bf16():  # a CPU with AMX: the offline check in bfloat16 decides (and agrees)
    assert ul_trainer.check_amp(model) is True
    assert logs[0][0] == "INFO" and "passed: amp=True" in logs[0][1] and "cpu bfloat16 autocast" in logs[0][1], logs
else:  # bfloat16 emulated: slower than float32, no AMP (Ultralytics never uses it on a CPU)
    assert ul_trainer.check_amp(model) is False
    assert logs == [("WARNING", "AMP check (offline, on the job's own model) failed: amp=False; this CPU has "
                     "no native bfloat16 (AMX or AVX512-BF16): autocast would be slower than float32 here")], logs
job.offline_amp_check(args, forced=True)  # amp=True in the job's config: kept, the check still reported
assert ul_trainer.check_amp(model) is True and "amp=True (the job's config asks for it)" in logs[-1][1], logs
print("hook: ok")
"""


def test_yolo11n_passes_offline_and_the_hook_replaces_ultralytics_check(tmp_path):
    from ray_app.runtime import venvs
    from ray_app.runtime.registry import TrainerRegistry

    manifest = TrainerRegistry([REPO / "trainers"]).get("ultralytics")
    venv = venvs.build(VENVS, manifest)  # reused when built (by hand or by an earlier test run)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run([str(venvs.python_of(venv)), "-c", IN_VENV, str(TRAINER_DIR), str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "check: True" in out.stdout and "hook: ok" in out.stdout, out.stdout
