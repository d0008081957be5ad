"""What the user authorization check costs per request (issue 29): `GET /v1/jobs/{id}` with a
bootstrap token of VTP_API_TOKENS (compared in memory, no database read: the reference) against a
personal `vtp_…` token of a project member (its SHA-256 looked up with the user's memberships in
the database on every request, then the policy's role check), interleaved in the same run.

The platform as the other benchmarks start it (harness.platform: a throwaway `ray start --head`,
Serve on 127.0.0.1, SQLite, controller off), with two servers of the same JobStore and database:

  serve    the platform's Serve app over HTTP (Serve proxy -> API replica), as users reach it
  uvicorn  the same FastAPI app (create_app) under plain uvicorn in a subprocess on loopback
           (bench/_ceiling_server.py): no proxy hop, so the check's share shows more

Before measuring, the bootstrap admin makes --projects projects and --users users over the API,
each user a member of a few projects with a token of their own (a platform with a team on it, not
a single row), and one job in the member's project. Then, per server, blocks of --block requests
alternate between the two tokens (ABBA order), --n requests of each after one unrecorded warm-up
block of each; one httpx client, one keep-alive connection, sequential requests (closed loop, one
at a time: latency, not throughput). Per kind: p50/p99 of the client's wall per request, and the
server processes' CPU per request (psutil, per block: the Serve proxy and replica, or the uvicorn
process; the store actor too, which writes a token's last_used_at at most once a minute). Ratio =
personal / bootstrap.

    flock /tmp/vtp-suite.lock .venv/bin/python bench/auth_cost.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from callback_ingestion import actor_pids, proc_cpu, settle  # noqa: E402

MEMBER_PROJECT = "bench-vision"


def populate(p, users: int, projects: int) -> tuple[str, str]:
    """Projects and users made by the bootstrap admin over the API; returns (member token, job id):
    a user who is a member of MEMBER_PROJECT (and of two more), and a job there."""
    def ok(resp, status: int) -> dict:
        assert resp.status_code == status, resp.text
        return resp.json()

    names = [MEMBER_PROJECT] + [f"bench-p{i:03d}" for i in range(projects - 1)]
    for name in names:
        ok(p.api("POST", "/v1/projects", json={"id": name, "description": "bench"}), 201)
    member_token = ""
    for i in range(users):
        made = ok(p.api("POST", "/v1/admin/users", json={"id": f"bench-u{i:04d}"}), 201)
        mine = {names[(i + k) % len(names)] for k in range(3)}  # three projects each
        for project in mine:
            ok(p.api("PUT", f"/v1/projects/{project}/members/bench-u{i:04d}",
                     json={"role": "viewer" if i % 4 == 3 else "member"}), 200)
        if i == 0:
            assert MEMBER_PROJECT in mine
            member_token = made["token"]["token"]
    job_id = p.create_job(project_id=MEMBER_PROJECT)["id"]
    return member_token, job_id


def measure(url: str, job_id: str, tokens: dict[str, str], pids: dict[str, int], n: int, block: int) -> dict:
    import httpx

    kinds = list(tokens)
    lat: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}  # server CPU seconds per request, per block
    block_p50: dict[str, list[float]] = {k: [] for k in kinds}
    with httpx.Client(base_url=url, timeout=30) as client:
        headers = {k: {"Authorization": f"Bearer {t}"} for k, t in tokens.items()}

        def run_block(kind: str, record: bool) -> None:
            h = headers[kind]
            times = []
            c0 = proc_cpu(pids)
            for _ in range(block):
                t0 = time.perf_counter()
                resp = client.get(f"/v1/jobs/{job_id}", headers=h)
                times.append(time.perf_counter() - t0)
                if resp.status_code != 200:
                    raise RuntimeError(f"{kind}: {resp.status_code} {resp.text}")
            c1 = proc_cpu(pids)
            if record:
                lat[kind] += times
                cpu[kind].append((sum(c1.values()) - sum(c0.values())) / block)
                block_p50[kind].append(harness.pct(times, 50))

        for kind in kinds:  # warm-up: connections, the replica's engine, code paths
            run_block(kind, record=False)
        blocks = max(1, n // block)
        for b in range(blocks):  # ABBA: neither kind always goes first
            for kind in (kinds if b % 2 == 0 else kinds[::-1]):
                run_block(kind, record=True)
    out = {}
    for kind in kinds:
        out[kind] = {"requests": len(lat[kind]), "p50_ms": 1000 * harness.pct(lat[kind], 50),
                     "p99_ms": 1000 * harness.pct(lat[kind], 99), "mean_ms": 1000 * sum(lat[kind]) / len(lat[kind]),
                     "block_p50_ms": [round(1000 * x, 3) for x in block_p50[kind]],
                     "server_cpu_ms_per_request": 1000 * harness.median(cpu[kind])}
    a, b = out[kinds[0]], out[kinds[1]]
    out["ratio"] = {q: b[q] / a[q] if a[q] else None for q in ("p50_ms", "p99_ms", "mean_ms", "server_cpu_ms_per_request")}
    out["delta_ms"] = {q: b[q] - a[q] for q in ("p50_ms", "p99_ms", "mean_ms", "server_cpu_ms_per_request")}
    return out


def breakdown(settings, tokens: dict[str, str], n: int, block: int) -> dict:
    """Where the difference goes, in this process (no HTTP): `access.resolve` with each token
    (what every user route's dependency runs), and the personal token's database read alone
    (store/teams.token_owner on a connection, no worker thread), in interleaved blocks."""
    import asyncio

    from ray_app.api import access
    from ray_app.api.context import AppContext
    from ray_app.store import teams as store_teams
    from ray_app.store.client import StoreClient
    from ray_app.teams import tokens as token_lib

    ctx = AppContext(settings=settings, store=StoreClient(settings))
    engine = ctx.reads.reader.engine
    digest = token_lib.secret_hash(tokens["personal"])

    async def resolve(token: str) -> None:
        await access.resolve(ctx, token)

    def lookup() -> None:
        with engine.connect() as conn:
            store_teams.token_owner(conn, digest)

    loop = asyncio.new_event_loop()
    calls = {"resolve, bootstrap token": lambda: loop.run_until_complete(resolve(tokens["bootstrap"])),
             "resolve, personal token": lambda: loop.run_until_complete(resolve(tokens["personal"])),
             "token_owner SQL alone": lookup}
    times: dict[str, list[float]] = {k: [] for k in calls}
    for b in range(max(1, n // block) + 1):
        for name, call in calls.items():
            for _ in range(block):
                t0 = time.perf_counter()
                call()
                if b:  # the first round is the warm-up
                    times[name].append(time.perf_counter() - t0)
    loop.close()
    ctx.reads.reader.dispose()
    return {name: {"p50_us": 1e6 * harness.pct(t, 50), "p99_us": 1e6 * harness.pct(t, 99)} for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="recorded requests per token kind and server")
    ap.add_argument("--block", type=int, default=100, help="requests per block (the kinds alternate by block)")
    ap.add_argument("--users", type=int, default=50, help="users made before measuring, 3 projects each")
    ap.add_argument("--projects", type=int, default=20)
    ap.add_argument("--targets", default="serve,uvicorn")
    args = ap.parse_args()
    targets = args.targets.split(",")
    t0 = time.monotonic()
    with harness.platform(num_cpus=2, VTP_CONTROLLER_ENABLED="false") as (dep, p):
        print(f"platform up in {time.monotonic() - t0:.1f}s; {args.users} users, {args.projects} projects")
        member_token, job_id = populate(p, args.users, args.projects)
        me = p.http.get(f"{p.base_url}/v1/whoami", headers={"Authorization": f"Bearer {member_token}"}).json()
        assert me["platform_admin"] is False and {"project_id": MEMBER_PROJECT, "role": "member"} in me["projects"]
        tokens = {"bootstrap": p.api_token, "personal": member_token}

        env = {**os.environ, **dep.settings_env(p.database_url, VTP_CONTROLLER_ENABLED="false"),
               "PYTHONPATH": str(harness.REPO)}
        port = harness.free_port()
        server = subprocess.Popen([sys.executable, str(harness.BENCH / "_ceiling_server.py"),
                                   dep.cluster.address, str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            harness.wait_http(f"http://127.0.0.1:{port}/healthz")
            actors = actor_pids()
            servers = {
                "serve": (p.base_url, {k: actors[k] for k in ("serve_proxy", "serve_replica", "store") if k in actors}),
                "uvicorn": (f"http://127.0.0.1:{port}", {"uvicorn": server.pid, "store": actors["store"]}),
            }
            results: dict = {}
            for target in targets:
                url, pids = servers[target]
                settle(pids)
                print(f"{target}: {args.n} requests per token kind, blocks of {args.block}")
                results[target] = measure(url, job_id, tokens, pids, args.n, args.block)
        finally:
            server.terminate()
            server.wait(10)
        results["in_process"] = breakdown(p.settings, tokens, args.n, args.block)
    in_process = results.pop("in_process")
    rows = []
    for target, r in results.items():
        for kind in tokens:
            rows.append([target, kind, r[kind]["p50_ms"], r[kind]["p99_ms"], r[kind]["mean_ms"],
                         r[kind]["server_cpu_ms_per_request"], "1.00 (reference)" if kind == "bootstrap" else
                         f"p50 {r['ratio']['p50_ms']:.2f}, p99 {r['ratio']['p99_ms']:.2f}, "
                         f"CPU {r['ratio']['server_cpu_ms_per_request']:.2f}"])
    print("\nGET /v1/jobs/{id}: bootstrap token (in memory) vs a member's personal token (database lookup)")
    print(harness.table(["server", "token", "p50 ms", "p99 ms", "mean ms", "server CPU ms/request",
                         "ratio personal / bootstrap"], rows))
    for target, r in results.items():
        d = r["delta_ms"]
        print(f"{target}: the personal token adds p50 {d['p50_ms']:+.2f} ms, p99 {d['p99_ms']:+.2f} ms, "
              f"server CPU {d['server_cpu_ms_per_request']:+.2f} ms a request")
    print(harness.table(["in process (no HTTP)", "p50 us", "p99 us"],
                        [[name, v["p50_us"], v["p99_us"]] for name, v in in_process.items()]))
    harness.write_result("auth_cost", {"args": vars(args), "results": results, "in_process": in_process})


if __name__ == "__main__":
    main()
