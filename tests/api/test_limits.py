"""Hostile and huge input on every route answers a 4xx problem, never a 5xx: body size, spec limits, resource
caps, cursors, Last-Event-ID, OPTIONS, a job's own non-finite numbers. Real uvicorn (thread) and SQLite."""

from __future__ import annotations

import base64
import copy
import json
import re

import pytest

from kdservice.jobstore import JobStore
from tests.helpers import TINY_SPEC, ApiServer, assert_problem, module_settings, read_response, send_head, serve

REQUEST_LIMIT = 100_000


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory):
    yield from serve(module_settings(tmp_path_factory, request_max_bytes=REQUEST_LIMIT))


@pytest.fixture(scope="module")
def client(api_server: ApiServer):
    with api_server.client(api_server.new_key("limits")) as c:
        yield c


def spec_with(path: str, value) -> dict:
    spec = copy.deepcopy(TINY_SPEC)
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return spec


# --- request bodies

def test_json_body_over_the_limit_is_413(client):
    padded = {**TINY_SPEC, "name": "x" * (REQUEST_LIMIT + 10)}
    body = assert_problem(client.post("/v1/jobs", json=padded), 413, "body")
    assert "KD_REQUEST_MAX_BYTES" in body["detail"]

    def chunks():  # no Content-Length: counted as it streams in
        yield b'{"name": "'
        for _ in range(20):
            yield b"x" * 10_000
        yield b'"}'

    response = client.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert_problem(response, 413, "body")
    assert client.post("/v1/jobs", json=TINY_SPEC).status_code == 201  # under the limit: fine


def test_a_large_body_on_a_route_that_reads_none_is_refused_by_its_length(api_server: ApiServer):
    key = api_server.new_key()
    with send_head(api_server.base_url, "GET", "/v1/jobs", {"Authorization": f"Bearer {key}",
                                                          "Content-Length": str(50 * REQUEST_LIMIT)}) as sock:
        status, headers, body = read_response(sock)
    assert status == 413 and headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(("name", "raw", "status"), [
    ("NaN", json.dumps(TINY_SPEC).replace('"method": "kd"', '"method": "kd", "temperature": NaN'), 422),
    ("Infinity", json.dumps(TINY_SPEC).replace('"method": "kd"', '"method": "kd", "dkd_beta": Infinity'), 422),
    ("-Infinity", json.dumps(TINY_SPEC).replace('"lr": 0.1}', '"lr": -Infinity}', 1), 422),
    ("5000-digit integer", json.dumps(TINY_SPEC).replace('"epochs": 2', '"epochs": ' + "9" * 5000), 400),
    ("deeply nested", '{"name": ' + "[" * 40_000 + "]" * 40_000 + "}", 400),
])
def test_hostile_json_is_a_4xx(client, name, raw, status):
    response = client.post("/v1/jobs", content=raw.encode(), headers={"Content-Type": "application/json"})
    assert_problem(response, status)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\x13\x07\xff\xfe\xfd", "not UTF-8"),  # found by tests/api/test_schemathesis.py: a bare 400 before
    (json.dumps(TINY_SPEC).replace('"name": "tiny"', '"name": "caf\u00e9"').encode("latin-1"), "not UTF-8"),
    (b'{"name": ' + b"[" * 40_000 + b"]" * 40_000 + b"}", "nested too deep"),
    (json.dumps(TINY_SPEC).replace('"epochs": 2', '"epochs": ' + "9" * 5000).encode(), "too many digits"),
])
def test_an_unparsable_json_body_is_a_400_naming_the_body_and_why(client, raw, reason):
    response = client.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
    body = assert_problem(response, 400, "body")
    assert reason in body["detail"] and body["errors"][0]["message"] == body["detail"]


@pytest.mark.parametrize(("path", "value", "field"), [
    ("train.seed", 2**63, "train.seed"),
    ("train.seed", 10**30, "train.seed"),
    ("evaluate.seed", 2**64, "evaluate.seed"),
    ("dataset.subset", 10**20, "dataset.subset"),
    ("evaluate.max_images", 2**63, "evaluate.max_images"),
    ("distill.dkd_beta", float("inf"), "distill.dkd_beta"),
])
def test_numbers_beyond_64_bits_or_infinite_are_refused(client, path, value, field):
    raw = json.dumps(spec_with(path, value))  # Python writes Infinity, as a hostile client may
    response = client.post("/v1/jobs", content=raw.encode(), headers={"Content-Type": "application/json"})
    assert_problem(response, 422, field)


