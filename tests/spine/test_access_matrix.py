"""Issue 29's permission matrix, against the running platform (Serve over HTTP, Ray, SQLite, S3).

EVERY route of the app's OpenAPI (GET /openapi.json of the deployed app) is called by each kind of
caller: anonymous, a revoked token, an expired token, a viewer, a member, a member of another
project, a project admin and a platform admin. RULES below is the matrix: one rule per (method,
path template) saying what the route touches (a job, a dataset or a project of project P, a
submission to P, the caller's own things, a platform admin's things, nothing: public, or the
trainer callbacks) and the policy action (teams/policy.py); what each caller must get follows
from the issue's table (LOWEST_ROLE, kept here: a change to teams/policy.py's shows). A route
without a rule fails the test, named.

  anonymous, revoked, expired  401 everywhere but /healthz (with the reason)
  allowed                      the rule's status (never 401/403, never the hidden 404)
  hidden                       status and body exactly those of a nonexistent id of the same kind
                               (the same request for a random id, its id put back): 404, and the
                               422 on `project_id` for a submission to a project one is not in
  forbidden                    403

Then every mutating call the test made is in the audit log with its request id, user, outcome and
the route's name (the trainer callbacks never are), and no token secret the test made is anywhere:
the platform's data dir (the job database, MLflow's), the Ray cluster's session dir (its logs) or
the audit entries.
"""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from ray_app.client._stream import messages
from ray_app.store import db
from ray_app.teams.policy import BOOTSTRAP_USER, Action, Decision, Principal, Role
from tests.fixtures.platform import Platform
from tests.fixtures.teams import Member, make_project, make_user, suffix

pytestmark = pytest.mark.timeout(300)

# ---------------------------------------------------------------- the callers

ANONYMOUS, REVOKED, EXPIRED = "anonymous", "revoked token", "expired token"
VIEWER, MEMBER, OUTSIDER = "viewer", "member", "other project's member"
PROJECT_ADMIN, PLATFORM_ADMIN = "project admin", "platform admin"
SIGNED_OUT = (ANONYMOUS, REVOKED, EXPIRED)
CALLERS = (*SIGNED_OUT, VIEWER, MEMBER, OUTSIDER, PROJECT_ADMIN, PLATFORM_ADMIN)
SIGNED_OUT_DETAIL = {ANONYMOUS: "missing bearer API token", REVOKED: "API token revoked",
                     EXPIRED: "API token expired"}

# ---------------------------------------------------------------- the matrix

PUBLIC = "public"            # anyone, no token
TRAINER = "trainer"          # trainer callbacks: their attempt's JWT only; 401 to every user token
SELF = "self"                # any signed-in user, on their own things (lists: their projects' only)
ADMIN_ONLY = "platform admin"
JOB, DATASET, PROJECT, SWEEP = "job", "dataset", "project", "sweep"  # a resource of project P: the action's role
SUBMIT = "submit"            # a new job, dataset or sweep in project P (the body names it): SUBMIT's role
RESOURCE_KINDS = (JOB, DATASET, PROJECT, SWEEP, SUBMIT)


# the table, the test's own copy (teams/policy.py must say the same): the lowest role in a
# project that may take each action there; a platform admin may do everything
LOWEST_ROLE = {Action.READ: Role.VIEWER, Action.SUBMIT: Role.MEMBER, Action.PREDICT: Role.MEMBER,
               Action.EXPORT: Role.MEMBER, Action.CANCEL: Role.MEMBER, Action.DELETE_DATASET: Role.ADMIN,
               Action.MANAGE_MEMBERS: Role.ADMIN}
OWN_ONLY_BELOW_ADMIN = {Action.CANCEL}  # a member cancels their own jobs; another's takes an admin


@dataclass(frozen=True)
class Req:
    path: str
    json: Any = None
    files: Any = None
    params: dict[str, Any] | None = None


@dataclass(frozen=True)
class Rule:
    kind: str
    action: Action | None = None
    ok: int = 200  # the answer when the caller may
    # the resource the call is on, for a caller: None is the kind's shared one (P's job, dataset,
    # P itself); a factory makes a fresh one for each caller where the call changes it
    target: Callable[[World, str], str] | None = None
    call: Callable[[World, str, str], Req] = lambda w, who, target: Req("/")
    stream: bool = False


def path(template: str) -> Callable[[World, str, str], Req]:
    """A request with no body: `{}` is the target."""
    return lambda w, who, target: Req(template.format(target))


