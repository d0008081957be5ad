"""Ray Tune's settings inside the platform, set in the process before Tune is imported (some are
read at import). Imported first by the modules that import Tune (driver.py, trial.py), so the
sweep's driver and its trial actors have them.

Set here rather than as the driver actor's runtime_env: an actor with env_vars of its own cannot
be given one of Ray's idle workers, and a new worker process costs a sweep's start about a second,
twice (the driver, then its trial actors, which inherit the driver's runtime_env).
"""

from __future__ import annotations

import os

# no result loggers (CSV/JSON/TensorBoard files per trial, written to S3 on every result: the
# platform keeps the metrics), the experiment's state saved often (what a restore resumes from),
# one result at a time, Tune's classic output and API; no MLflow telemetry (offline)
TUNE_ENV = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "TUNE_GLOBAL_CHECKPOINT_S": "2",
            "TUNE_RESULT_BUFFER_LENGTH": "1", "RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_THRESHOLD_S": "30",
            "RAY_TRAIN_V2_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}

for _name, _value in TUNE_ENV.items():
    os.environ.setdefault(_name, _value)
