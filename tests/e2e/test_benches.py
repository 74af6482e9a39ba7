"""The service benchmarks still run against today's code (a short run of each; their figures are in the
docs, measured by hand): a benchmark that breaks silently is a figure nobody can rerun."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.paths import REPO

pytestmark = pytest.mark.slow


def _run(script: str, *args: str, timeout: float) -> list[str]:
    result = subprocess.run([sys.executable, f"bench/{script}", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def _last_json(lines: list[str]) -> dict:
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


def test_chaos_kills_and_every_job_still_succeeds_once():
    summary = _last_json(_run("chaos.py", "--trials", "1", "--seed", "1", timeout=600))
    assert summary["trials"] == 1 and summary["succeeded"] == 1
    assert summary["completed_twice"] == 0 and summary["phases_retrained"] == 0


def test_api_load_answers_every_request():
    summary = _last_json(_run("api_load.py", "--routes", "get", "post", "--concurrency", "2", "--duration", "0.5",
                              "--seed-jobs", "3", timeout=300))
    assert [row["route"] for row in summary["results"]] == ["get", "post"]
    for row in summary["results"]:
        assert row["requests"] > 0 and set(row["status"]) <= {"200", "201"}, row
