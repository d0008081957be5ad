"""What a sweep adds over submitting its trials yourself, and what ASHA saves (sweeps issue).

The same N parameter combinations (a grid over learning_rate and config.x; default 4 x 2 = 8) of
the fake trainer (tests/trainers/fake: standard library only, `epoch_seconds` of sleep per epoch,
reports `objective`, a known function of learning_rate and config.x, every epoch), run two ways
with the same concurrency, alternating in the same run (direct, sweep, direct, sweep, ...):

  direct  N jobs through POST /v1/jobs, at most --concurrency live at once: the next is submitted
          the moment the client sees one end (polling every --poll-s); wall = first submit -> the
          client sees the last one final
  sweep   POST /v1/sweeps, search "grid" over the same combinations, max_concurrent =
          --concurrency, no scheduler (every trial runs its epochs); wall = create -> the client
          sees the sweep SUCCEEDED (its Tune driver, a detached actor that imports Ray Tune, is
          started by the controller; every trial a job; MLflow parent run)

Ratio = median sweep wall / median direct wall (target <= 1.1). The server's own timestamps give
the same two walls without the client's polling (direct: first job created_at -> last finished_at;
sweep: created_at -> finished_at) and split the sweep's: create -> its first trial's job,
the trials' span, last trial's job finished -> sweep SUCCEEDED.

Then ASHA: the same grid with scheduler {"type": "asha", "grace_period": 1, "reduction_factor": 3};
trial-epochs run = the sum of the trials' epochs_run (GET /v1/sweeps/{id}), full = N x epochs;
fraction = run / full, and its wall beside the grid's. Which trials ASHA stops depends on the
order results arrive (asynchronous halving): the grid's order, lowest learning rate first, is kept.

One unrecorded warm-up of each kind first (the cold runner packages, the first Tune import).
The platform as the other benchmarks start it (harness.platform: a throwaway `ray start --head`,
Serve on 127.0.0.1, SQLite, the callback gateway as under `vtp up`) with a SeaweedFS for the
sweeps' Tune experiments.

    flock /tmp/vtp-suite.lock .venv/bin/python bench/sweep_overhead.py [--reps 3 --epochs 5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import datetime
from itertools import product
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

FINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
BUCKET = "vtp-bench"
LRS = [0.001, 0.01, 0.1, 1.0]
XS = [0, 1]


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def base_job(a: argparse.Namespace, epochs: int | None = None) -> dict[str, Any]:
    return {"framework": "fake", "task_type": "image_classification", "model_name": "fake-1",
            "dataset_id": "ds-test", "epochs": epochs or a.epochs, "num_cpus": a.job_cpus,
            "config": {"epoch_seconds": a.epoch_seconds}}


def combos(n: int) -> list[dict[str, Any]]:
    """The grid's combinations in its own order (the first path varies slowest), cut to n."""
    grid = [{"learning_rate": lr, "config.x": x} for lr, x in product(LRS, XS)]
    if not 1 <= n <= len(grid):
        raise SystemExit(f"--trials: 1..{len(grid)}")
    return grid[:n]


def space_of(params: list[dict[str, Any]]) -> dict[str, Any]:
    lrs = sorted({p["learning_rate"] for p in params})
    xs = sorted({p["config.x"] for p in params})
    if len(lrs) * len(xs) != len(params):
        raise SystemExit("--trials must make a full grid (a multiple of 2, or 1)")
    return {"learning_rate": {"choice": lrs}, "config.x": {"choice": xs}}


def refill_gaps(spans: list[tuple[float, float]], concurrency: int) -> list[float]:
    """For every job after the first `concurrency` (by creation): its created_at minus the latest
    finished_at before it, i.e. how long a freed slot stayed empty (the client's or the sweep's
    reaction: polling, Tune's next trial, its actor, the job's creation)."""
    spans = sorted(spans)
    out = []
    for created, _ in spans[concurrency:]:
        before = [f for _, f in spans if f <= created]
        if before:
            out.append(created - max(before))
    return out


