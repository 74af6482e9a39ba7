"""A given teacher's model card must agree with the job's data: refused, or fed its own normalisation.

kdcore.cards is torch-free (the API calls it at submit); kdcore.given_teacher applies it in kdcore.run.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from kdcore.callbacks import Callbacks
from kdcore.cards import (
    BUILTIN_SOURCES,
    DataFacts,
    ModelCard,
    card_differences,
    data_facts,
    read_card,
    teacher_file_differences,
)
from kdcore.data import BatchLoader, load_dataset
from kdcore.errors import KDError, WeightsError
from kdcore.evaluate import accuracy, predict_logits
from kdcore.export import load_model, save_safetensors
from kdcore.given_teacher import OWN_NORMALIZATION, Renormalized
from kdcore.models import build_model
from kdcore.pipeline import run
from kdcore.spec import DATASET_SOURCES, DatasetSpec, JobSpec
from tests.paths import CIFAR_TARBALL, REPO

CARD = ModelCard(arch="resnet8", num_classes=2, in_channels=3, image_size=32, classes=["cat", "dog"],
                 mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
JOB = {
    "dataset": {"source": "digits"},
    "student": {"arch": "resnet8"},
    "distill": {"method": "kd"},
    "train": {"epochs": 1, "batch_size": 128, "lr": 0.1},
    "baseline": False,
    "evaluate": {"corruptions": ["gaussian_noise"], "severities": [2], "max_images": 60, "latency": False},
    "export": ["safetensors"],
}


class Logs(Callbacks):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def on_log(self, message: str) -> None:
        self.lines.append(message)


# ---- the torch-free part --------------------------------------------------------------------------

def test_differences_name_what_differs():
    same = DataFacts(classes=["cat", "dog"], in_channels=3, image_size=32, mean=CARD.mean, std=CARD.std)
    assert card_differences(CARD, same) == []
    other = DataFacts(classes=["dog", "cat"], in_channels=1, image_size=28, mean=(0.1, 0.1, 0.1), std=CARD.std)
    lines = card_differences(CARD, other)
    assert lines[0].startswith("classes: teacher has ['cat', 'dog'], data has ['dog', 'cat']")
    assert "another order" in lines[0]
    assert lines[1] == "channels: teacher expects 3, data has 1"
    assert lines[2] == "image size: teacher expects 32x32, data has 28x28"
    assert lines[3].startswith("normalization: teacher expects mean (0.5000, 0.4000, 0.3000)")
    assert card_differences(CARD, DataFacts()) == []  # nothing known, nothing to object to
    many = replace(CARD, classes=[f"c{i}" for i in range(100)])
    (line,) = card_differences(many, DataFacts(classes=[f"c{i}" for i in range(10)]))
    assert "...] (100 names)" in line and "'c11'" in line and "'c12'" not in line


def test_data_facts_without_loading_the_data():
    cifar = data_facts(DatasetSpec(source="cifar10"))
    assert (cifar.classes[:2], cifar.in_channels, cifar.image_size) == (["airplane", "automobile"], 3, 32)
    assert data_facts(DatasetSpec(source="mnist", image_size=32)).image_size == 32  # dataset.image_size wins
    upload = data_facts(DatasetSpec(source="upload", dataset_id="d1"), classes=["a", "b"], image_size=64)
    assert (upload.classes, upload.image_size, upload.in_channels) == (["a", "b"], 64, None)
    assert set(BUILTIN_SOURCES) == set(DATASET_SOURCES) - {"imagefolder", "upload"}


def test_builtin_class_names_are_the_loaders():
    """The constants against what the loaders return where the data (or the loader's own list) is here."""
    from sklearn.datasets import load_digits
    from torchvision import datasets

    assert list(BUILTIN_SOURCES["digits"].classes) == [str(t) for t in load_digits().target_names]
    assert list(BUILTIN_SOURCES["mnist"].classes) == datasets.MNIST.classes
    assert list(BUILTIN_SOURCES["fashion_mnist"].classes) == datasets.FashionMNIST.classes
    # SVHN labels are the digits (torchvision maps the stored 10 to 0); CIFAR-100's names are sorted.
    assert BUILTIN_SOURCES["svhn"].classes == BUILTIN_SOURCES["digits"].classes
    c100 = BUILTIN_SOURCES["cifar100"].classes
    assert len(set(c100)) == 100 and list(c100) == sorted(c100)
    if not CIFAR_TARBALL.is_file() or not shutil.which("tar"):
        pytest.skip(f"{CIFAR_TARBALL} or tar not found")
    # The tarball's class folders, sorted, are the CIFAR-10 label order. GNU tar lists its 60,000
    # members in under a second; Python's tarfile takes over ten.
    names = subprocess.run(["tar", "-tzf", str(CIFAR_TARBALL)], capture_output=True, text=True, check=True)
    folders = {n.split("/")[1] for n in names.stdout.splitlines() if n.startswith("train/") and n.count("/") >= 2}
    assert list(BUILTIN_SOURCES["cifar10"].classes) == sorted(folders)


def test_read_card_from_the_header(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "kd.safetensors"), metadata=CARD.to_metadata())
    assert read_card(tmp_path / "kd.safetensors") == CARD
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    assert read_card(tmp_path / "plain.safetensors") is None
    assert teacher_file_differences(tmp_path / "plain.safetensors", DatasetSpec(source="digits")) == []
    broken = {**CARD.to_metadata(), "classes": "not json"}
    save_file({"w": torch.zeros(2)}, str(tmp_path / "broken.safetensors"), metadata=broken)
    with pytest.raises(WeightsError, match="model card is incomplete or malformed"):
        read_card(tmp_path / "broken.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        read_card(tmp_path / "junk.safetensors")


def test_submit_check_runs_without_torch(tmp_path):
    """What the API calls on the request path: no torch import, the differences as lines."""
    path = tmp_path / "teacher.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata=CARD.to_metadata())
    code = (
        "import sys, json; from kdcore.cards import teacher_file_differences; from kdcore.spec import DatasetSpec\n"
        f"lines = teacher_file_differences({str(path)!r}, DatasetSpec(source='digits'))\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'lines': lines}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    answer = json.loads(out.stdout)
    assert answer["torch"] is False
    assert [line.split(":")[0] for line in answer["lines"]] == ["classes", "channels", "image size"]


# ---- kdcore.run with a given teacher --------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory, cache_dir) -> Path:
    """A resnet8 teacher trained on digits by a real job; its teacher.safetensors carries the card."""
    out = tmp_path_factory.mktemp("teacher")
    spec = {**JOB, "teacher": {"arch": "resnet8", "train": {"epochs": 2, "batch_size": 128, "lr": 0.1}},
            "evaluate": {"corruptions": "none", "latency": False}}
    run(JobSpec.model_validate(spec), out, cache_dir=cache_dir, device="cpu")
    return out / "teacher.safetensors"


def _with_card(source: Path, target: Path, **changes) -> Path:
    card = replace(read_card(source), **changes)
    save_file(load_file(str(source)), str(target), metadata=card.to_metadata())
    return target


def test_a_teacher_with_another_class_order_is_refused(digits_teacher, tmp_path, cache_dir):
    order = [str(d) for d in range(10)]
    random.Random(0).shuffle(order)
    shuffled = _with_card(digits_teacher, tmp_path / "shuffled.safetensors", classes=order)
    spec = JobSpec.model_validate({**JOB, "teacher": {"arch": "resnet8", "weights": str(shuffled)}})
    with pytest.raises(KDError) as raised:
        run(spec, tmp_path / "job", cache_dir=cache_dir, device="cpu")
    assert raised.value.code == "teacher_mismatch"
    assert f"classes: teacher has {order!r}, data has {[str(d) for d in range(10)]!r}" in raised.value.message
    # The same check the API makes at submit, without torch:
    assert teacher_file_differences(shuffled, spec.dataset)[0].startswith("classes: teacher has")
    sized = _with_card(digits_teacher, tmp_path / "sized.safetensors", image_size=16)
    with pytest.raises(KDError, match="image size: teacher expects 16x16, data has 8x8"):
        run(JobSpec.model_validate({**JOB, "teacher": {"arch": "resnet8", "weights": str(sized)}}),
            tmp_path / "job2", cache_dir=cache_dir, device="cpu")


def test_renormalized_forward_and_features_equal_the_own_normalisation():
    torch.manual_seed(0)
    model = build_model("resnet8", 10, 3, 16).eval()
    data_mean, data_std, own_mean, own_std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25), (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
    pixels = torch.rand(4, 3, 16, 16)

    def normalised(mean, std):
        return (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]

    wrapped = Renormalized(model, data_mean, data_std, own_mean, own_std)
    with torch.no_grad():
        assert torch.allclose(wrapped(normalised(data_mean, data_std)), model(normalised(own_mean, own_std)),
                              atol=1e-5)
        logits, feats = wrapped.forward_features(normalised(data_mean, data_std))
        ref_logits, ref_feats = model.forward_features(normalised(own_mean, own_std))
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(feats, ref_feats, strict=True))
    assert set(wrapped.state_dict()) == {f"model.{k}" for k in model.state_dict()}


def test_a_teacher_with_its_own_normalisation_is_fed_its_own_statistics(tmp_path, cache_dir):
    """A teacher really trained with other statistics (here: mean 0.9, std 0.1 on digits) distils and is
    evaluated; its clean accuracy is the one it has on data normalised with its own statistics."""
    data = load_dataset(DatasetSpec(source="digits"), cache_dir=cache_dir)
    own_mean, own_std = (0.9,), (0.1,)
    torch.manual_seed(0)
    teacher = build_model("resnet8", data.num_classes, data.in_channels, data.image_size)
    optimizer = torch.optim.SGD(teacher.parameters(), lr=0.05, momentum=0.9)
    loader = BatchLoader(data.train_x, data.train_y, batch_size=64, shuffle=True, drop_last=True,
                         augment="none", flip=False, mean=own_mean, std=own_std, device="cpu", seed=0)
    teacher.train()
    for epoch in range(2):
        loader.set_epoch(epoch)
        for x, y in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(teacher(x), y).backward()
            optimizer.step()
    card = ModelCard(arch="resnet8", num_classes=10, in_channels=1, image_size=8, classes=data.classes,
                     mean=own_mean, std=own_std)
    weights = save_safetensors(teacher, card, tmp_path / "own.safetensors")

    logs = Logs()
    spec = JobSpec.model_validate({**JOB, "teacher": {"arch": "resnet8", "weights": str(weights)}})
    results = run(spec, tmp_path / "job", logs, cache_dir=cache_dir, device="cpu")
    plain, _ = load_model(weights)
    own_logits = predict_logits(plain, data.test_x, mean=own_mean, std=own_std, device=torch.device("cpu"))
    assert results["teacher"]["clean_acc"] == accuracy(own_logits, data.test_y)
    naive = predict_logits(plain, data.test_x, mean=data.mean, std=data.std, device=torch.device("cpu"))
    assert accuracy(naive, data.test_y) != results["teacher"]["clean_acc"]  # the data's statistics misfeed it
    assert results["teacher"]["normalization"] == OWN_NORMALIZATION
    assert results["student_kd"]["normalization"] != OWN_NORMALIZATION
    assert results["teacher"]["corruption_acc"] is not None and results["student_kd"]["clean_acc"] is not None
    assert any("normalization: teacher expects mean (0.9000)" in line for line in logs.lines)
    # The job's teacher.safetensors keeps the teacher's own card: whoever downloads it feeds it correctly.
    _, saved = load_model(tmp_path / "job" / "teacher.safetensors")
    assert (saved.mean, saved.std) == (own_mean, own_std)
