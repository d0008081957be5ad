"""Free ports: the one helper the platform, its tests and the benchmarks take a port from."""

from __future__ import annotations

import socket

# Well-known service ports a platform or test server must never take, even when the kernel
# hands one out: Redis (and Ray's GCS default) own 6379.
RESERVED = frozenset({6379})


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now (bound and released: another process can still take it
    before the caller binds it), never one of RESERVED."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in RESERVED:
            return port
