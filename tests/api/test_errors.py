"""Bad requests get a 4xx RFC 9457 problem naming the field; none gets a 500."""

from __future__ import annotations

import copy

import pytest

from tests import helpers
from tests.helpers import TINY_SPEC, ApiServer, assert_problem

api_server = helpers.api_server


def spec_with(path: str, value) -> dict:
    """TINY_SPEC with one dotted field set (value None deletes it)."""
    spec = copy.deepcopy(TINY_SPEC)
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return spec


@pytest.fixture(scope="module")
def client(api_server: ApiServer):
    with api_server.client(api_server.new_key("errors")) as c:
        yield c


BAD_SPECS = [
    ("unknown arch", spec_with("teacher.arch", "resnet9000"), "teacher.arch"),
    ("temperature 0", spec_with("distill.temperature", 0), "distill.temperature"),
    ("alpha 2", spec_with("distill.alpha", 2), "distill.alpha"),
    ("epochs 0", spec_with("train.epochs", 0), "train.epochs"),
    ("teacher without weights or train", spec_with("teacher.train", None), "teacher"),
    ("unknown corruption", spec_with("evaluate.corruptions", ["sunburn"]), "evaluate.corruptions.0"),
    ("unknown field", spec_with("distill.temprature", 3.0), "distill.temprature"),
    ("missing dataset", spec_with("dataset", None), "dataset"),
    ("upload without id", spec_with("dataset", {"source": "upload"}), "dataset"),
    ("unknown dataset id", spec_with("dataset", {"source": "upload", "dataset_id": "nope"}),
     "dataset.dataset_id"),
    ("unknown teacher weights", spec_with("teacher.weights", "0" * 32), "teacher.weights"),
    ("server path as weights", spec_with("teacher.weights", "/etc/passwd.safetensors"), "teacher.weights"),
    ("bad export format", spec_with("export", ["pickle"]), "export.0"),
    # The CIFAR-10-C/100-C arrays only fit CIFAR data (issue: official-source mismatches answer 422).
    ("official corruptions on digits", spec_with("evaluate.source", "official"), "evaluate.source"),
    ("official corruptions at 64 px", {**spec_with("evaluate.source", "official"),
                                       "dataset": {"source": "cifar10", "image_size": 64}}, "evaluate.source"),
    ("seeds and train.seed", {**spec_with("train.seed", 3), "seeds": [0, 1]}, "seeds"),
    ("eleven seeds", {**spec_with("train.seed", None), "seeds": list(range(11))}, "seeds"),
    # Strict types: nothing is converted (the JSON schema does not allow these either).
    ("epochs as a string", spec_with("train.epochs", "5"), "train.epochs"),
    ("baseline as 0", spec_with("baseline", 0), "baseline"),
]


@pytest.mark.parametrize(("spec", "field"), [(s, f) for _, s, f in BAD_SPECS],
                         ids=[n for n, _, _ in BAD_SPECS])
def test_bad_job_spec_names_the_field(client, spec, field):
    body = assert_problem(client.post("/v1/jobs", json=spec), 422, field)
    assert body["instance"] == "/v1/jobs"


def test_bad_json(client):
    response = client.post("/v1/jobs", content=b'{"name": "x", ',
                           headers={"Content-Type": "application/json"})
    body = assert_problem(response, 422, "body")
    assert "JSON" in body["errors"][0]["message"]


def test_body_not_an_object(client):
    assert_problem(client.post("/v1/jobs", json=[1, 2]), 422)


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": 0}, "limit"), ({"limit": 1000}, "limit"), ({"limit": "ten"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"), ({"cursor": "WzEsMl0"}, "cursor"),  # base64 of [1,2]
    ({"status": "sleeping"}, "status.0"),
])
def test_bad_list_parameters(client, params, field):
    assert_problem(client.get("/v1/jobs", params=params), 422, field)


@pytest.mark.parametrize("path", ["", "/cancel", "/metrics", "/results", "/artifacts", "/events",
                                  "/artifacts/results.json"])
def test_unknown_job_id_is_404(client, path):
    assert_problem(client.get(f"/v1/jobs/{'f' * 32}{path}") if path != "/cancel"
                   else client.post(f"/v1/jobs/{'f' * 32}{path}"), 404, "job_id")


def test_unknown_artifact_name(client):
    job = client.post("/v1/jobs", json=TINY_SPEC).json()
    for name in ("passwd", "checkpoints", "kd.db", "student.safetensors.part"):
        assert_problem(client.get(f"/v1/jobs/{job['id']}/artifacts/{name}"), 404, "name")
    # An encoded '/' makes it another route, which does not exist: still a problem, still no file.
    body = assert_problem(client.get(f"/v1/jobs/{job['id']}/artifacts/..%2F..%2Fkd.db"), 404)
    assert "SQLite" not in body["detail"]


def test_unknown_route_and_method_are_problems(client):
    assert_problem(client.get("/v1/nothing"), 404)
    assert_problem(client.put("/v1/jobs"), 405)


def test_oversized_idempotency_key(client):
    assert_problem(client.post("/v1/jobs", json=TINY_SPEC, headers={"Idempotency-Key": "k" * 201}), 422,
                   "idempotency-key")
