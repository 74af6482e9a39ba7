"""The end-to-end happy path against real Redis (broker) and PostgreSQL (job rows), started by .ci/run
(scripts/ci-services.sh). Each test gets its own PostgreSQL schema; skipped when the servers are unset."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.helpers import Service, tiny_spec, wait_until

REDIS_URL = os.environ.get("KD_TEST_REDIS_URL")
POSTGRES_URL = os.environ.get("KD_TEST_POSTGRES_URL")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (REDIS_URL and POSTGRES_URL),
                       reason="KD_TEST_REDIS_URL / KD_TEST_POSTGRES_URL unset (see scripts/ci-services.sh)"),
]


@pytest.fixture()
def postgres_schema_url():
    """A throw-away schema; the service finds it first on its search_path."""
    from sqlalchemy import create_engine, text

    schema = f"kd_e2e_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_job_succeeds_through_redis_and_postgres(tmp_path, postgres_schema_url):
    import torch
    from safetensors.torch import load_file

    from kdcore.models import build_model

    env = {"KD_ARTIFACT_DIR": str(tmp_path), "KD_DATABASE_URL": postgres_schema_url,
           "KD_BROKER_URL": REDIS_URL}
    service = Service(tmp_path, env)
    try:
        service.start_api()
        not_ready = service.http.get("/readyz").json()  # database and broker fine, no worker yet
        assert not_ready["status"] == 503 and [e["field"] for e in not_ready["errors"]] == ["workers"]
        service.start_worker("w1")
        wait_until(lambda: service.http.get("/readyz").status_code == 200, 120, 0.3, "the worker's heartbeat")
        job_id = service.submit(tiny_spec("integration"))
        job = service.wait_terminal(job_id, 300)
        assert job["state"] == "succeeded", job
        assert [t["state"] for t in job["transitions"]] == ["queued", "running", "succeeded"]
        response = service.http.get(f"/v1/jobs/{job_id}/artifacts/student.safetensors")
        assert response.status_code == 200
        target = tmp_path / "student.safetensors"
        target.write_bytes(response.content)
        model = build_model("resnet8", 10, 1, 8)
        model.load_state_dict(load_file(target), strict=True)
        assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    finally:
        service.stop()
