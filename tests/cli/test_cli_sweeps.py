"""`vtp sweeps` (and `vtp jobs list --sweep`): against the real platform (SQLite) as users run
them, the CLI in-process (typer's CliRunner) with VTP_API_URL / VTP_API_TOKEN; and the live
watch and the trials' ranking against a mocked API (httpx's MockTransport), since trials that
train are tests/sweeps/' business."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from ray_app.cli import sweeps as cli_sweeps
from ray_app.cli.main import app
from ray_app.client import Client
from ray_app.sweeps.models import SweepView
from tests.fixtures.platform import Platform
from tests.fixtures.teams import make_project, suffix

runner = CliRunner()


def vtp(p: Platform | None, *args: str, ok: bool = True, token: str | None = None) -> Result:
    env = {"VTP_API_URL": p.base_url, "VTP_API_TOKEN": token or p.api_token} if p else \
        {"VTP_API_URL": "http://vtp.test", "VTP_API_TOKEN": "t"}
    result = runner.invoke(app, list(args), env=env)
    if ok:
        assert result.exit_code == 0, f"vtp {' '.join(args)}: {result.exit_code}\n{result.output}"
    return result


def one_line(text: str) -> str:
    """The output with the console's wrapping undone."""
    return re.sub(r"\s+", " ", text)


def sweep_body(project: str, **fields: Any) -> dict[str, Any]:
    return {"name": f"lr-{suffix()}", "project_id": project,
            "job": {"framework": "fake", "task_type": "image_classification", "model_name": "fake-1",
                    "dataset_id": "ds-test", "epochs": 3, "config": {"epoch_seconds": 0.2}},
            "space": {"learning_rate": {"loguniform": [1e-4, 1e-1]}, "batch_size": {"choice": [8, 16]}},
            "metric": "accuracy", "mode": "max", "num_trials": 2, "max_concurrent": 1, **fields}


def write(tmp_path: Path, body: dict[str, Any]) -> str:
    path = tmp_path / f"sweep-{suffix()}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return str(path)


# ---------------------------------------------------------------------------- the real platform


def test_a_bad_space_is_the_apis_422_naming_the_field(platform, tmp_path):
    p = platform
    project = make_project(p)
    bad = vtp(p, "sweeps", "create", "-f", write(tmp_path, sweep_body(
        project, space={"learning_rate": {"loguniform": [0, 1]}})), ok=False)
    assert bad.exit_code == 3 and "422" in bad.stderr, bad.output
    assert "space.learning_rate" in one_line(bad.stderr), bad.output
    epochs = vtp(p, "sweeps", "create", "-f", write(tmp_path, sweep_body(
        project, space={"epochs": {"choice": [1]}})), ok=False)
    assert epochs.exit_code == 3 and "space.epochs" in one_line(epochs.stderr), epochs.output
    # nothing was made
    assert json.loads(vtp(p, "sweeps", "list", "--project", project, "--json").stdout)["items"] == []


def test_a_file_that_is_not_a_sweep_is_bad_usage(platform, tmp_path):
    missing = vtp(platform, "sweeps", "create", "-f", str(tmp_path / "nope.yaml"), ok=False)
    assert missing.exit_code == 2 and "cannot read the sweep file" in one_line(missing.stderr)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    not_a_mapping = vtp(platform, "sweeps", "create", "-f", str(listed), ok=False)
    assert not_a_mapping.exit_code == 2 and "must hold a mapping" in one_line(not_a_mapping.stderr)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    assert vtp(platform, "sweeps", "create", "-f", str(broken), ok=False).exit_code == 2


def test_create_list_get_and_cancel(platform, tmp_path):
    p = platform
    project = make_project(p)
    body = sweep_body(project)
    created = vtp(p, "sweeps", "create", "-f", write(tmp_path, body), "--json")
    sweep = json.loads(created.stdout)
    sweep_id = sweep["id"]
    assert sweep["name"] == body["name"] and sweep["project_id"] == project and sweep["num_trials"] == 2
    assert sweep["state"] in ("PENDING", "RUNNING") and sweep["space"] == body["space"]

    # listed in its project (and by state), with its name and objective
    listed = json.loads(vtp(p, "sweeps", "list", "--project", project, "--json").stdout)
    assert [(s["id"], s["name"], s["metric"], s["mode"]) for s in listed["items"]] == \
        [(sweep_id, body["name"], "accuracy", "max")]
    table = vtp(p, "sweeps", "list", "--project", project).stdout
    assert sweep_id in table and "CANCELLED" not in table
    assert json.loads(vtp(p, "sweeps", "list", "--project", project, "--state", "succeeded",
                          "--json").stdout)["items"] == []

    got = json.loads(vtp(p, "sweeps", "get", sweep_id, "--json").stdout)
    assert got["id"] == sweep_id and got["job"]["framework"] == "fake" and got["metric"] == "accuracy"
    shown = one_line(vtp(p, "sweeps", "get", sweep_id).stdout)
    assert sweep_id in shown and "accuracy (max)" in shown and project in shown

    # cancelled: at once while no trial runs, or once the driver has stopped its trials
    cancelled = vtp(p, "sweeps", "cancel", sweep_id)
    assert f"sweep {sweep_id}: cancel requested" in cancelled.stdout
    deadline = time.monotonic() + 60
    while (state := json.loads(vtp(p, "sweeps", "get", sweep_id, "--json").stdout)["state"]) != "CANCELLED":
        assert time.monotonic() < deadline, f"sweep {sweep_id} still {state} 60 s after its cancel"
        time.sleep(0.5)
    vtp(p, "sweeps", "cancel", sweep_id)  # idempotent
    assert json.loads(vtp(p, "sweeps", "list", "--project", project, "--state", "CANCELLED",
                          "--json").stdout)["items"][0]["id"] == sweep_id

    # its trials, if the driver started any, are its project's jobs; no other job is
    jobs = json.loads(vtp(p, "jobs", "list", "--sweep", sweep_id, "--json").stdout)["items"]
    assert all(j["project_id"] == project for j in jobs)
    assert json.loads(vtp(p, "jobs", "list", "--sweep", f"none-{suffix()}", "--json").stdout)["items"] == []


