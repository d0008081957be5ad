"""Benchmark 1 — callback ingestion: simulated trainers heartbeating over HTTP on loopback.

N jobs are created through the API and moved to RUNNING the way the controller and a trainer
would (store `transition` to QUEUED, then a `started` event); each gets a valid callback JWT.
`wrk` (Debian package) then sends heartbeats, each with a unique event_id and a unique epoch per
job, to three servers of the same store:

  serve    the platform's Serve app (Serve HTTP proxy → replica → one store call per request)
  gateway  the callback gateway (VTP_CALLBACK_PORT: uvicorn in a Ray actor, micro-batched store calls)
  ceiling  the reference: the same FastAPI app (create_app) under plain uvicorn in a subprocess,
           one store call per request

Closed loop (max throughput at a fixed connection count, repeated, medians) and open loop at
fixed offered rates (wrk's delay() hook paces requests on absolute time slots). Afterwards every
run is audited in the database: heartbeats applied (idempotency keys, metrics rows) versus 2xx
replies counted by wrk — none lost (every 2xx applied), none applied twice.

    flock /tmp/vtp-platform-tests.lock .venv/bin/python bench/callback_ingestion.py
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

WRK = shutil.which("wrk")
LUA = harness.BENCH / "heartbeats.lua"
# each run's heartbeats carry epochs base .. base + EPOCHS_PER_RUN (base = run number x this):
# unique per run, so the audit counts a run's metric rows; every run's stay under the contract's
# epoch bound (sdk.contract.MAX_EPOCH, 10^6) for the ~20 runs of a default invocation
EPOCHS_PER_RUN = 40_000


def wrk_run(url: str, datafile: Path, *, connections: int, duration: float, rate: float,
            prefix: str, base: int, threads: int = 1) -> dict:
    script = LUA.read_text()
    if not rate:  # no delay() at all: a plain closed loop
        script = script.replace("if true then", "if false then", 1)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    cmd = [WRK, f"-t{threads}", f"-c{connections}", f"-d{int(round(duration))}s", "--timeout", "5s", "-s", fh.name,
           url, "--", str(datafile), str(threads), str(rate / threads if rate else 0), prefix, str(base)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.unlink(fh.name)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("VTP_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {proc.stdout}\n{proc.stderr}")
    r = json.loads(line.split(" ", 1)[1])
    secs = r["duration_us"] / 1e6
    r.update(rps=r["requests"] / secs, ok_rps=r["ok"] / secs, p50_ms=r["p50_us"] / 1000,
             p99_ms=r["p99_us"] / 1000, p999_ms=r["p999_us"] / 1000,
             loadgen_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
             wall_s=wall, connections=connections, offered=rate or None, prefix=prefix, base=base)
    r["loadgen_cpu_share"] = r["loadgen_cpu_s"] / secs
    return r


def proc_cpu(pids: dict[str, int]) -> dict[str, float]:
    import psutil

    out = {}
    for name, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
        except Exception:
            out[name] = 0.0
    return out


def settle(pids: dict[str, int], idle_share: float = 0.1, timeout: float = 20.0) -> float:
    """Wait until the servers are idle: a run that overloads one server (Serve at 2,000/s leaves
    a backlog it works through after wrk stops) must not slow the next run's server."""
    started = time.monotonic()
    before = proc_cpu(pids)
    while time.monotonic() - started < timeout:
        time.sleep(0.5)
        after = proc_cpu(pids)
        if sum(after.values()) - sum(before.values()) < idle_share * 0.5:
            break
        before = after
    return time.monotonic() - started


