"""The typed Python client of the platform's API (DESIGN §10): what the `vtp` CLI and the tests
use, and what a user's own scripts can use from any machine with the API URL and a token.

    from ray_app.client import Client
    with Client("https://vtp.example", token="...") as vtp:   # or Client.from_env()
        version = vtp.upload_dataset("shapes/", "shapes").version
        job = vtp.submit(JobCreate(framework="ultralytics", ...))

Sync (`Client`) and async (`AsyncClient`) with the same methods; responses are the API's own
pydantic models; a refused request raises `APIError` with the status and the server's detail;
requests that are safe to repeat are retried with backoff (tenacity) on connection errors and
429/502/503/504.
"""

from ray_app.client._async_client import AsyncClient
from ray_app.client._client import Client
from ray_app.client._config import ClientConfig
from ray_app.client._errors import APIError, TransportError
from ray_app.client._stream import StreamMessage
from ray_app.client._uploads import UploadProgress, UploadResult

__all__ = ["APIError", "AsyncClient", "Client", "ClientConfig", "StreamMessage", "TransportError",
           "UploadProgress", "UploadResult"]
