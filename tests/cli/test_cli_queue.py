"""`vtp queue`, `vtp projects set-quota` and `vtp jobs submit --priority` against a mocked API
(httpx's MockTransport), the CLI in-process (typer's CliRunner): what a user reads (the order, why
each job waits, each project's use against its quota), what each command sends (only the options
given; `none` as null) and how a refusal ends (the API's reason, exit 3; bad usage, exit 2, with
nothing sent). The queue's own decisions are tests/scheduling/' business."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from ray_app.cli import main as cli_main
from ray_app.cli import queue as cli_queue
from ray_app.cli import teams as cli_teams
from ray_app.cli.main import app
from ray_app.client import Client, _retry
from tests.client.test_client_queue import PROJECT, QUEUE

runner = CliRunner()


def vtp(*args: str, ok: bool = True) -> Result:
    result = runner.invoke(app, list(args), env={"VTP_API_URL": "http://vtp.test", "VTP_API_TOKEN": "t"})
    if ok:
        assert result.exit_code == 0, f"vtp {' '.join(args)}: {result.exit_code}\n{result.output}"
    return result


def one_line(text: str) -> str:
    """The output with the console's wrapping undone (and a table's cell borders)."""
    return re.sub(r"[\s│]+", " ", text)


def row(text: str, *cells: str) -> bool:
    """Whether a line of the table holds these cells, in this order."""
    return any(re.search(r"\s*│\s*".join(map(re.escape, cells)), line) for line in text.splitlines())


@pytest.fixture
def api(monkeypatch):
    """The CLI's client answering from `answers[(method, path)]` (a status and a body); what it
    was sent, in `sent`."""
    answers: dict[tuple[str, str], tuple[int, Any]] = {("GET", "/v1/queue"): (200, QUEUE),
                                                       ("PUT", "/v1/projects/vision/quota"): (200, PROJECT)}
    sent: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append((request.method, request.url.path, json.loads(request.content) if request.content else None))
        status, body = answers.get((request.method, request.url.path), (404, {"detail": "not found"}))
        return httpx.Response(status, json=body)

    def client(url: str | None, token: str | None = None) -> Client:
        c = Client("http://vtp.test", token="t")
        c.http = httpx.Client(base_url="http://vtp.test", transport=httpx.MockTransport(handler))
        return c

    monkeypatch.setattr(cli_queue, "api_client", client)
    monkeypatch.setattr(cli_main, "api_client", client)
    monkeypatch.setattr(cli_teams, "api_client", client)
    monkeypatch.setattr(_retry, "wait_exponential_jitter", lambda **_: (lambda state: 0))
    return answers, sent


# ---------------------------------------------------------------------------- vtp queue


def test_the_queue_shows_the_order_why_each_job_waits_and_each_projects_use_against_its_quota(api):
    out = vtp("queue").stdout
    flat = one_line(out)
    # the jobs in the queue's order: position (- in a retry backoff), id, project, priority, state, reason
    assert row(out, "1", "a" * 16, "vision", "high", "QUEUED", "offered to the")
    assert row(out, "2", "b" * 16, "vision", "normal", "QUEUED", "the project's quota:")
    assert row(out, "-", "c" * 16, "nlp", "low", "RETRYING", "retry backoff")
    assert out.index("a" * 16) < out.index("b" * 16) < out.index("c" * 16)
    assert "offered to the cluster" in flat and "the project's quota: 1/1 running jobs" in flat
    # each project: GPUs, CPUs, jobs held against its quota (- unlimited), weight, share, waiting
    assert row(out, "vision", "0/0", "1/4", "1/1", "2", "0.25", "1", "yes")
    assert row(out, "nlp", "0/-", "0/-", "0/-", "1", "0.25", "0", "yes")
    assert "capacity: 7/8 CPUs, 0/0 GPUs free" in flat and "preemption: on" in flat


def test_the_queue_of_one_project(api):
    out = vtp("queue", "--project", "nlp").stdout
    assert "c" * 16 in out and "a" * 16 not in out and "b" * 16 not in out
    assert row(out, "nlp", "0/-") and not row(out, "vision", "0/0")
    shown = json.loads(vtp("queue", "--project", "nlp", "--json").stdout)
    assert [j["job_id"] for j in shown["jobs"]] == ["c" * 16] and [p["project_id"] for p in shown["projects"]] == ["nlp"]


def test_the_queue_as_json_is_the_apis_answer(api):
    assert json.loads(vtp("queue", "--json").stdout) == QUEUE


def test_an_empty_queue_says_so_and_preemption_off_shows(api):
    answers, _ = api
    answers[("GET", "/v1/queue")] = (200, {**QUEUE, "jobs": [], "total": 0, "preemption": False})
    flat = one_line(vtp("queue").stdout)
    assert "no job waiting" in flat and "preemption: off" in flat


def test_no_controller_running_is_the_apis_reason_and_exit_3(api):
    answers, _ = api
    answers[("GET", "/v1/queue")] = (503, {"detail": "the controller is not running: no queue to show"})
    result = vtp("queue", ok=False)
    assert result.exit_code == 3 and "503" in result.stderr
    assert "the controller is not running" in one_line(result.stderr)


# ---------------------------------------------------------------------------- vtp projects set-quota


@pytest.mark.parametrize(("options", "body"), [
    (["--gpus", "2"], {"max_gpus": 2.0}),
    (["--cpus", "none", "--jobs", "3"], {"max_cpus": None, "max_running_jobs": 3}),
    (["--gpus", "None", "--cpus", "0.5", "--jobs", "none"], {"max_gpus": None, "max_cpus": 0.5,
                                                             "max_running_jobs": None}),
    (["--weight", "2.5", "--no-preemptible"], {"weight": 2.5, "preemptible": False}),
    (["--preemptible"], {"preemptible": True}),
])
def test_set_quota_sends_only_the_options_given_and_none_as_null(api, options, body):
    _, sent = api
    out = one_line(vtp("projects", "set-quota", "vision", *options).stdout)
    assert sent == [("PUT", "/v1/projects/vision/quota", body)]
    # the project as it is now
    assert "project vision: quota: 2 GPUs, - CPUs, - jobs" in out and "weight 1; preemptible yes" in out


def test_set_quota_as_json_is_the_project_with_its_quota(api):
    shown = json.loads(vtp("projects", "set-quota", "vision", "--gpus", "2", "--json").stdout)
    quota = ("id", "max_gpus", "max_cpus", "max_running_jobs", "weight", "preemptible")
    assert {k: shown[k] for k in quota} == {k: PROJECT[k] for k in quota}


@pytest.mark.parametrize("options", [["--gpus", "lots"], ["--jobs", "1.5"], ["--cpus", ""], []])
def test_set_quota_with_a_bad_or_no_option_is_bad_usage_and_sends_nothing(api, options):
    _, sent = api
    result = vtp("projects", "set-quota", "vision", *options, ok=False)
    assert result.exit_code == 2 and sent == [], result.output
    assert ("nothing to set" if not options else f"{options[0]}") in one_line(result.output)


@pytest.mark.parametrize(("status", "detail"), [(403, "this takes a platform admin"),
                                                (404, "project nope not found")])
def test_set_quota_refused_shows_the_apis_reason_and_exits_3(api, status, detail):
    answers, _ = api
    answers[("PUT", "/v1/projects/vision/quota")] = (status, {"detail": detail})
    result = vtp("projects", "set-quota", "vision", "--gpus", "1", ok=False)
    assert result.exit_code == 3 and str(status) in result.stderr and detail in one_line(result.stderr)
    assert result.stdout == ""


def test_a_projects_quota_shows_with_the_project(api):
    answers, _ = api
    answers[("GET", "/v1/projects/vision")] = (200, {**PROJECT, "max_running_jobs": 4, "weight": 2.0,
                                                     "preemptible": False})
    out = one_line(vtp("projects", "show", "vision").stdout)
    assert "quota: 2 GPUs, - CPUs, 4 jobs (-: unlimited); weight 2; preemptible no" in out


# ---------------------------------------------------------------------------- vtp jobs submit --priority

SUBMIT = ("jobs", "submit", "--framework", "fake", "--model", "fake-1", "--dataset", "ds-test")


@pytest.mark.parametrize(("options", "priority"), [(["--priority", "high"], 80), (["--priority", "LOW"], 20),
                                                   (["--priority", "65"], 65), ([], None)])
def test_submit_sends_the_priority_as_a_number(api, options, priority):
    answers, sent = api
    answers[("POST", "/v1/jobs")] = (422, {"detail": "seen"})  # the body is what is checked here
    assert vtp(*SUBMIT, *options, ok=False).exit_code == 3
    assert len(sent) == 1 and sent[0][2].get("priority") == priority


def test_submit_with_an_unknown_priority_is_bad_usage_and_sends_nothing(api):
    _, sent = api
    result = vtp(*SUBMIT, "--priority", "urgent", ok=False)
    assert result.exit_code == 2 and sent == []
    assert "unknown priority 'urgent'" in one_line(result.stderr) and "low, normal, high" in one_line(result.stderr)
