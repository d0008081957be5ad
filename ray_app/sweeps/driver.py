"""SweepDriver: one detached actor per live sweep (`vtp-sweep:<id>`) running its Ray Tune
experiment, and the pieces Tune is given.

Tune decides which configurations run (random, grid, Optuna's TPE) and which stop (ASHA, the
median rule); every trial is a job (trial.py). The experiment's state is in the platform's S3
(`sweeps/<id>` in the bucket), so a sweep whose driver is gone (the actor lost, `vtp down` and
`vtp up`) is started again by the controller (supervisor.py) with `Tuner.restore`: finished
trials are not run again, and unfinished ones find their jobs.

When the fit ends the driver waits for the last trials' jobs to finish, then records the outcome:
the best trial (store/sweeps.best_trial), its model registered when asked (mlflow_runs.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any
from urllib.parse import urlparse

import ray

from ray_app.sweeps import tune_env  # noqa: F401  # Tune's settings, before Tune's import
from ray import tune

from ray_app.config import NAMESPACE, Settings
from ray_app.jobs.states import JobState
from ray_app.store.client import StoreClient
from ray_app.sweeps import space as spaces
from ray_app.sweeps.models import SweepState
from ray_app.jobs.job import Job
from ray_app.store import sweeps as store_sweeps
from ray_app.sweeps.trial import SweepTrial, reader_of, trial_job_id

log = logging.getLogger("ray_app.sweeps")

DRIVER_PREFIX = "vtp-sweep:"
TRIAL_CPU = 0.001  # a trial's own actor only follows its job: the job holds the resources
STOP_CHECK_S = 1.0


def driver_name(sweep_id: str) -> str:
    return f"{DRIVER_PREFIX}{sweep_id}"


def _sync(coro: Any) -> Any:
    return asyncio.run(coro)


def experiment_storage(settings: Settings) -> tuple[Any, str]:
    """(pyarrow filesystem or None, storage path) of the sweeps' Tune experiments: the bucket's
    `sweeps/` folder, or a folder of the data directory where no S3 is configured."""
    from ray_app.storage.s3 import settings_from

    s3 = settings_from(settings)
    if not (s3.endpoint_url or settings.storage_type == "s3"):
        path = settings.data_dir / "sweeps"
        path.mkdir(parents=True, exist_ok=True)
        return None, str(path)
    from pyarrow import fs

    kwargs: dict[str, Any] = {"access_key": s3.access_key, "secret_key": s3.secret_key, "region": s3.region_name}
    if s3.endpoint_url:
        url = urlparse(s3.endpoint_url)
        kwargs.update(endpoint_override=url.netloc, scheme=url.scheme or "http",
                      force_virtual_addressing=False)
    return fs.S3FileSystem(**kwargs), f"{settings.s3_bucket}/sweeps"


def param_space(space: dict[str, spaces.Domain], search: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Tune's param_space, keyed p0, p1, ... (a path's dots mean nothing to Tune), and key -> path."""
    paths = {f"p{i}": path for i, path in enumerate(space)}
    out: dict[str, Any] = {}
    for key, path in paths.items():
        domain = space[path]
        if search == "grid":
            out[key] = tune.grid_search(list(domain.values))
        elif domain.kind == "choice":
            out[key] = tune.choice(list(domain.values))
        elif domain.kind == "uniform":
            out[key] = tune.uniform(*domain.values)
        elif domain.kind == "loguniform":
            out[key] = tune.loguniform(*domain.values)
        else:
            out[key] = tune.randint(domain.values[0], domain.values[1] + 1)  # both ends included
    return out, paths


def scheduler_of(spec: dict[str, Any]) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    sched = spec.get("scheduler")
    if not sched:
        return FIFOScheduler()
    if sched["type"] == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=spec["job"]["epochs"],
                             grace_period=sched["grace_period"], reduction_factor=sched["reduction_factor"])
    return MedianStoppingRule(time_attr="training_iteration", grace_period=sched["grace_period"],
                              min_samples_required=3)