def test_an_unknown_sweep_is_a_404(platform):
    missing = vtp(platform, "sweeps", "get", f"none-{suffix()}", ok=False)
    assert missing.exit_code == 3 and "404" in missing.stderr


# ---------------------------------------------------------------------------- a mocked API

NOW = "2026-12-01T00:00:00Z"


def trial(n: int, status: str, best: float | str | None, **fields: Any) -> dict[str, Any]:
    state = {"stopped_early": "CANCELLED", "pending": "QUEUED"}.get(status, status.upper())
    return {"trial": n, "job_id": f"job-{n}", "state": state, "status": status,
            "params": {"learning_rate": 0.001 * n, "batch_size": 8}, "epochs_run": 2, "last_metric": best,
            "best_metric": best, "history": [], "created_at": NOW, **fields}


def view(state: str, trials: list[dict[str, Any]], mode: str = "max", **fields: Any) -> dict[str, Any]:
    return {"id": "s1", "name": "lr", "project_id": "p", "state": state, "metric": "accuracy", "mode": mode,
            "search": "random", "num_trials": 4, "max_concurrent": 2, "counts": {}, "created_at": NOW,
            "updated_at": NOW, "space": {}, "job": {}, "trials": trials, **fields}


@pytest.fixture
def mocked(monkeypatch):
    """The CLI's client answering from a list of sweep views, one per GET (the last one again)."""
    answers: list[dict[str, Any]] = []
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        if request.method == "POST" and request.url.path == "/v1/sweeps":
            return httpx.Response(201, json=answers[0])
        return httpx.Response(200, json=answers.pop(0) if len(answers) > 1 else answers[0])

    def client(url: str | None, token: str | None = None) -> Client:
        c = Client("http://vtp.test", token="t")
        c.http = httpx.Client(base_url="http://vtp.test", transport=httpx.MockTransport(handler))
        return c

    monkeypatch.setattr(cli_sweeps, "api_client", client)
    monkeypatch.setattr(cli_sweeps, "POLL_S", 0.0)
    return answers, seen


def test_watch_follows_the_trials_until_the_sweep_ends_then_shows_the_best(mocked, tmp_path):
    answers, seen = mocked
    best = trial(2, "succeeded", 0.9)
    answers += [view("PENDING", []), view("RUNNING", [trial(1, "running", 0.5)]),
                view("RUNNING", [trial(1, "stopped_early", 0.5), trial(2, "running", 0.7)]),
                view("SUCCEEDED", [trial(1, "stopped_early", 0.5), best], best=best, best_job_id="job-2",
                     best_metric=0.9)]
    result = vtp(None, "sweeps", "create", "-f", write(tmp_path, {"name": "lr"}), "--watch")
    out = one_line(result.stdout)
    assert "best trial 2: job job-2 accuracy=0.9" in out and "learning_rate=0.002 batch_size=8" in out, out
    assert "stopped_early" in out and "SUCCEEDED" in out
    assert seen[0] == ("POST", "/v1/sweeps") and seen.count(("GET", "/v1/sweeps/s1")) >= 4


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED"])
def test_watch_exits_1_unless_the_sweep_succeeded(mocked, state):
    answers, _ = mocked
    answers += [view("RUNNING", []), view(state, [trial(1, "failed", None)], error="every trial failed")]
    result = vtp(None, "sweeps", "watch", "s1", ok=False)
    assert result.exit_code == 1, result.output
    assert "no trial reported accuracy" in one_line(result.stdout)


def test_watch_with_json_prints_the_final_sweep_alone(mocked):
    answers, _ = mocked
    answers += [view("RUNNING", []), view("SUCCEEDED", [trial(1, "succeeded", 0.8)])]
    result = vtp(None, "sweeps", "watch", "s1", "--json")
    assert json.loads(result.stdout)["state"] == "SUCCEEDED"


def test_get_ranks_the_trials_by_best_metric_per_mode(mocked):
    answers, _ = mocked
    trials = [trial(1, "succeeded", 0.5), trial(2, "failed", None), trial(3, "succeeded", 0.9),
              trial(4, "stopped_early", "nan"), trial(5, "succeeded", 0.7)]
    assert [t.trial for t in cli_sweeps.ranked(SweepView.model_validate(view("SUCCEEDED", trials)))] == \
        [3, 5, 1, 2, 4]
    assert [t.trial for t in cli_sweeps.ranked(SweepView.model_validate(view("SUCCEEDED", trials, "min")))] == \
        [1, 5, 3, 2, 4]
    answers.append(view("SUCCEEDED", trials, best_job_id="job-3", best_metric=0.9))
    shown = vtp(None, "sweeps", "get", "s1").stdout
    rows = [line for line in shown.splitlines() if re.search(r"│\s+\d+ │ job-\d", line)]
    assert [re.search(r"job-(\d)", r).group(1) for r in rows] == ["3", "5", "1", "2", "4"], shown
    assert "job-3 *" in rows[0]
