"""A saturated database answers 503 + Retry-After after KD_DB_WAIT_SECONDS instead of hanging, and the
request holding the connection still completes. The saturation is real: another connection holds
SQLite's write lock, so a submit waits inside the database with the API's only connection slot."""

from __future__ import annotations

import sqlite3
import threading

from tests.helpers import TINY_SPEC, ApiServer, assert_problem, module_settings, serve, wait_until


def test_a_request_that_cannot_get_a_connection_in_time_gets_503_with_retry_after(tmp_path_factory):
    settings = module_settings(tmp_path_factory, db_pool_size=1, db_wait_seconds=0.3)
    for server in serve(settings):
        _saturate_and_recover(server)


def _saturate_and_recover(server: ApiServer) -> None:
    settings = server.settings
    key = server.new_key("busy")
    with server.client(key) as client:
        assert client.get("/v1/jobs").status_code == 200
        lock = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # the write lock: the submit below waits in busy_timeout
        submitted: list = []
        submit = threading.Thread(target=lambda: submitted.append(client.post("/v1/jobs", json=TINY_SPEC)))
        try:
            submit.start()
            with server.client(key) as other:
                busy = wait_until(lambda: (r := other.post("/v1/jobs", json=TINY_SPEC)).status_code == 503 and r,
                                  20, 0.05, "a request to find every connection busy")
                body = assert_problem(busy, 503)
                assert busy.headers["Retry-After"].isdigit() and body["type"].endswith("/busy")
                assert other.get("/healthz").status_code == 200
        finally:
            lock.execute("ROLLBACK")
            lock.close()
            submit.join(30)
        assert submitted[0].status_code == 201, submitted[0].text  # the waiting submit was not lost
        assert client.get("/v1/jobs").json()["items"][0]["id"] == submitted[0].json()["id"]
