"""The README's example of a registered model, run where a user would run it: another process,
with nothing of the platform but its API URL and a token (no S3 keys, no VTP_* settings, another
HOME), importing neither the platform (ray_app) nor Ray, on the interpreter given (the trainer's
own venv holds the model's logged requirements)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENVS = Path.home() / ".cache" / "vtp-test-venvs"  # what the platform fixtures use

# refuses the platform and Ray, which a model must not need, then loads and predicts
LOAD = r"""
import json, sys

class NotTheModels:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray_app", "ray"):
            raise ImportError(f"{name} is the platform's, not one of the model's requirements")

sys.meta_path.insert(0, NotTheModels())
import mlflow

model = mlflow.pyfunc.load_model(sys.argv[1])
params = json.loads(sys.argv[2])
print("PREDICTIONS " + json.dumps(model.predict(sys.argv[3:], params=params or None)))
"""


def predict_registered(python: str | Path, tracking_uri: str, token: str, model_uri: str, images: list[Path],
                       params: dict[str, Any] | None, home: Path, timeout: float = 600) -> list[dict[str, Any]]:
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_TRACKING_TOKEN": token, "MLFLOW_DISABLE_TELEMETRY": "true"}
    # -I: neither the working directory nor PYTHONPATH on the path (the interpreter's own site only)
    proc = subprocess.run([str(python), "-I", "-c", LOAD, model_uri, json.dumps(params or {}), *map(str, images)],
                          capture_output=True, text=True, cwd=home, env=env, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PREDICTIONS ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("PREDICTIONS "):])


def trainer_python(framework: str) -> Path:
    """The interpreter of a bundled trainer's own venv, as the platform fixtures build it (under
    VTP_TRAINER_VENVS_DIR; reused once built): it holds the trainer's requirements, which are the
    requirements its models are logged with."""
    from ray_app.runtime import venvs
    from ray_app.runtime.registry import TrainerRegistry

    manifest = TrainerRegistry([REPO / "trainers"]).get(framework)
    return venvs.python_of(venvs.build(VENVS, manifest))
