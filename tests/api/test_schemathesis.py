"""Every operation of /openapi.json fuzzed by schemathesis against a real uvicorn server (SQLite, filesystem
broker, no worker): no 5xx, every answer documented (status code, content type, headers, body schema), the
key required, other methods refused (docs/SERVICE_API.md "Fuzzing").

The run is bounded and repeatable: a fixed seed, derandomized Hypothesis, no example database, MAX_EXAMPLES
per operation. Seeded objects (jobs in several states, a data set, a model) are added to the schema as
explicit examples of the path and query parameters, so every operation also runs on real objects, not
only on random ids that answer 404.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from kdservice import workers
from kdservice.db import make_engine, make_sessionmaker
from kdservice.jobstore import JobStore
from tests.helpers import (
    TINY_SPEC,
    ApiServer,
    finish_with_files,
    image_folder_files,
    module_settings,
    serve,
    zip_bytes,
)

pytestmark = pytest.mark.slow

# Per operation, fuzzing phase (the examples and coverage phases add their own cases): about 4,100 requests,
# 61-75 s for the module on 2 busy cores.
MAX_EXAMPLES = 200
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, ignored_auth, unsupported_method, allow_header_conformance,
          missing_required_header, negative_data_rejection]


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory):
    # A worker heartbeat is seeded once: readiness must not turn stale while the run lasts.
    yield from serve(module_settings(tmp_path_factory, worker_stale_seconds=86_400))


@dataclass
class Seeds:
    key: str
    queued: str  # a queued job
    running: str  # claimed by a (fake) worker: cancel answers 202 (cancelling), delete 409
    done: str  # succeeded, with metrics, a log line, results.json and an artifact
    finished: str  # cancelled: the one delete may remove
    artifacts: dict[str, str]  # name -> ETag of the succeeded job's files
    dataset: str
    model: str
    cursor: str  # a next_cursor the API returned


def _model_file() -> bytes:
    from safetensors.torch import save

    from kdcore.models import build_model

    return save(build_model("resnet8", 2).state_dict())


def _succeed(api_server: ApiServer, job_id: str) -> dict[str, str]:
    """Finish job_id as a worker would, with a results.json and a student; {name: ETag}."""
    store = JobStore.for_settings(api_server.settings)
    assert store.claim(job_id, "fuzz-worker") is not None
    store.set_progress(job_id, "fuzz-worker", "distilling", {"phase": "distilling", "fraction": 0.5})
    store.add_metric(job_id, "distilling", 0, {"train_loss": 1.5, "val_acc": 0.4, "lr": 0.1})
    store.add_log(job_id, "epoch 1 done")
    files = {"results.json": json.dumps({"student_kd": {"clean_acc": 0.6}}).encode(), "student.safetensors": b"w" * 64}
    rows = finish_with_files(store, job_id, "fuzz-worker", api_server.settings.job_dir(job_id), files,
                             {"student_kd": {"clean_acc": 0.6}})
    return {row["name"]: f'"{row["sha256"]}"' for row in rows}


@pytest.fixture(scope="module")
def seeds(api_server: ApiServer) -> Seeds:
    key = api_server.new_key("fuzzer")
    engine = make_engine(api_server.settings.database_url)
    workers.beat(make_sessionmaker(engine), "fuzz-worker@host")  # /readyz: 200, not "no worker"
    engine.dispose()
    with api_server.client(key) as client:
        def submit(name: str) -> str:
            response = client.post("/v1/jobs", json={**TINY_SPEC, "name": name})
            assert response.status_code == 201, response.text
            return response.json()["id"]

        queued, running, done, finished = (submit(n) for n in ("queued", "running", "done", "finished"))
        assert JobStore.for_settings(api_server.settings).claim(running, "fuzz-worker") is not None
        artifacts = _succeed(api_server, done)
        assert client.post(f"/v1/jobs/{finished}/cancel").status_code == 202
        archive = zip_bytes(image_folder_files({"a": 2, "b": 2}))
        dataset = client.post("/v1/datasets", files={"file": ("pets.zip", archive)})
        model = client.post("/v1/models", files={"file": ("t.safetensors", _model_file())},
                            data={"arch": "resnet8", "num_classes": "2"})
        assert (dataset.status_code, model.status_code) == (201, 201), (dataset.text, model.text)
        cursor = client.get("/v1/jobs", params={"limit": 1}).json()["next_cursor"]
    return Seeds(key, queued, running, done, finished, artifacts, dataset.json()["id"], model.json()["id"], cursor)


def _examples(seeds: Seeds) -> dict[tuple[str, str], dict[str, list[Any]]]:
    """(method, path) -> {parameter: example values}; the i-th values of an operation go in one request."""
    jobs = [seeds.queued, seeds.done]
    names = ["results.json", "student.safetensors", "student.safetensors"]
    return {
        ("get", "/v1/jobs"): {"cursor": [seeds.cursor]},
        ("get", "/v1/jobs/{job_id}"): {"job_id": jobs},
        # 204 for whichever phase deletes the cancelled job first (404 after), 409 for the running one.
        ("delete", "/v1/jobs/{job_id}"): {"job_id": [seeds.finished, seeds.running]},
        ("post", "/v1/jobs/{job_id}/cancel"): {"job_id": [seeds.running, seeds.done]},  # 202, 409
        ("get", "/v1/jobs/{job_id}/metrics"): {"job_id": jobs},
        ("get", "/v1/jobs/{job_id}/results"): {"job_id": jobs},
        ("get", "/v1/jobs/{job_id}/artifacts"): {"job_id": jobs},
        ("get", "/v1/jobs/{job_id}/artifacts/{name}"): {  # 200, 304, 200
            "job_id": [seeds.done], "name": names,
            "if-none-match": ['"other"', seeds.artifacts["student.safetensors"], "W/\"x\", \"y\""]},
        # The stream of a job that is not finished never ends: schemathesis stops reading after
        # max-stream-events (the first event comes at once), so the queued job is safe here too.
        ("get", "/v1/jobs/{job_id}/events"): {"job_id": [seeds.done, seeds.queued], "last-event-id": [0, 1]},
        ("get", "/v1/datasets/{dataset_id}"): {"dataset_id": [seeds.dataset]},
        ("get", "/v1/models/{model_id}"): {"model_id": [seeds.model]},
    }


def with_seeded_examples(raw: dict, seeds: Seeds) -> dict:
    """The schema with the seeded objects as parameter examples (what the checks compare with is untouched)."""
    raw = copy.deepcopy(raw)
    for (method, path), values in _examples(seeds).items():
        parameters = {p["name"]: p for p in raw["paths"][path][method]["parameters"]}
        assert set(values) <= set(parameters), (method, path, set(values) - set(parameters))
        for name, examples in values.items():
            parameters[name]["examples"] = {f"seeded-{i}": {"value": v} for i, v in enumerate(examples)}
    return raw


@pytest.fixture(scope="module")
def api_schema(api_server: ApiServer, seeds: Seeds) -> schemathesis.BaseSchema:
    raw = httpx.get(f"{api_server.base_url}/openapi.json").json()
    config = schemathesis.Config.from_dict({
        "seed": 0,
        "suppress-health-check": ["too_slow"],  # it times data generation: on a busy machine it would flake
        "base-url": api_server.base_url,
        "auth": {"openapi": {"HTTPBearer": {"bearer": seeds.key}}},
        "max-stream-events": 1,
        # The key above on every request (no generated Authorization headers): ignored_auth sends its own
        # requests without it and with a wrong one.
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none",
                       "with-security-parameters": False},
    })
    return schemathesis.openapi.from_dict(with_seeded_examples(raw, seeds), config=config)


@pytest.fixture(autouse=True)
def _pytest_node_id(request: pytest.FixtureRequest) -> None:
    # schemathesis' from_fixture renames the running test through `node._nodeid`, an attribute pytest 9.2
    # no longer has (it derives `nodeid` from `_id`): give it one, so each operation reports under its label.
    request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)


def test_valid_uploads_conform_to_the_schema(api_schema: schemathesis.BaseSchema, seeds: Seeds) -> None:
    """Generated upload bodies are never a valid archive or safetensors file (they all answer 422): one explicit
    case per upload route takes the 201 path through the same checks."""
    archive = zip_bytes(image_folder_files({"a": 2, "b": 2}))
    cases = [
        api_schema["/v1/datasets"]["POST"].Case(body={"file": archive, "name": "pets"},
                                                media_type="multipart/form-data"),
        api_schema["/v1/models"]["POST"].Case(body={"file": _model_file(), "arch": "resnet8", "num_classes": 2},
                                              media_type="multipart/form-data"),
    ]
    for case in cases:
        response = case.call_and_validate(headers={"Authorization": f"Bearer {seeds.key}"}, checks=CHECKS)
        assert response.status_code == 201, response.text


def test_the_event_stream_of_a_finished_job_conforms_to_the_schema(api_server: ApiServer, seeds: Seeds,
                                                                   api_schema: schemathesis.BaseSchema) -> None:
    """The fuzzing run reads one event per stream (a stream of a job that is not finished never ends); the
    whole stream of the succeeded job (state, progress and log events, then its end) is checked here."""
    with api_server.client(seeds.key) as client:
        response = client.get(f"/v1/jobs/{seeds.done}/events")
    assert [line[7:] for line in response.text.splitlines() if line.startswith("event: ")] == [
        "state", "progress", "log"]
    api_schema["/v1/jobs/{job_id}/events"]["GET"].validate_response(response)
