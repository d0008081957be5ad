"""The contract environment (DESIGN §3), read once into plain dataclasses.

Both source documents' variable names are read: the trainer-plugin contract (seed 000:
BACKEND_BASE_URL, STORAGE_TYPE + R2_*/MINIO_*) and the SDK guide (seed 001: CALLBACK_URL,
EXTERNAL_*/INTERNAL_* storage, IMGSZ). Where the SDK guide's storage variables are set they win
for their location (EXTERNAL_* for datasets, INTERNAL_* for checkpoints/artifacts).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, overload

from . import contract
from .contract import TASK_ALIASES as TASK_ALIASES, TASK_TYPES as TASK_TYPES  # re-exported
from .errors import ConfigError


def normalize_task_type(value: str | None) -> str:
    """DICE task name for ``value`` (the contract's rule: a DICE name or an alias, any case);
    '' if unset. ConfigError for anything else."""
    if not value:
        return ""
    try:
        return contract.normalize_task_type(value)
    except ValueError as exc:
        raise ConfigError(f"TASK_TYPE={value!r}: {exc}") from None


@dataclass(frozen=True)
class S3Location:
    """Where one kind of object lives: endpoint, credentials and bucket."""

    endpoint_url: str | None
    access_key: str | None
    secret_key: str | None
    bucket: str
    region: str = "us-east-1"
    # path-style for MinIO/SeaweedFS (no wildcard DNS on loopback); boto's default for AWS.
    addressing_style: str = "auto"

    def __repr__(self) -> str:  # never show the secret
        return (f"S3Location(endpoint_url={self.endpoint_url!r}, bucket={self.bucket!r}, "
                f"region={self.region!r}, addressing_style={self.addressing_style!r})")


@overload
def _get(env: Mapping[str, str], *names: str, default: str) -> str: ...
@overload
def _get(env: Mapping[str, str], *names: str, default: None = None) -> str | None: ...
def _get(env: Mapping[str, str], *names: str, default: str | None = None) -> str | None:
    for name in names:
        value = env.get(name)
        if value not in (None, ""):
            return value
    return default


def _int(env: Mapping[str, str], name: str, default: int | None, *alts: str) -> int | None:
    raw = _get(env, name, *alts)
    if raw is None:
        return default
    try:
        return int(float(raw))
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def _float(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


@overload
def env_number(name: str, default: float, env: Mapping[str, str] | None = None) -> float: ...
@overload
def env_number(name: str, default: None, env: Mapping[str, str] | None = None) -> float | None: ...
def env_number(name: str, default: float | None, env: Mapping[str, str] | None = None) -> float | None:
    """A numeric tuning knob from the environment (``os.environ`` unless ``env`` is given):
    ``default`` when it is unset, empty or not a number. Lenient on purpose: a bad knob must not
    fail a job (the contract's own variables are strict: _int/_float raise ConfigError)."""
    raw = (os.environ if env is None else env).get(name)
    if raw is None or not str(raw).strip():
        return default
    try:
        return float(raw)
    except ValueError:
        return default


def storage_locations(env: Mapping[str, str]) -> tuple[S3Location | None, S3Location | None]:
    """(datasets location, checkpoints location) from the environment; None when unconfigured."""
    stype = (_get(env, "STORAGE_TYPE", default="minio") or "minio").lower()
    if stype == "r2":
        endpoint = _get(env, "R2_ENDPOINT", "S3_ENDPOINT")
        access = _get(env, "R2_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
        secret = _get(env, "R2_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
        region = "auto"  # R2 requires the pseudo-region "auto"
    elif stype == "s3":
        endpoint = _get(env, "S3_ENDPOINT", "AWS_ENDPOINT_URL")
        access = _get(env, "AWS_ACCESS_KEY_ID")
        secret = _get(env, "AWS_SECRET_ACCESS_KEY")
        region = _get(env, "AWS_REGION", "AWS_DEFAULT_REGION", default="us-east-1")
    elif stype == "minio":
        endpoint = _get(env, "MINIO_ENDPOINT", "S3_ENDPOINT")
        access = _get(env, "MINIO_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
        secret = _get(env, "MINIO_SECRET_KEY", "AWS_SECRET_ACCESS_KEY")
        region = _get(env, "AWS_REGION", "AWS_DEFAULT_REGION", default="us-east-1")
    else:
        raise ConfigError(f"STORAGE_TYPE={stype!r} is not one of minio, r2, s3")
    if endpoint and "://" not in endpoint:
        endpoint = "http://" + endpoint  # MinIO docs often give host:port only
    bucket = _get(env, "STORAGE_BUCKET")

    def build(prefix: str, bucket_var: str) -> S3Location | None:
        ep = _get(env, f"{prefix}_STORAGE_ENDPOINT", default=endpoint)
        if ep and "://" not in ep:
            ep = "http://" + ep
        bkt = _get(env, bucket_var, default=bucket)
        if not bkt:
            return None
        addressing = "path" if (ep and stype != "s3") or stype == "minio" else "auto"
        return S3Location(
            endpoint_url=ep,
            access_key=_get(env, f"{prefix}_STORAGE_ACCESS_KEY", default=access),
            secret_key=_get(env, f"{prefix}_STORAGE_SECRET_KEY", default=secret),
            bucket=bkt,
            region=region or "us-east-1",
            addressing_style=addressing,
        )

    return build("EXTERNAL", "EXTERNAL_BUCKET_DATASETS"), build("INTERNAL", "INTERNAL_BUCKET_CHECKPOINTS")


@dataclass(frozen=True)
class TrainerEnv:
    job_id: str
    trace_id: str
    project_id: str
    attempt: int
    callback_base: str | None  # ".../v1"; callbacks go to {callback_base}/jobs/{job_id}/...
    callback_token: str | None
    framework: str
    task_type: str
    model_name: str
    dataset_id: str
    dataset_s3_uri: str | None
    epochs: int
    batch_size: int
    learning_rate: float
    image_size: int
    device: str
    config: dict[str, Any]
    resume_from: str | None
    datasets_location: S3Location | None
    checkpoints_location: S3Location | None
    mlflow_tracking_uri: str | None
    work_dir: Path
    tmp_dir: Path
    dataset_cache_dir: Path
    extra: dict[str, str] = field(default_factory=dict, repr=False)
    dataset_version: str | None = None  # the registered version's content hash (DATASET_VERSION)
    # the rendezvous (contract.RENDEZVOUS_ENV): which rank of how many this process is
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def silent(self) -> bool:
        """A rank > 0 of a distributed job: rank 0 speaks for the job, this one sends nothing."""
        return self.world_size > 1 and self.rank > 0

    @property
    def secrets(self) -> list[str]:
        """Values that must never be printed, logged as params, or sent in events."""
        out = [self.callback_token or ""]
        for loc in (self.datasets_location, self.checkpoints_location):
            if loc:
                out += [loc.secret_key or "", loc.access_key or ""]
        return [s for s in out if s]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "TrainerEnv":
        env = os.environ if environ is None else environ
        raw_config = _get(env, "CONFIG", default="{}") or "{}"
        try:
            config = json.loads(raw_config)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"CONFIG is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise ConfigError("CONFIG must be a JSON object")

        callback_base: str | None
        base = _get(env, "BACKEND_BASE_URL")
        if base:
            callback_base = base.rstrip("/") + "/v1"
        else:
            cb = _get(env, "CALLBACK_URL")
            callback_base = cb.rstrip("/") if cb else None

        tmp_root = Path(_get(env, "TMP_DIR", default=tempfile.gettempdir()) or tempfile.gettempdir())
        job_id = _get(env, "JOB_ID", default="local") or "local"
        work_dir = Path(_get(env, "WORK_DIR", default=str(tmp_root / f"vtp-work-{job_id}")))
        cache_dir = Path(_get(env, "DATASET_CACHE_DIR", default=str(tmp_root / "vtp-dataset-cache")))
        datasets_loc, ckpt_loc = storage_locations(env)
        world, rank = _int(env, "WORLD_SIZE", 1), _int(env, "RANK", 0)
        world, rank = (1 if world is None else world), (0 if rank is None else rank)
        if world < 1 or not 0 <= rank < world:
            raise ConfigError(f"RANK={rank} is not a rank of WORLD_SIZE={world}")
        imgsz = _int(env, "IMAGE_SIZE", None, "IMGSZ")
        if imgsz is None:
            imgsz = int(config.get("imgsz") or config.get("image_size") or 640)
        return cls(
            job_id=job_id,
            trace_id=_get(env, "TRACE_ID", default=job_id) or job_id,
            project_id=_get(env, "PROJECT_ID", default="default") or "default",
            attempt=_int(env, "ATTEMPT", 1) or 1,
            callback_base=callback_base,
            callback_token=_get(env, "CALLBACK_TOKEN"),
            framework=_get(env, "FRAMEWORK", default="") or "",
            task_type=normalize_task_type(_get(env, "TASK_TYPE")),
            model_name=_get(env, "MODEL_NAME", default="") or "",
            dataset_id=_get(env, "DATASET_ID", default="") or "",
            dataset_s3_uri=_get(env, "DATASET_S3_URI"),
            epochs=_int(env, "EPOCHS", int(config.get("epochs") or 100)) or 0,
            batch_size=_int(env, "BATCH_SIZE", int(config.get("batch") or config.get("batch_size") or 16)) or 0,
            learning_rate=_float(env, "LEARNING_RATE", float(config.get("learning_rate") or config.get("lr0") or 0.01)) or 0.0,
            image_size=imgsz,
            device=_get(env, "DEVICE", default=str(config.get("device", "cpu"))) or "cpu",
            config=config,
            resume_from=_get(env, "RESUME_FROM"),
            datasets_location=datasets_loc,
            checkpoints_location=ckpt_loc,
            mlflow_tracking_uri=_get(env, "MLFLOW_TRACKING_URI"),
            work_dir=work_dir,
            tmp_dir=tmp_root,
            dataset_cache_dir=cache_dir,
            extra={k: v for k, v in env.items() if k.startswith("VTP_")},
            dataset_version=_get(env, "DATASET_VERSION"),
            rank=rank,
            world_size=world,
            local_rank=_int(env, "LOCAL_RANK", 0) or 0,
        )

    def run_tags(self) -> dict[str, str]:
        """Tags of the job's MLflow run: which job, and which data it trained on, so a run can be
        found from its job and reproduced from its dataset version."""
        tags = {"vtp.job_id": self.job_id, "vtp.attempt": str(self.attempt), "vtp.trace_id": self.trace_id,
                "vtp.project_id": self.project_id, "vtp.framework": self.framework, "vtp.task_type": self.task_type,
                "vtp.model_name": self.model_name, "vtp.dataset_id": self.dataset_id,
                "vtp.dataset_version": self.dataset_version or "",
                "vtp.platform_version": self.extra.get("VTP_PLATFORM_VERSION", "")}
        return {k: v for k, v in tags.items() if v}

    def basic_config(self) -> dict[str, Any]:
        """CONFIG without ``advanced_config``, with the dedicated variables filled in."""
        basic = {k: v for k, v in self.config.items() if k != "advanced_config"}
        # The dedicated variables win over CONFIG's copies (they fall back to CONFIG when unset).
        basic.update(epochs=self.epochs, batch=self.batch_size, imgsz=self.image_size,
                     learning_rate=self.learning_rate, device=self.device)
        if self.model_name:
            basic["model_name"] = self.model_name
        if self.task_type:
            basic["task_type"] = self.task_type
        return basic

    def advanced_config(self) -> dict[str, Any]:
        adv = self.config.get("advanced_config") or {}
        if not isinstance(adv, dict):
            raise ConfigError("CONFIG.advanced_config must be a JSON object")
        return dict(adv)

    def setting(self, name: str, default: float) -> float:
        """A numeric VTP_* tuning knob (timeouts, bounds)."""
        raw = self.extra.get(name)
        if raw in (None, ""):
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