def ok(resp, status: int = 200) -> dict[str, Any]:
    if resp.status_code != status:
        raise RuntimeError(f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}")
    return resp.json()


def run_direct(p, a: argparse.Namespace, params: list[dict[str, Any]], epochs: int | None = None) -> dict[str, Any]:
    """The jobs through POST /v1/jobs, at most a.concurrency live; the next goes in when one ends."""
    todo = list(params)
    live: dict[str, dict[str, Any]] = {}
    ended: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + a.timeout_s
    t0 = time.monotonic()

    def submit(combo: dict[str, Any]) -> None:
        body = base_job(a, epochs)
        body["learning_rate"] = combo["learning_rate"]
        body["config"] = {**body["config"], "x": combo["config.x"]}
        job = ok(p.api("POST", "/v1/jobs", json=body), 201)
        live[job["id"]] = job

    while todo and len(live) < a.concurrency:
        submit(todo.pop(0))
    while live:
        if time.monotonic() > deadline:
            raise RuntimeError(f"direct: jobs still live after {a.timeout_s}s: {list(live)}")
        time.sleep(a.poll_s)
        for job_id in list(live):
            job = ok(p.api("GET", f"/v1/jobs/{job_id}"))
            if job["state"] in FINAL:
                del live[job_id]
                ended[job_id] = job
                if todo:
                    submit(todo.pop(0))
    wall = time.monotonic() - t0
    jobs = list(ended.values())
    states = sorted({j["state"] for j in jobs})
    if states != ["SUCCEEDED"]:
        raise RuntimeError(f"direct: jobs ended {states}: {[(j['id'], j['state'], j['error']) for j in jobs]}")
    created = [_ts(j["created_at"]) for j in jobs]
    finished = [_ts(j["finished_at"]) for j in jobs]
    spans = list(zip(created, finished, strict=True))
    return {"wall_s": wall, "server_wall_s": max(finished) - min(created), "jobs": len(jobs),
            "job_wall_s_median": harness.median([f - c for c, f in spans]),
            "refill_gap_s_median": harness.median(refill_gaps(spans, a.concurrency))}


