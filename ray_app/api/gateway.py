"""The callback gateway: trainer callbacks served by plain uvicorn, batched into the JobStore.

Ray Serve's HTTP proxy adds a hop and a per-request cost that caps a trivial handler at a few
hundred requests/s on a small machine (DESIGN §9); trainer callbacks are the platform's only
high-rate traffic. With `VTP_CALLBACK_PORT` set, the Serve replica starts this detached actor,
which serves ONLY the callback routes (the same router, dependencies, body limit and error mapping
as the Serve app: `create_app`, with every other route left out) with uvicorn on
`http_host:callback_port`, and sends heartbeats and events to the store in micro-batches
(`BatchingStoreClient`). `Settings.callback_base_url` then points trainers at it.

Heartbeats with a known token skip FastAPI (`HeartbeatFastPath`: ~0.2 instead of ~0.5 ms of CPU
each, py-spy, bench/README.md), and `callback_processes` actors each bind the port with
SO_REUSEPORT: the kernel spreads connections over them, each has its own event loop and batcher,
so as many batches are in flight to the store. One process sustained 2,000 heartbeats/s at ~0.45
CPU; two leave headroom. Per-job order holds: a trainer sends its next callback only after the
previous one was answered, i.e. committed.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import socket
import threading
import time
from typing import Any

import ray
from fastapi import FastAPI

from ray_app.config import MAX_CALLBACK_PROCESSES, NAMESPACE, Settings

log = logging.getLogger("ray_app.api.gateway")

GATEWAY_ACTOR = "vtp-callback-gateway"
_NO_TELEMETRY: dict[str, bool] = {"tracing": False, "metrics": False, "logs": False}


def create_callback_app(settings: Settings, store: Any = None) -> FastAPI:
    """The platform app (`create_app`: body limit, error mapping) reduced to the callback routes."""
    from ray_app.api.app import create_app
    from ray_app.api.batching import BatchingStoreClient
    from ray_app.api.routes import callbacks

    store = store or BatchingStoreClient(settings)
    # FastAPI's native telemetry looks up the global OpenTelemetry providers on every request
    # (~25 us CPU, environment lookups included) only to find none set: the platform sets none
    app = create_app(settings, store=store, telemetry=_NO_TELEMETRY)
    paths = {getattr(route, "path", None) for route in callbacks.router.routes}
    app.router.routes = [  # FastAPI >= 0.16x keeps an included router as one entry
        r for r in app.router.routes
        if getattr(r, "original_router", None) is callbacks.router or getattr(r, "path", None) in paths
    ]
    app.openapi_schema = None
    return app


def _config_key(settings: Settings, port: int) -> str:
    """Tells a gateway started with other settings (a redeploy) from the current one."""
    return hashlib.sha256(json.dumps([sorted(settings.to_env().items()), port]).encode()).hexdigest()[:16]


def gateway_actor_name(index: int) -> str:
    return GATEWAY_ACTOR if index == 0 else f"{GATEWAY_ACTOR}-{index}"


def gateway_infos() -> list[dict[str, Any]]:
    """`info()` of every running gateway process (tests, benchmarks, `vtp status`)."""
    infos: list[dict[str, Any]] = []
    for i in range(MAX_CALLBACK_PROCESSES):
        try:
            actor = ray.get_actor(gateway_actor_name(i), namespace=NAMESPACE)
        except ValueError:
            break
        infos.append(ray.get(actor.info.remote(), timeout=30))  # type: ignore[arg-type]  # actor methods are untyped
    return infos


def _reuseport_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # Linux: same user only
    sock.bind((host, port))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


@ray.remote(num_cpus=0, max_restarts=-1)
class CallbackGateway:
    """uvicorn on its own thread and event loop (uvloop and httptools where installed)."""

    def __init__(self, settings: Settings, port: int):
        import uvicorn

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.key = _config_key(settings, port)
        from ray_app.api.fast_heartbeat import HeartbeatFastPath

        self.app = create_callback_app(settings)
        self.fast_path = HeartbeatFastPath(self.app, self.app.state.ctx)
        self.url = f"http://{settings.http_host}:{port}"
        config = uvicorn.Config(
            self.fast_path, host=settings.http_host, port=port, loop="auto", http="auto",
            access_log=False, log_level="warning", lifespan="off", timeout_keep_alive=75,
            proxy_headers=False,  # trainers call it directly: no proxy's headers to trust
            backlog=4096,
        )
        self.server = uvicorn.Server(config)
        try:
            self.sock = _reuseport_socket(settings.http_host, port)
        except OSError as exc:
            raise RuntimeError(f"callback gateway could not bind {settings.http_host}:{port}: {exc}") from exc
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True, name="callback-gateway")
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"callback gateway could not start on {settings.http_host}:{port}")
            if time.monotonic() > deadline:
                raise RuntimeError("callback gateway did not start within 30 s")
            time.sleep(0.02)
        log.info("callback gateway serving on %s", self.url)

    def info(self) -> dict[str, Any]:
        store = self.app.state.ctx.store
        return {"url": self.url, "key": self.key, "pid": os.getpid(),
                "alive": self.thread.is_alive(), "batches": getattr(store, "batches", None),
                "items": getattr(store, "items", None), "fast_path": self.fast_path.fast,
                "handed_over": self.fast_path.handed_over}


def ensure_gateway(settings: Settings) -> list[Any]:
    """Start the gateway's processes (or find the running ones) on this node; one started with
    other settings (a redeploy) is replaced, and processes beyond `callback_processes` are
    stopped. Returns their handles once all are serving."""
    key = _config_key(settings, settings.callback_port)
    for extra in range(settings.callback_processes, MAX_CALLBACK_PROCESSES):
        try:
            ray.kill(ray.get_actor(gateway_actor_name(extra), namespace=NAMESPACE), no_restart=True)
        except ValueError:
            break
    # started together: each process's start-up (imports, Settings) overlaps the others'
    with concurrent.futures.ThreadPoolExecutor(settings.callback_processes) as pool:
        return list(pool.map(lambda i: _ensure_process(gateway_actor_name(i), settings, key, settings.callback_port),
                             range(settings.callback_processes)))


def _ensure_process(name: str, settings: Settings, key: str, port: int) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = ray.get_runtime_context().get_node_id()
    for _ in range(50):
        try:
            actor = CallbackGateway.options(  # type: ignore[attr-defined]  # a @ray.remote class: Ray's decorator typing does not carry .options
                name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                # http_host is this node's address: serve callbacks next to the Serve replica
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=True),
            ).remote(settings, port)
            info = ray.get(actor.info.remote(), timeout=60)
        except ray.exceptions.RayActorError:
            time.sleep(0.2)  # a replaced gateway on its way out, or its port still held
            continue
        if info["key"] == key:
            return actor
        log.info("replacing the callback gateway started with other settings")
        ray.kill(actor, no_restart=True)
        time.sleep(0.2)
    raise RuntimeError("the callback gateway could not be started")
