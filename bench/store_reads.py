"""Benchmark 6 — reads outside the writer (issue 14, point 5): memory and list latency at 100,000
finished jobs, and heartbeat latency while another client pages through a 100,000-line log.

No Ray: the store's code in processes of its own, on a SQLite file (WAL), as the actor and an
API replica run it.

  memory        RSS of a fresh process that imports Ray and the store (as the JobStore actor's
                worker does) and builds a JobStoreCore on the database (its reload), against the
                old reload measured the same way: every job row, every job's attempts and both
                max-seq maps held in memory (what JobStoreCore.reload held before). Target ≤ 300 MB.
  list          GET /v1/jobs: the reader's list_jobs (filters and cursor in SQL, as the API's
                route calls it), and the whole route through the API app in process (ASGI:
                auth, the reader in a thread, JSON; no Serve proxy), against the old in-memory
                list over all rows (its code). First pages, filtered pages and pages deep in the
                cursor; p50/p99 over --reps calls each. Target p99 ≤ 100 ms.
  heartbeats    one RUNNING job with a 100,000-line log; heartbeats through the store (one every
                10 ms), p99 alone, while another PROCESS pages through the log with the reader
                (as the API does now), and, the reference, while a thread pages through it with
                the store's own `logs` under the store's one-call-at-a-time rule (one worker
                thread taking calls in order: the actor's max_concurrency=1 queue, where the API
                read before). Heartbeats go through that queue in every mode.

    .venv/bin/python bench/store_reads.py
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness  # noqa: E402

SPEC = {"framework": "fake", "task_type": "image_classification", "model_name": "fake-net",
        "dataset_id": "ds-bench", "project_id": "bench", "epochs": 10, "batch_size": 16,
        "learning_rate": 0.01, "image_size": 64, "num_gpus": 0, "num_cpus": 1, "memory_mb": None,
        "config": {"behaviour": "succeed"}, "advanced_config": {}, "max_attempts": 3, "resume_from": None}
STATES = ["SUCCEEDED"] * 16 + ["FAILED"] * 3 + ["CANCELLED"]

# measured in a fresh process: the store's reload, new or old; prints RSS MiB before and after
_MEMORY_PROBE = r"""
import gc, json, sys, time, psutil
import ray  # the JobStore actor's worker has Ray imported
from ray_app.store import attempts, db
from ray_app.store.core import JobStoreCore
proc = psutil.Process()
before = proc.memory_info().rss
t0 = time.perf_counter()
if sys.argv[2] == "new":
    held = JobStoreCore(sys.argv[1])
    count = len(held._jobs)
else:  # the old reload: every job, its attempts, and max seqs of every job's events and logs
    from sqlalchemy import select
    engine = db.make_engine(sys.argv[1])
    with engine.connect() as conn:
        held = ({r["id"]: r for r in db.rows(conn.execute(select(db.jobs)))}, db.max_seq(conn, db.events),
                db.max_seq(conn, db.logs), attempts.load(conn))
    count = len(held[0])
load_s = time.perf_counter() - t0
gc.collect()
print(json.dumps({"rss_before_mb": before / 2**20, "rss_mb": proc.memory_info().rss / 2**20,
                  "held_jobs": count, "load_s": load_s}))
