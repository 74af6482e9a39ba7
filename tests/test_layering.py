"""The layering the layout promises: kdcore imports nothing of the service; api/ and worker/ are adapters
over kdservice/ and never import each other; kdservice imports neither adapter."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.paths import REPO

# package -> the top-level packages its code must never import
FORBIDDEN = {
    "kdcore": {"kdservice", "api", "worker", "kdcli"},
    "kdservice": {"api", "worker", "kdcli"},
    "api": {"worker"},
    "worker": {"api"},
}


def imported_packages(path) -> set[str]:
    """Top-level package of every import statement in a file (at any depth: lazy imports count too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_sources_import_only_what_the_layering_allows(package: str) -> None:
    offenders = [
        f"{path.relative_to(REPO)} imports {sorted(imported_packages(path) & FORBIDDEN[package])}"
        for path in sorted((REPO / package).rglob("*.py"))
        if imported_packages(path) & FORBIDDEN[package]
    ]
    assert offenders == []


def _modules_loaded_by(statement: str) -> set[str]:
    code = f"{statement}; import sys; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                         timeout=120)
    return set(out.stdout.split())


def test_importing_the_api_loads_no_worker_module() -> None:
    loaded = _modules_loaded_by("import api, api.app, api.routes.jobs, api.routes.health")
    assert "kdservice" in loaded and "worker" not in loaded


def test_importing_the_worker_loads_no_api_module() -> None:
    loaded = _modules_loaded_by("import worker, worker.celery_app, worker.tasks, worker.sweeper")
    assert "kdservice" in loaded and "api" not in loaded
