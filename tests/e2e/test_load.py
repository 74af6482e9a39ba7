"""The API under many concurrent clients: a real uvicorn server on SQLite, 500 clients at once.

Every request must get an answer (within a generous deadline: this is about liveness, not speed; the
speed figures are bench/api_load.py's), no 5xx other than a deliberate 503 with Retry-After, and no
job lost: the jobs in the database are exactly the 201 answers.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest
from sqlalchemy import func, select

from kdservice.db import make_engine, make_sessionmaker
from kdservice.tables import Job
from tests.helpers import TINY_SPEC, Service, service_env

CLIENTS = 500
REQUESTS_PER_CLIENT = 3
DEADLINE_S = 90  # per request; the server used to stall for up to two minutes past ~40 clients


async def _storm(url: str, key: str, job_ids: list[str]) -> tuple[list[tuple[str, int, str | None]], list]:
    auth = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=CLIENTS + 10, max_keepalive_connections=CLIENTS + 10)
    done = asyncio.Event()
    health: list = []

    async def client(i: int, http: httpx.AsyncClient) -> list[tuple[str, int, str | None]]:
        answers = []
        for r in range(REQUESTS_PER_CLIENT):
            kind = ("get", "list", "post")[(i + r) % 3]
            try:
                if kind == "get":
                    response = await http.get(f"/v1/jobs/{job_ids[i % len(job_ids)]}")
                elif kind == "list":
                    response = await http.get("/v1/jobs", params={"limit": 5})
                else:
                    response = await http.post("/v1/jobs", json=TINY_SPEC)
            except httpx.HTTPError as exc:
                raise AssertionError(f"client {i}, request {r} ({kind}): {exc!r}") from exc
            answers.append((kind, response.status_code, response.headers.get("retry-after")))
        return answers

    async def probe_health() -> None:  # liveness while the storm runs, on its own connection
        async with httpx.AsyncClient(base_url=url, timeout=DEADLINE_S) as http:
            while not done.is_set():
                try:
                    health.append((await http.get("/healthz")).status_code)
                except httpx.HTTPError as exc:
                    health.append(type(exc).__name__)
                await asyncio.sleep(0.2)

    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=DEADLINE_S, limits=limits) as http:
        prober = asyncio.create_task(probe_health())
        results = await asyncio.gather(*(client(i, http) for i in range(CLIENTS)), return_exceptions=True)
        done.set()
        await prober
    answers, failures = [], []
    for result in results:
        if isinstance(result, BaseException):
            failures.append(repr(result))
        else:
            answers.extend(result)
    return answers, failures + [h for h in health if h != 200]


@pytest.mark.slow
def test_500_concurrent_clients_all_get_answers_and_no_job_is_lost(tmp_path):
    service = Service(tmp_path, service_env(tmp_path))
    try:
        service.start_api()
        job_ids = [service.submit({**TINY_SPEC, "name": f"seed{i}"}) for i in range(5)]
        answers, failures = asyncio.run(_storm(service.url, service.key, job_ids))
        assert failures == [], failures[:5]
        statuses = Counter((kind, status) for kind, status, _ in answers)
        bad = {k: n for k, n in statuses.items() if not (200 <= k[1] < 500 or k[1] == 503)}
        assert bad == {}, (statuses, service.logs("api.log"))
        assert all(retry for _, status, retry in answers if status == 503), "a 503 without Retry-After"
        assert statuses[("get", 200)] and statuses[("list", 200)] and statuses[("post", 201)], statuses
        sessions = make_sessionmaker(make_engine(service.env["KD_DATABASE_URL"]))
        with sessions() as session:
            jobs = session.scalar(select(func.count()).select_from(Job))
        assert jobs == len(job_ids) + statuses[("post", 201)]
        assert service.http.get("/healthz").status_code == 200
    finally:
        service.stop()
