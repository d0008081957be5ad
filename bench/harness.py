"""Shared pieces of the benchmarks: a throwaway Ray cluster + platform, machine facts, tables, JSON.

The cluster is started the way the tests start theirs (tests/fixtures/ray_cluster.py,
tests/fixtures/platform.py): `ray start --head` on free loopback ports (never 6379), token auth
off, a temp dir under /tmp, the Serve app bound to 127.0.0.1, a SQLite database in a temp dir.
Run every benchmark that starts a cluster under `flock /tmp/vtp-platform-tests.lock` (see
README.md): the development machines are shared.
"""

from __future__ import annotations

import json
import os
import platform as _platform
import shutil
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
for p in (str(REPO), str(REPO / "trainers")):
    if p not in sys.path:
        sys.path.insert(0, p)

from ray_app.ports import free_port  # noqa: E402,F401  (harness.free_port, for the scripts)

os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"host": socket.gethostname(), "cpus": os.cpu_count(), "cpu_model": model,
            "mem_mb": mem, "python": _platform.python_version(),
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]}


@contextmanager
def ray_cluster(num_cpus: int = 4) -> Iterator[Any]:
    """A throwaway cluster, started exactly as the tests start theirs."""
    from tests.fixtures.ray_cluster import throwaway_cluster

    with throwaway_cluster(num_cpus=num_cpus, prefix="vtp-bench-") as cluster:
        yield cluster


@contextmanager
def platform(num_cpus: int = 4, s3: Any = None, **extra: str) -> Iterator[tuple[Any, Any]]:
    """(deployment, platform): the Serve app on a fresh cluster and a fresh SQLite database.
    `extra` are VTP_* settings (e.g. VTP_CONTROLLER_ENABLED="false", VTP_CALLBACK_PORT=...)."""
    from tests.fixtures.platform import PlatformDeployment

    with ray_cluster(num_cpus) as cluster:
        dep = PlatformDeployment(cluster, s3)
        try:
            p = dep.deploy(f"sqlite:///{dep.data_dir / 'jobs.db'}", **extra)
            yield dep, p
        finally:
            try:
                dep.teardown_actors()
            except Exception:
                pass
            shutil.rmtree(dep.data_dir, ignore_errors=True)


def wait_http(url: str, timeout: float = 60.0, ok=(200, 401, 404, 405)) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code in ok:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout}s")
        time.sleep(0.2)


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def pct(values: list[float], q: float) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and abs(value) < 10:
            return f"{value:.3g}"
        return f"{value:,.{digits}f}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    data = {"benchmark": name, "finished_at": stamp, "machine": machine(), **data}
    path = RESULTS / f"{name}-{stamp}.json"
    text = json.dumps(data, indent=2, default=str)
    path.write_text(text)
    (RESULTS / f"{name}-latest.json").write_text(text)
    print(f"\nwrote {path.relative_to(REPO)}")
    return path
