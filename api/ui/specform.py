"""The new-job form: an example spec (examples/*.json) laid out as one labelled input per field, read
back into a spec dict, and the API's problem `errors[].field` paths put next to the inputs they name.

Each input is named by the field's dotted path in the spec (`distill.temperature`), which is exactly
what the API's errors name, so placing an error is a lookup (or, for a path without an input of its
own such as `evaluate.severities.0` or `dataset`, the nearest enclosing input or fieldset). A hidden
`fields` input carries {path: kind} so the form can be read back without the example. Fields the
example leaves out can be set in the "more fields" JSON box, merged over the inputs.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from kdcore.spec import JobSpec

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
EXTRA = "extra"  # the "more fields" JSON box
GENERAL = ""  # top-level fields (name, baseline, export) form the first fieldset
KINDS = ("text", "number", "bool", "select", "json")


@dataclass
class Field:
    path: str  # dotted, as in the spec and in the API's errors[].field
    label: str  # the path inside its fieldset
    kind: str  # one of KINDS
    value: str  # what the input shows
    options: list[str] = field(default_factory=list)
    hint: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return "f-" + self.path.replace(".", "-")


@dataclass
class Group:
    name: str
    fields: list[Field]
    errors: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return "g-" + (self.name or "general")


@dataclass
class SpecForm:
    groups: list[Group]
    extra: str = ""
    extra_errors: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)  # every error, for the summary at the top

    def field_kinds(self) -> str:
        return json.dumps({f.path: f.kind for g in self.groups for f in g.fields}, separators=(",", ":"))


def examples() -> dict[str, dict[str, Any]]:
    """{name: spec} of the specs under examples/ ("digits-kd", "published/cifar100-..."): the path without
    .json, top folder first; files that are not JSON objects are left out."""
    found = {}
    for path in sorted(EXAMPLES_DIR.rglob("*.json"), key=lambda p: (len(p.relative_to(EXAMPLES_DIR).parts), p)):
        try:
            spec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(spec, dict):
            found[path.relative_to(EXAMPLES_DIR).with_suffix("").as_posix()] = spec
    return found


def _schema(path: list[str]) -> FieldInfo | None:
    """The pydantic FieldInfo of a dotted path in JobSpec (None when the path is not a field)."""
    model: type[BaseModel] | None = JobSpec
    info = None
    for part in path:
        if model is None or part not in model.model_fields:
            return None
        info = model.model_fields[part]
        candidates = (info.annotation, *typing.get_args(info.annotation))
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return info


def _options(info: FieldInfo | None) -> list[str]:
    if info is not None and typing.get_origin(info.annotation) is typing.Literal:
        return [str(v) for v in typing.get_args(info.annotation)]
    return []


def _leaves(spec: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for key, value in spec.items():
        if isinstance(value, dict) and value:
            out += _leaves(value, (*prefix, key))
        else:
            out.append(((*prefix, key), value))
    return out


def _kind_of(value: Any, options: list[str]) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "select" if value in options else "text"
    return "json"


def _shown(value: Any, kind: str) -> str:
    if kind == "bool":
        return "true" if value else ""
    return str(value) if kind in ("text", "select") else json.dumps(value)


def _make_field(path: tuple[str, ...], kind: str, value: str) -> Field:
    info = _schema(list(path))
    label = ".".join(path[1:]) if len(path) > 1 else path[0]
    return Field(".".join(path), label, kind, value, _options(info) if kind == "select" else [],
                 (info.description or "") if info else "")


def _grouped(fields: list[Field]) -> list[Group]:
    groups: dict[str, Group] = {GENERAL: Group(GENERAL, [])}
    for f in fields:
        name = f.path.split(".")[0] if "." in f.path else GENERAL
        groups.setdefault(name, Group(name, [])).fields.append(f)
    return [g for g in groups.values() if g.fields or g.name == GENERAL]


def form_from_spec(spec: dict[str, Any]) -> SpecForm:
    fields = []
    for path, value in _leaves(spec):
        kind = _kind_of(value, _options(_schema(list(path))))
        fields.append(_make_field(path, kind, _shown(value, kind)))
    return SpecForm(_grouped(fields))


def form_from_post(form: typing.Mapping[str, Any]) -> SpecForm:
    """The form as the user submitted it (to show it again with its errors)."""
    fields = []
    for path, kind in _posted_kinds(form).items():
        raw = form.get(path)
        value = ("true" if raw is not None else "") if kind == "bool" else str(raw or "")
        fields.append(_make_field(tuple(path.split(".")), kind, value))
    return SpecForm(_grouped(fields), extra=str(form.get(EXTRA) or ""))


def _posted_kinds(form: typing.Mapping[str, Any]) -> dict[str, str]:
    try:
        kinds = json.loads(str(form.get("fields") or "{}"))
    except ValueError:
        return {}
    if not isinstance(kinds, dict):
        return {}
    return {str(p): k for p, k in kinds.items() if k in KINDS and str(p) and str(p) not in ("fields", EXTRA)}


def _set(spec: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = spec
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _parse(raw: str, kind: str) -> Any:
    """A non-empty input's value; raises ValueError with the message to show next to the input."""
    if kind == "number":
        try:
            return int(raw)
        except ValueError:
            try:
                return float(raw)
            except ValueError:
                raise ValueError("enter a number") from None
    if kind in ("text", "select") and not raw.startswith(("[", "{")):
        return raw
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None


