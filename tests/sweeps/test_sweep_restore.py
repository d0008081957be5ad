"""A sweep survives the whole Ray cluster restarting (`vtp down` / `vtp up` on one machine): the
controller starts its driver again, which restores the Tune experiment from S3 and goes on
without running a finished trial again (the trials find their jobs: sweeps/trial.py)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(420)


def test_a_sweep_resumed_after_a_cluster_restart_finishes_without_rerunning_finished_trials(sweeps, deployment):
    lrs = [0.01, 0.1, 0.001, 0.03, 0.3]
    sweep = sweeps.create(space={"learning_rate": {"choice": lrs}}, max_concurrent=1,
                          job={"epochs": 3, "max_attempts": 3, "config": {"epoch_seconds": 0.5}})
    mid = sweeps.wait(sweep["id"], until=lambda s: s["counts"].get("succeeded", 0) >= 2, timeout=180)
    finished_before = {t["job_id"]: t for t in mid["trials"] if t["status"] == "succeeded"}
    jobs_before = {j["id"]: j for j in sweeps.trial_jobs(sweep["id"]) if j["id"] in finished_before}

    sweeps.p = deployment.restart_cluster()

    done = sweeps.wait(sweep["id"], timeout=300)
    assert done["state"] == "SUCCEEDED", done["error"]
    jobs = sweeps.trial_jobs(sweep["id"])
    # one job per grid point: no trial made twice, none lost
    assert sorted(j["learning_rate"] for j in jobs) == sorted(lrs)
    assert sorted(j["sweep_trial"] for j in jobs) == list(range(1, len(lrs) + 1))
    by_id = {j["id"]: j for j in jobs}
    for job_id, before in jobs_before.items():  # the finished trials were not run again
        after = by_id[job_id]
        assert after["state"] == "SUCCEEDED" and after["attempt"] == before["attempt"]
        assert after["finished_at"] == before["finished_at"]
    assert all(t["status"] == "succeeded" and t["epochs_run"] == 3 for t in done["trials"]), done["trials"]
    assert done["best"]["params"] == {"learning_rate": 0.01}
