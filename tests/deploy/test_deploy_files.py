"""serve_config.yaml and cluster.yaml, validated with Ray's own schemas; production settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import ServeDeploySchema

from ray_app.config import MissingProductionSetting, Settings

REPO = Path(__file__).resolve().parents[2]


def test_serve_config_is_valid_and_binds_loopback():
    config = ServeDeploySchema.model_validate(yaml.safe_load((REPO / "serve_config.yaml").read_text()))
    assert config.http_options.host == "127.0.0.1"  # Serve's own default would be 0.0.0.0
    (app,) = config.applications
    assert app.import_path == "ray_app.api.serve:build" and app.route_prefix == "/"
    module, _, attr = app.import_path.partition(":")
    builder = getattr(__import__(module, fromlist=[attr]), attr)
    assert callable(builder)


def test_cluster_yaml_is_valid_with_cpu_head_and_autoscaling_gpu_workers():
    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(raw))  # what `ray up` checks
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_types = [t for t in types.values() if t["resources"].get("GPU", 0) > 0]
    assert gpu_types and all(t["min_workers"] == 0 < t["max_workers"] for t in gpu_types)


def test_production_without_secrets_refuses_to_start(monkeypatch, tmp_path):
    for name in ("VTP_JWT_SECRET", "VTP_API_TOKENS", "VTP_DATABASE_URL", "VTP_S3_ENDPOINT",
                 "VTP_S3_ACCESS_KEY", "VTP_S3_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(production=True, data_dir=tmp_path)
    with pytest.raises(MissingProductionSetting) as exc:
        settings.check_production()
    for name in ("VTP_JWT_SECRET", "VTP_API_TOKENS", "VTP_DATABASE_URL", "VTP_S3_ACCESS_KEY"):
        assert name in str(exc.value)
    with pytest.raises(MissingProductionSetting, match="VTP_JWT_SECRET"):
        settings.resolved_jwt_secret()
    assert not (tmp_path / "secrets").exists()  # no default was invented


def test_production_with_settings_starts(tmp_path):
    settings = Settings(production=True, data_dir=tmp_path, jwt_secret="s" * 32, api_tokens="a,b",
                        database_url="postgresql+psycopg://u@db/vtp", s3_endpoint="https://r2.example",
                        s3_access_key="k", s3_secret_key="s", storage_type="r2")
    settings.check_production()
    assert settings.resolved_api_tokens() == ["a", "b"]


def test_embedded_defaults_generate_secrets_once(tmp_path):
    first, second = Settings(data_dir=tmp_path), Settings(data_dir=tmp_path)
    assert first.resolved_jwt_secret() == second.resolved_jwt_secret()
    assert first.resolved_api_tokens() == second.resolved_api_tokens()
    assert (tmp_path / "secrets" / "api_token").stat().st_mode & 0o777 == 0o600