"""


def build_finished(url: str, path: str, n: int) -> dict:
    """One finished job written through the store (its history: events, heartbeats, logs,
    done), then copied n-1 times by SQL with varied state, project and framework."""
    from ray_app.store.core import JobStoreCore

    t0 = time.monotonic()
    core = JobStoreCore(url)
    job_id = core.create_job(dict(SPEC))["id"]
    core.transition(job_id, "QUEUED", "bench", attempt=1)
    core.event(job_id, 1, {"event_type": "started"})
    for e in range(1, 11):
        core.heartbeat(job_id, 1, {"event_id": f"h{e}", "epoch": e, "total_epochs": 10,
                                   "metrics": {"loss": 1 / e, "mAP50": e / 11}})
    core.append_logs(job_id, 1, [("stdout", f"[TRACE:x] [INFO] epoch {i} loss=0.{i:03d}") for i in range(5)])
    core.done(job_id, 1, {"status": "succeeded", "final_metrics": {"mAP50": 0.9},
                          "artifacts": {"best": f"s3://b/checkpoints/job-{job_id}/best.pt"}})
    core.engine.dispose()
    con = sqlite3.connect(path, timeout=60)

    def columns(table: str, skip: tuple[str, ...]) -> list[str]:
        return [r[1] for r in con.execute(f"pragma table_info({table})") if r[1] not in skip]

    jcols = columns("jobs", ("num", "id", "trace_id", "state", "project_id", "framework"))
    rng = random.Random(0)
    rows = [(uuid.uuid4().hex[:16], str(uuid.uuid4()), rng.choice(STATES), f"project-{i % 20}",
             ("fake", "other")[i % 2]) for i in range(n - 1)]
    with con:
        con.executemany(f"insert into jobs (id, trace_id, state, project_id, framework, {', '.join(jcols)}) "
                        f"select ?, ?, ?, ?, ?, {', '.join(jcols)} from jobs where id = ?",
                        [(*r, job_id) for r in rows])
        for table in ("job_events", "job_logs", "job_attempts"):
            cols = columns(table, ("job_id",))
            con.executemany(f"insert into {table} (job_id, {', '.join(cols)}) select ?, {', '.join(cols)} "
                            f"from {table} where job_id = ?", [(r[0], job_id) for r in rows])
    con.close()
    return {"jobs": n, "build_s": time.monotonic() - t0}


def memory(url: str) -> dict:
    out = {}
    for mode in ("new", "old"):
        proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, url, mode], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1], check=True)
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def old_list(rows: list[dict], history: dict, state=None, project_id=None, framework=None, cursor=None, limit=50):
    """The store's list before (its code): a filter and a sort over every job in memory."""
    from ray_app.store import reads

    selected = [j for j in rows
                if (state is None or j["state"] == state) and (project_id is None or j["project_id"] == project_id)
                and (framework is None or j["framework"] == framework) and (cursor is None or j["num"] < cursor)]
    selected.sort(key=lambda j: j["num"], reverse=True)
    page = selected[:limit]
    next_cursor = page[-1]["num"] if len(selected) > limit else None
    return [reads.with_history(j, history.get(j["id"], [])) for j in page], next_cursor


def list_latency(url: str, n: int, reps: int) -> dict:
    from sqlalchemy import select

    from ray_app.store import attempts, db
    from ray_app.store.reads import JobReader

    reader = JobReader(url)
    with reader.engine.connect() as conn:
        rows = db.rows(conn.execute(select(db.jobs)))
        history = attempts.load(conn)
    top = max(r["num"] for r in rows)
    rng = random.Random(1)
    cases = {
        "first page (50)": lambda: {},
        "first page (500)": lambda: {"limit": 500},
        "state=FAILED": lambda: {"state": "FAILED"},
        "project_id + framework": lambda: {"project_id": "project-7", "framework": "other"},
        "deep cursor": lambda: {"cursor": rng.randint(1000, top)},
        "state=CANCELLED, deep cursor": lambda: {"state": "CANCELLED", "cursor": rng.randint(1000, top)},
    }
    app_client = _api_client(url)
    out = {}
    for name, make in cases.items():
        times: dict[str, list[float]] = {"reader": [], "api": [], "old in-memory": []}
        for _ in range(reps):
            kwargs = make()
            for label, call in (("reader", lambda kwargs=kwargs: reader.list_jobs(**kwargs)),
                                ("api", lambda kwargs=kwargs: app_client(kwargs)),
                                ("old in-memory", lambda kwargs=kwargs: old_list(rows, history, **kwargs))):
                t0 = time.perf_counter()
                call()
                times[label].append(time.perf_counter() - t0)
        new_page = reader.list_jobs(**{k: v for k, v in kwargs.items()})
        assert [j["id"] for j in new_page[0]] == [j["id"] for j in old_list(rows, history, **kwargs)[0]]
        out[name] = {label: {"p50_ms": 1000 * harness.pct(t, 50), "p99_ms": 1000 * harness.pct(t, 99)}
                     for label, t in times.items()}
    reader.dispose()
    return out


