"""The trainer contract's environment (DESIGN §3) for one attempt.

Split in two: `public` goes into the actor's runtime_env (visible in the Ray dashboard), `secret`
(callback token, storage keys) is handed to the runner actor as an argument and reaches only the
trainer's process environment, so no secret shows up in the dashboard or a log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sdk.contract import OFFLINE_ENV as OFFLINE_ENV, dataset_uri  # the contract's; re-exported

from ray_app import __version__
from ray_app.auth import callback_tokens
from ray_app.config import Settings
from ray_app.jobs.job import Job
from ray_app.serving import mlflow_server


@dataclass
class ContractEnv:
    public: dict[str, str]
    secret: dict[str, str]

    def merged(self) -> dict[str, str]:
        return {**self.public, **self.secret}


def build(settings: Settings, job: Job) -> ContractEnv:
    attempt = int(job.attempt)
    base = settings.callback_base_url
    work = f"{settings.data_dir}/work/job-{job.id}/attempt-{attempt}"
    config = {
        **(job.config or {}),
        "epochs": job.epochs,
        "batch": job.batch_size,
        "imgsz": job.image_size,
        "learning_rate": job.learning_rate,
        "advanced_config": job.advanced_config or {},
    }
    bucket = settings.s3_bucket
    public = {
        **OFFLINE_ENV,
        "JOB_ID": job.id,
        "TRACE_ID": job.trace_id,
        "PROJECT_ID": job.project_id,
        "ATTEMPT": str(attempt),
        "BACKEND_BASE_URL": base,
        "CALLBACK_URL": f"{base}/v1",
        "FRAMEWORK": job.framework,
        "TASK_TYPE": job.task_type,
        "MODEL_NAME": job.model_name,
        "DATASET_ID": job.dataset_id,
        # a version uploaded through the API, or the dataset's place in S3 (DESIGN §3)
        "DATASET_S3_URI": job.dataset_uri or dataset_uri(bucket, job.dataset_id),
        "EPOCHS": str(job.epochs),
        "BATCH_SIZE": str(job.batch_size),
        "LEARNING_RATE": str(job.learning_rate),
        "IMAGE_SIZE": str(job.image_size),
        "IMGSZ": str(job.image_size),
        "CONFIG": json.dumps(config),
        "NUM_CPUS": str(job.num_cpus or 1),
        "STORAGE_TYPE": settings.storage_type,
        "STORAGE_BUCKET": bucket,
        "EXTERNAL_BUCKET_DATASETS": bucket,
        "INTERNAL_BUCKET_CHECKPOINTS": bucket,
        "WORK_DIR": work,
        "TMP_DIR": f"{work}/tmp",
        "DATASET_CACHE_DIR": f"{settings.data_dir}/cache/datasets",
        # the platform settings the SDK reads: how long it retries unreachable storage, and the
        # heartbeat timeout its keep-alive beats well within while it waits (sdk/liveness.py); the
        # runner no longer has the platform's VTP_* settings in its environment to pass on
        "VTP_STORAGE_RETRY_S": str(settings.storage_retry_s),
        "VTP_HEARTBEAT_TIMEOUT_S": str(settings.heartbeat_timeout_s),
        "VTP_PLATFORM_VERSION": __version__,  # the MLflow run's vtp.platform_version tag
    }
    if job.dataset_version:
        public["DATASET_VERSION"] = job.dataset_version
    if job.resume_from:
        public["RESUME_FROM"] = job.resume_from
    tracking = mlflow_server.tracking_uri(settings)
    if tracking:
        public["MLFLOW_TRACKING_URI"] = tracking
    store = storage(settings)
    public.update(store.public)
    token = callback_tokens.issue(settings.resolved_jwt_secret(), job.id, attempt, settings.callback_token_ttl_s)
    secret = {"CALLBACK_TOKEN": token, **store.secret}
    if mlflow_server.served(settings):
        # the platform's MLflow server (the API's /mlflow) takes the attempt's token; MLflow
        # clients send MLFLOW_TRACKING_TOKEN as a bearer token
        secret["MLFLOW_TRACKING_TOKEN"] = token
    return ContractEnv(public=public, secret=secret)


def storage(settings: Settings) -> ContractEnv:
    """S3's endpoint under each name trainers read (public) and its keys (secret); also what a
    model server needs to fetch checkpoints (ray_app/serving)."""
    public: dict[str, str] = {}
    secret: dict[str, str] = {}
    if settings.s3_endpoint:
        endpoint = settings.s3_endpoint
        public.update({
            "S3_ENDPOINT": endpoint,
            "MINIO_ENDPOINT": endpoint,
            "R2_ENDPOINT": endpoint,
            "EXTERNAL_STORAGE_ENDPOINT": endpoint,
            "INTERNAL_STORAGE_ENDPOINT": endpoint,
        })
    access = settings.s3_access_key.get_secret_value() if settings.s3_access_key else None
    key = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
    if access and key:
        for a, s in (("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"),
                     ("R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"),
                     ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
                     ("EXTERNAL_STORAGE_ACCESS_KEY", "EXTERNAL_STORAGE_SECRET_KEY"),
                     ("INTERNAL_STORAGE_ACCESS_KEY", "INTERNAL_STORAGE_SECRET_KEY")):
            secret[a] = access
            secret[s] = key
    return ContractEnv(public=public, secret=secret)
