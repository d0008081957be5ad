"""A revoked token, and a disabled user, are refused from the very next request on: on every
replica of the API (VTP_API_REPLICAS=2) and on the callback gateway's /mlflow, which resolves
tokens through the same code (api/access.py reads the token's row on every request, on each
process's own engine: no cache anywhere to outlive a revocation)."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest
from ray import serve

from tests.fixtures.platform import Platform
from tests.fixtures.teams import make_user

pytestmark = pytest.mark.timeout(300)

APP, DEPLOYMENT = "vtp", "vtp-api"
REQUESTS = 30
SEARCH = "/mlflow/api/2.0/mlflow/experiments/search"
# a path under /mlflow that MLflow's server does not serve: a signed-in user gets its 404 (the
# token was accepted), a refused token 401, and MLflow's server is never loaded for it
NOT_SERVED = "/mlflow/not-served"


def running_replicas() -> int:
    deployment = serve.status().applications[APP].deployments[DEPLOYMENT]
    return sum(n for state, n in deployment.replica_states.items() if str(getattr(state, "value", state)) == "RUNNING")


@pytest.fixture
def two_replicas(deployment, sqlite_url, gateway_port) -> tuple[Platform, str]:
    """The platform with two API replicas and its callback gateway (and the gateway's URL)."""
    p = deployment.deploy(sqlite_url, VTP_CALLBACK_PORT=str(gateway_port), VTP_API_REPLICAS="2")
    deadline = time.monotonic() + 120
    while running_replicas() != 2:  # /healthz answered from one: the other may still be starting
        assert time.monotonic() < deadline, serve.status().applications[APP].deployments[DEPLOYMENT]
        time.sleep(0.3)
    return p, f"http://127.0.0.1:{gateway_port}"


def many(p: Platform, token: str) -> list[httpx.Response]:
    """REQUESTS calls of GET /v1/whoami at once, 8 at a time: Serve's router spreads them over the
    replicas (it sends each to the less busy of two)."""
    headers = {"Authorization": f"Bearer {token}"}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: p.http.get(f"{p.base_url}/v1/whoami", headers=headers), range(REQUESTS)))


def mlflow_statuses(p: Platform, gateway: str, token: str, search: bool = False) -> dict[str, set[int]]:
    """What /mlflow answers the token: on the gateway (a new connection each time, which the kernel
    gives to either of its processes) and on the Serve app. With `search`, MLflow's experiment
    search on the gateway too (only for a refused token: an accepted one would load MLflow's server)."""
    headers = {"Authorization": f"Bearer {token}"}
    out = {"gateway": {httpx.get(f"{gateway}{NOT_SERVED}", headers=headers).status_code for _ in range(6)},
           "serve": {p.http.get(f"{p.base_url}{NOT_SERVED}", headers=headers).status_code}}
    if search:
        out["gateway search"] = {httpx.post(f"{gateway}{SEARCH}", json={"max_results": 1}, headers=headers).status_code
                                 for _ in range(3)}
    return out


def assert_refused(p: Platform, gateway: str, token: str, reason: str) -> None:
    answers = many(p, token)
    assert [(r.status_code, r.json()["detail"]) for r in answers] == [(401, reason)] * REQUESTS
    assert mlflow_statuses(p, gateway, token, search=True) == {"gateway": {401}, "serve": {401},
                                                               "gateway search": {401}}


def test_revoked_token_and_disabled_user_are_refused_at_once_on_every_replica_and_the_gateway(two_replicas):
    p, gateway = two_replicas
    assert running_replicas() == 2
    user = make_user(p)
    made = p.http.post(f"{p.base_url}/v1/tokens", json={"name": "laptop"}, headers=user.headers)
    assert made.status_code == 201, made.text
    laptop = made.json()

    # in use everywhere: every replica and the gateway have resolved it
    answers = many(p, laptop["token"])
    assert [(r.status_code, r.json()["token_name"]) for r in answers] == [(200, "laptop")] * REQUESTS
    assert mlflow_statuses(p, gateway, laptop["token"]) == {"gateway": {404}, "serve": {404}}

    revoked = p.http.delete(f"{p.base_url}/v1/tokens/{laptop['id']}", headers=user.headers)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"], revoked.text
    assert_refused(p, gateway, laptop["token"], "API token revoked")  # the next requests: no delay

    # the user's other token still works, until the user is disabled
    assert {r.status_code for r in many(p, user.token)} == {200}
    assert mlflow_statuses(p, gateway, user.token) == {"gateway": {404}, "serve": {404}}
    assert p.api("POST", f"/v1/admin/users/{user.user_id}/disable").status_code == 200
    assert_refused(p, gateway, user.token, "user disabled")
