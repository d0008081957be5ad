"""Sweeps run by Ray Tune on a real cluster, every trial a job of the fake trainer."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(300)


def test_asha_stops_the_worse_trials_at_the_grace_period_and_the_best_is_the_function_s_best(sweeps):
    # one trial at a time, the best first (grid order): each later one is worse at epoch 1 than
    # every recorded one, so ASHA (grace 1, factor 3) stops it at its first rung
    lrs = [0.01, 0.1, 0.001, 1.0]
    sweep = sweeps.create(space={"learning_rate": {"choice": lrs}}, max_concurrent=1,
                          scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 3},
                          job={"epochs": 6, "config": {"epoch_seconds": 0.75}})
    assert sweep["state"] == "PENDING" and sweep["num_trials"] == 4
    done = sweeps.wait(sweep["id"])
    assert done["state"] == "SUCCEEDED", done["error"]
    trials = {t["params"]["learning_rate"]: t for t in done["trials"]}
    assert sorted(trials) == sorted(lrs)
    best = trials[0.01]
    assert best["status"] == "succeeded" and best["epochs_run"] == 6
    assert done["best"]["job_id"] == best["job_id"] == done["best_job_id"]
    assert done["best_metric"] == pytest.approx(1.0)
    for lr in (0.1, 0.001, 1.0):
        trial = trials[lr]
        assert trial["status"] == "stopped_early", trial
        # told at the end of epoch 1; the stop reaches the trainer by its next heartbeat
        assert 1 <= trial["epochs_run"] <= 2, trial
        assert "stopped early" in trial["stop_reason"]
    assert done["counts"] == {"succeeded": 1, "stopped_early": 3}
    jobs = {j["id"]: j for j in sweeps.trial_jobs(sweep["id"])}
    assert len(jobs) == 4
    stopped = jobs[trials[0.1]["job_id"]]
    assert stopped["state"] == "CANCELLED" and stopped["stopped_early"] and stopped["cancelled_by"] is None
    assert stopped["sweep_id"] == sweep["id"] and stopped["sweep_params"] == {"learning_rate": 0.1}
    assert sorted(j["sweep_trial"] for j in jobs.values()) == [1, 2, 3, 4]
