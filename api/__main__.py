"""`python -m api`: serve the API with uvicorn on KD_HOST:KD_PORT (migrations run at start)."""

from __future__ import annotations

import uvicorn

from kdservice.settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    uvicorn.run("api.app:create_app", factory=True, host=settings.host, port=settings.port)