@pytest.mark.parametrize(("path", "value", "field"), [
    ("evaluate.severities", [1] * 10_000, "evaluate.severities"),
    ("evaluate.severities", [7] * 10_000, "evaluate.severities"),
    ("evaluate.corruptions", ["snow"] * 10_000, "evaluate.corruptions"),
    ("export", ["onnx"] * 10_000, "export"),
    ("train.milestones", list(range(1, 10_001)), "train.milestones"),
])
def test_ten_thousand_element_lists_are_refused_briefly(client, path, value, field):
    response = client.post("/v1/jobs", json=spec_with(path, value))
    body = assert_problem(response, 422)
    assert any(e["field"].startswith(field) for e in body["errors"]), body["errors"][:3]
    assert len(body["errors"]) <= 51 and len(response.content) < 20_000


# --- resource caps

@pytest.mark.parametrize(("changes", "field"), [
    ({"train.batch_size": 65536, "dataset": {"source": "cifar100", "image_size": 512}}, "train.batch_size"),
    ({"teacher": {"arch": "wrn_28_10", "train": {"epochs": 5000, "batch_size": 64}},
      "dataset": {"source": "svhn", "image_size": 128}}, "teacher.train.epochs"),
])
def test_jobs_estimated_over_the_memory_or_compute_limit_are_refused(client, changes, field):
    spec = copy.deepcopy(TINY_SPEC)
    for key, value in changes.items():
        if "." in key:
            part, leaf = key.split(".")
            spec[part] = {**spec[part], leaf: value}
        else:
            spec[key] = value
    body = assert_problem(client.post("/v1/jobs", json=spec), 422, field)
    message = next(e["message"] for e in body["errors"] if e["field"] == field)
    assert re.search(r"KD_MAX_JOB_(MEMORY_BYTES|TRAIN_FLOPS)", message), message


def test_resource_limits_are_the_servers_to_set(tmp_path_factory):
    settings = module_settings(tmp_path_factory, max_job_train_flops=1e9, max_job_memory_bytes=1_000_000)
    for server in serve(settings):
        with server.client(server.new_key()) as c:
            body = assert_problem(c.post("/v1/jobs", json=TINY_SPEC), 422)
    messages = {e["field"]: e["message"] for e in body["errors"]}
    batch = next(f for f in messages if f.endswith("batch_size"))
    epochs = next(f for f in messages if f.endswith("epochs"))
    assert "KD_MAX_JOB_MEMORY_BYTES" in messages[batch] and "KD_MAX_JOB_TRAIN_FLOPS" in messages[epochs]


# --- cursors, headers, path parameters

def _cursor(when: str, job_id: str = "f" * 32) -> str:
    return base64.urlsafe_b64encode(json.dumps([when, job_id]).encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    _cursor("0001-01-01T00:00:00+01:00"),  # UTC year 0: overflows converting to UTC
    _cursor("9999-12-31T23:00:00-05:00"),  # UTC year 10000
    _cursor("0000-01-01T00:00:00+00:00"),
    _cursor("99999-01-01T00:00:00+00:00"),
    _cursor("2026-01-01T00:00:00+00:00", "a\x00b"),
    _cursor("2026-01-01T00:00:00+00:00", "j" * 300),
    _cursor("2026-01-01T00:00:00+00:00", 12345),  # type: ignore[arg-type]
])
def test_cursors_out_of_range_are_422(client, cursor):
    assert_problem(client.get("/v1/jobs", params={"cursor": cursor}), 422, "cursor")


def test_huge_cursor_and_job_ids_are_4xx(client):
    assert_problem(client.get("/v1/jobs", params={"cursor": "A" * 5000}), 422, "cursor")
    assert_problem(client.get(f"/v1/jobs/{'f' * 5000}"), 404, "job_id")
    assert_problem(client.get("/v1/jobs/%00"), 404, "job_id")
    assert_problem(client.get("/v1/datasets/%00%ff"), 404, "dataset_id")


@pytest.mark.parametrize("value", ["9" * 30, str(2**63), "-1", "1e3", "ten"])
def test_last_event_id_out_of_the_int64_range_is_422(client, value):
    job = client.post("/v1/jobs", json=TINY_SPEC).json()
    assert_problem(client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": value}), 422,
                   "last-event-id")


