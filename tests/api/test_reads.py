"""GET /v1/jobs/{id} and GET /v1/jobs answer from Core reads (api/reads.py): the bodies must be byte for byte
what the JobDetail and JobPage models serialise the same rows to, and the key checks (401 before anything,
a revocation at once) and owner isolation must hold on them as on every route. Real uvicorn (thread),
SQLite (and PostgreSQL where KD_TEST_POSTGRES_URL names one), the worker's real JobStore writing the rows."""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text, update

from api.routes.jobs import job_detail
from api.schemas import JobDetail, JobPage, JobSummary
from kdservice.db import make_engine, make_sessionmaker
from kdservice.jobstore import JobStore
from kdservice.security import create_api_key, revoke_api_key
from kdservice.tables import ApiKey, Job, utcnow
from tests.helpers import TINY_SPEC, ApiServer, assert_problem, module_settings, serve

POSTGRES_URL = os.environ.get("KD_TEST_POSTGRES_URL")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def api_server(request, tmp_path_factory: pytest.TempPathFactory):
    """The API on SQLite (reads in the event loop) and, where the CI's server is, on PostgreSQL (reads in
    the database threads): the same bodies from another driver and its own type conversions."""
    if request.param == "sqlite":
        yield from serve(module_settings(tmp_path_factory))
        return
    if not POSTGRES_URL:
        pytest.skip("KD_TEST_POSTGRES_URL is not set")
    schema = f"kd_reads_{uuid.uuid4().hex[:10]}"  # its own tables, found first on the search_path
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}options=-csearch_path%3D{schema}"
    try:
        yield from serve(module_settings(tmp_path_factory, database_url=url))
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(scope="module")
def sessions(api_server: ApiServer):
    engine = make_engine(api_server.settings.database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _submit(client, name: str) -> str:
    response = client.post("/v1/jobs", json={**TINY_SPEC, "name": name})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _jobs_in_every_shape(api_server: ApiServer, client, sessions) -> list[str]:
    """Queued; running with progress; succeeded with a summary; failed with an error; cancelled; and an old
    row the checks never saw: an int fraction, an unknown progress key, NaN, infinity, big and odd values."""
    store = JobStore.for_settings(api_server.settings)
    queued, running, succeeded, failed, cancelled, odd = (_submit(client, n) for n in (
        "queued", "running", "succeeded", "failed", "cancelled", "odd"))
    for job_id in (running, succeeded, failed, odd):
        assert store.claim(job_id, "w1") is not None
    store.set_progress(running, "w1", "distilling", {"phase": "distilling", "epoch": 3, "epochs": 10,
                                                     "step": 7, "steps": 40, "fraction": 0.3125,
                                                     "eta_seconds": 12.5})
    summary = {"student_kd": {"clean_acc": {"mean": 0.9123456789, "ci_half_width": 0.0125, "n": 3},
                              "params": 78042, "macs": 1.25e7, "flops": 2.5e7, "latency_ms": 0.000123},
               "kd_vs_baseline": {"clean_acc": {"mean": -0.0, "p_value": 1e-17}}, "seeds": 3}
    assert store.finish(succeeded, "w1", "succeeded", results_summary=summary)
    assert store.finish(failed, "w1", "failed", error_code="out_of_memory", error_message="ran out: 12 GB < 16 GB")
    assert client.post(f"/v1/jobs/{cancelled}/cancel").status_code == 202
    numbers = {"big": 2**70, "nested": [{"a": [1.5]}]}
    if api_server.settings.database_url.startswith("sqlite"):  # PostgreSQL's json type refuses NaN
        numbers |= {"nan": float("nan"), "inf": float("inf")}
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == odd).values(
            progress={"fraction": 1, "epoch": 2.0, "unknown": "dropped"}, error_code="x",
            error_message='\u00e9 \U0001f600 "quoted" </script>\n\t',
            spec={**TINY_SPEC, "name": "odd", "note": ["\u00e9", 1e300, -0.0, 10**20, None, True]},
            results_summary=numbers))
    return [queued, running, succeeded, failed, cancelled, odd]