def search_of(spec: dict[str, Any]) -> Any:
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if spec["search"] == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=spec.get("seed")))
    # a SearchAlgorithm limits its own concurrency (Tune ignores max_concurrent_trials for it)
    return BasicVariantGenerator(random_state=spec.get("seed"), max_concurrent=spec["max_concurrent"])


class _Watch:
    """The sweep's record as the driver's Tune pieces need it, read at most every STOP_CHECK_S."""

    def __init__(self, settings: Settings, sweep_id: str):
        self.settings, self.sweep_id = settings, sweep_id
        self._at = 0.0
        self._stopping = False

    def stopping(self) -> bool:
        if not self._stopping and time.monotonic() - self._at >= STOP_CHECK_S:
            self._at = time.monotonic()
            sweep = reader_of(self.settings.resolved_database_url).run(store_sweeps.sweep_row, self.sweep_id)
            self._stopping = bool(sweep["stop_requested"]) or SweepState(sweep["state"]).is_terminal
        return self._stopping


class SweepStopper(tune.Stopper):
    """Stops every trial once the sweep is cancelled or failed (its trials' jobs are stopped by
    the store already: this ends the fit)."""

    def __init__(self, settings: Settings, sweep_id: str):
        self.watch = _Watch(settings, sweep_id)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.watch.stopping()


class TrialJobs(tune.Callback):
    """A trial Tune stopped before its last epoch (the scheduler's decision) stops its job as
    stopped early; a trial whose follower errored leaves no job running."""

    def __init__(self, settings: Settings, sweep_id: str):
        self.settings, self.sweep_id = settings, sweep_id

    def _job(self, trial: Any) -> Job:
        return Job.model_validate(reader_of(self.settings.resolved_database_url).get_job(
            trial_job_id(self.sweep_id, trial.trial_id)))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        job = self._job(trial)
        epoch = (trial.last_result or {}).get("epoch")
        if not job.is_final and not job.cancel_requested and (epoch is None or epoch < job.epochs):
            _sync(StoreClient(self.settings).stop_trial_early(
                job.id, f"stopped early by the sweep's scheduler after epoch {epoch}"))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        try:
            job = self._job(trial)
        except Exception:  # the trial errored before its job was made
            return
        if not job.is_final:
            _sync(StoreClient(self.settings).request_cancel(job.id, by=f"sweep:{self.sweep_id}"))


