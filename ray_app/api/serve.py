"""The Ray Serve deployment hosting the API, and the builder `serve_config.yaml` points at.

    serve run serve_config.yaml          # or: serve deploy serve_config.yaml
"""

from __future__ import annotations

from typing import Any

from ray import serve

from ray_app.config import Settings


@serve.deployment(
    name="vtp-api",
    # callbacks are short and I/O-bound (an actor call each); the default of 5 queues them
    max_ongoing_requests=256,
    logging_config={"enable_access_log": False},
    # the API waits on actors and sockets; a reserved CPU (Serve's default is 1) would be a CPU
    # no training job can have: a 2-CPU job could never be placed on a 2-CPU machine
    ray_actor_options={"num_cpus": 0},
)
@serve.ingress()
class PlatformAPI:
    def __init__(self, settings: Settings):
        self.settings = settings  # read by build(), where the application is deployed
        self.settings.check_production()
        from ray_app.runtime.controller import ensure_controller

        if self.settings.callback_port:
            from ray_app.api.gateway import ensure_gateway

            ensure_gateway(self.settings)  # trainers call back there (Settings.callback_base_url)
        if self.settings.controller_enabled:
            ensure_controller(self.settings)

    def __serve_build_asgi_app__(self):
        from ray_app.api.app import create_app

        return create_app(self.settings)


def build(args: dict[str, Any]) -> serve.Application:
    """Application builder: `args` (from serve_config.yaml or `serve run ... key=value`) are
    VTP_* settings; anything unset comes from the environment, read here, once: for `serve
    deploy`/`serve run` of serve_config.yaml that is the build task's (the `ray start`
    environment plus the application's runtime_env env_vars), for `vtp up`/`vtp deploy` the
    deploying process's. The replica gets the Settings object."""
    env = {k if k.startswith("VTP_") else f"VTP_{k.upper()}": str(v) for k, v in (args or {}).items()}
    return application(Settings.from_env(env))


def application(settings: Settings) -> serve.Application:
    """The API's Serve application for `settings`: `api_replicas` replicas, each given the object."""
    deployment = PlatformAPI.options(num_replicas=settings.api_replicas)  # type: ignore[attr-defined]  # a @serve.deployment class: its typing does not carry .options
    return deployment.bind(settings)
