"""The trainer registry: every folder `<path>/<name>/trainer.yaml` is a trainer.

A plugin is a new folder with a manifest; the platform needs no code change to run it.

    name: ultralytics
    task_types: [object_detection, instance_segmentation, image_classification]
    models: ["yolo11*", "yolov8*"]          # fnmatch patterns; "*" accepts any model
    entrypoints: {train: train.py, predict: predict.py, export: export.py}
    export_formats: [onnx, torchscript]    # what export.py can write (POST /v1/jobs/{id}/exports)
    resources: {num_cpus: 2, num_gpus: 0}  # defaults when the job does not say; `custom:
                                           # {name: amount}` Ray custom resources it always needs
    requirements: requirements.txt         # the trainer's own dependencies
    env: venv                              # venv | pip | uv | none
    shadows: []                            # platform packages its venv may carry its own
                                           # (large) copy of, on purpose (runtime/venvs.py)
    distributed: {max_workers: 64, gpus_per_process: 1}   # optional: a job may run as a gang
                                           # of ranks (jobs/ranks.py); omitted: one process
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sdk.contract import TaskType, normalize_task_type

from ray_app.jobs.ranks import Distributed

MANIFEST = "trainer.yaml"


def dice_name(task_type: str) -> str:
    """The DICE name of a task type or alias (the contract's rule); an unknown one as it is."""
    try:
        return normalize_task_type(task_type)
    except ValueError:
        return task_type


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_cpus: float = 1
    num_gpus: float = 0
    memory_mb: int | None = None
    # Ray custom resources every attempt of this trainer requests (node labels an operator
    # gives with `ray start --resources`, e.g. {"a100": 1}): its runners go only to such nodes
    custom: dict[str, float] = Field(default_factory=dict)


class Entrypoints(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: str = "train.py"
    predict: str | None = None
    # export(checkpoint_path, output_dir, format, image_size, half, dynamic, device) -> [files]
    # (ray_app/serving/exports.py; trainers/README.md "Export")
    export: str | None = None


class TrainerManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    description: str = ""
    task_types: list[TaskType]
    models: list[str] = Field(default_factory=lambda: ["*"])
    entrypoints: Entrypoints = Field(default_factory=Entrypoints)
    export_formats: list[str] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    requirements: str | None = None
    env: Literal["venv", "pip", "uv", "none"] = "none"
    shadows: list[str] = Field(default_factory=list)
    distributed: Distributed | None = None  # None: a single process (jobs/ranks.py)
    folder: Path = Field(default=Path("."), exclude=True)

    # a manifest may name its tasks by the contract's aliases too (detect, classification, ...)
    @field_validator("task_types", mode="before")
    @classmethod
    def _task_names(cls, value: object) -> object:
        if isinstance(value, list):
            return [normalize_task_type(v) if isinstance(v, str) else v for v in value]
        return value

    def supports(self, task_type: str, model_name: str) -> bool:
        task = dice_name(task_type)
        return task in {t.value for t in self.task_types} and any(
            fnmatch.fnmatchcase(model_name, pattern) for pattern in self.models
        )

    @property
    def requirements_file(self) -> Path | None:
        return self.folder / self.requirements if self.requirements else None

    def requirement_lines(self) -> list[str]:
        path = self.requirements_file
        if path is None or not path.exists():
            return []
        lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
        return [line for line in lines if line]


def read_manifest(folder: Path) -> TrainerManifest:
    """The manifest in a trainer's folder (yaml.YAMLError or ValidationError when it is broken)."""
    data = yaml.safe_load((folder / MANIFEST).read_text()) or {}
    return TrainerManifest.model_validate({**data, "folder": folder})


class UnknownTrainer(ValueError):
    """The job names a framework/task/model that no registered trainer supports (HTTP 422)."""


class TrainerRegistry:
    def __init__(self, paths: Iterable[Path]):
        self.paths = [Path(p) for p in paths]
        self.trainers: dict[str, TrainerManifest] = {}
        self.problems: list[str] = []
        self.rescan()

    def rescan(self) -> None:
        """Read every manifest under the paths again."""
        self.trainers, self.problems = {}, []
        for root in self.paths:
            for manifest_path in sorted(root.glob(f"*/{MANIFEST}")):
                self._load(manifest_path)

    def _load(self, path: Path) -> None:
        try:
            manifest = read_manifest(path.parent)
        except (yaml.YAMLError, ValidationError) as exc:
            # one broken plugin must not take the others down; /healthz reports it
            self.problems.append(f"{path}: {exc}")
            return
        # the first path listed wins, so an operator can shadow a bundled trainer
        self.trainers.setdefault(manifest.name, manifest)

    def get(self, framework: str) -> TrainerManifest:
        try:
            return self.trainers[framework]
        except KeyError:
            known = ", ".join(sorted(self.trainers)) or "none"
            raise UnknownTrainer(f"unknown framework {framework!r}; registered: {known}") from None

    def find(self, framework: str) -> TrainerManifest:
        """get(), but a framework not registered rescans the paths once first: a plugin added as
        a new folder after start-up is usable without a restart."""
        if framework not in self.trainers:
            self.rescan()
        return self.get(framework)

    def resolve(self, framework: str, task_type: str, model_name: str) -> TrainerManifest:
        """The trainer for a job (find(): an unknown framework rescans once)."""
        manifest = self.find(framework)
        task = dice_name(task_type)
        if task not in {t.value for t in manifest.task_types}:
            supported = ", ".join(t.value for t in manifest.task_types)
            raise UnknownTrainer(
                f"framework {framework!r} does not support task_type {task!r}; supported: {supported}"
            )
        if not manifest.supports(task, model_name):
            raise UnknownTrainer(
                f"framework {framework!r} has no model {model_name!r}; models: {', '.join(manifest.models)}"
            )
        return manifest
