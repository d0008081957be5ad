"""What the console's server decides without a browser: its policy's sources and the MLflow link."""

from __future__ import annotations

from ray_app import __version__
from ray_app.api.routes.system import mlflow_ui_url
from ray_app.config import Settings
from ray_app.console.server import s3_origin, security_headers


def test_the_policy_names_exactly_the_s3_endpoint_users_reach():
    public = Settings(s3_endpoint="http://10.0.0.5:8333", s3_public_endpoint="https://s3.example.org/base")
    assert s3_origin(public) == "https://s3.example.org"
    csp = security_headers(public)["Content-Security-Policy"]
    assert "img-src 'self' blob: https://s3.example.org;" in csp
    assert "connect-src 'self' https://s3.example.org;" in csp and "10.0.0.5" not in csp
    assert s3_origin(Settings(s3_endpoint="http://127.0.0.1:8333")) == "http://127.0.0.1:8333"
    assert s3_origin(Settings(storage_type="s3")) == "https://*.amazonaws.com"
    bare = security_headers(Settings(storage_type="minio"))["Content-Security-Policy"]
    assert "img-src 'self' blob:;" in bare and "connect-src 'self';" in bare
    assert "'unsafe-inline'" not in bare and "'unsafe-eval'" not in bare and "default-src 'none'" in bare


def test_the_mlflow_link_is_an_http_address_or_nothing():
    assert mlflow_ui_url(Settings(mlflow_tracking_uri="sqlite:///x.db")) is None
    assert mlflow_ui_url(Settings(mlflow_tracking_uri="http://mlflow:5000/")) == "http://mlflow:5000"
    assert mlflow_ui_url(Settings(mlflow_tracking_uri="sqlite:///x.db",
                                  mlflow_ui_url="https://ml.example.org")) == "https://ml.example.org"
    assert mlflow_ui_url(Settings(mlflow_ui_url="javascript:alert(1)")) is None


def test_info_tells_the_console_the_version_and_the_mlflow_ui(platform):
    r = platform.api("GET", "/v1/info")
    assert r.status_code == 200 and r.json() == {"version": __version__, "mlflow_ui_url": None}  # sqlite store
    assert platform.http.get(f"{platform.base_url}/v1/info").status_code == 401
