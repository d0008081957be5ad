"""What every route needs, built once per Serve replica (or per test app)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ray_app.config import Settings
from ray_app.runtime.registry import TrainerManifest, TrainerRegistry
from ray_app.store.actor import StoreClient


@dataclass
class AppContext:
    settings: Settings
    store: StoreClient

    @cached_property
    def api_tokens(self) -> list[str]:
        return self.settings.resolved_api_tokens()

    @cached_property
    def jwt_secret(self) -> str:
        return self.settings.resolved_jwt_secret()

    @cached_property
    def registry(self) -> TrainerRegistry:
        return TrainerRegistry(self.settings.trainer_paths)

    def resolve_trainer(self, framework: str, task_type: str, model_name: str) -> TrainerManifest:
        """The trainer for a job; a framework not seen yet rescans the trainer paths once, so a
        plugin added as a new folder is usable without a restart."""
        if framework not in self.registry.trainers:
            self.__dict__["registry"] = TrainerRegistry(self.settings.trainer_paths)
        return self.registry.resolve(framework, task_type, model_name)
