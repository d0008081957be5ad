"""A real sweep of a small timm job on generated data, through the CLI: `vtp sweeps create -f
sweep.yaml --watch`, two learning rates of test_resnet for two epochs, one trial at a time; each
trial a timm job that trains, reports top1 every epoch and succeeds; the best is the trial with
the highest top1, its model registered, and the trials' MLflow runs are children of the sweep's."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.cli.test_cli_sweeps import vtp
from tests.trainer_timm.test_timm_train import ADVANCED, IMAGE_SIZE, dataset_id  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_a_timm_sweep_through_the_cli(platform, dataset_id, tmp_path):  # noqa: F811
    body = {"name": "timm-lr", "register_best_as": "timm-sweep-best", "metric": "top1", "mode": "max", "search": "grid", "max_concurrent": 1,
            "space": {"learning_rate": {"choice": [0.01, 0.05]}},
            "job": {"framework": "timm", "task_type": "image_classification", "model_name": "test_resnet",
                    "dataset_id": dataset_id, "epochs": 2, "batch_size": 16, "image_size": IMAGE_SIZE,
                    "num_cpus": 2, "advanced_config": ADVANCED}}
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump(body))
    result = vtp(platform, "sweeps", "create", "-f", str(spec), "--watch", "--json")
    sweep = json.loads(result.stdout)
    assert sweep["state"] == "SUCCEEDED", sweep["error"]
    assert sorted(t["params"]["learning_rate"] for t in sweep["trials"]) == [0.01, 0.05]
    for trial in sweep["trials"]:
        assert trial["status"] == "succeeded" and trial["epochs_run"] == 2
        assert [e for e, _ in trial["history"]] == [1, 2]
        assert 0.0 <= trial["best_metric"] <= 1.0
    best = max(sweep["trials"], key=lambda t: t["best_metric"])
    assert sweep["best"]["job_id"] == best["job_id"]
    job = platform.job(best["job_id"])
    assert job["state"] == "SUCCEEDED" and job["sweep_id"] == sweep["id"] and job["framework"] == "timm"
    assert job["learning_rate"] == best["params"]["learning_rate"]
    # MLflow: the sweep's run is the parent of its trials' runs; the best trial's model registered
    assert sweep["registered_model"]["registered_name"] == "timm-sweep-best", sweep["registered_model"]
    assert sweep["registered_model"]["registered_version"] >= 1
    client = platform.mlflow()
    parent = client.get_run(sweep["mlflow_parent_run_id"])
    assert parent.data.tags["vtp.sweep_id"] == sweep["id"] and parent.data.tags["vtp.best_job_id"] == best["job_id"]
    for trial in sweep["trials"]:
        run = client.get_run(platform.job(trial["job_id"])["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["vtp.trial"] == str(trial["trial"]) and run.data.tags["vtp.sweep_id"] == sweep["id"]
