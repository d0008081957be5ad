"""A reverse proxy that makes every HTTP request take `delay` seconds longer (benchmark 3's
"backend slowed to 2 s per callback").

HTTP-aware on purpose: the SDK keeps its connection open (keep-alive), so a TCP forwarder that
delays only new connections would slow the first callback and no other. Each request is held for
`delay` seconds, then forwarded unchanged to the upstream (Serve) and its reply passed back. It
counts the requests it forwarded, per path kind, on `GET /__proxy_stats`; `POST /__proxy_delay?s=2`
sets the delay (and resets the counts), so one deployment serves the normal and the slowed runs.

    python bench/_slow_proxy.py UPSTREAM_URL PORT DELAY_S
"""
from __future__ import annotations

import asyncio
import collections
import json
import sys
from typing import Any

import httpx
import uvicorn

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host", "content-length"}


class SlowProxy:
    def __init__(self, upstream: str, delay_s: float) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay_s = delay_s
        self.counts: collections.Counter[str] = collections.Counter()
        self.client: httpx.AsyncClient | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.client = httpx.AsyncClient(timeout=120, trust_env=False)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if path == "/__proxy_delay":  # the bench switches the delay between runs (?s=2)
            self.delay_s = float(scope.get("query_string", b"").decode().partition("s=")[2] or 0)
            self.counts.clear()
            path = "/__proxy_stats"
        if path == "/__proxy_stats":
            body = json.dumps(dict(self.counts)).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        # /v1/jobs/{id}/heartbeat -> "heartbeat": which callbacks the trainer made
        self.counts[path.rstrip("/").rsplit("/", 1)[-1]] += 1
        await asyncio.sleep(self.delay_s)
        query = scope.get("query_string", b"").decode()
        url = f"{self.upstream}{path}" + (f"?{query}" if query else "")
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k.decode().lower() not in HOP_BY_HOP]
        reply = await self.client.request(scope["method"], url, headers=headers, content=b"".join(chunks))
        out = [(k.encode(), v.encode()) for k, v in reply.headers.items() if k.lower() not in HOP_BY_HOP]
        await send({"type": "http.response.start", "status": reply.status_code, "headers": out})
        await send({"type": "http.response.body", "body": reply.content})


def main() -> None:
    upstream, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    uvicorn.run(SlowProxy(upstream, delay), host="127.0.0.1", port=port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
