"""A platform job's model as an MLflow pyfunc model: the trainer's own `predict.py` on the job's
checkpoint. Logged as code (MLflow "models from code") by ray_app/serving/mlflow_models.py, with
the checkpoint and the trainer's folder as artifacts and the trainer SDK as a code path; loading
it needs MLflow and the trainer's packages (its requirements, logged with it), not the platform:

    model = mlflow.pyfunc.load_model("models:/shapes-detector/1")
    model.predict(["image.jpg"], params={"conf": 0.25, "top_k": 5})   # one dict per image, as predict.py returns

(`conf` and `top_k` are the params of the model's signature, with the API's defaults; MLflow
passes on no other.)

This file stands alone: MLflow copies it into the model and imports it from there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class TrainerModel(PythonModel):
    def load_context(self, context: Any) -> None:
        folder = Path(context.artifacts["trainer"])
        config = context.model_config or {}
        sys.path.insert(0, str(folder))  # the trainer's own helper modules, as when it trained
        # Imported as a module should be: registered in sys.modules before it runs (as Python's
        # own import does), under a name of this model's folder (two models loaded in one process
        # keep their own). Without it, a @dataclass in predict.py under `from __future__ import
        # annotations` fails: dataclasses looks its module up in sys.modules to resolve the
        # annotations ('NoneType' object has no attribute '__dict__').
        name = "vtp_trainer_predict_" + hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, folder / config.get("predict", "predict.py"))
        if spec is None or spec.loader is None:
            raise ImportError(f"no predict entrypoint in {folder}")
        self.module = importlib.util.module_from_spec(spec)
        sys.modules[name] = self.module
        try:
            spec.loader.exec_module(self.module)
        except BaseException:
            del sys.modules[name]
            raise
        self.model = self.module.load_model(context.artifacts["checkpoint"], config.get("device", "cpu"))

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        if hasattr(model_input, "iloc"):  # a DataFrame: its first column holds the image paths
            model_input = model_input.iloc[:, 0].tolist()
        paths = [str(p) for p in (model_input if isinstance(model_input, list | tuple) else [model_input])]
        return self.module.predict(self.model, paths, **(params or {}))


mlflow.models.set_model(TrainerModel())
