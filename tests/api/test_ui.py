"""The pages' server side over real HTTP (no browser): the cookie's attributes, no open redirect, uploads
refused before their body is read, the jobs list's one stream for several jobs, and the new-job form
read back into the spec the API validates."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

from api.ui import specform
from api.ui.auth import csrf_token, safe_next
from kdservice.db import sessions
from kdservice.jobstore import forget_job
from tests.helpers import ApiServer, api_server, tiny_spec  # noqa: F401 (fixture)


def signed_in(api_server: ApiServer, key: str) -> httpx.Client:  # noqa: F811
    client = api_server.client(follow_redirects=False)
    client.cookies.set("kd_ui_key", key, domain=urlsplit(api_server.base_url).hostname, path="/ui")
    return client


def test_sign_in_sets_a_strict_http_only_cookie_secure_over_https(api_server: ApiServer):  # noqa: F811
    key = api_server.new_key("cookie")
    # Behind a TLS proxy the request is https (uvicorn trusts X-Forwarded-Proto from 127.0.0.1): Secure.
    for headers, secure in (({}, False), ({"X-Forwarded-Proto": "https"}, True)):
        with api_server.client(follow_redirects=False) as client:
            client.headers.update(headers)
            form = client.get("/ui/sign-in")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]
            assert ("Secure" in form.headers["set-cookie"]) is secure
            client.headers["Cookie"] = f"kd_ui_signin={token}"  # httpx sends no Secure cookie over plain http
            # Without the sign-in form's own token (a form posted from another site) the key is not even read.
            assert client.post("/ui/sign-in", data={"key": key, "csrf": "forged"}).status_code == 403
            wrong = client.post("/ui/sign-in", data={"key": "kd_x", "csrf": token})
            assert wrong.status_code == 422 and "Unknown API key" in wrong.text
            right = client.post("/ui/sign-in", data={"key": key, "csrf": token})
            assert right.status_code == 303
            cookie = next(c for c in right.headers.get_list("set-cookie") if c.startswith("kd_ui_key="))
            assert f"kd_ui_key={key};" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
            assert "Path=/ui;" in cookie and ("Secure" in cookie) is secure and "Max-Age" not in cookie


def test_after_sign_in_only_pages_of_this_site_are_targets():
    assert safe_next("/ui/jobs/abc?x=1") == "/ui/jobs/abc?x=1"
    for hostile in ("https://evil.example/ui/", "//evil.example/ui/jobs", "/v1/jobs", "/ui\\..\\x", "/ui/sign-in"):
        assert safe_next(hostile) == "/ui/jobs", hostile


def _raw_post(base_url: str, path: str, headers: dict[str, str], declared: int,
              until_closed: bool = False) -> tuple[float, bytes]:
    """Send only the headers of a POST announcing `declared` bytes; (seconds to the answer, the answer: its
    first bytes, or all of it up to the server's close)."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {declared}",
                 "Content-Type: multipart/form-data; boundary=x", *(f"{k}: {v}" for k, v in headers.items())]
        start = time.monotonic()
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = sock.recv(65536)
        seconds = time.monotonic() - start
        while until_closed and (more := sock.recv(65536)):
            answer += more
        return seconds, answer


@pytest.mark.slow
def test_uploads_are_refused_before_their_body_is_read(api_server: ApiServer):  # noqa: F811
    key = api_server.new_key("uploader")
    declared = 50 * 1024 * 1024  # announced, never sent: an answer proves nothing waited for the body
    seconds, answer = _raw_post(api_server.base_url, "/ui/datasets", {}, declared)
    assert answer.startswith(b"HTTP/1.1 303") and b"location: /ui/sign-in" in answer.lower() and seconds < 5
    cookie = {"Cookie": f"kd_ui_key={key}"}
    _, answer = _raw_post(api_server.base_url, "/ui/models?csrf=" + "0" * 64, cookie, declared)
    assert answer.startswith(b"HTTP/1.1 403") and b"connection: close" in answer.lower()
    # The right token passes the check: this one does wait for the body (the read times out).
    with pytest.raises(TimeoutError):
        _raw_post(api_server.base_url, f"/ui/models?csrf={csrf_token(key)}", cookie | {"X": "y"}, declared)


