"""Service plumbing: migrations (SQLite, PostgreSQL), health, metrics, OpenAPI, no torch, admin CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import inspect, text

from kdservice import workers
from kdservice.db import MIGRATIONS_DIR, make_engine, sessions, upgrade_database
from kdservice.jobstore import JobStore
from kdservice.settings import Settings
from kdservice.tables import utcnow
from tests import helpers
from tests.helpers import TINY_SPEC, ApiServer, assert_problem, module_settings, serve
from tests.paths import REPO

api_server = helpers.api_server
TABLES = {"api_keys", "jobs", "job_transitions", "job_metrics", "job_logs", "artifacts", "datasets", "models",
          "workers"}


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def test_migrations_apply_on_sqlite_and_are_idempotent(tmp_path):
    url = f"sqlite:///{tmp_path / 'sub' / 'kd.db'}"
    upgrade_database(url)
    upgrade_database(url)  # a second start (API + worker) changes nothing
    engine = make_engine(url)
    try:
        assert TABLES <= set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head()
    finally:
        engine.dispose()


def test_health_and_readiness(tmp_path_factory):
    settings = module_settings(tmp_path_factory, worker_stale_seconds=30)
    heartbeats = sessions(settings.database_url)
    for server in serve(settings):
        with server.client() as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            body = assert_problem(client.get("/readyz"), 503, "workers")  # no worker ever started
            assert [e["field"] for e in body["errors"]] == ["workers"] and "no worker" in body["detail"] + str(body)
            workers.beat(heartbeats, "w1@test")
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"database": "ok", "workers": "ok", "broker": "ok"}
            workers.beat(heartbeats, "w1@test", now=utcnow() - timedelta(seconds=31))  # went quiet
            body = assert_problem(client.get("/readyz"), 503, "workers")
            assert "KD_WORKER_STALE_SECONDS" in body["errors"][0]["message"]
            workers.beat(heartbeats, "w2@test")
            assert client.get("/readyz").status_code == 200  # any live worker will do
            shutil.rmtree(settings.broker_dir / "queue")  # the filesystem broker's folders are gone
            body = assert_problem(client.get("/readyz"), 503, "broker")
            assert [e["field"] for e in body["errors"]] == ["broker"]
            assert "broker/queue/" in body["errors"][0]["message"]
            assert str(settings.artifact_dir) not in str(body)  # no server path in an unauthenticated answer


def test_readiness_reports_an_unreachable_broker(tmp_path_factory):
    settings = module_settings(tmp_path_factory, broker_url="redis://127.0.0.1:1/0")
    for server in serve(settings):
        with server.client() as client:
            body = assert_problem(client.get("/readyz"), 503, "broker")
            assert "database" not in [e["field"] for e in body["errors"]]


def test_prometheus_metrics_come_from_the_database(api_server: ApiServer):
    with api_server.client(api_server.new_key("metrics")) as client:
        ids = [client.post("/v1/jobs", json=TINY_SPEC).json()["id"] for _ in range(3)]
        client.post(f"/v1/jobs/{ids[0]}/cancel")
        store = JobStore(api_server.settings.database_url, lease_seconds=60, max_attempts=3)
        assert store.claim(ids[1], "w") is not None and store.finish(ids[1], "w", "succeeded")
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(response.text) for s in family.samples}
    assert samples[("kd_jobs", (("state", "queued"),))] == 1
    assert samples[("kd_jobs", (("state", "cancelled"),))] == 1
    assert samples[("kd_jobs", (("state", "succeeded"),))] == 1
    assert samples[("kd_queue_depth", ())] == 1
    assert samples[("kd_job_duration_seconds_count", (("state", "succeeded"),))] == 1
    assert samples[("kd_job_duration_seconds_bucket", (("le", "+Inf"), ("state", "succeeded")))] == 1


def test_openapi_lists_every_route_with_request_examples(api_server: ApiServer):
    with api_server.client() as client:
        schema = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    routes = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    expected = {("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/{job_id}"),
                ("POST", "/v1/jobs/{job_id}/cancel"), ("DELETE", "/v1/jobs/{job_id}"),
                ("GET", "/v1/jobs/{job_id}/metrics"), ("GET", "/v1/jobs/{job_id}/events"),
                ("GET", "/v1/jobs/{job_id}/results"), ("GET", "/v1/jobs/{job_id}/artifacts"),
                ("GET", "/v1/jobs/{job_id}/artifacts/{name}"), ("POST", "/v1/datasets"),
                ("GET", "/v1/datasets"),
                ("GET", "/v1/datasets/{dataset_id}"), ("POST", "/v1/models"), ("GET", "/v1/models"),
                ("GET", "/v1/models/{model_id}"), ("GET", "/healthz"), ("GET", "/readyz"),
                ("GET", "/metrics")}
    assert expected <= routes
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            assert op.get("summary") and op.get("tags"), (method, path)
            for media in op.get("requestBody", {}).get("content", {}).values():
                assert "example" in media or "examples" in media, (method, path)


def test_request_path_never_imports_torch(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from fastapi.testclient import TestClient
        from api.app import create_app
        from kdservice.settings import Settings
        from kdservice.db import make_engine, make_sessionmaker
        from kdservice.security import create_api_key

        settings = Settings(artifact_dir={str(tmp_path)!r})
        with TestClient(create_app(settings)) as client:
            with make_sessionmaker(make_engine(settings.database_url)).begin() as session:
                key = create_api_key(session, "t")[1]
            headers = {{"Authorization": "Bearer " + key}}
            job = client.post("/v1/jobs", json={TINY_SPEC!r}, headers=headers)
            assert job.status_code == 201, job.text
            url = "/v1/jobs/" + job.json()["id"]
            assert client.post(url + "/cancel", headers=headers).status_code == 202
            assert "cancelled" in client.get(url + "/events", headers=headers).text
            assert client.get("/v1/jobs", headers=headers).status_code == 200
        print("torch" in sys.modules, job.status_code)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "201"]


def test_admin_create_key_prints_a_working_key(tmp_path):
    env = {**os.environ, "KD_ARTIFACT_DIR": str(tmp_path)}
    env.pop("KD_DATABASE_URL", None)
    result = subprocess.run([sys.executable, "-m", "kdcli.main", "admin", "create-key", "carol"], env=env,
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("kd_") and len(key) > 30
    assert key not in (tmp_path / "kd.db").read_bytes().decode("latin-1")  # stored hashed only
    for server in serve(Settings(artifact_dir=tmp_path, events_poll_seconds=0.05)):
        with server.client(key) as client:
            assert client.get("/v1/jobs").status_code == 200
        with server.client(key + "x") as client:
            assert_problem(client.get("/v1/jobs"), 401)


@pytest.mark.integration
def test_postgres_migrations_and_round_trip(tmp_path):
    base = os.environ.get("KD_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("KD_TEST_POSTGRES_URL is not set")
    # A schema of our own (search_path), so the test neither sees nor disturbs other tests' tables.
    schema = f"kd_api_{uuid.uuid4().hex[:10]}"
    admin = make_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    try:
        upgrade_database(url)
        upgrade_database(url)
        settings = Settings(artifact_dir=tmp_path, database_url=url, events_poll_seconds=0.05)
        for server in serve(settings):
            assert TABLES <= set(inspect(admin).get_table_names(schema=schema))
            with server.client(server.new_key("pg")) as client:
                created = client.post("/v1/jobs", json=TINY_SPEC, headers={"Idempotency-Key": "pg-1"})
                assert created.status_code == 201, created.text
                job_id = created.json()["id"]
                again = client.post("/v1/jobs", json=TINY_SPEC, headers={"Idempotency-Key": "pg-1"})
                assert again.status_code == 200 and again.json()["id"] == job_id
                fetched = client.get(f"/v1/jobs/{job_id}").json()
                assert fetched["state"] == "queued" and fetched["created_at"].endswith("Z")
                assert client.post(f"/v1/jobs/{job_id}/cancel").json()["state"] == "cancelled"
                page = client.get("/v1/jobs", params={"status": "cancelled"}).json()
                assert [j["id"] for j in page["items"]] == [job_id]
                assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
                workers.beat(sessions(url), "w1@pg")
                assert client.get("/readyz").status_code == 200
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_unexpected_errors_become_a_500_problem_without_details(tmp_path):
    from api.app import create_app

    settings = Settings(artifact_dir=tmp_path)
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    for server in serve(settings, app):
        with server.client() as client:
            body = assert_problem(client.get("/boom"), 500)
    assert "secret" not in body["detail"] and body["type"].endswith("internal-error")
