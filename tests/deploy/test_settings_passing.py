"""Settings are read from the environment once, where the platform starts, and handed to the
actors as the object (issue 14, point 7): it pickles (secrets included), and the Serve builder
binds one with its args over the environment."""

from __future__ import annotations

import pickle

import cloudpickle

from ray_app.config import Settings


def test_settings_pickle_with_secrets(tmp_path):
    s = Settings(data_dir=tmp_path, jwt_secret="j" * 32, api_tokens="t1,t2", s3_secret_key="k",
                 trainer_paths=f"{tmp_path}/a:{tmp_path}/b", pooled_runners="false")
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, pickle.loads)):
        back = loads(dumps(s))
        assert back == s
        assert back.jwt_secret.get_secret_value() == "j" * 32
        assert back.resolved_api_tokens() == ["t1", "t2"]
        assert back.s3_secret_key.get_secret_value() == "k"
        assert back.pooled_runners is False and back.to_env() == s.to_env()


def test_from_env_overrides_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VTP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VTP_HTTP_PORT", "8123")
    monkeypatch.setenv("VTP_CALLBACK_PORT", "9000")
    s = Settings.from_env({"VTP_HTTP_PORT": "8456", "VTP_API_TOKENS": "x,y", "NOT_VTP": "1"})
    assert (s.data_dir, s.http_port, s.callback_port) == (tmp_path, 8456, 9000)
    assert s.resolved_api_tokens() == ["x", "y"]


def test_serve_builder_binds_a_settings_object(monkeypatch, tmp_path):
    from ray_app.api.serve import build

    monkeypatch.setenv("VTP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VTP_HTTP_PORT", "8000")
    app = build({"http_port": 8765, "VTP_CONTROLLER_ENABLED": "false"})
    deployment = app._bound_deployment
    (settings,) = deployment.init_args
    assert isinstance(settings, Settings)
    assert (settings.data_dir, settings.http_port, settings.controller_enabled) == (tmp_path, 8765, False)


def test_no_actor_reads_settings_from_its_environment():
    """The actors' modules no longer push VTP_* settings into os.environ or build Settings()."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "ray_app"
    for rel in ("runtime/controller.py", "runtime/reconciler.py", "runtime/runner.py", "api/gateway.py", "api/serve.py"):
        text = (root / rel).read_text()
        assert "os.environ.update" not in text, rel
        assert "Settings()" not in text, rel


def test_start_up_refuses_a_storage_retry_window_the_liveness_timeouts_would_cut_short(tmp_path):
    """Issue 31: a trainer retrying storage for VTP_STORAGE_RETRY_S would be failed for good as
    silent or stalled first; such settings are refused, naming both."""
    import pytest
    from pydantic import ValidationError

    for given, named in (({"heartbeat_timeout_s": 60}, "VTP_HEARTBEAT_TIMEOUT_S (60s)"),
                         ({"stall_timeout_s": 120, "heartbeat_timeout_s": 300}, "VTP_STALL_TIMEOUT_S (120s)"),
                         ({"storage_retry_s": 300}, "VTP_HEARTBEAT_TIMEOUT_S (300s)")):
        with pytest.raises(ValidationError) as refused:
            Settings(data_dir=tmp_path, **given)
        message = str(refused.value)
        assert "VTP_STORAGE_RETRY_S (" in message and named in message, message
    assert Settings(data_dir=tmp_path).storage_retry_s == 120  # the defaults agree
    assert Settings(data_dir=tmp_path, heartbeat_timeout_s=60, storage_retry_s=50).storage_retry_s == 50
