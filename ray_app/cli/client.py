"""HTTP client of the job API for the CLI: any base URL, token from the environment or the
embedded platform's stored default."""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Any

import httpx

from ray_app.config import Settings


class APIError(Exception):
    def __init__(self, status: int, detail: Any):
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


def default_base_url(settings: Settings) -> str:
    if os.environ.get("VTP_API_URL"):
        return os.environ["VTP_API_URL"].rstrip("/")
    from ray_app.local.platform import LocalState

    state = LocalState.load(settings.data_dir / "local.json")
    return f"http://127.0.0.1:{state.http_port}"


def default_token(settings: Settings) -> str | None:
    if os.environ.get("VTP_API_TOKEN"):
        return os.environ["VTP_API_TOKEN"]
    if settings.api_tokens:
        return settings.api_tokens[0].get_secret_value()
    path: Path = settings.api_token_file
    return path.read_text().strip() if path.exists() else None


class Client:
    def __init__(self, base_url: str, token: str | None, timeout: float = 30.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise APIError(0, f"cannot reach {self.http.base_url}: {exc}") from None
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise APIError(resp.status_code, detail)
        return resp.json()

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/v1/jobs", json=body)

    def get(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/jobs/{job_id}")

    def list(self, **params: Any) -> dict[str, Any]:
        return self.request("GET", "/v1/jobs", params={k: v for k, v in params.items() if v is not None})

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/jobs/{job_id}/cancel")

    def logs(self, job_id: str, after: int = 0) -> dict[str, Any]:
        return self.request("GET", f"/v1/jobs/{job_id}/logs", params={"after": after})

    def events(self, job_id: str, after: int = 0) -> dict[str, Any]:
        return self.request("GET", f"/v1/jobs/{job_id}/events", params={"after": after})

    def predict(self, job_id: str, images: builtins.list[Path], conf: float = 0.25, top_k: int = 5) -> dict[str, Any]:
        files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in images]
        return self.request("POST", f"/v1/jobs/{job_id}/predict", files=files,
                            data={"conf": str(conf), "top_k": str(top_k)}, timeout=300)

    def metrics(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/jobs/{job_id}/metrics")
