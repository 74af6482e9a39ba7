"""kdservice.estimate: the per-arch table matches the real models, and the default limits let real work in."""

from __future__ import annotations

import json

import pytest

from kdcore.spec import MODEL_ARCHS, JobSpec
from kdservice.estimate import ARCH_COSTS, check_resources, data_facts, estimate_job
from kdservice.settings import Settings
from tests.helpers import TINY_SPEC
from tests.paths import EXAMPLES

FACTOR = 2.0  # per-pixel figures hold within this at other image sizes (torchvision strides round)


def test_the_table_covers_every_arch():
    assert set(ARCH_COSTS) == set(MODEL_ARCHS)


@pytest.mark.parametrize("arch", MODEL_ARCHS)
def test_the_table_matches_the_real_model(arch):
    """Measured again (meta device: real modules, shapes only) at 32 px, half the table's size."""
    from bench.arch_costs import measure

    params, activations, flops = measure(arch, 32)
    cost = ARCH_COSTS[arch]
    assert cost.params == params  # 10 classes, 3 channels, as in the table
    assert 1 / FACTOR <= cost.activations_per_pixel / activations <= FACTOR
    assert 1 / FACTOR <= cost.flops_per_pixel / flops <= FACTOR


def _defaults() -> Settings:
    return Settings(artifact_dir="/nonexistent-never-created")


@pytest.mark.parametrize("spec", [
    json.loads((EXAMPLES / "digits-kd.json").read_text()),
    TINY_SPEC,
    # The benchmark recipe at full size: CIFAR-100, a WRN-28-10 teacher, 240 epochs, and its students.
    {"dataset": {"source": "cifar100"}, "teacher": {"arch": "wrn_28_10", "train": {}},
     "student": {"arch": "resnet56"}, "train": {"augmix_jsd": True, "augment": "augmix"}},
    # ImageNet-sized images: a ResNet-50 teacher on 224 px SVHN, 90 epochs, batch 256.
    {"dataset": {"source": "svhn", "image_size": 224},
     "teacher": {"arch": "resnet50", "train": {"epochs": 90, "batch_size": 256}},
     "student": {"arch": "mobilenet_v3_small"}, "train": {"epochs": 90, "batch_size": 256}},
])
def test_default_limits_let_real_jobs_in(spec):
    settings, job = _defaults(), JobSpec.model_validate(spec)
    assert check_resources(job, data_facts(job), settings.max_job_memory_bytes, settings.max_job_train_flops) == []


def test_estimates_grow_with_what_drives_them():
    base = JobSpec.model_validate(TINY_SPEC)
    small = estimate_job(base, data_facts(base))
    bigger_batch = base.model_copy(update={"train": base.train.model_copy(update={"batch_size": 256})})
    more_epochs = base.model_copy(update={"train": base.train.model_copy(update={"epochs": 20})})
    big = estimate_job(bigger_batch, data_facts(bigger_batch))
    assert big.memory_bytes > small.memory_bytes and big.train_flops == small.train_flops
    longer = estimate_job(more_epochs, data_facts(more_epochs))
    assert longer.train_flops > small.train_flops and longer.memory_bytes == small.memory_bytes
    # Each training seed trains the students again: three seeds cost more than one, memory is the same.
    seeded = JobSpec.model_validate({**TINY_SPEC, "seeds": [0, 1, 2],
                                     "train": {k: v for k, v in TINY_SPEC["train"].items() if k != "seed"}})
    three = estimate_job(seeded, data_facts(seeded))
    assert three.train_flops > small.train_flops and three.memory_bytes == small.memory_bytes
