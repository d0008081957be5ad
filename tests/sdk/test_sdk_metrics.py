"""The SDK sends non-finite metrics the way the contract keeps them (issue 13, point 7)."""
from __future__ import annotations

import json

import numpy as np

from ray_app.jobs.callback_models import HeartbeatIn
from sdk.core import _clean_metrics


def test_a_nan_loss_reaches_the_platform_as_the_contract_spells_it():
    sent = _clean_metrics({"loss": float("nan"), "lr": np.float32("inf"), "gap": -float("inf"),
                           "map": np.float64(0.5), "epoch_done": True, "name": "x"})
    assert sent == {"loss": "NaN", "lr": "Infinity", "gap": "-Infinity", "map": 0.5}
    body = json.loads(json.dumps({"epoch": 1, "metrics": sent}, allow_nan=False))  # valid JSON as sent
    assert HeartbeatIn.model_validate(body).metrics == sent  # and what the server accepts and keeps