def start_profiles(pids: dict[str, int], names: tuple[str, ...], duration: float, tag: str) -> list:
    """py-spy record (raw folded stacks) of each named process for `duration` seconds."""
    spy = Path(sys.executable).with_name("py-spy")
    out = []
    for name in [n for n in names if n in pids]:
        path = harness.RESULTS / f"profile-{tag.replace('/', '')}-{name}.folded"
        path.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([str(spy), "record", "--nonblocking", "--threads", "-r", "100",
                                 "-d", str(int(duration)), "-f", "raw", "-o", str(path), "-p", str(pids[name])],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append((name, path, proc, duration))
    return out


def finish_profiles(spies: list) -> dict:
    """Per process: the share of wall time each thread was on-CPU in Python, and its top functions
    (self and inclusive), from py-spy's folded stacks (100 samples/s; idle threads are not sampled)."""
    summary = {}
    for name, path, proc, duration in spies:
        proc.wait(duration + 60)
        if not path.exists():
            summary[name] = {"error": "py-spy wrote nothing (ptrace not permitted?)"}
            continue
        threads: dict[str, int] = {}
        own: dict[str, int] = {}
        incl: dict[str, int] = {}
        total = 0
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            frames = stack.split(";")
            total += n
            threads[frames[0]] = threads.get(frames[0], 0) + n
            own[frames[-1]] = own.get(frames[-1], 0) + n
            for f in set(frames[1:]):
                incl[f] = incl.get(f, 0) + n
        top = lambda d, total=total: [[f, round(c / max(total, 1), 3)] for f, c in sorted(d.items(), key=lambda kv: -kv[1])[:25]]
        summary[name] = {"samples": total, "busy_share_by_thread": {t: round(c / (100 * duration), 3) for t, c in threads.items()},
                         "top_self": top(own), "top_inclusive": top(incl), "folded": str(path)}
    return summary


def actor_pids() -> dict[str, int]:
    from ray.util.state import list_actors

    names = {"JobStore": "store", "CallbackGateway": "gateway", "ProxyActor": "serve_proxy",
             "ServeReplica:vtp:vtp-api": "serve_replica"}
    pids = {}
    for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000, raise_on_missing_output=False):
        if a.class_name in names:
            name = names[a.class_name]
            if name == "gateway":  # one per process: gateway, gateway-1, ...
                name = a.name.replace("vtp-callback-", "")
            pids[name] = a.pid
    return pids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--connections", type=int, default=32, help="closed-loop connections")
    ap.add_argument("--duration", type=int, default=4, help="seconds per closed-loop run")
    ap.add_argument("--reps", type=int, default=3, help="closed-loop repetitions (medians)")
    ap.add_argument("--rates", default="500,1000,2000", help="open-loop offered rates (/s)")
    ap.add_argument("--rate-duration", type=int, default=6)
    ap.add_argument("--targets", default="serve,gateway,ceiling")
    ap.add_argument("--gateway-processes", type=int, default=2, help="VTP_CALLBACK_PROCESSES")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy (non-blocking, 100 Hz) the gateway and the store during each open-loop "
                         "gateway run; folded stacks under bench/results/, top functions in the JSON")
    args = ap.parse_args()
    if not WRK:
        sys.exit("wrk not found: apt-get install -y wrk")
    targets = args.targets.split(",")
    rates = [float(r) for r in args.rates.split(",") if r]
    t0 = time.monotonic()
    gw_port = harness.free_port()
    with harness.platform(num_cpus=2, VTP_CONTROLLER_ENABLED="false",
                          VTP_CALLBACK_PORT=str(gw_port),
                          VTP_CALLBACK_PROCESSES=str(args.gateway_processes)) as (dep, p):
        import ray

        from ray_app.auth import callback_tokens
        from ray_app.config import NAMESPACE, STORE_ACTOR

        print(f"platform up in {time.monotonic() - t0:.1f}s; creating {args.jobs} jobs")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            job_ids = list(pool.map(lambda _: p.create_job(epochs=100_000)["id"], range(args.jobs)))
        store = ray.get_actor(STORE_ACTOR, namespace=NAMESPACE)
        ray.get([store.transition.remote(j, "QUEUED", "bench", attempt=1) for j in job_ids])
        ray.get([store.event.remote(j, 1, {"event_type": "started", "event_id": f"start-{j}"})
                 for j in job_ids])
        assert all(p.job(j)["state"] == "RUNNING" for j in job_ids[:5])
        tmp = Path(tempfile.mkdtemp(prefix="vtp-bench-ingest-"))
        datafile = tmp / "jobs.txt"
        datafile.write_text("".join(f"{j} {callback_tokens.issue(p.jwt_secret, j, 1, 3600)}\n" for j in job_ids))

        env = {**os.environ, **dep.settings_env(p.database_url, VTP_CONTROLLER_ENABLED="false"),
               "PYTHONPATH": str(harness.REPO)}
        ceiling_port = harness.free_port()
        ceiling = subprocess.Popen([sys.executable, str(harness.BENCH / "_ceiling_server.py"),
                                    dep.cluster.address, str(ceiling_port)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        urls = {"serve": p.base_url, "gateway": f"http://127.0.0.1:{gw_port}",
                "ceiling": f"http://127.0.0.1:{ceiling_port}"}
        try:
            harness.wait_http(f"{urls['ceiling']}/healthz")
            harness.wait_http(f"{urls['gateway']}/v1/jobs/x/heartbeat", ok=(405,))
            pids = {**actor_pids(), "ceiling": ceiling.pid}
            runs: list[dict] = []
            seq = [0]

            def run(target: str, phase: str, **kw) -> dict:
                seq[0] += 1
                settle(pids)
                prefix, base = f"r{seq[0]}", seq[0] * EPOCHS_PER_RUN
                cpu0 = proc_cpu(pids)
                spies = (start_profiles(pids, ("gateway", "gateway-1", "store"), kw["duration"], f"{phase}-{prefix}")
                         if args.profile and target == "gateway" and kw.get("rate") else [])
                r = wrk_run(urls[target], datafile, prefix=prefix, base=base, **kw)
                cpu1 = proc_cpu(pids)
                if spies:
                    r["profile"] = finish_profiles(spies)
                secs = r["duration_us"] / 1e6
                r.update(target=target, phase=phase,
                         server_cpu_share={k: round((cpu1[k] - cpu0[k]) / secs, 3) for k in pids})
                runs.append(r)
                print(f"  {phase:>7} {target:>8}: {r['ok_rps']:8.0f} ok/s  p50 {r['p50_ms']:7.1f} ms  "
                      f"p99 {r['p99_ms']:7.1f} ms  non2xx {r['non2xx']} errors "
                      f"{r['connect_errors'] + r['read_errors'] + r['write_errors'] + r['timeouts']}  "
                      f"cpu {r['server_cpu_share']}  wrk {r['loadgen_cpu_share']:.2f}")
                return r

            print("warm-up")
            for target in targets:
                run(target, "warmup", connections=args.connections, duration=2, rate=0)
            print(f"closed loop, {args.connections} connections, {args.reps} reps")
            for _ in range(args.reps):
                for target in targets:
                    run(target, "closed", connections=args.connections, duration=args.duration, rate=0)
            print("open loop, fixed offered rates")
            for rate in rates:
                for target in targets:
                    run(target, f"{int(rate)}/s", connections=max(32, int(rate // 10)),
                        duration=args.rate_duration, rate=rate)
        finally:
            ceiling.terminate()
            ceiling.wait(10)
        time.sleep(1.0)  # let in-flight requests of the last run land
        audit(p.database_url, runs, job_ids)
        from ray_app.api.gateway import gateway_infos

        infos = gateway_infos()
        gw_info = {"processes": len(infos), "batches": sum(i["batches"] for i in infos),
                   "items": sum(i["items"] for i in infos), "per_process": infos}
    report(runs, targets, rates, args, gw_info)


def audit(database_url: str, runs: list[dict], job_ids: list[str]) -> None:
    """Every run: heartbeats applied in the database versus 2xx replies counted by wrk."""
    con = sqlite3.connect(database_url.removeprefix("sqlite:///"))
    for r in runs:
        pfx = f"hb:{r['prefix']}-"
        r["applied_keys"] = con.execute(
            "select count(*) from job_callback_keys where substr(key, 1, ?) = ?", (len(pfx), pfx)).fetchone()[0]
        r["applied_metric_rows"] = con.execute(
            "select count(*) from job_metrics where epoch >= ? and epoch < ?",
            (r["base"], r["base"] + EPOCHS_PER_RUN)).fetchone()[0]
        r["lost"] = max(0, r["ok"] - r["applied_keys"])
        r["applied_unacknowledged"] = r["applied_keys"] - r["ok"]  # in flight when wrk stopped
        r["audit_ok"] = (r["lost"] == 0 and r["applied_keys"] == r["applied_metric_rows"]
                         and r["duplicates"] == 0 and r["applied_unacknowledged"] <= r["connections"])
    per_job = con.execute(
        "select k.job_id, k.n, coalesce(m.n, 0) from (select job_id, count(*) n from job_callback_keys "
        "where key like 'hb:%' group by job_id) k left join (select job_id, count(*) n from job_metrics "
        "group by job_id) m on m.job_id = k.job_id").fetchall()
    mismatched = [row for row in per_job if row[1] != row[2]]
    con.close()
    runs.append({"phase": "audit", "jobs_checked": len(per_job), "jobs_keys_ne_metric_rows": len(mismatched)})


def report(runs, targets, rates, args, gw_info) -> None:
    data = [r for r in runs if r.get("phase") not in ("audit", "warmup")]
    audit_row = next(r for r in runs if r.get("phase") == "audit")
    closed = {t: [r for r in data if r["phase"] == "closed" and r["target"] == t] for t in targets}
    med = {t: {k: harness.median([r[k] for r in rs]) for k in ("ok_rps", "p50_ms", "p99_ms")}
           for t, rs in closed.items()}
    ceiling_rps = med.get("ceiling", {}).get("ok_rps")
    rows = []
    for t in targets:
        ratio = med[t]["ok_rps"] / ceiling_rps if ceiling_rps else None
        rows.append([t, f"closed c={args.connections}", None, med[t]["ok_rps"], med[t]["p50_ms"],
                     med[t]["p99_ms"], ratio, all(r["audit_ok"] for r in closed[t])])
    for rate in rates:
        for t in targets:
            r = next(r for r in data if r["phase"] == f"{int(rate)}/s" and r["target"] == t)
            rows.append([t, f"open {int(rate)}/s c={r['connections']}", rate, r["ok_rps"], r["p50_ms"],
                         r["p99_ms"], r["ok_rps"] / rate, r["audit_ok"]])
    print("\nCallback ingestion (heartbeats; medians of the closed-loop reps)")
    print(harness.table(["server", "load", "offered/s", "2xx/s", "p50 ms", "p99 ms",
                         "ratio (closed: /ceiling, open: /offered)", "audit ok"], rows))
    target_run = next((r for r in data if r["phase"] == "2000/s" and r["target"] == "gateway"), None)
    verdict = {
        "ratio_gateway_to_ceiling": med.get("gateway", {}).get("ok_rps", 0) / ceiling_rps if ceiling_rps else None,
        "ratio_serve_to_ceiling": med.get("serve", {}).get("ok_rps", 0) / ceiling_rps if ceiling_rps else None,
        "gateway_2000_per_s": None if target_run is None else {
            "achieved": target_run["ok_rps"], "p99_ms": target_run["p99_ms"],
            "sustained": target_run["ok_rps"] >= 0.97 * 2000 and target_run["non2xx"] == 0,
            "p99_le_100ms": target_run["p99_ms"] <= 100},
        "all_runs_audited_ok": all(r["audit_ok"] for r in data),
        "max_loadgen_cpu_share": max(r["loadgen_cpu_share"] for r in data),
        "per_job_keys_eq_metric_rows": audit_row["jobs_keys_ne_metric_rows"] == 0,
    }
    print(f"\naudit: {audit_row['jobs_checked']} jobs, keys != metric rows for "
          f"{audit_row['jobs_keys_ne_metric_rows']}; every run: every 2xx applied, none twice: "
          f"{verdict['all_runs_audited_ok']}")
    print(f"gateway batches: {gw_info.get('batches')} for {gw_info.get('items')} callbacks "
          f"(mean {gw_info.get('items', 0) / max(1, gw_info.get('batches') or 1):.1f} per batch)")
    print("verdict:", json.dumps(verdict, default=str))
    harness.write_result("callback_ingestion", {"args": vars(args), "medians_closed": med, "verdict": verdict,
                                                "gateway": gw_info, "runs": runs})


if __name__ == "__main__":
    main()
