"""Print the README's figures table from bench/results/*-latest.json.

    .venv/bin/python bench/summarize.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

CMD = {
    "callback_ingestion": "flock /tmp/vtp-platform-tests.lock .venv/bin/python bench/callback_ingestion.py",
    "launch_latency": "flock /tmp/vtp-platform-tests.lock .venv/bin/python bench/launch_latency.py",
    "transfers": ".venv/bin/python bench/transfers.py",
    "memory": "flock /tmp/vtp-platform-tests.lock .venv/bin/python bench/memory.py",
    "training_overhead": "flock /tmp/vtp-platform-tests.lock .venv/bin/python bench/training_overhead.py",
}


def load(name: str) -> dict | None:
    path = harness.RESULTS / f"{name}-latest.json"
    return json.loads(path.read_text()) if path.exists() else None


def f(x, d=2):
    return "-" if x is None else (f"{x:,.{d}f}" if isinstance(x, float) else str(x))


def main() -> None:
    rows = []
    if r := load("callback_ingestion"):
        med, v = r["medians_closed"], r["verdict"]
        c = f"`{CMD['callback_ingestion']}`"
        for t in ("serve", "gateway", "ceiling"):
            if t in med:
                rows.append([f"1. ingestion, closed loop 32 conn: {t}", "ratio ≥ 0.4 of ceiling" if t != "ceiling" else "(reference)",
                             f"{f(med[t]['ok_rps'], 0)}/s, p99 {f(med[t]['p99_ms'], 0)} ms",
                             f(med[t]["ok_rps"] / med["ceiling"]["ok_rps"]), c])
        for run in r["runs"]:
            if run.get("phase", "").endswith("/s") and run.get("target") in ("gateway", "serve", "ceiling"):
                rows.append([f"1. ingestion, open loop {run['phase']}: {run['target']}",
                             "2,000/s sustained, p99 ≤ 100 ms" if run["phase"] == "2000/s" else "p99 ≤ 100 ms",
                             f"{f(run['ok_rps'], 0)}/s, p99 {f(run['p99_ms'], 0)} ms, audit {'ok' if run['audit_ok'] else 'FAILED'}",
                             f"{f(run['ok_rps'] / run['offered'])} of offered", c])
        rows.append(["1. none lost / applied twice", "0 / 0",
                     "all runs ok" if v["all_runs_audited_ok"] and v["per_job_keys_eq_metric_rows"] else "FAILED", "-", c])
    if r := load("launch_latency"):
        s, c = r["summary"], f"`{CMD['launch_latency']}`"
        rows.append(["2. launch warm p50", "≤ 2 s", f"{f(s['warm_p50_s'])} s", f"{f(s['ratio_warm_p50_to_reference'])}× bare actor", c])
        rows.append(["2. launch warm p95", "≤ 4 s", f"{f(s['warm_p95_s'])} s", "-", c])
        b = s["cold_breakdown"]
        rows.append(["2. launch cold", "report", f"{f(s['cold_s'])} s (→QUEUED {f(b['to_queued_s'])}, →process "
                     f"{f(b['queued_to_process_s'])}, →started {f(b['process_to_started_s'])})", "-", c])
    if r := load("training_overhead"):
        s, c = r["summary"], f"`{CMD['training_overhead']}`"
        m, a = s["medians"], r["args"]
        what = f"{a['epochs']} epochs, {a['images']} images, imgsz {a['imgsz']}, batch {a['batch']}"
        rows.append(["3. training overhead: wall platform / direct", "≤ 0.9",
                     f"{f(m['platform']['wall_s'], 1)} s vs {f(m['direct']['wall_s'], 1)} s ({what}; median of "
                     f"{a['reps']}; per rep {', '.join(f(x) for x in s['ratio_per_rep'])})", f(s["ratio_platform"]), c])
        rows.append(["3. training overhead: fixed (before training)", "≤ 3 s",
                     f"{f(s['fixed_overhead_s'], 1)} s (created → `started` {f(s['launch_only_s'], 1)} s)", "-", c])
        if "slowed_change" in s:
            rows.append([f"3. training overhead: backend slowed {a['delay']:g} s/callback", "ratio changes ≤ 5 %",
                         f"{100 * s['slowed_change']:+.1f} % ({f(m['slowed']['wall_s'], 1)} s)",
                         f(s["ratio_slowed"]), c])
    if r := load("transfers"):
        c = f"`{CMD['transfers']}`"
        for label, ratio in r["ratios"].items():
            rows.append([f"4. {label}", "≥ 0.9 of boto3", f"{f(ratio)}× boto3", f(ratio), c])
        rows.append(["4. repeated dataset download", "0 bytes", f"{max(r['repeated_download_bytes'])} bytes", "-", c])
    if r := load("memory"):
        c = f"`{CMD['memory']}`"
        pts = r["points"]
        names = list(pts)
        ref = pts[names[0]].get("reference: bare Ray actor", {}).get("rss_mb")
        for proc in ("serve replica", "job store", "job controller", "callback gateway", "runner (no trainer)"):
            vals = [pts[n].get(proc, {}).get("rss_mb") for n in names]
            rows.append([f"5. RSS {proc}", "report" if proc != "job store" else "< 500 MB at 10k finished",
                         " / ".join(f(v, 0) for v in vals) + " MiB (" + " / ".join(names) + ")",
                         f"{f(vals[0] / ref if vals[0] and ref else None)}× bare actor", c])
    print(harness.table(["benchmark", "target", "measured", "ratio to in-run reference", "command"], rows))
    for name in ("callback_ingestion", "launch_latency", "training_overhead", "transfers", "memory"):
        if r := load(name):
            m = r["machine"]
            print(f"- {name}: {r['finished_at']} on {m['host']} ({m['cpus']} CPUs, {m['cpu_model']}, "
                  f"load average at the end {m.get('load_avg_at_end')})")


if __name__ == "__main__":
    main()
