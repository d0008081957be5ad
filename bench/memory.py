"""Benchmark 5 — memory: resident memory of the platform's own processes.

Processes (Ray actors, found with `ray.util.state.list_actors`, measured with psutil): the Serve
replica (and Serve's proxy and controller, for reference), the JobStore, the JobController, the
callback gateway, and a TrainerRunner actor without a trainer (constructed and ready, `run()` not
called). RSS and USS (memory unique to the process) at three points:

  idle          the platform deployed, nothing stored
  1k histories  1,000 jobs created and finished through the store actor, each with a history
                (created/queued/started events + 5 trainer events, 10 heartbeats → 10 metrics
                rows, 50 log lines, done), and a few history reads through the API
  10k finished  9,000 more finished jobs written to the database (rows copied from a finished
                job, with its events), then the JobStore restarted (Ray restarts it; it reloads
                the live jobs from the database: none, every job is final) — the JobStore
                target: < 500 MB

In-run reference: a bare Ray actor (a worker process that imports nothing of the platform).

    flock /tmp/vtp-platform-tests.lock .venv/bin/python bench/memory.py
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

MB = 1024 * 1024
NAMES = {"ServeReplica:vtp:vtp-api": "serve replica", "ProxyActor": "serve proxy",
         "ServeController": "serve controller", "JobStore": "job store", "JobController": "job controller",
         "CallbackGateway": "callback gateway", "TrainerRunner": "runner (no trainer)",
         "BareActor": "reference: bare Ray actor"}
SPEC = {"framework": "fake", "task_type": "image_classification", "model_name": "fake-net",
        "dataset_id": "ds-bench", "project_id": "bench", "epochs": 10, "batch_size": 16,
        "learning_rate": 0.01, "image_size": 64, "num_gpus": 0, "num_cpus": 1, "memory_mb": None,
        "config": {"behaviour": "succeed"}, "advanced_config": {}, "max_attempts": 3, "resume_from": None}


def measure() -> dict[str, dict[str, float]]:
    import psutil
    from ray.util.state import list_actors

    out = {}
    for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000, raise_on_missing_output=False):
        label = NAMES.get(a.class_name) or NAMES.get((a.class_name or "").rsplit(".", 1)[-1])
        if label in out:  # one per process (the callback gateway's: VTP_CALLBACK_PROCESSES)
            label = f"{label} ({sum(k.startswith(label) for k in out) + 1})"
        if label and a.pid:
            try:
                info = psutil.Process(a.pid).memory_full_info()
                out[label] = {"rss_mb": info.rss / MB, "uss_mb": info.uss / MB, "pid": a.pid}
            except psutil.Error:
                pass
    return out


def populate(store, n: int) -> list[str]:
    import ray

    ids = [uuid.uuid4().hex[:16] for _ in range(n)]
    refs = []
    for job_id in ids:
        refs.append(store.create_job.remote(dict(SPEC), job_id))
        refs.append(store.transition.remote(job_id, "QUEUED", "bench", attempt=1))
        items = [("event", job_id, 1, {"event_id": f"s-{job_id}", "event_type": "started",
                                        "message": "training started"})]
        for e in range(1, 11):
            items.append(("heartbeat", job_id, 1, {"event_id": f"h{e}-{job_id}", "epoch": e, "total_epochs": 10,
                                                   "metrics": {"loss": 1 / e, "mAP50": e / 11, "lr": 0.01}}))
            if e % 2 == 0:
                items.append(("event", job_id, 1, {"event_id": f"c{e}-{job_id}", "event_type": "checkpoint_saved",
                                                   "message": f"epoch {e}",
                                                   "data": {"checkpoint_path": f"s3://b/checkpoints/job-{job_id}/last.pt",
                                                            "name": "last", "epoch": e}}))
        refs.append(store.apply_callbacks.remote(items))
        refs.append(store.append_logs.remote(job_id, 1, [
            ("stdout", f"[TRACE:x] [INFO] epoch {i // 5} batch {i % 5}: loss=0.{i:03d} some more log text here")
            for i in range(50)]))
        refs.append(store.done.remote(job_id, 1, {
            "event_id": f"d-{job_id}", "status": "succeeded", "final_metrics": {"mAP50": 0.9},
            "artifacts": {"best": f"s3://b/checkpoints/job-{job_id}/best.pt"}, "training_time_seconds": 12.5}))
        if len(refs) >= 500:
            ray.get(refs)
            refs = []
    ray.get(refs)
    return ids


def bulk_finished(db_path: str, template_id: str, n: int) -> None:
    con = sqlite3.connect(db_path, timeout=60)
    cols = [r[1] for r in con.execute("pragma table_info(jobs)") if r[1] not in ("num", "id", "trace_id")]
    ecols = [r[1] for r in con.execute("pragma table_info(job_events)") if r[1] != "job_id"]
    mcols = [r[1] for r in con.execute("pragma table_info(job_metrics)") if r[1] != "job_id"]
    ids = [uuid.uuid4().hex[:16] for _ in range(n)]
    with con:
        con.executemany(f"insert into jobs (id, trace_id, {', '.join(cols)}) select ?, ?, {', '.join(cols)} "
                        f"from jobs where id = ?", [(j, str(uuid.uuid4()), template_id) for j in ids])
        con.executemany(f"insert into job_events (job_id, {', '.join(ecols)}) select ?, {', '.join(ecols)} "
                        f"from job_events where job_id = ?", [(j, template_id) for j in ids])
        con.executemany(f"insert into job_metrics (job_id, {', '.join(mcols)}) select ?, {', '.join(mcols)} "
                        f"from job_metrics where job_id = ?", [(j, template_id) for j in ids])
    con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--histories", type=int, default=1000)
    ap.add_argument("--finished", type=int, default=10_000)
    args = ap.parse_args()
    t0 = time.monotonic()
    with harness.platform(num_cpus=4, VTP_CONTROLLER_ENABLED="false",
                          VTP_CALLBACK_PORT=str(harness.free_port())) as (_dep, p):
        import ray

        from ray_app.config import NAMESPACE, STORE_ACTOR
        from ray_app.runtime.controller import ensure_controller
        from ray_app.runtime.runner import TrainerRunner

        print(f"platform up in {time.monotonic() - t0:.1f}s")
        store = ray.get_actor(STORE_ACTOR, namespace=NAMESPACE)
        # every job will be final: a controller started now has nothing to launch
        ensure_controller(p.settings)

        @ray.remote(num_cpus=0)
        class BareActor:
            def ping(self) -> int:
                return 1

        bare = BareActor.remote()
        runner = TrainerRunner.options(name="trainer:bench-idle", namespace=NAMESPACE, num_cpus=0).remote(
            p.settings, "bench-idle", 1, "trace-bench", "train.py", {})
        ray.get([bare.ping.remote(), runner.ready.remote()])
        time.sleep(3)
        points = {"idle": measure()}
        t1 = time.monotonic()
        ids = populate(store, args.histories)
        fill_s = time.monotonic() - t1
        for job_id in ids[:50]:  # the API serves some histories too
            for kind in ("events", "metrics", "logs"):
                assert p.api("GET", f"/v1/jobs/{job_id}/{kind}").status_code == 200
        p.api("GET", "/v1/jobs", params={"limit": 200})
        time.sleep(2)
        points[f"{args.histories} histories"] = measure()
        extra = args.finished - args.histories
        bulk_finished(p.database_url.removeprefix("sqlite:///"), ids[-1], extra)
        ray.kill(store, no_restart=False)  # Ray restarts it: reload of the live jobs from the database
        deadline = time.monotonic() + 120
        while True:
            try:
                count = ray.get(ray.get_actor(STORE_ACTOR, namespace=NAMESPACE).ping.remote(), timeout=30)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert count == 0, count  # ping: the jobs it holds, the live ones (store/core.py)
        listed = p.api("GET", "/v1/jobs", params={"limit": 200, "state": "SUCCEEDED"}).json()["items"]
        assert len(listed) == 200
        time.sleep(2)
        points[f"{args.finished} finished (store reloaded)"] = measure()
    labels = [v for v in NAMES.values() if any(v in pt for pt in points.values())]
    ref = points["idle"].get("reference: bare Ray actor", {}).get("rss_mb")
    rows = []
    for label in labels:
        row = [label]
        for pt in points.values():
            m = pt.get(label)
            row += [m["rss_mb"] if m else None, m["uss_mb"] if m else None]
        idle = points["idle"].get(label)
        row.append(idle["rss_mb"] / ref if idle and ref else None)
        rows.append(row)
    headers = ["process"]
    for name in points:
        headers += [f"RSS MB {name}", f"USS MB {name}"]
    headers.append("idle RSS / bare actor")
    print(f"\nMemory (MiB); {args.histories} histories filled in {fill_s:.1f}s through the store actor")
    print(harness.table(headers, rows))
    store_10k = points[f"{args.finished} finished (store reloaded)"].get("job store", {}).get("rss_mb")
    print(f"JobStore at {args.finished} finished jobs: {store_10k:.0f} MiB RSS (target < 500 MB)")
    harness.write_result("memory", {"args": vars(args), "points": points, "fill_s": fill_s,
                                    "job_store_rss_mb_at_finished": store_10k,
                                    "target_met": store_10k is not None and store_10k * MB < 500e6})


if __name__ == "__main__":
    main()
