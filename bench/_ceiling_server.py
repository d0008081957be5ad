"""The in-run reference of callback_ingestion.py: the platform's own FastAPI app
(`ray_app.api.app.create_app`, unbatched StoreClient, the same JobStore actor) under plain uvicorn.

    python bench/_ceiling_server.py RAY_ADDRESS PORT      (VTP_* settings from the environment)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import ray
    import uvicorn

    from ray_app.api.app import create_app
    from ray_app.config import NAMESPACE, Settings

    address, port = sys.argv[1], int(sys.argv[2])
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="WARNING")
    uvicorn.run(create_app(Settings()), host="127.0.0.1", port=port, access_log=False,
                log_level="warning", loop="auto", http="auto", backlog=4096)


if __name__ == "__main__":
    main()
