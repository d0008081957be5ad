"""Find and stop the processes of one Ray cluster on this machine, and only those.

`ray stop` stops every Ray cluster on the machine; the single-machine platform and the test
fixtures must stop theirs alone. A cluster's processes are those naming its temp dir on their
command line (GCS, raylet, dashboard, monitors), and their descendants (workers, trainers).
"""

from __future__ import annotations

import os
import signal

import psutil


def cluster_processes(temp_dir: str, gcs_port: int | None = None) -> list[psutil.Process]:
    """With `gcs_port`, also the Ray client server, which `ray start` leaves behind with only the
    cluster's address on its command line (no temp dir) and init as its parent."""
    roots = []
    address_suffix = f":{gcs_port}" if gcs_port else None
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if any(temp_dir in part for part in cmdline) or (
                address_suffix and "ray.util.client.server" in cmdline
                and any(part.startswith("--address=") and part.endswith(address_suffix) for part in cmdline)
            ):
                roots.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found = {p.pid: p for p in roots}
    for proc in roots:
        try:
            for child in proc.children(recursive=True):
                found[child.pid] = child
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def stop(procs: list[psutil.Process], timeout: float = 20.0) -> int:
    """SIGTERM (whole process groups for group leaders, e.g. trainers), then SIGKILL."""
    own_group = os.getpgid(0)
    for proc in procs:
        try:
            pgid = os.getpgid(proc.pid)
            if pgid == proc.pid and pgid != own_group:
                os.killpg(pgid, signal.SIGTERM)
            else:
                proc.terminate()
        except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
            continue
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return len(procs)
