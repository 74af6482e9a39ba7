"""RFC 9457 problem details: every error the API returns is application/problem+json naming the field.

Body: {type, title, status, detail, instance, errors: [{field, message}]}. Request validation errors
come from pydantic; `field` is its loc joined with dots, without the leading "body"/"query"/... part.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from kdservice.redact import redact_paths, service_labels

log = logging.getLogger(__name__)
PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://kd-service.dev/problems/"
_LOC_SOURCES = ("body", "query", "path", "header", "cookie")
MAX_ERRORS = 50  # a 10,000-element list of bad values must not make a 10,000-entry answer
# FastAPI's 400 when its JSON parser raises anything but a JSONDecodeError (which is a 422 naming `body`).
_UNPARSABLE_BODY = "There was an error parsing the body"
RETRY_AFTER_SECONDS = 2


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """The error body (RFC 9457) of every 4xx/5xx answer."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] = []


def problem_doc(description: str) -> dict[str, Any]:
    """A route's OpenAPI `responses` entry for a problem answer (document_problems gives its media type)."""
    return {"model": Problem, "description": description}


def document_problems(openapi: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with every 4xx/5xx answer as what problem_response sends: a Problem, as
    application/problem+json only. (FastAPI files a response `model` under application/json, which no error
    ever is, and leaves problem+json without a schema, so a client or a fuzzer could not check error bodies.)
    Idempotent; changes and returns openapi."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    if "Problem" not in schemas:
        schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas["Problem"] = schema
    for path_item in openapi.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                if status[0] in "45":
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return openapi


class ProblemError(Exception):
    """Raise from a handler to answer a problem: ProblemError(404, "job not found", field="job_id")."""

    def __init__(self, status: int, detail: str, *, field: str | None = None,
                 errors: list[dict[str, str]] | None = None, kind: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors or [])
        if field is not None:
            self.errors.insert(0, {"field": field, "message": detail})
        self.kind = kind
        self.headers = headers


def busy(reason: str) -> ProblemError:
    """503 + Retry-After: the API is saturated (not broken); the client should come back shortly."""
    return ProblemError(503, f"the service is busy ({reason}); retry in {RETRY_AFTER_SECONDS} s", kind="busy",
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def problem_response(request: Request, status: int, detail: str, *,
                     errors: list[dict[str, str]] | None = None, kind: str | None = None,
                     headers: dict[str, str] | None = None) -> JSONResponse:
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    slug = kind or title.lower().replace(" ", "-").replace("'", "")
    # No server path in any answer, whatever raised the problem (kdservice/redact.py).
    settings = getattr(request.app.state, "settings", None) if "app" in request.scope else None
    labels = service_labels(settings) if settings is not None else None
    errors = list(errors or [])
    if len(errors) > MAX_ERRORS:
        errors = errors[:MAX_ERRORS] + [{"field": "body", "message": f"and {len(errors) - MAX_ERRORS} more errors"}]
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": redact_paths(detail, labels),
        "instance": request.url.path,
        "errors": [{"field": e["field"], "message": redact_paths(e["message"], labels)} for e in errors],
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def field_of(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'teacher', 'arch') -> 'teacher.arch'; ('query', 'limit') -> 'limit'; list indices kept."""
    parts = list(loc)
    if parts and parts[0] in _LOC_SOURCES:
        parts = parts[1:]
    # Literal/union branches add the tag of the tried type (e.g. 'list[...]'): not a field name.
    parts = [p for p in parts if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
    return ".".join(str(p) for p in parts) or (str(loc[0]) if loc else "body")


def unparsable_body_detail(cause: BaseException | None) -> str:
    """What made a body unreadable, for FastAPI's bare 400 (its `raise ... from` cause)."""
    if isinstance(cause, UnicodeDecodeError):
        reason = "it is not UTF-8 (JSON must be)"
    elif isinstance(cause, RecursionError):
        reason = "its JSON is nested too deep"
    elif isinstance(cause, ValueError) and "digits" in str(cause):
        reason = "it holds a number with too many digits"
    else:
        reason = "it is malformed"
    return f"the request body cannot be parsed: {reason}"


def validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    out, seen = [], set()
    for err in errors:
        if err.get("type") == "json_invalid":
            reason = err.get("ctx", {}).get("error", err["msg"])
            item = {"field": "body", "message": f"invalid JSON: {reason}"}
        else:
            message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            item = {"field": field_of(err.get("loc", ())), "message": message}
        key = (item["field"], item["message"])
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(request, exc.status, exc.detail, errors=exc.errors, kind=exc.kind,
                                headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(list(exc.errors()))
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem_response(request, 422, f"invalid request: {summary}", errors=errors,
                                kind="validation-error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        errors = getattr(exc, "errors", None)
        if exc.status_code == 400 and not errors:
            # Raised while reading the body (FastAPI's JSON parsing, Starlette's multipart parser): name it.
            if detail == _UNPARSABLE_BODY:
                detail = unparsable_body_detail(exc.__cause__)
            errors = [{"field": "body", "message": detail}]
        return problem_response(request, exc.status_code, detail, errors=errors,
                                headers=getattr(exc, "headers", None))

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(request: Request, exc: PoolTimeout) -> JSONResponse:
        error = busy("no database connection came free in time")
        return problem_response(request, 503, error.detail, kind=error.kind, headers=error.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, "internal server error; the error was logged",
                                kind="internal-error")