def _api_client(url: str):
    """GET /v1/jobs through the API app in process (the route, auth, the reader, JSON)."""
    import httpx

    from ray_app.api.app import create_app
    from ray_app.config import Settings
    from ray_app.store.client import StoreClient

    settings = Settings(database_url=url, api_tokens="bench-token", controller_enabled=False)
    app = create_app(settings, store=StoreClient(settings, handle=object()))
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")

    def get(kwargs: dict) -> None:
        params = {k: str(v) for k, v in kwargs.items()}
        resp = loop.run_until_complete(client.get("/v1/jobs", params=params,
                                                  headers={"Authorization": "Bearer bench-token"}))
        assert resp.status_code == 200, resp.text

    return get


# ---------------------------------------------------------------- heartbeats beside a long read


def _pager(url: str, job_id: str, limit: int, ready, stop, pages) -> None:
    from ray_app.store.reads import JobReader

    reader = JobReader(url)
    reader.logs(job_id, 0, 1)
    ready.set()
    while not stop.is_set():
        after = 0
        while not stop.is_set():
            page = reader.logs(job_id, after, limit)
            if not page:
                break
            after = page[-1]["seq"]
            pages.value += 1


def heartbeat_latency(url: str, lines: int, beats: int, reps: int, page: int) -> dict:
    from ray_app.store.core import JobStoreCore

    core = JobStoreCore(url)
    job_id = core.create_job(dict(SPEC))["id"]
    core.transition(job_id, "QUEUED", "bench", attempt=1)
    core.event(job_id, 1, {"event_type": "started"})
    for start in range(0, lines, 10_000):
        core.append_logs(job_id, 1, [("stdout", f"[TRACE:x] [INFO] line {i} " + "x" * 60)
                                     for i in range(start, min(lines, start + 10_000))])
    # the actor: one call at a time, in the order they come (a FIFO queue, one thread)
    actor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    epoch = [0]

    def beat_run() -> list[float]:
        out = []
        for _ in range(beats):
            epoch[0] += 1
            t0 = time.perf_counter()
            actor.submit(core.heartbeat, job_id, 1,
                         {"event_id": f"hb-{epoch[0]}", "epoch": epoch[0], "metrics": {"loss": 0.5}}).result()
            out.append(time.perf_counter() - t0)
            time.sleep(0.01)
        return out

    ctx = multiprocessing.get_context("spawn")
    results: dict[str, list[dict]] = {"alone": [], "reader process pages": [], "old: store pages (serialized)": []}
    for _ in range(reps):
        results["alone"].append(_summary(beat_run(), None))
        ready, stop, pages = ctx.Event(), ctx.Event(), ctx.Value("i", 0)
        proc = ctx.Process(target=_pager, args=(url, job_id, page, ready, stop, pages), daemon=True)
        proc.start()
        ready.wait(60)
        time.sleep(0.3)
        pages.value = 0
        lat = beat_run()
        stop.set()
        proc.join(30)
        results["reader process pages"].append(_summary(lat, pages.value))
        stop_t = threading.Event()
        count = [0]

        def store_pages(stop_t: threading.Event = stop_t, count: list[int] = count) -> None:
            while not stop_t.is_set():
                after = 0
                while not stop_t.is_set():
                    got = actor.submit(core.logs, job_id, after, page).result()
                    if not got:
                        break
                    after = got[-1]["seq"]
                    count[0] += 1

        thread = threading.Thread(target=store_pages, daemon=True)
        thread.start()
        time.sleep(0.3)
        count[0] = 0
        lat = beat_run()
        stop_t.set()
        thread.join(30)
        results["old: store pages (serialized)"].append(_summary(lat, count[0]))
    actor.shutdown()
    core.engine.dispose()
    return {mode: {"p50_ms": harness.median([r["p50_ms"] for r in runs]),
                   "p99_ms": harness.median([r["p99_ms"] for r in runs]),
                   "max_ms": harness.median([r["max_ms"] for r in runs]),
                   "pages_per_s": harness.median([r["pages_per_s"] for r in runs]) if runs[0]["pages_per_s"] is not None else None,
                   "runs": runs}
            for mode, runs in results.items()}


