"""kd's event-stream reading and the status line it draws next to the progress bar."""

from __future__ import annotations

import json

from kdcli.client import _fraction_of, _status_text, iter_sse


def test_the_status_line_reads_like_the_pages():
    lines = [
        "event: progress", "id: 7",
        "data: " + json.dumps({"state": "running", "phase": "distilling",
                               "progress": {"fraction": 0.4, "seed": 1, "epoch": 3, "epochs": 15}}),
        "",
        "event: state",
        "data: " + json.dumps({"state": "succeeded", "phase": None, "error": None}),
        "",
    ]
    (progress_event, progress), (state_event, state) = list(iter_sse(iter(lines)))
    assert progress_event == "progress" and _fraction_of(progress) == 0.4
    assert _status_text(progress) == "running distilling, seed 1, epoch 3 of 15"
    assert state_event == "state" and _status_text(state) == "succeeded"
    teacher = {"state": "running", "phase": "teacher", "progress": {"fraction": 0.1, "epoch": 1, "epochs": 5}}
    assert _status_text(teacher) == "running teacher, epoch 1 of 5"  # no seed: the teacher is trained once
