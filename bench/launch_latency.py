"""Benchmark 2 — launch latency: job creation → RUNNING (the trainer's `started` event).

Runs the fake trainer (tests/trainers/fake: standard library only, behaviour `succeed`, 1 epoch)
through the whole platform: API → JobStore → controller → placement group + TrainerRunner actor
(no runtime_env: it unpacks the trainer folder + the SDK for the trainer process itself,
runtime/process_env.py; `VTP_POOLED_RUNNERS=0` gives the runner the runtime_env instead) →
trainer process → `started` callback. The first job is the cold start (packages uploaded and
unpacked on the node); the next ones are warm. Times come from the job's own event timestamps
(server side, no polling error):

  created → QUEUED                  the controller picks the job up and requests its runner
  QUEUED → trainer_process          placement group + Ray worker + runner start + packages + spawn
  trainer_process → started         trainer interpreter start-up and its first callback

In-run reference: a bare Ray actor (same num_cpus, no runtime_env) created and called once, plus
a `python -c pass` child — the floor that any Ray-actor-per-attempt design pays.

    flock /tmp/vtp-platform-tests.lock .venv/bin/python bench/launch_latency.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def phases(p, job_id: str) -> dict:
    events = p.events(job_id)
    created = next(e for e in events if e["event_type"] == "created")
    queued = next(e for e in events if e["event_type"] == "state_changed" and e["data"].get("to") == "QUEUED")
    proc = next(e for e in events if e["event_type"] == "trainer_process")
    started = next(e for e in events if e["event_type"] == "started" and e["source"] == "trainer")
    t = {k: _ts(e["created_at"]) for k, e in
         (("created", created), ("queued", queued), ("process", proc), ("started", started))}
    out = {"to_queued_s": t["queued"] - t["created"], "queued_to_process_s": t["process"] - t["queued"],
           "process_to_started_s": t["started"] - t["process"], "total_s": t["started"] - t["created"]}
    # the runner's own clock marks split QUEUED → trainer_process (same host, same clock)
    s = proc["data"].get("startup") or {}
    if s.get("worker_process_at") and s.get("trainer_spawned_at"):
        out.update({
            "queued_to_worker_s": s["worker_process_at"] - t["queued"],   # placement + spawn (< 0: an idle worker)
            "worker_to_runner_s": s["runner_init_at"] - s["worker_process_at"],  # Ray + runner imports
            "runner_to_run_s": s["run_called_at"] - s["runner_init_at"],  # ready() (packages) seen, run() called
            "run_to_spawn_s": s["trainer_spawned_at"] - s["run_called_at"],  # trainer process started
        })
    return out


SPLIT = ("queued_to_worker_s", "worker_to_runner_s", "runner_to_run_s", "run_to_spawn_s")


def bare_actor_reference(n: int, with_runtime_env: bool = False) -> list[float]:
    """A Ray actor created and called once, running a `python -c pass` child. With a runtime_env
    (one env var, different each time, as each attempt's contract variables are), Ray starts the
    worker through `setup_worker.py`: a first interpreter imports Ray to apply the runtime_env,
    then execs the real worker (a second interpreter, a second `import ray`)."""
    import ray

    @ray.remote(num_cpus=0.5)
    class Noop:
        def ping(self) -> int:
            return subprocess.run([sys.executable, "-c", "pass"]).returncode

    times = []
    for i in range(n):
        t0 = time.perf_counter()
        a = (Noop.options(runtime_env={"env_vars": {"VTP_BENCH_ATTEMPT": str(i)}}) if with_runtime_env
             else Noop).remote()
        ray.get(a.ping.remote())
        times.append(time.perf_counter() - t0)
        ray.kill(a)
        time.sleep(0.3)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warm", type=int, default=15)
    ap.add_argument("--reference", type=int, default=5)
    ap.add_argument("--no-gateway", action="store_true", help="callbacks through Serve, not the gateway")
    ap.add_argument("--public-runtime-env", action="store_true",
                    help="VTP_POOLED_RUNNERS=false: the runner gets Ray's runtime_env (public API) instead of "
                         "unpacking the packages itself (runtime/ray_private.py)")
    args = ap.parse_args()
    extra = {} if args.no_gateway else {"VTP_CALLBACK_PORT": str(harness.free_port())}
    if args.public_runtime_env:
        extra["VTP_POOLED_RUNNERS"] = "false"
    t0 = time.monotonic()
    with harness.platform(num_cpus=4, **extra) as (_dep, p):
        print(f"platform up in {time.monotonic() - t0:.1f}s")
        rows, results = [], []
        for i in range(args.warm + 1):
            c0 = time.monotonic()
            job_id = p.create_job(framework="fake", model_name="fake-net", task_type="image_classification",
                                  epochs=1, config={"behaviour": "succeed", "epoch_seconds": 0.05})["id"]
            job = p.job(job_id)
            while job["state"] in ("PENDING", "QUEUED"):
                time.sleep(0.05)
                job = p.job(job_id)
            client_s = time.monotonic() - c0
            p.wait_state(job_id, "SUCCEEDED", timeout=120)
            ph = {**phases(p, job_id), "client_polled_s": client_s, "kind": "cold" if i == 0 else "warm"}
            results.append(ph)
            rows.append([i, ph["kind"], ph["to_queued_s"], ph["queued_to_process_s"],
                         ph["process_to_started_s"], ph["total_s"], ph["client_polled_s"]])
            print(f"  job {i:2d} {ph['kind']}: {ph['total_s']:.2f}s")
        ref = bare_actor_reference(args.reference)
        ref_env = bare_actor_reference(args.reference, with_runtime_env=True)
    warm = [r["total_s"] for r in results if r["kind"] == "warm"]
    cold = results[0]
    ref_p50 = harness.median(ref)
    summary = {
        "warm_p50_s": harness.pct(warm, 50), "warm_p95_s": harness.pct(warm, 95),
        "cold_s": cold["total_s"], "cold_breakdown": cold,
        "warm_median_breakdown": {k: harness.median([r[k] for r in results[1:]]) for k in
                                  ("to_queued_s", "queued_to_process_s", "process_to_started_s", *SPLIT)
                                  if all(k in r for r in results[1:])},
        "reference_bare_actor_p50_s": ref_p50, "reference_runs_s": ref,
        "reference_actor_with_runtime_env_p50_s": harness.median(ref_env), "reference_env_runs_s": ref_env,
    }
    summary["ratio_warm_p50_to_reference"] = summary["warm_p50_s"] / ref_p50 if ref_p50 else None
    summary["targets_met"] = {"p50_le_2s": summary["warm_p50_s"] <= 2.0, "p95_le_4s": summary["warm_p95_s"] <= 4.0}
    print("\nLaunch latency (seconds; from the job's event timestamps)")
    print(harness.table(["#", "kind", "created→QUEUED", "QUEUED→process", "process→started",
                         "created→started", "client (polled)"], [[r[0], r[1], *[round(x, 3) for x in r[2:]]]
                                                                   for r in rows]))
    if all(k in r for r in results for k in SPLIT):
        print("\nQUEUED → trainer_process, split by the runner's marks (seconds)")
        print(harness.table(["#", "placement+worker spawn", "Ray+runner import", "ready() (packages)→run()",
                             "run()→trainer spawned"],
                            [[i, *[round(r[k], 3) for k in SPLIT]] for i, r in enumerate(results)]))
    print(harness.table(["metric", "value"], [
        ["warm p50 (target ≤ 2 s)", summary["warm_p50_s"]], ["warm p95 (target ≤ 4 s)", summary["warm_p95_s"]],
        ["cold", summary["cold_s"]], ["reference: bare Ray actor + child p50", ref_p50],
        ["reference: the same with a runtime_env (env_vars only) p50", summary["reference_actor_with_runtime_env_p50_s"]],
        ["ratio warm p50 / reference", summary["ratio_warm_p50_to_reference"]]]))
    harness.write_result("launch_latency", {"args": vars(args), "summary": summary, "jobs": results})


if __name__ == "__main__":
    main()
