"""Where the API is and which token to send: flags, else VTP_API_URL / VTP_API_TOKEN, else (on the
machine that runs the single-machine platform) its address and stored token."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ClientConfig:
    base_url: str
    token: str | None = field(default=None, repr=False)
    timeout: float = 30.0

    @classmethod
    def resolve(cls, url: str | None = None, token: str | None = None, timeout: float = 30.0) -> "ClientConfig":
        url = url or os.environ.get("VTP_API_URL")
        token = token or os.environ.get("VTP_API_TOKEN")
        if not url or token is None:
            local_url, local_token = _local_platform()
            url, token = url or local_url, token if token is not None else local_token
        if not url:
            raise ValueError("no API URL: set VTP_API_URL (or --url), or run `vtp up` on this machine")
        return cls(url.rstrip("/"), token or None, timeout)


def _local_platform() -> tuple[str | None, str | None]:
    """The single-machine platform's URL and token, when this machine runs one (`vtp up`)."""
    from ray_app.config import Settings

    settings = Settings()
    url = None
    state_file = settings.data_dir / "local.json"
    if state_file.exists():
        from ray_app.local.platform import LocalState

        url = f"http://127.0.0.1:{LocalState.load(state_file).http_port}"
    token = None
    if settings.api_tokens:
        token = settings.api_tokens[0].get_secret_value()
    elif settings.api_token_file.exists():
        token = settings.api_token_file.read_text().strip()
    return url, token