def test_idempotency_keys_with_odd_bytes(api_server: ApiServer, client):
    key = api_server.new_key()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = json.dumps(TINY_SPEC).encode()
    # Bytes over 0x7f arrive (as latin-1); CR/LF would end the header (the server refuses such a head).
    for value in ("caf\xe9-1", "\xff\xfe"):
        with send_head(api_server.base_url, "POST", "/v1/jobs",
                       {**headers, "Idempotency-Key": value, "Content-Length": str(len(body))}, body) as sock:
            assert read_response(sock)[0] == 201
    with send_head(api_server.base_url, "POST", "/v1/jobs",
                   {**headers, "Idempotency-Key": "a\rInjected: yes", "Content-Length": str(len(body))},
                   body) as sock:
        assert read_response(sock)[0] == 400


# --- OPTIONS and the OpenAPI schema

def _concrete(path: str) -> str:
    return re.sub(r"\{name\}", "results.json", re.sub(r"\{[a-z_]+_id\}", "f" * 32, path))


def test_options_lists_the_methods_of_every_route_without_a_key(api_server: ApiServer):
    with api_server.client() as anonymous:
        paths = anonymous.get("/openapi.json").json()["paths"]
        for path, operations in paths.items():
            response = anonymous.options(_concrete(path))
            assert response.status_code == 204, (path, response.text)
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            assert {m.upper() for m in operations} | {"OPTIONS"} <= allowed, (path, allowed)
            assert "access-control-allow-origin" not in response.headers
        assert_problem(anonymous.options("/v1/nothing"), 404)


def test_every_error_answer_is_documented_as_a_problem(api_server: ApiServer):
    """Found by tests/api/test_schemathesis.py: error bodies were documented under application/json (which no
    error is) and application/problem+json had no schema, so no client could check them."""
    with api_server.client() as anonymous:
        document = anonymous.get("/openapi.json").json()
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    errors = [(path, method, status, answer) for path, operations in document["paths"].items()
              for method, operation in operations.items() for status, answer in operation["responses"].items()
              if status[0] in "45"]
    assert len(errors) > 50
    for path, method, status, answer in errors:
        assert answer["content"] == problem, (method, path, status, answer)
    assert {"type", "title", "status", "detail"} <= set(document["components"]["schemas"]["Problem"]["required"])
    submit = document["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"400", "401", "409", "413", "422", "503"} <= set(submit)  # unparsable body, the request gate, queue


def test_openapi_states_the_teachers_weights_or_train_rule(api_server: ApiServer):
    with api_server.client() as anonymous:
        teacher = anonymous.get("/openapi.json").json()["components"]["schemas"]["TeacherSpec"]
    assert sorted(b["required"] for b in teacher["anyOf"]) == [["train"], ["weights"]]


# --- a job's own numbers

def test_non_finite_numbers_of_a_job_answer_null_not_500(api_server: ApiServer, client):
    """A diverged run has NaN/Infinity losses: what the worker stores and writes must still be served."""
    job = client.post("/v1/jobs", json=TINY_SPEC).json()
    store = JobStore.for_settings(api_server.settings)
    assert store.claim(job["id"], "w") is not None
    store.set_progress(job["id"], "w", "distilling", {"fraction": 0.5, "eta_seconds": float("inf")})
    store.add_metric(job["id"], "distilling", 0, {"train_loss": float("inf"), "val_acc": 0.1,
                                                  "lr": 0.1, "grad_norm": float("nan")})
    out = api_server.settings.job_dir(job["id"])
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps({"student_kd": {"clean_acc": 0.1, "nll": float("nan"),
                                                                  "ece": float("inf")}}))
    assert store.finish(job["id"], "w", "succeeded",
                        results_summary={"student_kd": {"clean_acc": float("nan"), "latency_ms": None}})
    detail = client.get(f"/v1/jobs/{job['id']}")
    assert detail.status_code == 200 and detail.json()["results_summary"]["student_kd"]["clean_acc"] is None
    assert detail.json()["progress"]["eta_seconds"] is None
    metrics = client.get(f"/v1/jobs/{job['id']}/metrics")
    assert metrics.status_code == 200 and metrics.json()["phases"]["distilling"]["train_loss"] == [None]
    results = client.get(f"/v1/jobs/{job['id']}/results")
    assert results.status_code == 200 and results.json()["student_kd"] == {"clean_acc": 0.1, "nll": None,
                                                                           "ece": None}
