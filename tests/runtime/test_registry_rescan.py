"""An unknown framework rescans the trainer paths once (TrainerRegistry.find), for the API and the
controller alike: a plugin added as a new folder is usable without a restart."""

from __future__ import annotations

import pytest

from ray_app.runtime.registry import TrainerRegistry, UnknownTrainer


def _plugin(root, name):
    (root / name).mkdir()
    (root / name / "trainer.yaml").write_text(f"name: {name}\ntask_types: [image_classification]\n")


def test_unknown_framework_rescans_once(tmp_path):
    _plugin(tmp_path, "first")
    registry = TrainerRegistry([tmp_path])
    _plugin(tmp_path, "later")
    with pytest.raises(UnknownTrainer):
        registry.get("later")  # get() does not rescan
    assert registry.find("later").name == "later"
    assert registry.resolve("later", "image_classification", "any").name == "later"
    assert set(registry.trainers) == {"first", "later"}
    with pytest.raises(UnknownTrainer, match="registered: first, later"):
        registry.find("never")