def job_body(project_id: str) -> dict[str, Any]:
    # a GPU no node has: the job stays queued and never starts a trainer (nothing runs for it)
    return {"framework": "manual", "task_type": "object_detection", "model_name": "any", "dataset_id": "ds-test",
            "epochs": 3, "num_gpus": 1, "project_id": project_id}


def sweep_body(project_id: str) -> dict[str, Any]:
    # its trials are jobs like job_body's: they wait for a GPU no node has (nothing runs for them)
    job = {k: v for k, v in job_body(project_id).items() if k != "project_id"}
    return {"name": f"m-{suffix()}", "project_id": project_id, "job": job, "metric": "loss", "mode": "min",
            "space": {"learning_rate": {"choice": [0.01, 0.1]}}, "search": "grid", "max_concurrent": 1}


def upload_body(project_id: str) -> dict[str, Any]:
    """Opens an upload of a new dataset: its row exists, in state uploading (nothing is sent)."""
    return {"dataset_id": f"ds-{suffix()}", "filename": "d.zip", "size_bytes": 10,
            "sha256": uuid.uuid4().hex + uuid.uuid4().hex, "project_id": project_id}


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()
_D = "/v1/datasets/{}"


def _version(suffix_: str = "") -> Callable[[World, str, str], Req]:
    return lambda w, who, d: Req(f"/v1/datasets/{d}/versions/{w.version}{suffix_}")


RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): Rule(PUBLIC, call=path("/healthz")),
    # ---- the caller's own
    ("GET", "/v1/trainers"): Rule(SELF, call=path("/v1/trainers")),
    ("GET", "/v1/info"): Rule(SELF, call=path("/v1/info")),
    ("GET", "/v1/whoami"): Rule(SELF, call=path("/v1/whoami")),
    ("GET", "/v1/tokens"): Rule(SELF, call=path("/v1/tokens")),
    ("POST", "/v1/tokens"): Rule(SELF, ok=201, call=lambda w, who, t: Req("/v1/tokens", json={"name": f"m-{suffix()}"})),
    ("DELETE", "/v1/tokens/{token_id}"): Rule(SELF, target=lambda w, who: w.own_token(who), call=path("/v1/tokens/{}")),
    ("GET", "/v1/projects"): Rule(SELF, call=path("/v1/projects")),
    ("GET", "/v1/jobs"): Rule(SELF, call=path("/v1/jobs")),
    ("GET", "/v1/datasets"): Rule(SELF, call=path("/v1/datasets")),
    ("GET", "/v1/sweeps"): Rule(SELF, call=path("/v1/sweeps")),
    # the queue: the caller's projects' jobs and shares only (all: a platform admin)
    ("GET", "/v1/queue"): Rule(SELF, call=path("/v1/queue")),
    ("GET", "/v1/stream/jobs"): Rule(SELF, call=path("/v1/stream/jobs"), stream=True),
    # ---- platform admins'
    ("GET", "/v1/admin/users"): Rule(ADMIN_ONLY, call=path("/v1/admin/users")),
    ("POST", "/v1/admin/users"): Rule(ADMIN_ONLY, ok=201,
                                      call=lambda w, who, t: Req("/v1/admin/users", json={"id": f"user-{suffix()}"})),
    ("POST", "/v1/admin/users/{user_id}/disable"): Rule(ADMIN_ONLY, target=lambda w, who: w.spare_user(who),
                                                        call=path("/v1/admin/users/{}/disable")),
    ("POST", "/v1/admin/users/{user_id}/enable"): Rule(ADMIN_ONLY, target=lambda w, who: w.spare_user(who, disabled=True),
                                                       call=path("/v1/admin/users/{}/enable")),
    ("POST", "/v1/projects"): Rule(ADMIN_ONLY, ok=201,
                                   call=lambda w, who, t: Req("/v1/projects", json={"id": f"proj-{suffix()}"})),
    ("GET", "/v1/audit"): Rule(ADMIN_ONLY, call=path("/v1/audit")),
    # P's quota, even for P's own admin (403, not P's hidden 404: the platform admin check comes
    # first); the weight P has already, so the platform admin's 200 changes nothing the test meets
    ("PUT", "/v1/projects/{project_id}/quota"): Rule(ADMIN_ONLY, call=lambda w, who, t: Req(
        f"/v1/projects/{w.P}/quota", json={"weight": 1.0})),
    # ---- submissions to project P
    ("POST", "/v1/jobs"): Rule(SUBMIT, Action.SUBMIT, ok=201, call=lambda w, who, p: Req("/v1/jobs", json=job_body(p))),
    ("POST", "/v1/sweeps"): Rule(SUBMIT, Action.SUBMIT, ok=201,
                                 call=lambda w, who, p: Req("/v1/sweeps", json=sweep_body(p))),
    ("GET", "/v1/sweeps/{sweep_id}"): Rule(SWEEP, Action.READ, call=path("/v1/sweeps/{}")),
    ("POST", "/v1/sweeps/{sweep_id}/cancel"): Rule(SWEEP, Action.CANCEL, target=lambda w, who: w.fresh_sweep(who),
                                                   call=path("/v1/sweeps/{}/cancel")),
    ("POST", "/v1/datasets"): Rule(SUBMIT, Action.SUBMIT, ok=201,
                                   call=lambda w, who, p: Req("/v1/datasets", json=upload_body(p))),
    # ---- a job of P
    ("GET", "/v1/jobs/{job_id}"): Rule(JOB, Action.READ, call=path("/v1/jobs/{}")),
    ("POST", "/v1/jobs/{job_id}/cancel"): Rule(JOB, Action.CANCEL, target=lambda w, who: w.fresh_job(who),
                                               call=path("/v1/jobs/{}/cancel")),
    ("GET", "/v1/jobs/{job_id}/events"): Rule(JOB, Action.READ, call=path("/v1/jobs/{}/events")),
    ("GET", "/v1/jobs/{job_id}/metrics"): Rule(JOB, Action.READ, call=path("/v1/jobs/{}/metrics")),
    ("GET", "/v1/jobs/{job_id}/logs"): Rule(JOB, Action.READ, call=path("/v1/jobs/{}/logs")),
    ("GET", "/v1/jobs/{job_id}/stream"): Rule(JOB, Action.READ, call=path("/v1/jobs/{}/stream"), stream=True),
    ("GET", "/v1/jobs/{job_id}/artifacts"): Rule(JOB, Action.READ, call=path("/v1/jobs/{}/artifacts")),
    # allowed: 404 for a file the job does not have ("job … has no artifact"), never "job … not found"
    ("GET", "/v1/jobs/{job_id}/artifacts/{name}"): Rule(JOB, Action.READ, ok=404,
                                                        call=path("/v1/jobs/{}/artifacts/no-such-file.txt")),
    # allowed: 409, the job has not succeeded (nor has the manual trainer a predict entrypoint)
    ("POST", "/v1/jobs/{job_id}/predict"): Rule(JOB, Action.PREDICT, ok=409, call=lambda w, who, j: Req(
        f"/v1/jobs/{j}/predict", files=[("files", ("a.png", PNG, "image/png"))])),
    ("POST", "/v1/jobs/{job_id}/exports"): Rule(JOB, Action.EXPORT, ok=409, call=lambda w, who, j: Req(
        f"/v1/jobs/{j}/exports", json={"format": "onnx"})),
    ("GET", "/v1/jobs/{job_id}/exports"): Rule(JOB, Action.READ, call=path("/v1/jobs/{}/exports")),
    ("GET", "/v1/jobs/{job_id}/exports/{export_id}"): Rule(JOB, Action.READ, ok=404,
                                                           call=path("/v1/jobs/{}/exports/nosuchexport")),
    # ---- trainer callbacks: a user token is never a callback token
    ("POST", "/v1/jobs/{job_id}/heartbeat"): Rule(TRAINER, call=lambda w, who, j: Req(
        f"/v1/jobs/{w.job}/heartbeat", json={"epoch": 1})),
    ("POST", "/v1/jobs/{job_id}/event"): Rule(TRAINER, call=lambda w, who, j: Req(
        f"/v1/jobs/{w.job}/event", json={"event_type": "started"})),
    ("POST", "/v1/jobs/{job_id}/done"): Rule(TRAINER, call=lambda w, who, j: Req(
        f"/v1/jobs/{w.job}/done", json={"status": "succeeded"})),
    ("POST", "/v1/jobs/{job_id}/callbacks"): Rule(TRAINER, call=lambda w, who, j: Req(
        f"/v1/jobs/{w.job}/callbacks", json={"items": [{"kind": "heartbeat", "body": {"epoch": 1}}]})),
    # ---- a dataset of P (opened, uploading)
    ("GET", "/v1/datasets/{dataset_id}"): Rule(DATASET, Action.READ, call=path(_D)),
    ("DELETE", "/v1/datasets/{dataset_id}"): Rule(DATASET, Action.DELETE_DATASET, ok=204,
                                                  target=lambda w, who: w.fresh_dataset(who), call=path(_D)),
    ("GET", "/v1/datasets/{dataset_id}/versions/{version}"): Rule(DATASET, Action.READ, call=_version()),
    ("GET", "/v1/datasets/{dataset_id}/versions/{version}/samples"): Rule(DATASET, Action.READ,
                                                                          call=_version("/samples")),
    # allowed: 409, its parts were never sent (nothing changes)
    ("POST", "/v1/datasets/{dataset_id}/versions/{version}/complete"): Rule(DATASET, Action.SUBMIT, ok=409,
                                                                            call=_version("/complete")),
    # ---- project P
    ("GET", "/v1/projects/{project_id}"): Rule(PROJECT, Action.READ, call=path("/v1/projects/{}")),
    ("PUT", "/v1/projects/{project_id}/members/{user_id}"): Rule(
        PROJECT, Action.MANAGE_MEMBERS,
        call=lambda w, who, p: Req(f"/v1/projects/{p}/members/{w.spare_user(who)}", json={"role": "viewer"})),
    ("DELETE", "/v1/projects/{project_id}/members/{user_id}"): Rule(
        PROJECT, Action.MANAGE_MEMBERS,
        call=lambda w, who, p: Req(f"/v1/projects/{p}/members/{w.spare_user(who, member_of=w.P)}")),
}
TRAINER_ROUTES = {route for route, rule in RULES.items() if rule.kind == TRAINER}