def test_an_upload_the_gate_refuses_is_answered_with_a_page(api_server: ApiServer):  # noqa: F811
    """Too large by its Content-Length: the page says so (HTML, 413, the limit named), not a JSON problem."""
    key = api_server.new_key("too-big")
    declared = 4 * api_server.settings.upload_max_bytes  # announced, never sent
    seconds, answer = _raw_post(api_server.base_url, f"/ui/datasets?csrf={csrf_token(key)}",
                                {"Cookie": f"kd_ui_key={key}"}, declared, until_closed=True)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and seconds < 5
    assert b"content-type: text/html" in head.lower() and b"connection: close" in head.lower()
    assert b"KD_UPLOAD_MAX_BYTES" in body and b"<code>file</code>" in body
    assert b"problem" not in head.lower()  # not application/problem+json


def test_the_jobs_list_stream_carries_every_watched_job_until_all_end(api_server: ApiServer):  # noqa: F811
    key = api_server.new_key("watcher")
    with api_server.client(key) as api:
        ids = [api.post("/v1/jobs", json=tiny_spec(f"w{i}")).json()["id"] for i in range(2)]

        def cancel_later() -> None:
            time.sleep(0.5)
            for job_id in ids:
                api.post(f"/v1/jobs/{job_id}/cancel")

        threading.Thread(target=cancel_later).start()
        events = []
        with signed_in(api_server, key) as client, \
                client.stream("GET", f"/ui/jobs/events?id={ids[0]}&id={ids[1]}", timeout=20) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            name = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[6:])))
    states = {(data["job"], data["state"]) for name, data in events if name == "state"}
    assert states == {(ids[0], "queued"), (ids[1], "queued"), (ids[0], "cancelled"), (ids[1], "cancelled")}
    assert events[-1] == ("end", {})  # the stream closes itself once every job has ended


def test_the_jobs_list_stream_tags_a_deleted_job_with_its_id(api_server: ApiServer):  # noqa: F811
    """A job deleted while the list watches it: its last state event names the job like every other event (it
    came untagged, so the page could not tell which row ended)."""
    key = api_server.new_key("watcher")
    with api_server.client(key) as api:
        job_id = api.post("/v1/jobs", json=tiny_spec("gone")).json()["id"]
    with signed_in(api_server, key) as client, \
            client.stream("GET", f"/ui/jobs/events?id={job_id}", timeout=20) as stream:
        data = (json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: "))
        assert next(data) == {"job": job_id, "state": "queued", "phase": None, "error": None}
        with sessions(api_server.settings.database_url)() as session:
            forget_job(session, job_id)
        assert list(data) == [{"job": job_id, "state": "deleted", "phase": None, "error": None}, {}]


def test_the_list_stream_of_another_owners_job_is_404(api_server: ApiServer):  # noqa: F811
    alice, bob = api_server.new_key("alice"), api_server.new_key("bob")
    with api_server.client(alice) as api:
        job_id = api.post("/v1/jobs", json=tiny_spec("a")).json()["id"]
    with signed_in(api_server, bob) as client:
        response = client.get(f"/ui/jobs/events?id={job_id}")
        assert response.status_code == 404 and f"job {job_id} not found" in response.text


def test_the_form_reads_back_into_the_spec_it_was_made_from():
    for name, spec in specform.examples().items():
        form = specform.form_from_spec(spec)
        posted = {"fields": form.field_kinds()}
        for group in form.groups:
            for field in group.fields:
                if field.kind != "bool" or field.value:
                    posted[field.path] = field.value
        assert specform.spec_from_post(posted) == (spec, []), name