def run_sweep(p, a: argparse.Namespace, params: list[dict[str, Any]], scheduler: dict[str, Any] | None = None,
              epochs: int | None = None, name: str = "bench") -> dict[str, Any]:
    body = {"name": name, "job": base_job(a, epochs), "metric": "objective", "mode": "max",
            "space": space_of(params), "search": "grid", "max_concurrent": a.concurrency,
            "scheduler": scheduler}
    t0 = time.monotonic()
    sweep = ok(p.api("POST", "/v1/sweeps", json=body), 201)
    deadline = time.monotonic() + a.timeout_s
    while True:
        time.sleep(a.poll_s)
        sweep = ok(p.api("GET", f"/v1/sweeps/{sweep['id']}"))
        if sweep["state"] in FINAL:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"sweep {sweep['id']} still {sweep['state']} after {a.timeout_s}s")
    wall = time.monotonic() - t0
    if sweep["state"] != "SUCCEEDED":
        raise RuntimeError(f"sweep {sweep['id']} ended {sweep['state']}: {sweep['error']}")
    trials = sweep["trials"]
    job_epochs = body["job"]["epochs"]
    created = _ts(sweep["created_at"])
    first_trial = min(_ts(t["created_at"]) for t in trials)
    last_final = max(_ts(t["finished_at"]) for t in trials)
    epochs_run = sum(t["epochs_run"] for t in trials)
    spans = [(_ts(t["created_at"]), _ts(t["finished_at"])) for t in trials]
    return {"wall_s": wall, "server_wall_s": _ts(sweep["finished_at"]) - created, "sweep_id": sweep["id"],
            "trials": len(trials), "counts": sweep["counts"],
            "create_to_first_trial_s": first_trial - created,
            "to_running_s": (_ts(sweep["started_at"]) - created) if sweep.get("started_at") else None,
            "trials_span_s": last_final - first_trial, "last_trial_to_final_s": _ts(sweep["finished_at"]) - last_final,
            "job_wall_s_median": harness.median([f - c for c, f in spans]),
            "refill_gap_s_median": harness.median(refill_gaps(spans, a.concurrency)),
            "trial_epochs_run": epochs_run, "trial_epochs_full": len(trials) * job_epochs,
            "fraction_of_full": epochs_run / (len(trials) * job_epochs),
            "best_metric": sweep["best_metric"], "best_params": (sweep.get("best") or {}).get("params"),
            "per_trial": [{"trial": t["trial"], "params": t["params"], "status": t["status"],
                           "epochs_run": t["epochs_run"], "created_at": t["created_at"],
                           "finished_at": t["finished_at"]} for t in trials]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8, help="grid combinations (learning_rate x config.x), at most 8")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--epoch-seconds", type=float, default=1.0)
    ap.add_argument("--concurrency", type=int, default=2, help="jobs live at once (the sweep's max_concurrent)")
    ap.add_argument("--job-cpus", type=float, default=0.5, help="num_cpus of every job")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions of direct and sweep")
    ap.add_argument("--asha-reps", type=int, default=1)
    ap.add_argument("--poll-s", type=float, default=0.25, help="the client's polling interval, both kinds")
    ap.add_argument("--timeout-s", type=float, default=600)
    ap.add_argument("--no-warmup", action="store_true")
    a = ap.parse_args()
    params = combos(a.trials)

    from ray_app.storage import SeaweedS3Server
    from tests.fixtures.s3 import S3TestServer

    tmp = Path(tempfile.mkdtemp(prefix="vtp-bench-sweep-"))
    s3 = SeaweedS3Server(tmp / "s3", buckets=[BUCKET])
    s3.start(timeout=60)
    runs: dict[str, list[dict[str, Any]]] = {"direct": [], "sweep": [], "asha": []}
    warmup: dict[str, Any] = {}
    try:
        t0 = time.monotonic()
        with harness.platform(num_cpus=4, s3=S3TestServer(s3, BUCKET),
                              VTP_CALLBACK_PORT=str(harness.free_port())) as (_dep, p):
            print(f"platform up in {time.monotonic() - t0:.1f}s; {len(params)} trials x {a.epochs} epochs x "
                  f"{a.epoch_seconds:g}s, concurrency {a.concurrency}")
            if not a.no_warmup:
                warmup["direct"] = run_direct(p, a, params[:a.concurrency], epochs=1)
                warmup["sweep"] = run_sweep(p, a, params[:2] if len(params) > 1 else params, epochs=1,
                                            name="bench-warmup")
                print(f"  warm-up: direct {warmup['direct']['wall_s']:.1f}s, sweep {warmup['sweep']['wall_s']:.1f}s")
            for rep in range(a.reps):
                for kind in ("direct", "sweep") if rep % 2 == 0 else ("sweep", "direct"):
                    r = run_direct(p, a, params) if kind == "direct" else run_sweep(p, a, params)
                    runs[kind].append(r)
                    extra = f"; job {r['job_wall_s_median']:.1f}s, slot refill {r['refill_gap_s_median'] or 0:.2f}s"
                    if kind == "sweep":
                        extra += (f"; create -> first trial {r['create_to_first_trial_s']:.1f}s, trials "
                                  f"{r['trials_span_s']:.1f}s, last trial -> SUCCEEDED {r['last_trial_to_final_s']:.1f}s")
                    print(f"  rep {rep} {kind:6s} {r['wall_s']:6.1f}s (server {r['server_wall_s']:.1f}s{extra})")
            for rep in range(a.asha_reps):
                r = run_sweep(p, a, params, scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 3},
                              name="bench-asha")
                runs["asha"].append(r)
                print(f"  asha {rep}: {r['wall_s']:.1f}s, trial-epochs {r['trial_epochs_run']}/{r['trial_epochs_full']}"
                      f" = {r['fraction_of_full']:.2f}, {r['counts']}, best {r['best_params']}")
    finally:
        s3.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: {q: harness.median([r[q] for r in v]) for q in ("wall_s", "server_wall_s")} for k, v in runs.items() if v}
    ratio = {q: med["sweep"][q] / med["direct"][q] for q in ("wall_s", "server_wall_s")}
    per_rep = [s["wall_s"] / d["wall_s"] for d, s in zip(runs["direct"], runs["sweep"], strict=False)]
    sweep_split = {q: harness.median([r[q] for r in runs["sweep"]])
                   for q in ("create_to_first_trial_s", "trials_span_s", "last_trial_to_final_s")}
    asha = runs["asha"]
    summary = {
        "direct_wall_s_median": med["direct"]["wall_s"], "sweep_wall_s_median": med["sweep"]["wall_s"],
        "ratio_sweep_over_direct": ratio["wall_s"], "ratio_per_rep": per_rep,
        "ratio_server_timestamps": ratio["server_wall_s"], "target_ratio": 1.1,
        "met": ratio["wall_s"] <= 1.1, "sweep_split_median_s": sweep_split,
        **{f"{k}_{q}": harness.median([r[q] for r in runs[k]])
           for k in ("direct", "sweep") for q in ("job_wall_s_median", "refill_gap_s_median")},
        "asha_wall_s_median": med["asha"]["wall_s"] if asha else None,
        "asha_trial_epochs_run": [r["trial_epochs_run"] for r in asha],
        "asha_trial_epochs_full": asha[0]["trial_epochs_full"] if asha else None,
        "asha_fraction_of_full": harness.median([r["fraction_of_full"] for r in asha]),
        "asha_wall_over_grid_sweep": (med["asha"]["wall_s"] / med["sweep"]["wall_s"]) if asha else None,
    }
    rows = [[k, len(runs[k]), med[k]["wall_s"], med[k]["server_wall_s"],
             "1.00 (reference)" if k == "direct" else f"{med[k]['wall_s'] / med['direct']['wall_s']:.3f}",
             ", ".join(f"{r['wall_s']:.1f}" for r in runs[k])] for k in runs if runs[k]]
    print(f"\n{len(params)} trials x {a.epochs} epochs x {a.epoch_seconds:g}s, concurrency {a.concurrency}")
    print(harness.table(["kind", "runs", "wall s (median)", "server wall s", "ratio to direct", "runs s"], rows))
    print(f"sweep / direct: {ratio['wall_s']:.3f} (target <= 1.1: {'met' if summary['met'] else 'NOT met'}; "
          f"per rep {', '.join(f'{x:.3f}' for x in per_rep)}; server timestamps {ratio['server_wall_s']:.3f})")
    print(f"sweep split (median): create -> first trial {sweep_split['create_to_first_trial_s']:.2f}s, trials "
          f"{sweep_split['trials_span_s']:.2f}s, last trial -> SUCCEEDED {sweep_split['last_trial_to_final_s']:.2f}s")
    print(f"per job (median): wall direct {summary['direct_job_wall_s_median']:.2f}s / trial {summary['sweep_job_wall_s_median']:.2f}s;"
          f" a freed slot's refill direct {summary['direct_refill_gap_s_median']:.2f}s / sweep "
          f"{summary['sweep_refill_gap_s_median']:.2f}s")
    if asha:
        print(f"ASHA: trial-epochs {summary['asha_trial_epochs_run']} of {summary['asha_trial_epochs_full']} "
              f"(fraction {summary['asha_fraction_of_full']:.3f}; saved {1 - summary['asha_fraction_of_full']:.1%}), "
              f"wall {summary['asha_wall_s_median']:.1f}s = {summary['asha_wall_over_grid_sweep']:.2f}x the full grid sweep")
    import json

    print(json.dumps(summary, indent=2))
    harness.write_result("sweep_overhead", {"args": vars(a), "summary": summary, "warmup": warmup, "runs": runs})


if __name__ == "__main__":
    main()
