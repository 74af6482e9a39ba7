"""No server path goes in or out of the API: specs name data by upload id or built-in source only, built-in
data comes from KD_DATA_DIR, and job errors, logs and problem details never show a server path.

Real uvicorn (thread), SQLite, the real worker code (`worker.tasks.execute_job`, in this process) and kdcore.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import (
    TINY_SPEC,
    ApiServer,
    assert_no_server_path,
    assert_problem,
    image_folder_files,
    module_settings,
    serve,
    write_tiny_cifar10,
    zip_bytes,
)
from worker import tasks


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory):
    yield from serve(module_settings(tmp_path_factory))


@pytest.fixture(scope="module")
def mallory(api_server: ApiServer):
    with api_server.client(api_server.new_key("mallory")) as client:
        yield client


def _upload(client, classes: dict[str, int] | None = None) -> dict:
    archive = zip_bytes(image_folder_files(classes or {"cat": 6, "dog": 6}))
    response = client.post("/v1/datasets", files={"file": ("pets.zip", archive)})
    assert response.status_code == 201, response.text
    return response.json()


def _with(**parts) -> dict:
    spec = copy.deepcopy(TINY_SPEC)
    for part, values in parts.items():
        spec[part] = {**spec.get(part, {}), **values} if isinstance(values, dict) else values
    return spec


def test_another_keys_upload_folder_cannot_be_named(api_server: ApiServer, alice, mallory):
    """Mallory knows (or guesses) where Alice's upload lives: neither its folder nor its id gets her in."""
    folder = Path(api_server.settings.datasets_dir) / _upload(alice)["id"]
    assert folder.is_dir()
    spec = _with(dataset={"source": "imagefolder", "root": str(folder)})
    body = assert_problem(mallory.post("/v1/jobs", json=spec), 422, "dataset.root")
    assert "dataset.source" in [e["field"] for e in body["errors"]]
    assert_no_server_path(json.dumps(body), api_server.settings)
    assert mallory.get("/v1/jobs").json()["items"] == []


@pytest.mark.parametrize(("dataset", "field"), [
    ({"source": "imagefolder", "root": "/"}, "dataset.root"),
    ({"source": "cifar10", "root": "/"}, "dataset.root"),
    ({"source": "cifar10", "download": True}, "dataset.download"),
    ({"source": "mnist", "root": "/tmp/anywhere", "download": True}, "dataset.download"),
    ({"source": "imagefolder", "root": "relative/folder"}, "dataset.source"),
])
def test_server_paths_and_downloads_are_refused(api_server: ApiServer, alice, dataset, field):
    body = assert_problem(alice.post("/v1/jobs", json=_with(dataset=dataset)), 422, field)
    assert_no_server_path(json.dumps(body), api_server.settings)


@pytest.mark.parametrize(("spec", "field"), [
    (_with(dataset={"source": "cifar10"}, evaluate={"source": "official", "official_root": "/srv/CIFAR-10-C"}),
     "evaluate.official_root"),
    (_with(evaluate={"official_root": "CIFAR-10-C"}), "evaluate.official_root"),
    (_with(teacher={"arch": "resnet8", "weights": "/etc/passwd"}), "teacher.weights"),
    (_with(teacher={"arch": "resnet8", "weights": "../models/x.safetensors"}), "teacher.weights"),
    (_with(dataset={"source": "upload", "dataset_id": "../../jobs"}), "dataset.dataset_id"),
])
def test_other_path_fields_are_refused(api_server: ApiServer, alice, spec, field):
    body = assert_problem(alice.post("/v1/jobs", json=spec), 422, field)
    assert_no_server_path(json.dumps(body), api_server.settings)


def test_official_evaluation_needs_no_folder_in_the_spec(alice):
    spec = _with(dataset={"source": "cifar10"}, evaluate={"source": "official"})
    assert alice.post("/v1/jobs", json=spec).status_code == 201


def _run_in_worker(server: ApiServer, client, spec: dict) -> dict:
    job = client.post("/v1/jobs", json=spec)
    assert job.status_code == 201, job.text
    tasks.execute_job(job.json()["id"], server.settings)
    return client.get(f"/v1/jobs/{job.json()['id']}").json()


def _everything_a_client_sees(client, job: dict) -> str:
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as events:
        stream = "".join(events.iter_text())
    return json.dumps(job) + stream


@pytest.mark.parametrize("damage", ["folder removed", "class folder emptied", "image corrupted"])
def test_job_errors_never_show_server_paths(api_server: ApiServer, alice, damage):
    """The data set's files change after upload (an operator, a disk): kdcore's error names files; the
    job's error, its transitions and its log lines must not name where they are."""
    dataset = _upload(alice)
    folder = Path(api_server.settings.datasets_dir) / dataset["id"]
    if damage == "folder removed":
        shutil.rmtree(folder)
    elif damage == "class folder emptied":
        for image in (folder / "dog").iterdir():
            image.unlink()
    else:
        (folder / "cat" / "0.png").write_bytes(b"\x89PNG not an image any more")
    job = _run_in_worker(api_server, alice, _with(dataset={**dataset["spec_hint"], "subset": None,
                                                           "test_subset": None}))
    assert job["state"] == "failed" and job["error"]["code"] == "data_error", job
    if damage != "folder removed":  # the message still says which file, relative to the data set
        assert {"class folder emptied": "dog", "image corrupted": "0.png"}[damage] in job["error"]["message"]
    assert_no_server_path(_everything_a_client_sees(alice, job), api_server.settings)


def test_builtin_sources_and_official_arrays_come_from_the_data_dir(api_server: ApiServer, alice):
    """cifar10 with no root: the worker reads KD_DATA_DIR, and official CIFAR-10-C from KD_DATA_DIR/CIFAR-10-C."""
    data_dir = Path(api_server.settings.data_dir)
    _, labels = write_tiny_cifar10(data_dir)
    official = data_dir / "CIFAR-10-C"
    official.mkdir()
    rng = np.random.default_rng(0)
    np.save(official / "gaussian_noise.npy", rng.integers(0, 256, (5 * 10, 32, 32, 3), dtype=np.uint8))
    # The arrays follow the CIFAR test order: the first 6 labels are the tiny test split's own.
    per_severity = np.concatenate([labels[30:36], np.zeros(4, dtype=labels.dtype)])
    np.save(official / "labels.npy", np.tile(per_severity, 5))
    spec = _with(dataset={"source": "cifar10", "subset": None, "test_subset": None},
                 teacher={"arch": "resnet8", "train": {"epochs": 1, "batch_size": 16}},
                 train={"epochs": 1, "batch_size": 16},
                 evaluate={"source": "official", "corruptions": ["gaussian_noise"], "severities": [1],
                           "max_images": 4, "latency": False})
    job = _run_in_worker(api_server, alice, spec)
    assert job["state"] == "succeeded", job
    results = alice.get(f"/v1/jobs/{job['id']}/results").json()
    assert results["student_kd"]["source"] == "CIFAR-10-C" and results["student_kd"]["n_images"] == 4
    # The same job without the arrays fails, and says so without saying where it looked.
    shutil.rmtree(official)
    failed = _run_in_worker(api_server, alice, {**spec, "name": "no-arrays"})
    assert failed["state"] == "failed" and "gaussian_noise.npy" in failed["error"]["message"]
    assert_no_server_path(_everything_a_client_sees(alice, failed), api_server.settings)
