"""The /v1/jobs API over real HTTP (uvicorn in a thread, SQLite, filesystem broker; no worker runs)."""

from __future__ import annotations

import json
from pathlib import Path

from kdservice import jobstore
from kdservice.db import sessions
from kdservice.jobstore import JobStore
from tests import helpers
from tests.helpers import TINY_SPEC, ApiServer, assert_problem, finish_with_files

api_server = helpers.api_server


def submit(client, **changes) -> dict:
    response = client.post("/v1/jobs", json={**TINY_SPEC, **changes})
    assert response.status_code == 201, response.text
    return response.json()


def queued_messages(server: ApiServer) -> list[str]:
    """The task messages the filesystem broker holds (what a worker would receive), as text."""
    return [p.read_text() for p in (Path(server.settings.artifact_dir) / "broker" / "queue").iterdir()]


def test_create_get_and_enqueue(api_server: ApiServer, alice):
    response = alice.post("/v1/jobs", json=TINY_SPEC)
    assert response.status_code == 201
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] == "queued" and job["name"] == "tiny"
    assert job["spec"]["teacher"]["arch"] == "resnet8" and job["spec"]["distill"]["method"] == "kd"
    assert job["spec"]["distill"]["temperature"] is None  # unset: the method's own default applies at run time
    assert [t["state"] for t in job["transitions"]] == ["queued"]
    fetched = alice.get(f"/v1/jobs/{job['id']}").json()
    assert fetched["id"] == job["id"] and fetched["created_at"] == job["created_at"]
    assert any(job["id"] in m for m in queued_messages(api_server))


