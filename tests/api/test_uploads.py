"""POST /v1/datasets (ImageFolder archives) and /v1/models (safetensors teacher weights) over HTTP."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from tests.helpers import (
    TINY_SPEC,
    ApiServer,
    assert_no_server_path,
    assert_problem,
    image_folder_files,
    module_settings,
    png_bytes,
    serve,
    targz_bytes,
    zip_bytes,
)

UPLOAD_LIMIT = 600_000


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory):
    yield from serve(module_settings(tmp_path_factory, upload_max_bytes=UPLOAD_LIMIT))


def upload(client, data: bytes, filename: str = "data.zip", **form):
    files = {"file": (filename, data, "application/octet-stream")}
    return client.post("/v1/datasets", files=files, data=form)


def test_zip_of_class_folders(api_server: ApiServer, alice):
    response = upload(alice, zip_bytes(image_folder_files({"cat": 3, "dog": 2, "emu": 2})), name="pets")
    assert response.status_code == 201, response.text
    info = response.json()
    assert (info["name"], info["num_classes"], info["num_images"]) == ("pets", 3, 7)
    assert info["classes"] == ["cat", "dog", "emu"] and info["size_bytes"] > 0
    assert response.headers["location"] == f"/v1/datasets/{info['id']}"
    stored = Path(api_server.settings.artifact_dir) / "datasets" / info["id"]
    assert sorted(p.name for p in stored.iterdir()) == ["cat", "dog", "emu"]
    assert alice.get(f"/v1/datasets/{info['id']}").json()["num_images"] == 7
    assert info["id"] in [d["id"] for d in alice.get("/v1/datasets").json()["items"]]
    job = alice.post("/v1/jobs", json={**TINY_SPEC, "dataset": info["spec_hint"]})
    assert job.status_code == 201, job.text
    with api_server.client(api_server.new_key("mallory")) as mallory:
        assert_problem(mallory.get(f"/v1/datasets/{info['id']}"), 404, "dataset_id")
        assert_problem(mallory.post("/v1/jobs", json={**TINY_SPEC, "dataset": info["spec_hint"]}), 422,
                       "dataset.dataset_id")


def test_targz_with_train_test_inside_a_top_folder(api_server: ApiServer, alice):
    files = {**image_folder_files({"a": 2, "b": 2}, prefix="mydata/train/"),
             **image_folder_files({"a": 1, "b": 1}, prefix="mydata/test/"),
             "mydata/README.txt": b"not an image: left out", "__MACOSX/._a": b"junk"}
    response = upload(alice, targz_bytes(files), filename="mydata.tar.gz")
    assert response.status_code == 201, response.text
    info = response.json()
    assert (info["name"], info["num_classes"], info["num_images"]) == ("mydata", 2, 6)
    stored = Path(api_server.settings.artifact_dir) / "datasets" / info["id"]
    assert sorted(p.name for p in stored.iterdir()) == ["test", "train"]


def _good() -> dict[str, bytes]:
    return image_folder_files({"a": 2, "b": 2})


def _corrupt_member_data(archive: bytes) -> bytes:
    """The zip with the compressed bytes of its first member overwritten (headers intact)."""
    data = bytearray(archive)
    start = 30 + int.from_bytes(data[26:28], "little") + int.from_bytes(data[28:30], "little")
    data[start:start + 20] = b"\xff" * 20
    return bytes(data)


@pytest.mark.parametrize(("name", "archive", "words"), [
    ("dotdot", zip_bytes({**_good(), "../evil.png": png_bytes((1, 2, 3))}), "'..'"),
    ("absolute", targz_bytes({**_good(), "/etc/evil.png": png_bytes((1, 2, 3))}), "absolute"),
    ("symlink", targz_bytes(_good(), links={"a/link.png": "/etc/passwd"}), "link"),
    ("one class", zip_bytes(image_folder_files({"only": 3})), "at least 2 class"),
    ("bad image", zip_bytes({**_good(), "b/broken.png": b"\x89PNG but not really"}), "broken.png"),
    ("loose image", zip_bytes({**_good(), "stray.png": png_bytes((9, 9, 9))}), "outside class folders"),
    ("train without test", zip_bytes(image_folder_files({"a": 1, "b": 1}, prefix="train/")), "no test/"),
    ("not an archive", b"just some bytes, not a zip", "neither"),
    ("truncated zip", zip_bytes(_good())[:200], "damaged"),
    ("file and folder of one name", zip_bytes({**_good(), "a/x.png": png_bytes((1, 2, 3)),
                                               "a/x.png/y.png": png_bytes((1, 2, 3))}), "a/x.png/y.png"),
    ("name too long", zip_bytes({**_good(), f"a/{'n' * 300}.png": png_bytes((1, 2, 3))}), "longer than"),
    ("control character", zip_bytes({**_good(), "a/line\nbreak.png": png_bytes((1, 2, 3))}), "control"),
    ("damaged deflate data", _corrupt_member_data(zip_bytes(_good(), compress=True)), "damaged"),
])
def test_bad_archives_are_422_naming_the_problem(api_server: ApiServer, alice, name, archive, words):
    body = assert_problem(upload(alice, archive), 422, "file")
    assert words in body["detail"], body["detail"]
    assert_no_server_path(json.dumps(body), api_server.settings)  # PIL's own message names the full path
    # Nothing is left behind: no data set folder, no temp files.
    root = Path(api_server.settings.artifact_dir)
    assert list((root / "tmp").iterdir()) == []
    assert not (root / "etc").exists() and not (root.parent / "evil.png").exists()


def test_upload_too_large_is_413(api_server: ApiServer, alice):
    big = os.urandom(UPLOAD_LIMIT + 100_000)
    assert_problem(upload(alice, big), 413, "file")

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        boundary = b"--xyz\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\n'
        for _ in range(12):
            yield os.urandom(60_000)
        yield b"\r\n--xyz--\r\n"

    response = alice.post("/v1/datasets", content=chunks(),
                          headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert_problem(response, 413, "file")
    assert alice.get("/healthz").status_code == 200


def _safetensors(arch: str, num_classes: int, in_channels: int = 3, extra: bool = False) -> bytes:
    import torch
    from safetensors.torch import save

    from kdcore.models import build_model

    state = build_model(arch, num_classes, in_channels=in_channels).state_dict()
    if extra:
        state["projector.weight"] = torch.zeros(4, 4)
    return save({k: v.contiguous() for k, v in state.items()})


def upload_model(client, data: bytes, **form):
    return client.post("/v1/models", files={"file": ("teacher.safetensors", io.BytesIO(data))},
                       data={k: str(v) for k, v in form.items()})


def test_model_upload_and_use_as_teacher(api_server: ApiServer, alice):
    weights = _safetensors("resnet8", 10)
    response = upload_model(alice, weights, arch="resnet8", num_classes=10, in_channels=3)
    assert response.status_code == 201, response.text
    info = response.json()
    assert (info["arch"], info["num_classes"], info["size_bytes"]) == ("resnet8", 10, len(weights))
    stored = Path(api_server.settings.artifact_dir) / "models" / f"{info['id']}.safetensors"
    assert stored.read_bytes() == weights
    spec = {**TINY_SPEC, "teacher": {"arch": "resnet8", "weights": info["id"]}}
    assert alice.post("/v1/jobs", json=spec).status_code == 201
    wrong_arch = {**TINY_SPEC, "teacher": {"arch": "resnet20", "weights": info["id"]}}
    assert_problem(alice.post("/v1/jobs", json=wrong_arch), 422, "teacher.weights")
    assert alice.get(f"/v1/models/{info['id']}").json()["sha256"] == info["sha256"]
    with api_server.client(api_server.new_key("mallory")) as mallory:
        assert_problem(mallory.get(f"/v1/models/{info['id']}"), 404, "model_id")
        assert_problem(mallory.post("/v1/jobs", json=spec), 422, "teacher.weights")


def test_model_upload_with_wrong_shapes_or_bad_file(alice):
    weights = _safetensors("resnet8", 10)
    body = assert_problem(upload_model(alice, weights, arch="resnet8", num_classes=5), 422, "file")
    assert "shape" in body["detail"] and "[5" in body["detail"]
    other = _safetensors("resnet8", 10, extra=True)
    body = assert_problem(upload_model(alice, other, arch="resnet8", num_classes=10), 422, "file")
    assert "unexpected tensor projector.weight" in body["detail"]
    gray = assert_problem(upload_model(alice, weights, arch="resnet8", num_classes=10, in_channels=1), 422)
    assert "in_channels=1" in gray["detail"]
    assert_problem(upload_model(alice, b"\x80\x04pickle", arch="resnet8", num_classes=10), 422, "file")
    assert_problem(upload_model(alice, weights, arch="resnet9000", num_classes=10), 422, "arch")
    assert_problem(upload_model(alice, weights, arch="resnet8", num_classes=1), 422, "num_classes")
    assert_problem(alice.post("/v1/models", data={"arch": "resnet8", "num_classes": "10"}), 422, "file")




def test_kd_upload_commands(api_server: ApiServer, tmp_path, monkeypatch, capsys):
    """`kd upload-dataset` / `kd upload-model` over real HTTP; a kd-exported teacher needs no options."""
    from kdcli.main import main as kd
    from kdcore.export import ModelCard, save_safetensors
    from kdcore.models import build_model

    key = api_server.new_key("cli")
    monkeypatch.setenv("KD_API_URL", api_server.base_url)
    monkeypatch.setenv("KD_API_KEY", key)
    archive = tmp_path / "pets.zip"
    archive.write_bytes(zip_bytes(image_folder_files({"cat": 2, "dog": 2})))
    assert kd(["upload-dataset", str(archive), "--name", "pets"]) == 0
    first, hint = capsys.readouterr().out.splitlines()
    dataset_id = json.loads(hint)["dataset"]["dataset_id"]
    assert first.startswith(f"dataset {dataset_id}  4 images, 2 classes")

    card = ModelCard(arch="resnet8", num_classes=7, in_channels=1, image_size=8, classes=list("abcdefg"),
                     mean=(0.5,), std=(0.25,))
    weights = save_safetensors(build_model("resnet8", 7, in_channels=1), card, tmp_path / "teacher.safetensors")
    assert kd(["upload-model", str(weights)]) == 0
    teacher = json.loads(capsys.readouterr().out.splitlines()[1])["teacher"]
    with api_server.client(key) as client:
        info = client.get(f"/v1/models/{teacher['weights']}").json()
        assert client.get(f"/v1/datasets/{dataset_id}").json()["name"] == "pets"
    assert (teacher["arch"], info["arch"], info["num_classes"], info["in_channels"]) == ("resnet8", "resnet8", 7, 1)

    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(_safetensors("resnet8", 10))
    assert kd(["upload-model", str(plain)]) == 2
    assert "give --arch and --num-classes" in capsys.readouterr().err
    assert kd(["upload-model", str(plain), "--arch", "resnet8", "--num-classes", "5"]) == 2  # server says why
    assert "shape" in capsys.readouterr().err
    assert kd(["upload-dataset", str(tmp_path / "missing.zip")]) == 2
    assert "no such file" in capsys.readouterr().err


def _flag_utf8(archive: bytes) -> bytes:
    """Set the "names are UTF-8" flag (bit 11) on every entry of a zip, whatever its names hold."""
    data = bytearray(archive)
    for signature, flag_at in ((b"PK\x03\x04", 7), (b"PK\x01\x02", 9)):
        at = data.find(signature)
        while at >= 0:
            data[at + flag_at] |= 0x08
            at = data.find(signature, at + 4)
    return bytes(data)


def _zip_renamed(extra: dict[str, bytes], old: bytes, new: bytes, utf8_flag: bool) -> bytes:
    """A good archive plus `extra` files, with the bytes `old` of their names replaced by `new` (same length),
    as a zip writer that stores names in another encoding leaves them."""
    assert len(old) == len(new)
    archive = zip_bytes({**_good(), **extra}).replace(old, new)
    return _flag_utf8(archive) if utf8_flag else archive


def _tar_with_raw_name(raw: bytes) -> bytes:
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as archive:
        for name, data in {**_good(), raw.decode("utf-8", "surrogateescape"): png_bytes((5, 5, 5))}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "archive"), [
    ("zip says UTF-8, is not", _zip_renamed({"b/QQ.png": png_bytes((5, 5, 5))}, b"QQ", b"\xff\xfe", True)),
    ("zip without the flag, not UTF-8", _zip_renamed({"QQQQ/1.png": png_bytes((5, 5, 5))}, b"QQQQ",
                                                     "café".encode("latin-1"), False)),
    ("tar with raw bytes", _tar_with_raw_name(b"caf\xe9/1.png")),
])
def test_names_that_are_not_utf8_are_refused(api_server: ApiServer, alice, name, archive):
    body = assert_problem(upload(alice, archive), 422, "file")
    assert "UTF-8" in body["detail"]
    # Nothing half-stored answers 500 later: the listing and every data set still read.
    listing = alice.get("/v1/datasets")
    assert listing.status_code == 200
    for item in listing.json()["items"]:
        assert alice.get(f"/v1/datasets/{item['id']}").status_code == 200


def test_utf8_names_without_the_flag_are_read_as_utf8(alice):
    """Many zip writers store UTF-8 names without saying so: they are class names like any other."""
    extra = {"QQQQQ/1.png": png_bytes((5, 5, 5)), "QQQQQ/2.png": png_bytes((6, 6, 6))}
    response = upload(alice, _zip_renamed(extra, b"QQQQQ", "café".encode(), False))
    assert response.status_code == 201, response.text
    assert response.json()["classes"] == ["a", "b", "café"]
    assert alice.get("/v1/datasets").status_code == 200


def test_names_of_uploads_are_printable(alice):
    archive = zip_bytes(image_folder_files({"a": 1, "b": 1}))
    assert_problem(upload(alice, archive, name="bad\x00name"), 422, "name")
    unicode_name = upload(alice, archive, name="猫と犬 🐈")
    assert unicode_name.status_code == 201 and unicode_name.json()["name"] == "猫と犬 🐈"
    # httpx escapes a control character in a file name; a hostile client need not.
    body = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a\x01b\x00c.zip"\r\n\r\n'
            + archive + b"\r\n--xyz--\r\n")
    weird_file = alice.post("/v1/datasets", content=body,
                            headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert weird_file.status_code == 201, weird_file.text
    assert weird_file.json()["name"] == "abc"


def test_kd_submit_dataset_id_runs_a_spec_on_an_upload(api_server: ApiServer, alice, tmp_path, monkeypatch, capsys):
    from kdcli.main import main as kd

    info = upload(alice, zip_bytes(image_folder_files({"cat": 3, "dog": 3}))).json()
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({**TINY_SPEC, "dataset": {"source": "digits", "subset": 100}}))
    key = alice.headers["Authorization"].removeprefix("Bearer ")
    monkeypatch.setenv("KD_API_URL", api_server.base_url)
    monkeypatch.setenv("KD_API_KEY", key)
    assert kd(["submit", str(spec_path), "--dataset-id", info["id"]]) == 0
    job_id = capsys.readouterr().out.split()[0]
    dataset = alice.get(f"/v1/jobs/{job_id}").json()["spec"]["dataset"]
    assert (dataset["source"], dataset["dataset_id"], dataset["subset"]) == ("upload", info["id"], 100)
