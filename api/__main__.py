"""`python -m api`: serve the API with uvicorn on KD_HOST:KD_PORT (migrations run at start).

KD_API_WORKERS processes, KD_LOG_LEVEL; the same settings as `make up` (scripts/serve.py).
"""

from __future__ import annotations

import uvicorn

from kdservice.settings import API_KEEP_ALIVE_SECONDS, get_settings

if __name__ == "__main__":
    settings = get_settings()
    uvicorn.run("api.app:create_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.api_workers, log_level=settings.log_level, timeout_keep_alive=API_KEEP_ALIVE_SECONDS)