# ---------------------------------------------------------------- the world the calls meet


@dataclass
class Caller:
    name: str
    token: str | None
    principal: Principal | None  # what the policy is asked about (None: signed out)


@dataclass
class World:
    p: Platform
    P: str
    Q: str
    callers: dict[str, Caller]
    lapsed: Member  # a member of P whose other tokens are the revoked and the expired one
    job: str = ""  # a job of P (the bootstrap admin's) the reading calls share
    q_job: str = ""  # a job of Q
    dataset: str = ""  # a dataset of P, opened (uploading)
    version: str = ""
    jobs: list[str] = field(default_factory=list)  # every job made, cancelled at the end
    sweep: str = ""  # a sweep of P (the bootstrap admin's)
    sweeps: list[str] = field(default_factory=list)  # every sweep made, cancelled at the end

    def as_caller(self, who: str, method: str, req: Req, stream: bool = False) -> Answer:
        token = self.callers[who].token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = f"{self.p.base_url}{req.path}"
        if stream:
            with self.p.http.stream(method, url, headers=headers, params=req.params) as r:
                if r.status_code != 200:
                    r.read()
                    return Answer(r.status_code, r.text)
                return Answer(r.status_code, "", r.headers.get("content-type", ""))
        r = self.p.http.request(method, url, headers=headers, json=req.json, files=req.files, params=req.params)
        return Answer(r.status_code, r.text, r.headers.get("content-type", ""))

    def headers_of(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.callers[who].token}"}

    def new_job(self, project_id: str, token: str | None = None) -> str:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = self.p.api("POST", "/v1/jobs", json=job_body(project_id), headers=headers)
        assert r.status_code == 201, r.text
        self.jobs.append(r.json()["id"])
        return self.jobs[-1]

    # fresh targets, one per caller where the call changes its target; a signed-out caller
    # changes nothing (401 first): it gets the shared one
    def fresh_job(self, who: str) -> str:
        return self.job if who in SIGNED_OUT else self.new_job(self.P)

    def new_sweep(self, project_id: str) -> str:
        r = self.p.api("POST", "/v1/sweeps", json=sweep_body(project_id))
        assert r.status_code == 201, r.text
        self.sweeps.append(r.json()["id"])
        return self.sweeps[-1]

    def fresh_sweep(self, who: str) -> str:
        return self.sweep if who in SIGNED_OUT else self.new_sweep(self.P)

    def fresh_dataset(self, who: str) -> str:
        if who in SIGNED_OUT:
            return self.dataset
        r = self.p.api("POST", "/v1/datasets", json=upload_body(self.P))
        assert r.status_code == 201, r.text
        return r.json()["dataset_id"]

    def own_token(self, who: str) -> str:
        """A token of the caller's own, made with their token, for them to revoke."""
        if who in SIGNED_OUT:
            return "no-such-token"
        r = self.as_caller(who, "POST", Req("/v1/tokens", json={"name": f"spare-{suffix()}"}))
        assert r.status == 201, r.text
        return json.loads(r.text)["id"]

    def spare_user(self, who: str, disabled: bool = False, member_of: str | None = None) -> str:
        """A throwaway user (disabled, or a viewer of `member_of`) for one call to change."""
        if who in SIGNED_OUT:
            return BOOTSTRAP_USER
        user = make_user(self.p, roles={member_of: "viewer"} if member_of else None)
        if disabled:
            assert self.p.api("POST", f"/v1/admin/users/{user.user_id}/disable").status_code == 200
        return user.user_id


