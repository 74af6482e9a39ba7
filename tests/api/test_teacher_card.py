"""An uploaded teacher whose model card disagrees with the job's data is refused at submit (422 naming
teacher.weights and listing the differences); a card that differs only in mean/std is accepted."""

from __future__ import annotations

import io
from dataclasses import replace

from kdcore.export import ModelCard, save_safetensors
from kdcore.models import build_model
from tests import helpers
from tests.helpers import TINY_SPEC, assert_problem

api_server = helpers.api_server
DIGITS_CARD = ModelCard(arch="resnet8", num_classes=10, in_channels=1, image_size=8,
                        classes=[str(d) for d in range(10)], mean=(0.3,), std=(0.4,))


def _upload(client, card: ModelCard, tmp_path) -> str:
    path = tmp_path / f"teacher-{abs(hash((tuple(card.classes), card.mean, card.image_size)))}.safetensors"
    save_safetensors(build_model("resnet8", 10, 1, 8), card, path)
    response = client.post("/v1/models", files={"file": ("teacher.safetensors", io.BytesIO(path.read_bytes()))},
                           data={"arch": "resnet8", "num_classes": "10", "in_channels": "1"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _submit(client, model_id: str):
    return client.post("/v1/jobs", json={**TINY_SPEC, "teacher": {"arch": "resnet8", "weights": model_id}})


def test_a_teacher_whose_classes_are_in_another_order_is_refused(alice, tmp_path):
    shuffled = replace(DIGITS_CARD, classes=[str(d) for d in reversed(range(10))])
    body = assert_problem(_submit(alice, _upload(alice, shuffled, tmp_path)), 422, "teacher.weights")
    assert "classes" in body["detail"] and "['9', '8'" in body["detail"]


def test_a_teacher_for_another_image_size_is_refused(alice, tmp_path):
    bigger = replace(DIGITS_CARD, image_size=32)
    body = assert_problem(_submit(alice, _upload(alice, bigger, tmp_path)), 422, "teacher.weights")
    assert "32" in body["detail"] and "8" in body["detail"]


def test_a_matching_teacher_or_one_with_its_own_normalisation_is_accepted(alice, tmp_path):
    assert _submit(alice, _upload(alice, DIGITS_CARD, tmp_path)).status_code == 201
    own_stats = replace(DIGITS_CARD, mean=(0.9,), std=(0.1,))
    assert _submit(alice, _upload(alice, own_stats, tmp_path)).status_code == 201