def test_list_paginates_newest_first_and_filters(api_server: ApiServer):
    with api_server.client(api_server.new_key("pager")) as client:
        ids = [submit(client, name=f"job-{i}")["id"] for i in range(5)]
        client.post(f"/v1/jobs/{ids[1]}/cancel")
        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = client.get("/v1/jobs", params=params).json()
            assert len(page["items"]) <= 2
            seen += [j["id"] for j in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids[::-1]
        cancelled = client.get("/v1/jobs", params={"status": "cancelled"}).json()["items"]
        assert [j["id"] for j in cancelled] == [ids[1]]
        both = client.get("/v1/jobs", params=[("status", "cancelled"), ("status", "queued")]).json()["items"]
        assert len(both) == 5


def test_idempotency_key_replays_and_conflicts(alice):
    headers = {"Idempotency-Key": "submit-once-1"}
    first = alice.post("/v1/jobs", json=TINY_SPEC, headers=headers)
    again = alice.post("/v1/jobs", json=TINY_SPEC, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    different = alice.post("/v1/jobs", json={**TINY_SPEC, "name": "other"}, headers=headers)
    assert_problem(different, 409, "Idempotency-Key")
    fresh = alice.post("/v1/jobs", json=TINY_SPEC, headers={"Idempotency-Key": "submit-once-2"})
    assert fresh.status_code == 201 and fresh.json()["id"] != first.json()["id"]


def test_cancel_queued_job_is_immediate_and_idempotent(alice):
    job = submit(alice)
    response = alice.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["state"] == "cancelled" and response.json()["cancel_requested"] is True
    assert alice.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    states = [t["state"] for t in alice.get(f"/v1/jobs/{job['id']}").json()["transitions"]]
    assert states == ["queued", "cancelled"]


def test_cancel_running_job_asks_the_worker(api_server: ApiServer, alice):
    job = submit(alice)
    store = JobStore(api_server.settings.database_url, lease_seconds=60, max_attempts=3)
    assert store.claim(job["id"], "worker-a") is not None
    response = alice.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 202 and response.json()["state"] == "cancelling"
    assert store.cancel_requested(job["id"])
    assert_problem(alice.delete(f"/v1/jobs/{job['id']}"), 409, "job_id")
    assert store.finish(job["id"], "worker-a", "cancelled")
    assert alice.get(f"/v1/jobs/{job['id']}").json()["state"] == "cancelled"


def test_delete_rules(api_server: ApiServer, alice):
    job = submit(alice)
    assert_problem(alice.delete(f"/v1/jobs/{job['id']}"), 409, "job_id")  # queued: not finished
    alice.post(f"/v1/jobs/{job['id']}/cancel")
    job_dir = Path(api_server.settings.artifact_dir) / "jobs" / job["id"]
    job_dir.mkdir(parents=True)
    (job_dir / "results.json").write_text("{}")
    assert alice.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert not job_dir.exists()
    assert_problem(alice.get(f"/v1/jobs/{job['id']}"), 404, "job_id")


def test_owner_isolation(api_server: ApiServer, alice):
    job = submit(alice)
    with api_server.client(api_server.new_key("mallory")) as mallory:
        for method, path in (("GET", ""), ("POST", "/cancel"), ("DELETE", ""), ("GET", "/metrics"),
                             ("GET", "/events"), ("GET", "/artifacts"), ("GET", "/results")):
            assert_problem(mallory.request(method, f"/v1/jobs/{job['id']}{path}"), 404, "job_id")
        assert job["id"] not in [j["id"] for j in mallory.get("/v1/jobs").json()["items"]]
    assert alice.get(f"/v1/jobs/{job['id']}").json()["state"] == "queued"


def test_auth_missing_or_invalid_is_401(api_server: ApiServer):
    with api_server.client() as anonymous:
        body = assert_problem(anonymous.get("/v1/jobs"), 401, "Authorization")
        assert "missing" in body["detail"]
        assert_problem(anonymous.get("/v1/jobs", headers={"Authorization": "Bearer nope"}), 401)
        assert_problem(anonymous.get("/v1/jobs", headers={"Authorization": "Basic dTpw"}), 401)
        assert anonymous.get("/healthz").status_code == 200


def _finish_with_artifacts(server: ApiServer, job_id: str) -> dict[str, bytes]:
    """Play the worker's part with its real JobStore: claim, report, write files, succeed."""
    store = JobStore(server.settings.database_url, lease_seconds=60, max_attempts=3)
    assert store.claim(job_id, "worker-b") is not None
    store.set_progress(job_id, "worker-b", "distilling",
                       {"phase": "distilling", "epoch": 1, "epochs": 2, "fraction": 0.5})
    store.add_metric(job_id, "distilling", 0, {"train_loss": 1.5, "val_acc": 0.4, "lr": 0.1, "seed": 3})
    store.add_metric(job_id, "distilling", 1, {"train_loss": 1.2, "val_acc": 0.6, "lr": 0.05, "seed": 3})
    store.add_log(job_id, "epoch 1 done")
    files = {"results.json": json.dumps({"models": {"student_kd": {"clean_acc": 0.61}}}).encode(),
             "student.safetensors": b"weights" * 100}
    finish_with_files(store, job_id, "worker-b", Path(server.settings.artifact_dir) / "jobs" / job_id, files,
                      {"student_kd": {"clean_acc": 0.61}})
    return files


def test_results_metrics_and_artifacts(api_server: ApiServer, alice):
    job = submit(alice)
    assert_problem(alice.get(f"/v1/jobs/{job['id']}/results"), 404, "job_id")  # not yet succeeded
    files = _finish_with_artifacts(api_server, job["id"])
    done = alice.get(f"/v1/jobs/{job['id']}").json()
    assert done["state"] == "succeeded" and done["results_summary"]["student_kd"]["clean_acc"] == 0.61
    assert [t["state"] for t in done["transitions"]] == ["queued", "running", "succeeded"]
    assert alice.get(f"/v1/jobs/{job['id']}/results").json() == json.loads(files["results.json"])
    series = alice.get(f"/v1/jobs/{job['id']}/metrics").json()["phases"]["distilling"]
    assert series == {"epoch": [0, 1], "train_loss": [1.5, 1.2], "val_acc": [0.4, 0.6], "lr": [0.1, 0.05],
                      "seed": [3, 3]}  # the students train once per seed: each entry says which
    listing = {a["name"]: a for a in alice.get(f"/v1/jobs/{job['id']}/artifacts").json()["items"]}
    assert set(listing) == set(files)
    url = f"/v1/jobs/{job['id']}/artifacts/student.safetensors"
    download = alice.get(url)
    assert download.status_code == 200 and download.content == files["student.safetensors"]
    etag = download.headers["etag"]
    assert etag == f'"{listing["student.safetensors"]["sha256"]}"'
    cached = alice.get(url, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    assert alice.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    assert_problem(alice.get(f"/v1/jobs/{job['id']}/artifacts/student.onnx"), 404, "name")  # not produced
    assert_problem(alice.post(f"/v1/jobs/{job['id']}/cancel"), 409, "job_id")


def test_events_stream_state_progress_and_logs(api_server: ApiServer, alice):
    job = submit(alice)
    _finish_with_artifacts(api_server, job["id"])
    with alice.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())  # the stream ends by itself: the job is terminal
    events = [block for block in text.split("\n\n") if block.startswith("id:")]
    parsed = [dict(line.split(": ", 1) for line in block.splitlines()) for block in events]
    kinds = [e["event"] for e in parsed]
    assert kinds[0] == "state" and {"progress", "log"} <= set(kinds)
    assert json.loads(parsed[0]["data"])["state"] == "succeeded"
    log_lines = [json.loads(e["data"])["message"] for e in parsed if e["event"] == "log"]
    assert "epoch 1 done" in log_lines
    # Resuming after the last event id sends no log line again.
    last_id = parsed[-1]["id"]
    with alice.stream("GET", f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": last_id}) as again:
        assert "event: log" not in "".join(again.iter_text())


def test_the_event_stream_is_documented_event_by_event(api_server: ApiServer):
    """text/event-stream only (it also said application/json), each event's name and data schema given."""
    with api_server.client() as anonymous:
        answer = anonymous.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]
    content = answer["200"]["content"]
    assert list(content) == ["text/event-stream"]
    events = {e["properties"]["event"]["const"]: e["properties"]["data"]["contentSchema"]
              for e in content["text/event-stream"]["itemSchema"]["oneOf"]}
    assert {name: sorted(data["required"]) for name, data in events.items()} == {
        "state": ["error", "phase", "state"], "progress": ["phase", "progress", "state"],
        "log": ["at", "id", "level", "message"]}


def test_events_of_a_job_deleted_while_watched_end_with_a_deleted_state(api_server: ApiServer, alice):
    """The last event is a state event like any other, {state, phase, error} (it sent `progress` instead of
    `error`, against the stream's documented event schema: tests/api/test_schemathesis.py checks it)."""
    job = submit(alice)
    with alice.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        lines = response.iter_lines()
        first = next(json.loads(line[6:]) for line in lines if line.startswith("data: "))
        with sessions(api_server.settings.database_url)() as session:  # gone, as if deleted meanwhile
            jobstore.forget_job(session, job["id"])
        rest = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]  # ends by itself
    assert first == {"state": "queued", "phase": None, "error": None}
    assert rest == [{"state": "deleted", "phase": None, "error": None}]


def test_events_follow_a_live_job_until_cancelled(api_server: ApiServer, alice):
    import threading
    import time

    job = submit(alice)
    store = JobStore(api_server.settings.database_url, lease_seconds=60, max_attempts=3)
    assert store.claim(job["id"], "worker-c") is not None

    def work() -> None:
        time.sleep(0.3)
        store.set_progress(job["id"], "worker-c", "training_teacher",
                           {"phase": "training_teacher", "fraction": 0.1})
        time.sleep(0.3)
        store.finish(job["id"], "worker-c", "cancelled")

    worker = threading.Thread(target=work)
    worker.start()
    with alice.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        text = "".join(response.iter_text())
    worker.join()
    states = [json.loads(line[6:])["state"] for block in text.split("\n\n") if "event: state" in block
              for line in block.splitlines() if line.startswith("data: ")]
    assert states[0] == "running" and states[-1] == "cancelled"
    assert '"fraction":0.1' in text