@dataclass(frozen=True)
class Answer:
    status: int
    text: str  # "" for a stream, which is closed unread
    content_type: str = ""

    def detail(self) -> Any:
        try:
            return json.loads(self.text).get("detail")
        except (ValueError, AttributeError):
            return None


def expected(rule: Rule, caller: Caller, project_id: str) -> Decision | None:
    """ALLOW, HIDE or FORBID; None: 401. `project_id`: P, where every target is."""
    if rule.kind == PUBLIC:
        return Decision.ALLOW
    if caller.principal is None or rule.kind == TRAINER:
        return None
    if rule.kind == SELF:
        return Decision.ALLOW
    if rule.kind == ADMIN_ONLY:
        return Decision.ALLOW if caller.principal.platform_admin else Decision.FORBID
    assert rule.action is not None
    principal = caller.principal
    if principal.platform_admin:
        return Decision.ALLOW
    role = principal.role(project_id)
    if role is None:
        return Decision.HIDE
    if role < LOWEST_ROLE[rule.action]:
        return Decision.FORBID
    # every target in P was made by the bootstrap admin: for a member, another's
    if rule.action in OWN_ONLY_BELOW_ADMIN and role < Role.ADMIN:
        return Decision.FORBID
    return Decision.ALLOW


def nonexistent() -> str:
    return f"nx{uuid.uuid4().hex[:14]}"


# ---------------------------------------------------------------- recording every call


@contextmanager
def recorded(p: Platform) -> Iterator[list[httpx.Response]]:
    """Every response the platform's client gets meanwhile (its request, status, headers)."""
    calls: list[httpx.Response] = []
    hooks = p.http.event_hooks
    p.http.event_hooks = {**hooks, "response": [*hooks.get("response", []), calls.append]}
    try:
        yield calls
    finally:
        p.http.event_hooks = hooks


def route_of(templates: list[tuple[str, str]], method: str, url_path: str) -> tuple[str, str] | None:
    for m, template in templates:
        if m == method and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), url_path):
            return m, template
    return None


TOKEN_SHAPE = re.compile(rb"(?=(vtp_[A-Za-z0-9_-]{43}))")  # teams/tokens.py: vtp_ + 43 characters


def secrets_in(root: Path, secrets: set[str]) -> dict[str, list[str]]:
    """{file: the secrets found in it} for every regular file under `root`."""
    found: dict[str, list[str]] = {}
    for file in root.rglob("*"):
        try:
            if not file.is_file() or file.is_symlink():
                continue
            data = file.read_bytes()
        except OSError:  # gone meanwhile (a log rotated, a temp file)
            continue
        hits = {m.group(1).decode() for m in TOKEN_SHAPE.finditer(data)} & secrets
        if hits:
            found[str(file)] = sorted(hits)
    return found


# ---------------------------------------------------------------- set-up


