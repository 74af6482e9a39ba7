"""Faults around a running service (real uvicorn, real workers, SQLite, the filesystem broker): stale
messages of cancelled jobs, vanished broker folders, workers that stop or die, temp files left behind."""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from tests.helpers import Service, service_env, tiny_spec, wait_until

JOB_TIMEOUT_S = 300


@pytest.fixture()
def service(tmp_path):
    svc = Service(tmp_path, service_env(tmp_path, worker_stale_seconds=4, log_level="info"))
    try:
        yield svc
    finally:
        svc.stop()


def _queue_files(svc: Service) -> list:
    return list((svc.var_dir / "broker" / "queue").glob("*.msg"))


@pytest.mark.slow
def test_messages_of_cancelled_jobs_are_dropped_without_starting_a_pool_child(service):
    service.start_api()
    job_ids = [service.submit(tiny_spec(f"c{i}")) for i in range(20)]
    for job_id in job_ids:
        assert service.http.post(f"/v1/jobs/{job_id}/cancel").json()["state"] == "cancelled"
    assert len(_queue_files(service)) == 20
    service.start_worker("w1")
    wait_until(lambda: service.logs("worker-w1.log", tail=None).count("dropped before the pool") == 20, 120, 0.3,
               "the 20 stale messages to be dropped")
    assert _queue_files(service) == []
    log = service.logs("worker-w1.log", tail=None)
    assert log.count("pool child") == 1, log[-3000:]  # the pool's first child only: none forked per message
    assert "claimed by" not in log
    assert {service.job(j)["state"] for j in job_ids} == {"cancelled"}


@pytest.mark.slow
def test_worker_recreates_vanished_broker_folders_and_readiness_follows_the_workers(service):
    service.start_api()
    assert service.http.get("/readyz").json()["errors"][0]["field"] == "workers"  # none started yet
    worker = service.start_worker("w1")
    wait_until(lambda: service.http.get("/readyz").status_code == 200, 120, 0.3, "readiness with a worker")

    shutil.rmtree(service.var_dir / "broker")
    wait_until(lambda: (service.var_dir / "broker" / "queue").is_dir(), 30, 0.2, "the broker folders to return")
    assert worker.poll() is None, service.logs("worker-w1.log")
    wait_until(lambda: service.http.get("/readyz").status_code == 200, 30, 0.3, "readiness again")
    job = service.wait_terminal(service.submit(tiny_spec("after-rmtree")), JOB_TIMEOUT_S)
    assert job["state"] == "succeeded", job

    os.killpg(worker.pid, signal.SIGKILL)  # a dead worker stops sending heartbeats: stale after 4 s
    worker.wait(10)
    response = wait_until(lambda: (r := service.http.get("/readyz")).status_code == 503 and r, 30, 0.5,
                          "readiness to notice the dead worker")
    assert [e["field"] for e in response.json()["errors"]] == ["workers"]

    second = service.start_worker("w2")
    wait_until(lambda: service.http.get("/readyz").status_code == 200, 120, 0.3, "readiness with the new worker")
    second.send_signal(signal.SIGTERM)  # a clean stop removes its heartbeat row at once
    second.wait(30)
    assert service.http.get("/readyz").status_code == 503


def _age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.mark.slow
def test_temp_leftovers_are_removed_at_api_start_and_by_the_sweeper(service):
    tmp = service.var_dir / "tmp"
    tmp.mkdir(parents=True)
    crashed_upload = tmp / "upload-crashed"
    crashed_upload.write_bytes(b"x" * 100)
    crashed_extract = tmp / "extract-crashed"
    (crashed_extract / "cat").mkdir(parents=True)
    (crashed_extract / "cat" / "0.png").write_bytes(b"png")
    for path in (crashed_upload, crashed_extract / "cat" / "0.png", crashed_extract / "cat", crashed_extract):
        _age(path, 2 * 3600)
    in_progress = tmp / "upload-in-progress"
    in_progress.write_bytes(b"y" * 100)  # written just now
    extracting = tmp / "extract-in-progress"  # an old folder still being written into
    (extracting / "dog").mkdir(parents=True)
    _age(extracting, 2 * 3600)
    (extracting / "dog" / "1.png").write_bytes(b"png")

    service.start_api()
    assert sorted(p.name for p in tmp.iterdir()) == ["extract-in-progress", "upload-in-progress"]

    later = tmp / "upload-later-crash"
    later.write_bytes(b"z")
    _age(later, 2 * 3600)
    service.start_worker("w1")
    wait_until(lambda: not later.exists(), 120, 0.3, "the worker's sweeper to remove the leftover")
    assert in_progress.exists() and (extracting / "dog" / "1.png").exists()
