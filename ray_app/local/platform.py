"""Bring the whole platform up on one machine, and down again, keeping the data.

Everything lives under one data directory (default ~/.vtp): the job database, the S3 server's
files, the MLflow store, the generated secrets, and `local.json` with the ports and pids of what
runs. `down` stops exactly the processes this platform started (found by pid and by their Ray
temp dir), never another Ray cluster on the machine: `ray stop` would stop them all.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from ray_app.config import Settings
from ray_app.local import processes
from ray_app.ports import free_port
from ray_app.storage.s3_server import SeaweedS3Server

RAY = str(Path(sys.executable).with_name("ray"))


@dataclass
class LocalState:
    ray_port: int = 0
    dashboard_port: int = 0
    http_port: int = 8000
    s3_port: int = 0
    s3_pid: int | None = None
    callback_port: int = 0  # the callback gateway's; kept across `vtp up` like the others
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "LocalState":
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return cls()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.chmod(tmp, 0o600)  # env holds the S3 keys
        tmp.replace(path)


class LocalPlatform:
    def __init__(self, data_dir: Path | None = None, http_port: int | None = None, log=print):
        overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir else {}
        self.settings = Settings(**overrides)
        self.data_dir = self.settings.data_dir.expanduser().resolve()
        self.state_path = self.data_dir / "local.json"
        self.state = LocalState.load(self.state_path)
        if http_port:
            self.state.http_port = http_port
        self.log = log
        # Ray's unix socket paths must stay short: the temp dir is under /tmp, named by data dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:10]
        self.ray_temp_dir = Path(f"/tmp/vtp-{digest}")

    def platform_settings(self) -> Settings:
        """The settings the running platform was started with (S3 endpoint and keys included)."""
        env = self.state.env
        if not env:
            return self.settings
        return Settings.from_env(env)

    # ------------------------------------------------------------------ urls

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.state.http_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.state.dashboard_port}"

    @property
    def ray_address(self) -> str:
        return f"127.0.0.1:{self.state.ray_port}"

    # ------------------------------------------------------------------ up

    def up(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # the secrets exist before anything asks: the CLI reads the API token from its file
        self.settings.resolved_api_tokens()
        self.settings.resolved_jwt_secret()
        s3 = self._start_s3()
        self._start_ray()
        # trainers call back through the callback gateway (plain uvicorn, batched store writes:
        # bench/README.md, ingestion), not through the Serve proxy; VTP_CALLBACK_PORT=0 turns it off
        self.state.callback_port = self.state.callback_port or free_port()
        self.state.env = {
            "VTP_DATA_DIR": str(self.data_dir),
            "VTP_HTTP_HOST": "127.0.0.1",
            "VTP_HTTP_PORT": str(self.state.http_port),
            "VTP_S3_ENDPOINT": s3.endpoint_url or "",
            "VTP_S3_ACCESS_KEY": s3.access_key,
            "VTP_S3_SECRET_KEY": s3.secret_key,
            "VTP_S3_BUCKET": self.settings.s3_bucket,
            "VTP_STORAGE_TYPE": "minio",
            "VTP_MLFLOW_TRACKING_URI": f"sqlite:///{self.data_dir / 'mlflow.db'}",
            "VTP_CALLBACK_PORT": str(self.state.callback_port),
            **{k: v for k, v in os.environ.items() if k.startswith("VTP_") and k != "VTP_DATA_DIR"},
        }
        self.state.save(self.state_path)
        # MLflow artifacts an earlier version left in local folders go to the bucket before the API
        # serves MLflow from there (a no-op once done, or on a new installation)
        from ray_app.serving.mlflow_migrate import migrate

        migrate(self.platform_settings(), self.log)
        # the bundled trainers' environments now, not in the first job's launch (a few seconds
        # to a minute, once; a later `up` finds them built)
        from ray_app.runtime.environments import build_bundled

        build_bundled(self.platform_settings(), self.log)
        self._deploy()
        self._warm_mlflow()

    def _warm_mlflow(self) -> None:
        """The API builds its MLflow server on the first /mlflow request (seconds of imports, and
        the tracking database's tables on a new installation): asked once here, so that the
        first job's runs do not pay for it on the CPUs the job trains on (bench/first_job.py)."""
        from ray_app.serving import mlflow_server

        settings = self.platform_settings()
        if not mlflow_server.served(settings):
            return
        try:
            httpx.get(f"{self.api_url}{mlflow_server.PREFIX}/api/2.0/mlflow/experiments/search",
                      params={"max_results": 1}, timeout=120,
                      headers={"Authorization": f"Bearer {settings.resolved_api_tokens()[0]}"})
        except httpx.HTTPError as exc:  # the first job then builds it, as without this
            self.log(f"MLflow server not warmed: {type(exc).__name__}: {exc}")

    def _start_s3(self) -> SeaweedS3Server:
        server = SeaweedS3Server(self.data_dir / "s3", buckets=[self.settings.s3_bucket],
                                 s3_port=self.state.s3_port or None)
        if self.state.s3_pid and psutil.pid_exists(self.state.s3_pid) and self._s3_answers(server):
            server.load_credentials()  # started by an earlier `up`: its keys are in the data dir
            self.log(f"S3 (SeaweedFS) already running on {server.endpoint_url}")
            return server
        server.start()
        self.state.s3_port, self.state.s3_pid = server.s3_port or 0, server.pid
        self.state.save(self.state_path)
        self.log(f"S3 (SeaweedFS) started on {server.endpoint_url} (pid {server.pid})")
        return server

    @staticmethod
    def _s3_answers(server: SeaweedS3Server) -> bool:
        try:
            httpx.get(server.endpoint_url or "", timeout=2)
            return True
        except httpx.HTTPError:
            return False

    def _start_ray(self) -> None:
        if self.state.ray_port and self._ray_processes():
            self.log(f"Ray already running at {self.ray_address}")
            return
        if not self.state.ray_port:
            self.state.ray_port = free_port()  # never 6379 (ports.RESERVED)
            self.state.dashboard_port = free_port()
        cmd = [RAY, "start", "--head", f"--port={self.state.ray_port}", "--node-ip-address=127.0.0.1",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={self.state.dashboard_port}",
               f"--ray-client-server-port={free_port()}", f"--temp-dir={self.ray_temp_dir}",
               "--disable-usage-stats"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start failed: {proc.stderr.strip()[-2000:]}")
        self.state.save(self.state_path)
        self.log(f"Ray head started at {self.ray_address}")

    def _deploy(self) -> None:
        from ray_app.deploy import deploy_platform

        deploy_platform(self.platform_settings(), self.state.http_port, address=self.ray_address)

    # ------------------------------------------------------------------ down / status

    def _ray_processes(self) -> list[psutil.Process]:
        return processes.cluster_processes(str(self.ray_temp_dir), self.state.ray_port or None)

    def processes(self) -> list[psutil.Process]:
        procs = self._ray_processes()
        if self.state.s3_pid and psutil.pid_exists(self.state.s3_pid):
            procs.append(psutil.Process(self.state.s3_pid))
        return procs

    def down(self, timeout: float = 20.0) -> int:
        stopped = processes.stop(self.processes(), timeout)
        self.state.s3_pid = None
        self.state.save(self.state_path)
        return stopped

    def status(self) -> dict[str, object]:
        try:
            health = httpx.get(f"{self.api_url}/healthz", timeout=3).json()
        except (httpx.HTTPError, ValueError):
            health = None
        return {"data_dir": str(self.data_dir), "api": self.api_url, "dashboard": self.dashboard_url,
                "ray_address": self.ray_address, "ray_processes": len(self._ray_processes()),
                "s3_running": bool(self.state.s3_pid and psutil.pid_exists(self.state.s3_pid)),
                "health": health}