def build_world(p: Platform) -> World:
    P, Q = make_project(p), make_project(p)
    users = {VIEWER: make_user(p, roles={P: "viewer"}), MEMBER: make_user(p, roles={P: "member"}),
             OUTSIDER: make_user(p, roles={Q: "member"}), PROJECT_ADMIN: make_user(p, roles={P: "admin"}),
             PLATFORM_ADMIN: make_user(p, platform_admin=True)}
    roles = {VIEWER: {P: Role.VIEWER}, MEMBER: {P: Role.MEMBER}, OUTSIDER: {Q: Role.MEMBER},
             PROJECT_ADMIN: {P: Role.ADMIN}, PLATFORM_ADMIN: {}}
    lapsed = make_user(p, roles={P: "member"})
    revoked = as_member(p, lapsed, "POST", "/v1/tokens", json={"name": "to-revoke"}).json()
    assert as_member(p, lapsed, "DELETE", f"/v1/tokens/{revoked['id']}").status_code == 200
    expired = as_member(p, lapsed, "POST", "/v1/tokens", json={"name": "to-expire", "expires": "1h"}).json()
    # stands in for time passing: the 1 h token's expiry moved an hour into the past, in the
    # platform's database (the API checks expires_at against the clock on every request)
    engine = db.make_engine(p.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(db.api_tokens.update().where(db.api_tokens.c.id == expired["id"])
                         .values(expires_at=db.utcnow() - timedelta(hours=1)))
    finally:
        engine.dispose()
    callers = {ANONYMOUS: Caller(ANONYMOUS, None, None), REVOKED: Caller(REVOKED, revoked["token"], None),
               EXPIRED: Caller(EXPIRED, expired["token"], None)}
    for name, user in users.items():
        callers[name] = Caller(name, user.token, Principal(user.user_id, "initial", name == PLATFORM_ADMIN,
                                                           roles[name]))
    w = World(p, P, Q, callers, lapsed)
    w.job, w.q_job = w.new_job(P), w.new_job(Q)
    w.sweep = w.new_sweep(P)
    opened = p.api("POST", "/v1/datasets", json=upload_body(P))
    assert opened.status_code == 201, opened.text
    w.dataset, w.version = opened.json()["dataset_id"], opened.json()["version"]
    return w


def as_member(p: Platform, member: Member, method: str, url_path: str, **kwargs: Any) -> httpx.Response:
    return p.http.request(method, f"{p.base_url}{url_path}", headers=member.headers, **kwargs)


def list_position(p: Platform) -> str:
    """Where the job list's stream stands now (its `ready` message)."""
    with p.http.stream("GET", f"{p.base_url}/v1/stream/jobs", headers={"Authorization": f"Bearer {p.api_token}"}) as r:
        for message in messages(r.iter_lines()):
            if message is not None and message[0] == "ready":
                return json.loads(message[2])["position"]
    raise AssertionError("no ready message")


def streamed_projects(w: World, who: str, since: str, marker: str) -> dict[str, str]:
    """{job id: project} of every job the caller's job-list stream carries from `since` until the
    `marker` job, and for a moment after (later changes of the jobs made before it)."""
    seen: dict[str, str] = {}
    token = w.callers[who].token
    url = f"{w.p.base_url}/v1/stream/jobs"
    marked_at: float | None = None
    with w.p.http.stream("GET", url, params={"since": since}, headers={"Authorization": f"Bearer {token}"},
                         timeout=httpx.Timeout(30, read=2)) as r:
        assert r.status_code == 200
        try:
            for message in messages(r.iter_lines(), pings=True):
                if message is not None and message[0] == "job":
                    job = json.loads(message[2])
                    seen[job["id"]] = job["project_id"]
                    if job["id"] == marker and marked_at is None:
                        marked_at = time.monotonic()
                if marked_at is not None and time.monotonic() - marked_at > 1.5:
                    break
        except httpx.ReadTimeout:  # 2 s without a message: nothing more is coming
            pass
    assert marker in seen, f"{who}'s stream never carried {marker}"
    return seen


# ---------------------------------------------------------------- the test


def test_every_route_answers_every_caller_as_the_matrix_says(platform, deployment):
    p = platform
    started = datetime.now(UTC) - timedelta(seconds=5)
    spec = p.http.get(f"{p.base_url}/openapi.json").json()
    routes = [(method.upper(), template) for template, ops in spec["paths"].items()
              for method in ops if method in ("get", "post", "put", "patch", "delete")]
    unruled = [f"{m} {t}" for m, t in routes if (m, t) not in RULES]
    assert not unruled, f"routes without a rule in the access matrix (add one to RULES): {unruled}"
    stale = [f"{m} {t}" for m, t in RULES if (m, t) not in routes]
    assert not stale, f"rules for routes the app no longer has: {stale}"
    # the route's name (what the audit log records as the action): its operationId, FastAPI's
    # `name + path + _method` with every non-word character an underscore
    names = {(m, t): spec["paths"][t][m.lower()]["operationId"].removesuffix(
        re.sub(r"\W", "_", t) + "_" + m.lower()) for m, t in routes}

    failures: list[str] = []
    with recorded(p) as calls:
        position = list_position(p)  # before any job of this test
        w = build_world(p)
        try:
            for route in routes:
                check_route(w, route, RULES[route], failures)
            # a member cancels their own job (another's: 403 above)
            own = w.new_job(w.P, w.callers[MEMBER].token)
            mine = w.as_caller(MEMBER, "POST", Req(f"/v1/jobs/{own}/cancel"))
            if mine.status != 200:
                failures.append(f"POST /v1/jobs/{{job_id}}/cancel as member on their own job: {mine.status} {mine.text}")
            # a client's own X-Request-ID names the call's entry, and is on its answer once
            traced = f"client-{uuid.uuid4().hex}"
            r = p.http.post(f"{p.base_url}/v1/tokens", json={"name": f"traced-{suffix()}"},
                            headers={**w.headers_of(MEMBER), "X-Request-ID": traced})
            assert r.status_code == 201 and r.headers.get_list("x-request-id") == [traced], r.headers
            assert not failures, "the access matrix is not what the API answers:\n" + "\n".join(failures)
            check_lists(w)

            # the job list's stream never carries a job of a project the caller is not in
            jq = w.new_job(w.Q)
            jp = w.new_job(w.P)
            by_member = streamed_projects(w, MEMBER, position, marker=jp)
            assert jq not in by_member and w.q_job not in by_member
            assert set(by_member.values()) == {w.P}, by_member
            by_outsider = streamed_projects(w, OUTSIDER, position, marker=jq)
            assert set(by_outsider.values()) == {w.Q} and w.q_job in by_outsider, by_outsider
            admin_token = w.callers[PLATFORM_ADMIN].token
        finally:
            for job_id in w.jobs:  # nothing of this test keeps the controller busy afterwards
                p.api("POST", f"/v1/jobs/{job_id}/cancel")
            for sweep_id in w.sweeps + [s["id"] for s in p.api("GET", "/v1/sweeps", params={"limit": 200}).json()["items"]]:
                p.api("POST", f"/v1/sweeps/{sweep_id}/cancel")

    audit = check_audit(p, w, admin_token, calls, routes, names, started)
    check_no_secret(p, deployment, w, calls, audit)


def check_route(w: World, route: tuple[str, str], rule: Rule, failures: list[str]) -> None:
    method, template = route
    hidden: tuple[int, str] | None = None
    random_id = nonexistent()
    if rule.kind in RESOURCE_KINDS:
        # the answer for a resource that does not exist, as the other project's member gets it
        gone = w.as_caller(OUTSIDER, method, rule.call(w, OUTSIDER, random_id), rule.stream)
        want = 422 if rule.kind == SUBMIT else 404
        if gone.status != want or random_id not in gone.text:
            failures.append(f"{method} {template} for a nonexistent id: {gone.status} {gone.text}, wanted {want}")
            return
        hidden = gone.status, gone.text
    for who in CALLERS:
        caller = w.callers[who]
        if rule.target is not None:
            target = rule.target(w, who)
        else:
            target = {JOB: w.job, DATASET: w.dataset, PROJECT: w.P, SWEEP: w.sweep, SUBMIT: w.P}.get(rule.kind, "")
        answer = w.as_caller(who, method, rule.call(w, who, target), rule.stream)
        decision = expected(rule, caller, w.P)
        where = f"{method} {template} as {who}: {answer.status} {answer.text[:300]!r}"
        hidden_here = (hidden[0], hidden[1].replace(random_id, target)) if hidden else None
        if decision is None:
            reason = SIGNED_OUT_DETAIL.get(who) if rule.kind != TRAINER else None
            if answer.status != 401 or (reason is not None and answer.detail() != reason):
                failures.append(f"{where}; wanted 401 {reason or ''}")
        elif decision is Decision.ALLOW:
            if answer.status != rule.ok or (hidden_here is not None and (answer.status, answer.text) == hidden_here):
                failures.append(f"{where}; wanted {rule.ok} (allowed)")
            elif rule.stream and "text/event-stream" not in answer.content_type:
                failures.append(f"{where}; wanted a text/event-stream")
        elif decision is Decision.HIDE:
            assert hidden_here is not None
            if (answer.status, answer.text) != hidden_here:
                failures.append(f"{where}; wanted exactly the answer for a nonexistent one: {hidden_here}")
        elif answer.status != 403:
            failures.append(f"{where}; wanted 403 (forbidden)")


def check_lists(w: World) -> None:
    """The lists hold the caller's projects' things only (all of them: a platform admin)."""
    for who, project in ((MEMBER, w.P), (VIEWER, w.P), (OUTSIDER, w.Q)):
        jobs = json.loads(w.as_caller(who, "GET", Req("/v1/jobs", params={"limit": 500})).text)["items"]
        assert jobs and {j["project_id"] for j in jobs} == {project}, (who, jobs)
        datasets = json.loads(w.as_caller(who, "GET", Req("/v1/datasets", params={"limit": 500})).text)["items"]
        assert {d["project_id"] for d in datasets} <= {project}, (who, datasets)
        projects = json.loads(w.as_caller(who, "GET", Req("/v1/projects")).text)["items"]
        assert [x["id"] for x in projects] == [project], (who, projects)
    everything = json.loads(w.as_caller(PLATFORM_ADMIN, "GET", Req("/v1/projects")).text)["items"]
    assert {w.P, w.Q} <= {x["id"] for x in everything}


def check_audit(p: Platform, w: World, admin_token: str, calls: list[httpx.Response], routes: list[tuple[str, str]],
                names: dict[tuple[str, str], str], started: datetime) -> list[dict[str, Any]]:
    """Every mutating call made is in GET /v1/audit: its request id, user, outcome and action."""
    users = {p.api_token: BOOTSTRAP_USER}
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"since": started.isoformat(), "limit": 500, **({"cursor": cursor} if cursor else {})}
        r = p.http.get(f"{p.base_url}/v1/audit", params=params, headers={"Authorization": f"Bearer {admin_token}"})
        assert r.status_code == 200, r.text
        entries += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    by_id = {e["request_id"]: e for e in entries}
    for r in calls:
        if r.request.url.path == "/v1/admin/users" and r.request.method == "POST" and r.status_code == 201:
            users[r.json()["token"]["token"]] = r.json()["user"]["id"]  # a user's first token
    missing, wrong, trainer = [], [], []
    mutating = 0
    for r in calls:
        method, url_path = r.request.method, r.request.url.path
        if method not in ("POST", "PUT", "PATCH", "DELETE"):
            continue
        route = route_of(routes, method, url_path)
        assert route is not None, f"{method} {url_path} matched no route"
        ids = r.headers.get_list("x-request-id")
        assert len(ids) == 1, f"{method} {url_path} answered with X-Request-ID {ids}: one was wanted"
        request_id = ids[0]
        if route in TRAINER_ROUTES:
            if request_id in by_id:
                trainer.append(f"{method} {url_path}")
            continue
        mutating += 1
        token = r.request.headers.get("authorization", "").removeprefix("Bearer ") or None
        signed_out = token is None or token in (w.callers[REVOKED].token, w.callers[EXPIRED].token)
        assert signed_out or token in users, f"{method} {url_path}: a token of no user the test made"
        want = {"request_id": request_id, "user_id": None if signed_out else users[token],
                "outcome": r.status_code, "action": names[route], "method": method, "path": url_path}
        entry = by_id.get(request_id)
        if entry is None:
            missing.append(f"{method} {url_path} -> {r.status_code} ({request_id})")
        elif {k: entry[k] for k in want} != want:
            wrong.append(f"{ {k: entry[k] for k in want} } != {want}")
    assert mutating > 150, mutating
    assert not missing, f"mutating calls missing from the audit log: {missing}"
    assert not wrong, "audit entries not as answered:\n" + "\n".join(wrong)
    assert not trainer, f"trainer callbacks recorded in the audit log: {trainer}"
    return entries


def check_no_secret(p: Platform, deployment, w: World, calls: list[httpx.Response], audit: list[dict]) -> None:
    """No token secret the test made is in the data dir, the Ray session dir or the audit log."""
    secrets = {c.token for c in w.callers.values() if c.token} | {w.lapsed.token}
    for r in calls:  # every secret an answer handed out (new users' and new tokens')
        if r.is_stream_consumed and "json" in r.headers.get("content-type", ""):
            secrets |= {m.group(1).decode() for m in TOKEN_SHAPE.finditer(r.content)}
    assert len(secrets) > 30, len(secrets)
    assert not {s for s in secrets if s in json.dumps(audit)}, "a token secret is in the audit log"
    data_dir = Path(deployment.data_dir)
    assert any(data_dir.glob("*.db")), list(data_dir.iterdir())
    found = {**secrets_in(data_dir, secrets), **secrets_in(Path(deployment.cluster.temp_dir), secrets)}
    assert not found, f"token secrets on disk: {found}"
