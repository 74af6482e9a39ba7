"""kdservice.policy: every string field of the job spec is classified, and the HTTP rule refuses server paths."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kdcore.spec import JobSpec
from kdservice.policy import SERVER_PATH_FIELDS, TEXT_FIELDS, UPLOAD_ID_FIELDS, check_http_spec
from tests.helpers import TINY_SPEC
from tests.paths import EXAMPLES


def _free_strings(schema: dict[str, Any], defs: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of the spec's fields that accept any string (not an enum or a literal)."""
    found = set()
    if "$ref" in schema:
        return _free_strings(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, prefix)
    for branch in schema.get("anyOf", []) + schema.get("allOf", []):
        found |= _free_strings(branch, defs, prefix)
    if schema.get("type") == "string" and "enum" not in schema and "const" not in schema:
        found.add(prefix.rstrip("."))
    if schema.get("type") == "array" and "items" in schema:
        found |= _free_strings(schema["items"], defs, prefix)
    for name, sub in schema.get("properties", {}).items():
        found |= _free_strings(sub, defs, f"{prefix}{name}.")
    return found


def test_every_string_field_of_the_spec_is_classified():
    """A new field that holds free text must be declared a server path, an upload id or plain text."""
    schema = JobSpec.model_json_schema()
    strings = _free_strings(schema, schema["$defs"])
    assert "dataset.root" in strings and "name" in strings  # the walk finds what it should
    classified = set(SERVER_PATH_FIELDS) | set(UPLOAD_ID_FIELDS) | set(TEXT_FIELDS)
    assert strings - classified == set(), "classify these in kdservice/policy.py"


def _spec(**dataset: Any) -> JobSpec:
    return JobSpec.model_validate({**TINY_SPEC, "dataset": {**TINY_SPEC["dataset"], **dataset}})


@pytest.mark.parametrize(("changes", "fields"), [
    ({"source": "imagefolder", "root": "/"}, {"dataset.root", "dataset.source"}),
    ({"source": "cifar10", "root": "/data"}, {"dataset.root"}),
    ({"source": "cifar10", "download": True}, {"dataset.download"}),
    ({"source": "upload", "dataset_id": "../other"}, {"dataset.dataset_id"}),
])
def test_check_http_spec_names_each_offending_field(changes, fields):
    assert {p.field for p in check_http_spec(_spec(**changes))} == fields


def test_ids_and_builtin_sources_pass():
    assert check_http_spec(_spec(source="upload", dataset_id="0123456789abcdef0123456789abcdef")) == []
    assert check_http_spec(_spec(source="cifar10")) == []
    example = JobSpec.model_validate(json.loads((EXAMPLES / "digits-kd.json").read_text()))
    assert check_http_spec(example) == []
    with_path = example.model_copy(update={"teacher": example.teacher.model_copy(update={"weights": "t.safetensors"})})
    assert [p.field for p in check_http_spec(with_path)] == ["teacher.weights"]
