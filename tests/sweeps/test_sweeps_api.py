"""POST/GET /v1/sweeps and the cancel against the real platform: what a bad sweep is refused for
(a 422 naming the field, nothing written), who sees and cancels a sweep, and the list's pages.

Every sweep made here has a base job of the `manual` trainer (it idles until stopped) and is
cancelled at the end of its test, so no trial keeps running."""

from __future__ import annotations

import json

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.platform import Platform
from tests.fixtures.teams import as_user, make_project, make_user, suffix
from tests.sweeps.conftest import FINAL, sweep_body

pytestmark = pytest.mark.timeout(180)

MANUAL = {"framework": "manual", "task_type": "object_detection", "model_name": "any", "epochs": 3,
          "num_cpus": 0}


def body(**fields: Any) -> dict[str, Any]:
    """A valid sweep of manual jobs, one trial at a time, with `fields` over it (`job`: over the
    base job)."""
    job = {**MANUAL, **fields.pop("job", {})}
    return sweep_body(job=job, **{"name": f"api-{suffix()}", "max_concurrent": 1, **fields})


def total(p: Platform, **params: Any) -> int:
    """Every sweep the platform lists (all pages)."""
    count, cursor = 0, None
    while True:
        page = p.api("GET", "/v1/sweeps", params={**params, "limit": 200, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        count += len(page.json()["items"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return count


@pytest.fixture
def made(platform) -> Iterator[list[str]]:
    """Sweep ids to cancel (as the platform admin) and see final once the test is done."""
    ids: list[str] = []
    yield ids
    for sweep_id in ids:
        resp = platform.api("POST", f"/v1/sweeps/{sweep_id}/cancel")
        assert resp.status_code == 200, resp.text
    deadline = time.monotonic() + 60
    for sweep_id in ids:
        while (state := platform.api("GET", f"/v1/sweeps/{sweep_id}").json()["state"]) not in FINAL:
            assert time.monotonic() < deadline, f"sweep {sweep_id} still {state} after its cancel"
            time.sleep(0.3)


def create(p: Platform, made: list[str], member: Any = None, **fields: Any) -> dict[str, Any]:
    sweep = body(**fields)
    resp = as_user(p, member, "POST", "/v1/sweeps", json=sweep) if member else p.api("POST", "/v1/sweeps", json=sweep)
    assert resp.status_code == 201, resp.text
    made.append(resp.json()["id"])
    return resp.json()


# ---------------------------------------------------------------- refused, and nothing written

ELEVEN = {f"config.k{i}": {"choice": [0, 1]} for i in range(11)}

BAD: list[tuple[str, dict[str, Any], list[str], list[str]]] = [
    # (case, fields over a valid body, the 422's loc, words its msg holds)
    ("unknown field in space", {"space": {"model_name": {"choice": ["a", "b"]}}},
     ["body", "space", "model_name"], ["unknown field 'model_name'"]),
    ("num_gpus in space", {"space": {"num_gpus": {"choice": [0, 1]}}},
     ["body", "space", "num_gpus"], ["unknown field"]),
    ("nested key too deep", {"space": {"config.a.b": {"choice": [1]}}},
     ["body", "space", "config.a.b"], ["identifiers"]),
    ("empty choice", {"space": {"learning_rate": {"choice": []}}},
     ["body", "space", "learning_rate"], ["empty choice"]),
    ("loguniform from 0", {"search": "random", "space": {"learning_rate": {"loguniform": [0, 0.1]}}},
     ["body", "space", "learning_rate"], ["0 < low"]),
    ("loguniform below 0", {"search": "random", "space": {"learning_rate": {"loguniform": [-1, 0.1]}}},
     ["body", "space", "learning_rate"], ["0 < low"]),
    ("unknown domain", {"search": "random", "space": {"learning_rate": {"normal": [0, 1]}}},
     ["body", "space", "learning_rate"], ["unknown domain 'normal'"]),
    ("a range under grid", {"search": "grid", "space": {"learning_rate": {"uniform": [0.01, 0.1]}}},
     ["body", "space", "learning_rate"], ["grid search takes choice lists only"]),
    ("grid too large", {"search": "grid", "space": ELEVEN}, ["body", "space"], ["2048", "1000"]),
    ("empty space", {"space": {}}, ["body", "space"], ["at least one field"]),
    ("epochs in the space", {"space": {"epochs": {"choice": [1, 2]}}},
     ["body", "space", "epochs"], ["budget"]),
    ("a choice of text for batch_size", {"space": {"batch_size": {"choice": [8, "a"]}}},
     ["body", "space", "batch_size"], ["'a' is not a valid value here", "integer"]),
    ("a choice of 0 for batch_size", {"space": {"batch_size": {"choice": [16, 0]}}},
     ["body", "space", "batch_size"], ["0 is not a valid value here", "greater than or equal to 1"]),
    ("learning_rate past its top", {"space": {"learning_rate": {"choice": [0.1, 11.0]}}},
     ["body", "space", "learning_rate"], ["11.0 is not a valid value here", "less than or equal to 10"]),
    ("a range from 0 for learning_rate", {"search": "random", "space": {"learning_rate": {"uniform": [0, 0.1]}}},
     ["body", "space", "learning_rate"], ["0.0 is not a valid value here", "greater than 0"]),
    # Tune's uniform samples floats (23.7): batch_size takes integers only
    ("a uniform range for batch_size", {"search": "random", "space": {"batch_size": {"uniform": [8, 64]}}},
     ["body", "space", "batch_size"], ["8.0 is not a valid value here", "integer"]),
    ("a loguniform range for image_size", {"search": "random", "space": {"image_size": {"loguniform": [32, 640]}}},
     ["body", "space", "image_size"], ["32.0 is not a valid value here", "integer"]),
    ("grace period as long as the epochs", {"scheduler": {"type": "asha", "grace_period": 3}},
     ["body", "scheduler.grace_period"], ["grace period (3 epochs)", "epochs (3)"]),
    ("grace period past the epochs", {"scheduler": {"type": "median", "grace_period": 5}, "job": {"epochs": 2}},
     ["body", "scheduler.grace_period"], ["must be shorter"]),
    ("job in another project", {"job": {"project_id": "elsewhere"}},
     ["body"], ["job.project_id (elsewhere) must be the sweep's project_id (default)"]),
    ("unknown framework", {"job": {"framework": f"nope-{suffix()}"}}, ["body", "job.framework"], ["nope-"]),
    ("base job refused", {"job": {"epochs": 0}}, ["body", "job", "epochs"], ["greater than or equal to 1"]),
    ("empty metric", {"metric": ""}, ["body", "metric"], ["at least 1 character"]),
    ("no trials", {"num_trials": 0}, ["body", "num_trials"], ["greater than or equal to 1"]),
    ("too concurrent", {"max_concurrent": 65}, ["body", "max_concurrent"], ["less than or equal to 64"]),
    ("unknown search", {"search": "bayes"}, ["body", "search"], ["'random', 'grid' or 'optuna'"]),
    ("unknown scheduler", {"scheduler": {"type": "hyperband"}}, ["body", "scheduler", "type"], ["'asha' or 'median'"]),
    ("a scheduler's unknown field", {"scheduler": {"type": "asha", "max_t": 3}},
     ["body", "scheduler", "max_t"], ["Extra inputs"]),
    ("unknown mode", {"mode": "best"}, ["body", "mode"], ["'max' or 'min'"]),
    ("unknown top-level field", {"trials": 3}, ["body", "trials"], ["Extra inputs"]),
    # an integer past 64 bits (its float would overflow) as a range's bound
    ("a bound past 64 bits", {"search": "random", "space": {"config.x": {"int": [0, 2**70]}}},
     ["body", "space", "config.x"], ["at most 2**53"]),
    ("a float range's bound past 64 bits", {"search": "random", "space": {"config.x": {"uniform": [0, 10**400]}}},
     ["body", "space", "config.x"], ["at most 2**53"]),
    # a path is named back in the answer: text a response can carry (U+FFFD for a lone surrogate)
    ("a lone surrogate in a path", {"space": {"x\ud800": {"choice": [1]}}},
     ["body", "space", "x\ufffd"], ["unknown field"]),
    ("a lone surrogate in a config key", {"space": {"config.\ud800": {"choice": [1]}}},
     ["body", "space", "config.\ufffd"], ["identifiers"]),
]


@pytest.mark.parametrize(("fields", "loc", "words"), [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_a_bad_sweep_is_a_422_naming_the_field_and_writes_nothing(platform, fields, loc, words):
    before = total(platform)
    # sent as JSON escapes (\\ud800): the text of a lone surrogate, which no UTF-8 body carries as is
    resp = platform.api("POST", "/v1/sweeps", content=json.dumps(body(**fields)),
                        headers={"Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, list) and len(detail) >= 1, detail
    named = [d for d in detail if d["loc"] == loc]
    assert named, f"no error at {loc}: {detail}"
    for word in words:
        assert any(word in d["msg"] for d in named), f"{word!r} not in {[d['msg'] for d in named]}"
    assert total(platform) == before


def test_a_refused_sweep_to_a_new_project_makes_no_project(platform):
    # a platform admin may name a project that does not exist yet: made only once the sweep is valid
    project = f"proj-{suffix()}"
    resp = platform.api("POST", "/v1/sweeps", json=body(project_id=project, space={"epochs": {"choice": [1]}}))
    assert resp.status_code == 422, resp.text
    assert platform.api("GET", f"/v1/projects/{project}").status_code == 404
    assert total(platform, project_id=project) == 0


# ---------------------------------------------------------------- found, hidden, cancelled by whom


def test_an_unknown_sweep_is_a_404(platform):
    missing = f"none-{suffix()}"
    resp = platform.api("GET", f"/v1/sweeps/{missing}")
    assert resp.status_code == 404 and missing in resp.json()["detail"], resp.text
    assert platform.api("POST", f"/v1/sweeps/{missing}/cancel").status_code == 404


def test_a_sweep_is_hidden_from_other_projects_members(platform, made):
    p = platform
    home, other = make_project(p), make_project(p)
    viewer = make_user(p, roles={home: "viewer"})
    outsider = make_user(p, roles={other: "viewer"})
    sweep = create(p, made, project_id=home)
    assert sweep["project_id"] == home and sweep["job"]["project_id"] == home

    seen = as_user(p, viewer, "GET", f"/v1/sweeps/{sweep['id']}")
    assert seen.status_code == 200 and seen.json()["id"] == sweep["id"], seen.text
    hidden = as_user(p, outsider, "GET", f"/v1/sweeps/{sweep['id']}")
    missing = f"none-{suffix()}"
    unknown = as_user(p, outsider, "GET", f"/v1/sweeps/{missing}")
    assert hidden.status_code == unknown.status_code == 404, hidden.text
    assert hidden.json()["detail"] == unknown.json()["detail"].replace(missing, sweep["id"])  # no hint it exists
    listed = as_user(p, outsider, "GET", "/v1/sweeps", params={"limit": 200}).json()["items"]
    assert sweep["id"] not in {s["id"] for s in listed}
    assert as_user(p, outsider, "GET", "/v1/sweeps", params={"project_id": home}).json()["items"] == []
    assert sweep["id"] in {s["id"] for s in as_user(p, viewer, "GET", "/v1/sweeps", params={"project_id": home})
                           .json()["items"]}
    # neither may cancel it: the outsider does not see it, the viewer may not cancel
    assert as_user(p, outsider, "POST", f"/v1/sweeps/{sweep['id']}/cancel").status_code == 404
    assert as_user(p, viewer, "POST", f"/v1/sweeps/{sweep['id']}/cancel").status_code == 403
    assert p.api("GET", f"/v1/sweeps/{sweep['id']}").json()["cancelled_by"] is None


def test_a_viewer_may_not_start_a_sweep(platform):
    p = platform
    project = make_project(p)
    viewer = make_user(p, roles={project: "viewer"})
    before = total(p, project_id=project)
    resp = as_user(p, viewer, "POST", "/v1/sweeps", json=body(project_id=project))
    assert resp.status_code == 403 and "viewer" in resp.json()["detail"], resp.text
    assert total(p, project_id=project) == before == 0
    # someone in no role there: the 422 of a project that does not exist
    stranger = make_user(p)
    hidden = as_user(p, stranger, "POST", "/v1/sweeps", json=body(project_id=project))
    assert hidden.status_code == 422 and hidden.json()["detail"][0]["loc"] == ["body", "project_id"], hidden.text
    assert total(p, project_id=project) == 0


def test_a_member_cancels_their_own_sweep_only_and_a_project_admin_any(platform, made):
    p = platform
    project = make_project(p)
    owner = make_user(p, roles={project: "member"})
    other = make_user(p, roles={project: "member"})
    admin = make_user(p, roles={project: "admin"})
    sweep = create(p, made, member=owner, project_id=project)
    assert sweep["created_by"] == owner.user_id

    refused = as_user(p, other, "POST", f"/v1/sweeps/{sweep['id']}/cancel")
    assert refused.status_code == 403 and "only what they created" in refused.json()["detail"], refused.text
    still = p.api("GET", f"/v1/sweeps/{sweep['id']}").json()
    assert still["state"] not in FINAL and still["cancelled_by"] is None

    done = as_user(p, admin, "POST", f"/v1/sweeps/{sweep['id']}/cancel")
    assert done.status_code == 200, done.text
    assert done.json()["cancelled_by"] == admin.user_id

    own = create(p, made, member=owner, project_id=project)
    mine = as_user(p, owner, "POST", f"/v1/sweeps/{own['id']}/cancel")
    assert mine.status_code == 200 and mine.json()["cancelled_by"] == owner.user_id, mine.text


# ---------------------------------------------------------------- the list


def test_the_list_pages_newest_first_with_a_cursor(platform, made):
    p = platform
    project = make_project(p)
    ids = [create(p, made, project_id=project)["id"] for _ in range(3)]

    first = p.api("GET", "/v1/sweeps", params={"project_id": project, "limit": 2})
    assert first.status_code == 200, first.text
    page1 = first.json()
    assert [s["id"] for s in page1["items"]] == ids[:0:-1]  # the two newest, newest first
    assert page1["next_cursor"] is not None
    page2 = p.api("GET", "/v1/sweeps", params={"project_id": project, "limit": 2,
                                               "cursor": page1["next_cursor"]}).json()
    assert [s["id"] for s in page2["items"]] == ids[:1]
    assert page2["next_cursor"] is None
    whole = p.api("GET", "/v1/sweeps", params={"project_id": project, "limit": 3}).json()
    assert [s["id"] for s in whole["items"]] == ids[::-1] and whole["next_cursor"] is None
    for summary in whole["items"]:
        assert summary["project_id"] == project and summary["metric"] == "objective"
        assert summary["num_trials"] == 2  # grid over two learning rates

    assert p.api("GET", "/v1/sweeps", params={"cursor": "abc"}).status_code == 422
    assert p.api("GET", "/v1/sweeps", params={"limit": 0}).status_code == 422
    assert p.api("GET", "/v1/sweeps", params={"limit": 201}).status_code == 422
    assert p.api("GET", "/v1/sweeps", params={"state": "DONE"}).status_code == 422
