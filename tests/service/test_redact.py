"""kdservice.redact: the service's folders become labels, any other absolute path its base name."""

from __future__ import annotations

import pytest

from kdservice.redact import redact_paths

LABELS = {"/srv/kd/var/data": "<KD_DATA_DIR>", "/srv/kd/var": "<KD_ARTIFACT_DIR>"}


@pytest.mark.parametrize(("text", "shown"), [
    ("image folder not found: /srv/kd/var/datasets/abc. Set dataset.root",
     "image folder not found: <KD_ARTIFACT_DIR>/datasets/abc. Set dataset.root"),
    ("official corruption file not found: /srv/kd/var/data/CIFAR-10-C/fog.npy",
     "official corruption file not found: <KD_DATA_DIR>/CIFAR-10-C/fog.npy"),
    ("cannot identify image file '/srv/kd/var/tmp/extract-1/b/x.png'",
     "cannot identify image file '<KD_ARTIFACT_DIR>/tmp/extract-1/b/x.png'"),
    ("[Errno 2] No such file or directory: '/home/op/private/teacher.safetensors'",
     "[Errno 2] No such file or directory: 'teacher.safetensors'"),
    ("/srv/kd/var2/x is not the artifact dir", "x is not the artifact dir"),
    ("upload one with POST /v1/datasets, see https://kd-service.dev/problems/x",
     "upload one with POST /v1/datasets, see https://kd-service.dev/problems/x"),
    ("train/cat/1.png and 3/4 of the epochs", "train/cat/1.png and 3/4 of the epochs"),
    ("File \"/usr/lib/python3.11/site-packages/torch/nn/x.py\", line 3", "File \"x.py\", line 3"),
])
def test_redact_paths(text, shown):
    assert redact_paths(text, LABELS) == shown


def test_none_and_empty_stay():
    assert redact_paths(None, LABELS) is None and redact_paths("", LABELS) == ""