def spec_from_post(form: typing.Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """(the spec the form describes, errors of inputs that could not be read). An empty input is left out
    (the spec's default applies); an unchecked box is false."""
    spec: dict[str, Any] = {}
    errors = []
    for path, kind in _posted_kinds(form).items():
        raw = form.get(path)
        if kind == "bool":
            _set(spec, path, raw is not None)
            continue
        text = str(raw or "").strip()
        if not text:
            continue
        try:
            _set(spec, path, _parse(text, kind))
        except ValueError as exc:
            errors.append({"field": path, "message": str(exc)})
    extra = str(form.get(EXTRA) or "").strip()
    if extra:
        try:
            more = json.loads(extra)
            if not isinstance(more, dict):
                raise ValueError("give a JSON object, e.g. {\"dataset\": {\"subset\": 500}}")
            spec = _merge(spec, more)
        except ValueError as exc:
            errors.append({"field": EXTRA, "message": f"not valid JSON: {exc}" if "JSON" not in str(exc)
                           else str(exc)})
    return spec, errors


def _given_in(extra: str, parts: list[str]) -> bool:
    """Whether the "more fields" JSON sets this path (or the part of it that exists)."""
    try:
        node: Any = json.loads(extra) if extra.strip() else None
    except ValueError:
        return False
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def place_errors(form: SpecForm, errors: list[dict[str, str]]) -> SpecForm:
    """Attach each {field, message} to the input of that path, else of the nearest enclosing path, else to
    the "more fields" box when it set that path, else to the fieldset it lies in, else to that box. The
    summary at the top lists every error with a link (`anchor`) to where it is shown."""
    inputs = {f.path: f for g in form.groups for f in g.fields}
    groups = {g.name: g for g in form.groups}
    for error in errors:
        path, message = error["field"], error["message"]
        parts = path.split(".")
        enclosing = next((".".join(parts[:end]) for end in range(len(parts), 0, -1)
                          if ".".join(parts[:end]) in inputs), None)
        group = parts[0] if len(parts) > 1 or parts[0] in groups else GENERAL
        if enclosing is None and _given_in(form.extra, parts):
            form.extra_errors.append(f"{path}: {message}")
            anchor = "f-" + EXTRA
        elif enclosing is not None:
            inputs[enclosing].errors.append(message if enclosing == path else f"{path}: {message}")
            anchor = inputs[enclosing].id
        elif path != EXTRA and group in groups and (group != GENERAL or path in JobSpec.model_fields):
            groups[group].errors.append(f"{path}: {message}")
            anchor = groups[group].id
        else:
            form.extra_errors.append(message if path == EXTRA else f"{path}: {message}")
            anchor = "f-" + EXTRA
        form.errors.append({"field": path, "message": message, "anchor": anchor})
    return form
