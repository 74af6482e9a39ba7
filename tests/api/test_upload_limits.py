"""What an upload may cost the server: nothing before its key is checked, no archive bomb, one shared disk
budget, bounded entries and pixels. Real uvicorn (thread) and SQLite; raw sockets where httpx would not
send what an attacker sends (a body that never ends)."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import (
    ApiServer,
    assert_no_server_path,
    assert_problem,
    image_folder_files,
    module_settings,
    png_bytes,
    read_response,
    send_head,
    serve,
    wait_until,
    zip_bytes,
)

UPLOAD_LIMIT = 200_000
BUDGET = 500_000


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory):
    # A ratio limit high enough to reach the other limits with small archives of zeros.
    yield from serve(module_settings(tmp_path_factory, upload_max_bytes=UPLOAD_LIMIT, upload_max_files=10,
                                     upload_max_ratio=100_000, upload_disk_budget_bytes=BUDGET))


@pytest.fixture(scope="module")
def key(api_server: ApiServer) -> str:
    return api_server.new_key("uploader")


@pytest.fixture(scope="module")
def alice(api_server: ApiServer, key: str):
    with api_server.client(key) as client:
        yield client


def budget_in_use(server: ApiServer) -> float:
    with server.client() as client:
        metrics = client.get("/metrics").text
    return float(next(line.split()[1] for line in metrics.splitlines()
                      if line.startswith("kd_upload_disk_bytes_in_use ")))


def upload(client, data: bytes, filename: str = "data.zip"):
    return client.post("/v1/datasets", files={"file": (filename, data, "application/octet-stream")})


def tmp_files(server: ApiServer) -> list[Path]:
    return [p for p in Path(server.settings.tmp_dir).rglob("*")]


@pytest.mark.parametrize("path", ["/v1/datasets", "/v1/models"])
@pytest.mark.parametrize("authorization", [None, "Bearer kd_not-a-key", "Basic dTpw"])
def test_upload_without_a_working_key_is_refused_before_its_body_is_read(api_server: ApiServer, path,
                                                                        authorization):
    headers = {"Content-Type": "multipart/form-data; boundary=xyz", "Content-Length": str(UPLOAD_LIMIT)}
    if authorization:
        headers["Authorization"] = authorization
    # 1 KB of a 200 KB body: the answer must come now, not after the rest (the socket would time out).
    with send_head(api_server.base_url, "POST", path, headers, b"--xyz\r\n" + b"x" * 1000) as sock:
        status, answer_headers, body = read_response(sock)
    assert status == 401, body
    problem = json.loads(body)
    assert problem["errors"][0]["field"] == "Authorization"
    assert answer_headers["www-authenticate"].startswith("Bearer")
    assert tmp_files(api_server) == []


def _zeros_zip(name: str, size: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file, data in image_folder_files({"a": 2, "b": 2}).items():
            archive.writestr(file, data)
        archive.writestr(name, bytes(size))
    return buffer.getvalue()


def test_archive_declaring_too_much_is_refused_before_extraction(api_server: ApiServer, alice):
    # 1 MB of zeros deflates to ~1 KB: over 4 x KD_UPLOAD_MAX_BYTES as declared by the zip's own index.
    bomb = _zeros_zip("a/zeros.png", 1_000_000)
    assert len(bomb) < 10_000
    body = assert_problem(upload(alice, bomb), 422, "file")
    assert "declares more than" in body["detail"]
    assert tmp_files(api_server) == [] and list(Path(api_server.settings.datasets_dir).iterdir()) == []


def test_hidden_entries_count_toward_the_entry_limit(alice):
    files = {**image_folder_files({"a": 2, "b": 2}), **{f"a/.hidden-{i}": b"x" for i in range(7)}}
    body = assert_problem(upload(alice, zip_bytes(files)), 422, "file")
    assert "more than 10 entries" in body["detail"]
    macos = {**image_folder_files({"a": 2, "b": 2}), **{f"__MACOSX/a/._{i}.png": b"x" for i in range(7)}}
    assert_problem(upload(alice, zip_bytes(macos)), 422, "file")
    assert upload(alice, zip_bytes(image_folder_files({"a": 2, "b": 2}))).status_code == 201


def test_uploads_share_one_disk_budget(api_server: ApiServer, alice, key):
    small = zip_bytes(image_folder_files({"a": 2, "b": 2}))
    # Larger than the whole budget once on disk twice (the parsed form and its copy in tmp/): never fits.
    with send_head(api_server.base_url, "POST", "/v1/datasets",
                   {"Authorization": f"Bearer {key}", "Content-Type": "multipart/form-data; boundary=xyz",
                    "Content-Length": str(BUDGET // 2 + 10_000)}) as sock:
        status, _, body = read_response(sock)
    assert status == 413 and "KD_UPLOAD_DISK_BUDGET_BYTES" in json.loads(body)["detail"]
    # A slow upload holds 2 x 180 KB of the budget while its body trickles in ...
    slow = send_head(api_server.base_url, "POST", "/v1/datasets",
                     {"Authorization": f"Bearer {key}", "Content-Type": "multipart/form-data; boundary=xyz",
                      "Content-Length": "180000"}, b"--xyz\r\n")
    try:
        wait_until(lambda: budget_in_use(api_server) == 360_000, 10, 0.05, "the slow upload to hold its share")
        # ... so a concurrent one that would pass it waits its turn: 503 with Retry-After, naming why.
        response = upload(alice, os.urandom(80_000))
        body = assert_problem(response, 503, "file")
        assert "KD_UPLOAD_DISK_BUDGET_BYTES" in body["detail"] and response.headers["retry-after"]
        assert upload(alice, small).status_code == 201  # what still fits goes through
    finally:
        slow.close()
    # The slow client gave up: its share is free again.
    wait_until(lambda: budget_in_use(api_server) == 0, 10, 0.05, "the budget to free up")
    assert upload(alice, os.urandom(80_000)).status_code == 422  # not an archive, but let in


def test_what_an_archive_expands_to_counts_in_the_budget(alice):
    # A 2 KB upload declaring 600 KB of (zero) image data: the extraction alone passes the budget.
    bomb = _zeros_zip("a/zeros.png", 600_000)
    assert len(bomb) < 10_000
    body = assert_problem(upload(alice, bomb), 413, "file")
    assert "KD_UPLOAD_DISK_BUDGET_BYTES" in body["detail"]


@pytest.fixture()
def default_limits(tmp_path_factory):
    """A server with the default ratio and pixel limits (KD_UPLOAD_MAX_RATIO 100, 4096 x 4096 px) lowered to
    64 x 64 px; PIL's process-wide setting is put back afterwards."""
    saved = Image.MAX_IMAGE_PIXELS
    try:
        yield from serve(module_settings(tmp_path_factory, upload_max_bytes=600_000, max_image_pixels=64 * 64))
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _zeros_targz(size: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for file, data in {**image_folder_files({"a": 2, "b": 2}), "a/zeros.png": bytes(size)}.items():
            info = tarfile.TarInfo(file)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_compression_ratio_limit(default_limits: ApiServer, kind):
    bomb = _zeros_zip("a/zeros.png", 2_000_000) if kind == "zip" else _zeros_targz(2_000_000)
    with default_limits.client(default_limits.new_key()) as client:
        body = assert_problem(upload(client, bomb, f"bomb.{kind}"), 422, "file")
    assert "KD_UPLOAD_MAX_RATIO" in body["detail"]
    assert tmp_files(default_limits) == []


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("size", "why"), [
    ((70, 70), "our limit only"),  # 4,900 px: over 64 x 64, under twice it (PIL only warns)
    ((200, 200), "PIL's bomb error"),  # 40,000 px: PIL refuses to open it at all
])
def test_images_over_the_pixel_limit_are_refused_naming_the_file(default_limits: ApiServer, size, why):
    files = {**image_folder_files({"a": 2, "b": 2}), "b/huge.png": _png(*size)}
    with default_limits.client(default_limits.new_key()) as client:
        body = assert_problem(upload(client, zip_bytes(files)), 422, "file")
        assert "b/huge.png" in body["detail"] and "KD_MAX_IMAGE_PIXELS" in body["detail"], why
        assert_no_server_path(json.dumps(body), default_limits.settings)
        files["b/huge.png"] = png_bytes((1, 2, 3), size=64)  # exactly at the limit: fine
        assert upload(client, zip_bytes(files)).status_code == 201


@pytest.mark.parametrize("path", ["/v1/datasets", "/v1/models"])
@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary=xyz"])
def test_malformed_multipart_is_400(alice, path, content_type):
    response = alice.post(path, content=b"\x00garbage, no parts at all", headers={"Content-Type": content_type})
    assert_problem(response, 400)


def test_upload_routes_document_their_400(api_server: ApiServer):
    with api_server.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/datasets", "/v1/models"):
        assert "400" in paths[path]["post"]["responses"], path
