"""run_main maps what the training function returns to the contract's exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TRAINERS = Path(__file__).resolve().parents[2] / "trainers"


@pytest.mark.parametrize("returned,code", [("1", 1), ("0", 0), ("None", 0), ("True", 0), ("2", 2)])
def test_returned_value_becomes_exit_code(returned, code, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(f"from sdk import run_main\nrun_main(lambda: {returned})\n")
    env = {k: v for k, v in os.environ.items() if k not in ("BACKEND_BASE_URL", "CALLBACK_URL")}
    env.update(PYTHONPATH=str(TRAINERS), JOB_ID="exit-test", TRACE_ID="t", WORK_DIR=str(tmp_path / "w"))
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stdout + proc.stderr
