"""Deploy the platform's Serve application onto a running Ray cluster.

Used by `vtp up` (single machine) and by `vtp deploy`, which is how an operator installs the
platform on an existing cluster, for example as a Ray job:

    ray job submit --address http://127.0.0.1:8265 -- python -m ray_app deploy
"""

from __future__ import annotations

import logging
import time

import httpx

from ray_app.config import NAMESPACE, Settings

APP_NAME = "vtp"


def deploy_platform(settings: Settings, http_port: int, address: str | None = None,
                    wait_s: float = 180.0) -> str:
    """Start Serve on 127.0.0.1:`http_port` (if not started) and (re)deploy the API with
    `settings` (the replica gets the object); returns the API URL once /healthz answers."""
    import ray
    from ray import serve

    from ray_app.api.serve import application

    connected_here = not ray.is_initialized()
    if connected_here:
        ray.init(address=address or "auto", namespace=NAMESPACE, log_to_driver=False,
                 logging_level=logging.ERROR)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": http_port})
        serve.run(application(settings), name=APP_NAME, route_prefix="/", blocking=False)
    finally:
        if connected_here:
            ray.shutdown()
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the API did not answer on {url}/healthz within {wait_s:g}s")