def test_bodies_are_the_models_bytes(api_server: ApiServer, sessions):
    key = api_server.new_key("shapes")
    with api_server.client(key) as client:
        ids = _jobs_in_every_shape(api_server, client, sessions)
        with sessions() as session:
            for job_id in ids:
                body = client.get(f"/v1/jobs/{job_id}").content
                expected = job_detail(session, session.get(Job, job_id)).model_dump_json().encode()
                assert body == expected, job_id
                assert JobDetail.model_validate_json(body).model_dump_json().encode() == body
            owner = session.query(ApiKey).filter(ApiKey.name == "shapes").one()
            newest_first = session.query(Job).filter(Job.owner_id == owner.id).order_by(
                Job.created_at.desc(), Job.id.desc()).all()
        page = client.get("/v1/jobs", params={"limit": 4})
        first = JobPage.model_validate_json(page.content)
        expected_page = JobPage(items=[JobSummary.from_row(j) for j in newest_first[:4]],
                                next_cursor=first.next_cursor)
        assert page.content == expected_page.model_dump_json().encode() and first.next_cursor
        rest = client.get("/v1/jobs", params={"limit": 4, "cursor": first.next_cursor}).content
        assert rest == JobPage(items=[JobSummary.from_row(j) for j in newest_first[4:]]).model_dump_json().encode()
    assert json.loads(rest)["next_cursor"] is None


def test_another_owners_job_answers_exactly_as_a_missing_one(api_server: ApiServer):
    with api_server.client(api_server.new_key("owner")) as owner:
        job_id = _submit(owner, "mine")
    missing = "0" * 32
    with api_server.client(api_server.new_key("other")) as other:
        theirs, nothing = other.get(f"/v1/jobs/{job_id}"), other.get(f"/v1/jobs/{missing}")
        listed = other.get("/v1/jobs").json()
    assert_problem(theirs, 404, "job_id")
    assert_problem(nothing, 404, "job_id")
    assert theirs.text.replace(job_id, missing) == nothing.text
    assert theirs.headers.items() == nothing.headers.items()
    assert listed == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("job_path", ["0" * 32, "not-an-id", "x" * 5000, "%00"])
@pytest.mark.parametrize(("authorization", "words"), [
    (None, "missing"), ("Basic dTpw", "Bearer"), ("Bearer nope", "unknown"), ("Bearer " + "k" * 300, "unknown"),
])
def test_a_key_that_does_not_work_is_a_401_before_any_404(api_server: ApiServer, job_path, authorization, words):
    headers = {"Authorization": authorization} if authorization else {}
    with httpx.Client(base_url=api_server.base_url, headers=headers, timeout=30) as client:
        response = client.get(f"/v1/jobs/{job_path}")
        body = assert_problem(response, 401, "Authorization")
        assert words in body["detail"] and response.headers["www-authenticate"] == 'Bearer realm="kd"'
        # The list's query is validated after its key: a bad limit with a bad key is still a 401.
        assert_problem(client.get("/v1/jobs", params={"limit": 0}), 401, "Authorization")


def test_revocation_and_expiry_count_at_the_very_next_request(api_server: ApiServer, sessions):
    key = api_server.new_key("revoked-soon")
    with api_server.client(key) as client:
        job_id = _submit(client, "before")
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200
        with sessions.begin() as session:
            row = session.query(ApiKey).filter(ApiKey.name == "revoked-soon").one()
            revoke_api_key(session, row.id)
        for path in (f"/v1/jobs/{job_id}", "/v1/jobs"):
            assert "revoked" in assert_problem(client.get(path), 401, "Authorization")["detail"]
    with sessions.begin() as session:
        _, expiring = create_api_key(session, "expiring", expires_in=timedelta(hours=1))
    with api_server.client(expiring) as client:
        job_id = _submit(client, "mine")
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200
        with sessions.begin() as session:
            session.execute(update(ApiKey).where(ApiKey.name == "expiring")
                            .values(expires_at=utcnow() - timedelta(seconds=1)))
        for path in (f"/v1/jobs/{job_id}", "/v1/jobs"):
            assert "expired" in assert_problem(client.get(path), 401, "Authorization")["detail"]


def test_other_methods_on_a_job_answer_as_on_every_route(api_server: ApiServer):
    """GET /v1/jobs/{id} is served ahead of FastAPI's router (api/routes/jobs.py): HEAD, PUT and PATCH still
    get 405 naming GET, DELETE and OPTIONS still reach their own handling, and the schema is FastAPI's."""
    with api_server.client(api_server.new_key("methods")) as client:
        job_id = _submit(client, "methods")
        for method in ("HEAD", "PUT", "PATCH"):
            response = client.request(method, f"/v1/jobs/{job_id}")
            assert (response.status_code, response.headers["allow"]) == (405, "GET"), method
        assert_problem(client.put(f"/v1/jobs/{job_id}"), 405)
        options = client.options(f"/v1/jobs/{job_id}")
        assert options.status_code == 204 and options.headers["allow"] == "DELETE, GET, OPTIONS"
        assert_problem(client.delete(f"/v1/jobs/{job_id}"), 409, "job_id")  # queued: the DELETE route's rule
        operation = client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}"]["get"]
    assert operation["security"] == [{"HTTPBearer": []}] and operation["parameters"][0]["name"] == "job_id"
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobDetail")
