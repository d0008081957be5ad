"""Platform settings: one pydantic-settings model, read from `VTP_*` environment variables.

The embedded single-machine mode needs nothing set: it keeps everything under `data_dir`
(default ~/.vtp) and generates its secrets there. With `VTP_PRODUCTION=true` the secrets must be
given explicitly; start-up stops with a clear message instead of inventing them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "vtp"  # the Ray namespace of every named actor of the platform
STORE_ACTOR = "vtp-job-store"
CONTROLLER_ACTOR = "vtp-job-controller"
MAX_CALLBACK_PROCESSES = 16  # callback gateway actors: vtp-callback-gateway, -1, ... -15


class MissingProductionSetting(RuntimeError):
    pass


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VTP_", extra="ignore")

    production: bool = False
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".vtp")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite")

    # HTTP
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    public_base_url: str | None = Field(
        default=None, description="base URL trainers call back; default http://host:port"
    )
    callback_port: int = Field(
        default=0, description="port of the callback gateway (trainer callbacks on plain uvicorn, "
        "batched into the JobStore) on http_host; 0: callbacks go through Serve only",
    )
    callback_processes: int = Field(
        default=2, ge=1, le=MAX_CALLBACK_PROCESSES,
        description="callback gateway processes sharing callback_port (SO_REUSEPORT), each with "
        "its own event loop and store batches; one uses ~0.45 CPU at 2,000 heartbeats/s "
        "(bench/README.md)",
    )
    max_body_bytes: int = 1 << 20
    max_upload_bytes: int = 32 << 20
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    jwt_secret: SecretStr | None = None
    callback_token_ttl_s: int = 7 * 24 * 3600

    # job runtime
    trainer_paths: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [REPO_ROOT / "trainers"],
        description="folders holding trainers/<name>/trainer.yaml (os.pathsep-separated in env)",
    )
    trainer_env_mode: str = Field(
        default="auto", description="auto: a trainer's prebuilt venv if built, else its manifest's pip/uv"
    )
    controller_enabled: bool = True
    pooled_runners: bool = Field(
        default=True, description="runners start without a runtime_env (no setup_worker.py) and "
        "give the trainer process its working_dir/py_modules/env_vars/py_executable themselves "
        "(runtime/process_env.py); false: each runner's worker is started with the trainer's "
        "runtime_env (~1 s slower here)",
    )
    trainer_venvs_dir: Path | None = Field(
        default=None, description="where per-trainer virtualenvs are built; default data_dir/venvs"
    )
    default_max_attempts: int = 3
    retry_backoff_s: float = Field(
        default=10.0, ge=0, le=3600, description="how long a job waits before the attempt that "
        "retries an infrastructure failure (NETWORK_ERROR, RESOURCE_ERROR, a lost node): this "
        "before the second attempt, twice that before the third, and so on (jobs/recovery.py), "
        "so that a storage or network outage does not use up every attempt in a few seconds")
    retry_backoff_max_s: float = Field(default=300.0, ge=0, le=86400,
                                       description="the longest wait before a retry (the doubling stops there)")
    heartbeat_timeout_s: float = 300.0
    stall_timeout_s: float = 1800.0
    placement_timeout_s: float = 600.0
    cancel_grace_s: float = 30.0
    kill_grace_s: float = Field(
        default=5.0, ge=0, description="once a trainer is told to end (cancel_grace_s after a "
        "cancel, or its job is final), SIGTERM goes to its process group; what is still alive "
        "this much later gets SIGKILL",
    )
    storage_retry_s: float = Field(
        default=120.0, ge=0, description="how long a trainer (the SDK) retries storage that "
        "cannot be reached before it fails the attempt as NETWORK_ERROR, which is retried from "
        "the last checkpoint that was uploaded; must be below heartbeat_timeout_s and "
        "stall_timeout_s (start-up refuses otherwise)",
    )
    controller_interval_s: float = 0.5
    # the shared cluster's queue (ray_app/scheduling)
    preemption: bool = Field(
        default=True, description="whether a waiting job may preempt running jobs of lower priority "
        "(platform-wide; a project can also keep its own jobs from being preempted)")
    preemption_grace_s: float = Field(
        default=120.0, ge=0, le=86400, description="how long a preempted trainer has to save its "
        "checkpoint and exit after it is told to stop (should_continue=false) before it is ended")
    fair_share_half_life_s: float = Field(
        default=3600.0, gt=0, le=30 * 86400, description="fair share remembers each project's use "
        "of the cluster with this half-life: an hour ago counts half, a day ago next to nothing")
    node_warmup_retry_s: float = Field(
        default=60.0, gt=0, le=86400, description="a node whose warm-up (building the bundled "
        "trainers' environments when it joins) failed is warmed again this much later, then twice "
        "that; three tries in all",
    )

    # inference: one Ray Serve application per trainer, its models multiplexed (ray_app/serving)
    predict_models_per_replica: int = Field(
        default=3, ge=1, le=1000, description="models a predict replica keeps loaded; the least "
        "recently used is unloaded (its memory freed) past this")
    predict_min_replicas: int = Field(default=1, ge=0, le=1000, description="predict replicas per trainer kept up")
    predict_max_replicas: int = Field(default=1, ge=1, le=1000, description="autoscaling bound of predict "
                                      "replicas per trainer (above predict_min_replicas: Serve autoscales)")
    predict_num_cpus: float = Field(default=0.0, ge=0, le=512, description="CPUs a predict replica "
                                    "reserves (0: it never keeps a training job from being placed)")
    predict_num_gpus: float = Field(default=0.0, ge=0, le=8, description="GPUs a predict replica "
                                    "reserves (a fraction shares one); 0: inference on the CPU")
    # the API itself: Serve replicas of PlatformAPI (api/serve.py build()), each resolving tokens on
    # its own database engine (api/access.py: no cache, so a revocation holds on every replica at once)
    api_replicas: int = Field(default=1, ge=1, le=64, description="Serve replicas of the platform's API "
                              "(each reserves no CPU); more serve more users' requests at once")

    # storage (S3-compatible): embedded SeaweedFS by default
    storage_type: str = "minio"
    s3_endpoint: str | None = None
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_bucket: str = "vision-platform"
    s3_region: str = "us-east-1"
    s3_public_endpoint: str | None = Field(
        default=None, description="the S3 endpoint users' machines reach, in the presigned URLs of "
        "dataset uploads and artifact downloads; default: s3_endpoint",
    )
    presign_ttl_s: int = Field(default=900, ge=60, le=7 * 24 * 3600,
                               description="lifetime of a presigned upload or download URL")
    dataset_max_bytes: int = Field(default=50 << 30, ge=1, description="largest dataset archive accepted")
    upload_part_bytes: int = Field(default=8 << 20, ge=5 << 20, description="smallest part of a "
                                   "multipart upload (S3's minimum is 5 MiB); grows to keep 1,000 parts at most")
    # job logs: the database keeps each job's newest lines; older ones move to S3 in chunks
    # (store/log_archive.py; without S3 configured every line stays in the database)
    log_db_lines: int = Field(default=20_000, ge=1, description="lines of each job's log kept in the database")
    log_archive_chunk: int = Field(default=5_000, ge=1, description="lines per S3 object of older log lines")
    log_archive_interval_s: float = Field(default=30.0, gt=0, description="how often the controller moves them")
    mlflow_tracking_uri: str | None = None
    mlflow_ui_url: str | None = Field(
        default=None, description="the MLflow UI users' browsers reach, for the console's run links; "
        "default: mlflow_tracking_uri when it is an http(s) URL")

    @field_validator("trainer_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p for p in value.split(os.pathsep) if p]
        return value

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @model_validator(mode="after")
    def _windows_agree(self) -> "Settings":
        """A trainer retries unreachable storage for storage_retry_s, then fails the attempt as
        NETWORK_ERROR, which is retried from the last checkpoint. Should the platform's own
        patience end first, it fails the attempt as silent or stalled (TIMEOUT_ERROR, final)
        while the trainer still waits, and an outage the windows were meant to ride out ends the
        job: such settings contradict each other, and the platform refuses them at start."""
        for name, limit in (("VTP_HEARTBEAT_TIMEOUT_S", self.heartbeat_timeout_s),
                            ("VTP_STALL_TIMEOUT_S", self.stall_timeout_s)):
            if self.storage_retry_s >= limit:
                raise ValueError(
                    f"VTP_STORAGE_RETRY_S ({self.storage_retry_s:g}s) must be below {name} ({limit:g}s): a "
                    "trainer waiting that long for unreachable storage would be failed for good as silent "
                    f"or stalled before its own retries end; lower VTP_STORAGE_RETRY_S or raise {name}")
        return self

    # ------------------------------------------------------------------ derived

    @property
    def venvs_dir(self) -> Path:
        return self.trainer_venvs_dir or self.data_dir / "venvs"

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def api_token_file(self) -> Path:
        return self.secrets_dir / "api_token"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'jobs.db'}"

    @property
    def callback_base_url(self) -> str:
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        return f"http://{self.http_host}:{self.callback_port or self.http_port}"

    def resolved_jwt_secret(self) -> str:
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        if self.production:
            raise MissingProductionSetting(
                "VTP_JWT_SECRET must be set when VTP_PRODUCTION=true (callback token secret)"
            )
        return _read_or_create_secret(self.secrets_dir / "jwt_secret")

    def resolved_api_tokens(self) -> list[str]:
        if self.api_tokens:
            return [t.get_secret_value() for t in self.api_tokens]
        if self.production:
            raise MissingProductionSetting(
                "VTP_API_TOKENS must be set when VTP_PRODUCTION=true (comma-separated bearer tokens)"
            )
        return [_read_or_create_secret(self.api_token_file)]

    def check_production(self) -> None:
        """Fail start-up early, with every missing production setting named."""
        if not self.production:
            return
        missing = [
            name
            for name, value in (
                ("VTP_JWT_SECRET", self.jwt_secret),
                ("VTP_API_TOKENS", self.api_tokens or None),
                ("VTP_DATABASE_URL", self.database_url),
                ("VTP_S3_ENDPOINT", self.s3_endpoint if self.storage_type != "s3" else "aws"),
                ("VTP_S3_ACCESS_KEY", self.s3_access_key),
                ("VTP_S3_SECRET_KEY", self.s3_secret_key),
            )
            if not value
        ]
        if missing:
            raise MissingProductionSetting(
                "production start-up refused; set: " + ", ".join(missing)
            )

    @classmethod
    def from_env(cls, overrides: Mapping[str, str] | None = None) -> "Settings":
        """The platform's settings, read where the platform starts (the CLI, `vtp deploy`, the
        Serve application builder): the VTP_* environment, with ``overrides`` (VTP_* names, e.g.
        a Serve config's args) over it. The actors get this object, pickled, in their
        constructors (JobController, TrainerRunner, CallbackGateway, the Serve replica): none of
        them reads VTP_* variables again."""
        fields: dict[str, Any] = {k[4:].lower(): v for k, v in (overrides or {}).items() if k.startswith("VTP_")}
        return cls(**fields)

    def to_env(self) -> dict[str, str]:
        """The settings as VTP_* variables: for a process outside Ray started with them (`vtp
        up`'s `ray start`, `ray job submit`), and as the gateway's configuration key."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None or value == []:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, list):
                sep = os.pathsep if name == "trainer_paths" else ","
                value = sep.join(
                    v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in value
                )
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"VTP_{name.upper()}"] = str(value)
        return env


def _read_or_create_secret(path: Path) -> str:
    """A generated secret kept in a 0600 file, shared by every process on this machine."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32))
    try:
        os.link(tmp, path)  # first writer wins; a concurrent creator reads the winner's value
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()