class SweepDriver:
    """The actor. `start` is idempotent: the controller calls it on every pass it finds the sweep
    live, and the fit runs once per actor, on a thread of its own."""

    def __init__(self, settings: Settings, sweep_id: str):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.settings, self.sweep_id = settings, sweep_id
        self.store = StoreClient(settings)
        self.reader = reader_of(settings.resolved_database_url)
        self._thread: threading.Thread | None = None
        self._mlflow: threading.Thread | None = None

    def start(self) -> str:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name=f"sweep-{self.sweep_id}")
            self._thread.start()
        return "running" if self._thread.is_alive() else "ended"

    def _run(self) -> None:
        try:
            self._fit()
            self._finish()
        except Exception as exc:
            log.exception("sweep %s: the driver failed", self.sweep_id)
            _sync(self.store.request_sweep_stop(self.sweep_id, SweepState.FAILED.value,
                                                f"the sweep's Tune driver failed: {type(exc).__name__}: {exc}"[:2000]))

    def _fit(self) -> None:
        sweep = self.reader.run(store_sweeps.sweep_row, self.sweep_id)
        spec = sweep["spec"]
        space, paths = param_space(spaces.parse_space(spec["space"], spec["search"]), spec["search"])
        context = {"id": self.sweep_id, "settings": self.settings, "job": spec["job"], "paths": paths,
                   "metric": spec["metric"], "mode": spec["mode"]}
        trainable = tune.with_resources(tune.with_parameters(SweepTrial, sweep=context), {"cpu": TRIAL_CPU})
        filesystem, root = experiment_storage(self.settings)
        path = f"{root}/{self.sweep_id}"
        if tune.Tuner.can_restore(path, storage_filesystem=filesystem):
            log.info("sweep %s: restoring its Tune experiment from %s", self.sweep_id, path)
            tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False,
                                       restart_errored=False, storage_filesystem=filesystem)
        else:
            tuner = tune.Tuner(
                trainable, param_space=space,
                tune_config=tune.TuneConfig(
                    metric=spec["metric"], mode=spec["mode"],
                    num_samples=1 if spec["search"] == "grid" else spec["num_trials"],
                    search_alg=search_of(spec), scheduler=scheduler_of(spec),
                    # Optuna, a Searcher, gets Tune's ConcurrencyLimiter from this
                    max_concurrent_trials=spec["max_concurrent"] if spec["search"] == "optuna" else None,
                    reuse_actors=True),
                run_config=tune.RunConfig(
                    name=self.sweep_id, storage_path=root, storage_filesystem=filesystem,
                    stop=SweepStopper(self.settings, self.sweep_id),
                    callbacks=[TrialJobs(self.settings, self.sweep_id)], verbose=0, log_to_file=False,
                    failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                    sync_config=tune.SyncConfig(sync_period=2),
                    checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=0)))
        _sync(self.store.sweep_started(self.sweep_id))
        # the MLflow parent run beside the fit, not before it: MLflow's import and calls (~1.5 s)
        # would delay the first trial, and the run is only needed when the trials' runs are made
        # its children, after the fit (_finish waits for it)
        self._mlflow = threading.Thread(target=self._parent_run, args=(sweep,), daemon=True,
                                        name=f"sweep-{self.sweep_id}-mlflow")
        self._mlflow.start()
        tuner.fit()

    def _parent_run(self, sweep: dict[str, Any]) -> None:
        if not self.settings.mlflow_tracking_uri:
            return
        from ray_app.sweeps import mlflow_runs

        parent = mlflow_runs.parent_run(self.settings, sweep)
        if parent:  # a store client of this thread's own (each call runs its own event loop)
            _sync(StoreClient(self.settings).sweep_started(self.sweep_id, parent))

    def _finish(self) -> None:
        """After the fit: the last trials' jobs end (a trial whose last epoch was told ends with
        its job's done), then the outcome."""
        if self._mlflow is not None:
            self._mlflow.join()
        while True:
            sweep = self.reader.run(store_sweeps.sweep_view, self.sweep_id)
            if SweepState(sweep["state"]).is_terminal:
                return
            if sweep["stop_requested"]:
                _sync(self.store.settle_sweep(self.sweep_id))
            elif all(JobState(t["state"]).is_terminal for t in sweep["trials"]):
                break
            time.sleep(1.0)
        best = sweep.get("best")
        succeeded = [t for t in sweep["trials"] if t["status"] == "succeeded"]
        registered = None
        if self.settings.mlflow_tracking_uri:
            from ray_app.sweeps import mlflow_runs

            mlflow_runs.tag_trials(self.settings, sweep)
            if best and succeeded and sweep["spec"].get("register_best_as"):
                registered = mlflow_runs.register_best(self.settings, sweep, best["job_id"])
        if succeeded:
            _sync(self.store.finish_sweep(self.sweep_id, SweepState.SUCCEEDED.value, None,
                                          best["job_id"] if best else None, registered))
        else:
            why = "; ".join(f"trial {t['trial']}: {t['stop_reason']}" for t in sweep["trials"][:5])
            _sync(self.store.finish_sweep(self.sweep_id, SweepState.FAILED.value,
                                          f"no trial succeeded ({why or 'no trials ran'})"[:2000]))


SweepDriverActor = ray.remote(num_cpus=0, max_restarts=0)(SweepDriver)


def ensure_driver(settings: Settings, sweep_id: str) -> Any:
    """The sweep's driver actor, found or created (created = started again after a restart)."""
    return SweepDriverActor.options(
        name=driver_name(sweep_id), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
    ).remote(settings, sweep_id)


def kill_driver(sweep_id: str) -> bool:
    try:
        ray.kill(ray.get_actor(driver_name(sweep_id), namespace=NAMESPACE))
    except ValueError:
        return False
    return True
