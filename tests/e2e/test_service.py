"""End to end: the API (uvicorn) and real worker processes through the embedded filesystem broker and
SQLite, on a temp var dir. Each job trains tiny models on `digits` for a few seconds."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
from sqlalchemy import func, select

from kdcli.main import main as kd
from kdservice.db import make_engine, make_sessionmaker
from kdservice.queue import enqueue_job
from kdservice.tables import JobMetric, JobTransition
from tests.helpers import Service, service_env, tiny_spec, wait_until

pytestmark = pytest.mark.slow  # each starts an API and workers and trains a job

JOB_TIMEOUT_S = 300  # two cores shared with other test runs: generous, jobs take seconds when idle


@pytest.fixture()
def service(tmp_path, monkeypatch):
    env = service_env(tmp_path, log_level="info")  # the tests read the workers' info lines
    for key, value in env.items():  # the test process enqueues too (second-delivery test)
        monkeypatch.setenv(key, value)
    from kdservice.settings import get_settings

    get_settings.cache_clear()
    svc = Service(tmp_path, env)
    try:
        svc.start_api()
        yield svc
    finally:
        svc.stop()
        get_settings.cache_clear()


def _transition_counts(svc: Service, job_id: str) -> dict[str, int]:
    sessions = make_sessionmaker(make_engine(svc.env["KD_DATABASE_URL"]))
    with sessions() as session:
        rows = session.execute(select(JobTransition.state, func.count()).where(JobTransition.job_id == job_id)
                               .group_by(JobTransition.state)).all()
    return dict(rows)


def test_cli_submit_wait_download_and_load(service, tmp_path, monkeypatch, capsys):
    import torch
    from safetensors.torch import load_file

    from kdcore.models import build_model

    service.start_worker("w1")
    monkeypatch.setenv("KD_API_URL", service.url)
    monkeypatch.setenv("KD_API_KEY", service.key)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(tiny_spec("cli", baseline=True)))

    assert kd(["submit", str(spec_path), "--wait", "--quiet"]) == 0, service.logs("worker-w1.log")
    out = capsys.readouterr().out
    job_id = out.split()[0]
    assert f"{job_id}  succeeded" in out

    job = service.job(job_id)
    assert [t["state"] for t in job["transitions"]] == ["queued", "running", "succeeded"]
    assert job["results_summary"]["student_kd"]["clean_acc"] is not None

    target = tmp_path / "student.safetensors"
    assert kd(["download", job_id, "-o", str(target)]) == 0
    model = build_model("resnet8", 10, 1, 8)
    model.load_state_dict(load_file(target), strict=True)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)

    report = tmp_path / "report.html"
    assert kd(["report", job_id, "-o", str(report)]) == 0
    html = report.read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "<svg" in html and "http://" not in html
    capsys.readouterr()

    assert kd(["results", job_id]) == 0
    table = capsys.readouterr().out
    for label in ("teacher", "baseline", "distilled", "clean acc", "corrupted acc", "n=1"):
        assert label in table
    assert "distilled - baseline (same seed)" in table

    metrics = service.http.get(f"/v1/jobs/{job_id}/metrics").json()["phases"]
    assert len(metrics["distilling"]["epoch"]) == 2  # one row per epoch, written by on_epoch_end


def test_cancel_of_a_running_job_ends_cancelled_within_10s(service):
    service.start_worker("w1")
    job_id = service.submit(tiny_spec("long", epochs=200, teacher_epochs=200))
    wait_until(lambda: (service.job(job_id).get("progress") or {}).get("step"), 120, 0.3,
               "the job to start training")
    started = time.monotonic()
    response = service.http.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202, response.text
    job = service.wait_terminal(job_id, 10)
    assert job["state"] == "cancelled"
    assert time.monotonic() - started < 10


def test_two_workers_four_jobs_each_run_exactly_once(service):
    service.start_worker("w1")
    service.start_worker("w2")
    job_ids = [service.submit(tiny_spec(f"job{i}")) for i in range(4)]
    enqueue_job(job_ids[0])  # a second delivery of the same task: must not run the job twice
    enqueue_job(job_ids[0])
    jobs = [service.wait_terminal(job_id, JOB_TIMEOUT_S) for job_id in job_ids]
    assert [j["state"] for j in jobs] == ["succeeded"] * 4
    for job in jobs:
        assert _transition_counts(service, job["id"]) == {"queued": 1, "running": 1, "succeeded": 1}
        assert job["attempts"] == 1
    for name in ("w1", "w2"):  # both workers trained (each job runs in a fresh pool child)
        assert ": claimed by " in service.logs(f"worker-{name}.log", tail=None)
    wait_until(lambda: "not claimable" in service.logs("worker-w1.log") + service.logs("worker-w2.log"),
               30, what="the duplicate deliveries to be skipped")


def test_sigkilled_worker_job_resumes_from_checkpoint_elsewhere(service):
    lease = {"KD_LEASE_SECONDS": "3"}
    first = service.start_worker("w1", **lease)
    job_id = service.submit(tiny_spec("resume", epochs=12))
    sessions = make_sessionmaker(make_engine(service.env["KD_DATABASE_URL"]))

    def distilled_an_epoch() -> bool:
        with sessions() as session:
            return bool(session.scalar(select(func.count()).where(
                (JobMetric.job_id == job_id) & (JobMetric.phase == "distilling"))))

    wait_until(distilled_an_epoch, 180, 0.2, "a checkpointed epoch of distillation")
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its training child die at once
    first.wait(10)
    service.start_worker("w2", **lease)
    job = service.wait_terminal(job_id, JOB_TIMEOUT_S)
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2
    assert [t["state"] for t in job["transitions"]] == ["queued", "running", "queued", "running", "succeeded"]
    assert "expired" in job["transitions"][2]["detail"]
    logs = service.http.get(f"/v1/jobs/{job_id}/events").text  # the stream replays every log line
    resumed = re.findall(r"distilling: resumed from checkpoint after epoch (\d+)", logs)
    assert resumed, logs[-3000:]
    assert int(resumed[0]) > 0


def test_job_whose_queue_message_was_lost_still_runs(service):
    """The filesystem broker loses a message taken by a worker that dies before claiming the job: the
    message file is deleted here, and a worker's sweeper must send the job again."""
    job_id = service.submit(tiny_spec("lost"))
    messages = list((service.var_dir / "broker" / "queue").glob("*.msg"))
    assert len(messages) == 1
    messages[0].unlink()
    service.start_worker("w1", KD_RESEND_AFTER_SECONDS="1", KD_LEASE_SECONDS="2")
    job = service.wait_terminal(job_id, JOB_TIMEOUT_S)
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 1
    assert "sent again" in service.http.get(f"/v1/jobs/{job_id}/events").text