def _summary(latencies: list[float], pages: int | None) -> dict:
    wall = sum(latencies) + 0.01 * len(latencies)
    return {"p50_ms": 1000 * harness.pct(latencies, 50), "p99_ms": 1000 * harness.pct(latencies, 99),
            "max_ms": 1000 * max(latencies), "pages_per_s": pages / wall if pages is not None else None}


def heartbeats(tmp: str, args: argparse.Namespace) -> dict:
    out = {}
    for page in [int(p) for p in args.pages.split(",")]:
        out[f"page {page}"] = heartbeat_latency(f"sqlite:///{tmp}/heartbeats-{page}.db", args.log_lines,
                                                args.beats, args.reps, page)
    print(harness.table(["heartbeats (one every 10 ms)", "log page", "p50 ms", "p99 ms", "max ms", "log pages/s"],
                        [[mode, page, v["p50_ms"], v["p99_ms"], v["max_ms"], v["pages_per_s"]]
                         for page, modes in out.items() for mode, v in modes.items()]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--list-reps", type=int, default=200)
    ap.add_argument("--log-lines", type=int, default=100_000)
    ap.add_argument("--beats", type=int, default=300, help="heartbeats per run (one every 10 ms)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pages", default="1000,5000", help="log page sizes (the API's default limit, and its most)")
    ap.add_argument("--only-heartbeats", action="store_true", help="skip the 100k-jobs part")
    args = ap.parse_args()
    if args.only_heartbeats:
        with tempfile.TemporaryDirectory(prefix="vtp-bench-reads-") as tmp:
            beats = heartbeats(tmp, args)
        harness.write_result("store_reads_heartbeats", {"args": vars(args), "heartbeats": beats})
        return
    with tempfile.TemporaryDirectory(prefix="vtp-bench-reads-") as tmp:
        path = f"{tmp}/jobs.db"
        url = f"sqlite:///{path}"
        built = build_finished(url, path, args.jobs)
        print(f"{args.jobs:,} finished jobs written in {built['build_s']:.1f}s")
        mem = memory(url)
        print(harness.table(["reload", "RSS MiB after", "RSS MiB before (imports)", "jobs held", "load s"],
                            [[mode, m["rss_mb"], m["rss_before_mb"], m["held_jobs"], m["load_s"]]
                             for mode, m in mem.items()]))
        lists = list_latency(url, args.jobs, args.list_reps)
        rows = [[case, *(v[label][q] for label in ("reader", "api", "old in-memory") for q in ("p50_ms", "p99_ms"))]
                for case, v in lists.items()]
        print(harness.table(["GET /v1/jobs", "reader p50", "reader p99", "API p50", "API p99",
                             "old p50", "old p99"], rows))
        beats = heartbeats(tmp, args)
    store_mb = mem["new"]["rss_mb"]
    # the target is the API's default page (50 jobs); the 500-job page is reported beside it
    list_p99 = max(v["api"]["p99_ms"] for case, v in lists.items() if "(500)" not in case)
    print(f"JobStore at {args.jobs:,} finished jobs: {store_mb:.0f} MiB RSS (old reload {mem['old']['rss_mb']:.0f}; "
          f"target ≤ 300 MB); GET /v1/jobs (pages of 50) worst p99 {list_p99:.1f} ms (target ≤ 100 ms)")
    harness.write_result("store_reads", {
        "args": vars(args), "build": built, "memory": mem, "list": lists, "heartbeats": beats,
        "targets": {"store_rss_mb": store_mb, "store_rss_met": store_mb * 2**20 <= 300e6,
                    "list_p99_ms": list_p99, "list_p99_met": list_p99 <= 100}})


if __name__ == "__main__":
    main()
