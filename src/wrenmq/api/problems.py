"""Errors as problem details (RFC 9457): every error the API answers is ``application/problem+json``
with ``type``, ``title``, ``status`` and ``detail``, whether it was raised as a ``Problem``, as an
``HTTPException`` (400, 401, 403, 404, 405), by FastAPI's request validation (422, with an
``errors`` list naming each field and what is wrong with it) or by a bug (500, details logged).

``type`` is ``about:blank`` (nothing beyond the HTTP status) except for these problems, which a
client may want to tell apart: ``urn:wrenmq:problem:invalid-request`` (422, ``errors``),
``...:publish-rejected`` (403/422 from a publish hook, ``reason_code``), ``...:unknown-broker``
(404), ``...:not-configured`` (409: no password or ACL file to manage) and ``...:file-invalid``
(409: that file no longer parses).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from .principal import Forbidden

if TYPE_CHECKING:
    from ..broker.broker import Broker

__all__ = ["MEDIA_TYPE", "FieldError", "Problem", "ProblemDetails", "install", "problem_responses"]

log = logging.getLogger("wrenmq.api")

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:wrenmq:problem:"
INVALID_REQUEST = TYPE_PREFIX + "invalid-request"


class FieldError(BaseModel):
    """One reason a request was refused: where (``body.topic``, ``query.limit``) and why."""

    field: str = Field(description="Where the bad value is: body.<field>, query.<name>, path.<name>.")
    message: str
    type: str = Field(description="A short machine-readable kind, e.g. missing, int_parsing, value_error.")


class ProblemDetails(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str = Field(default="about:blank", description="about:blank, or urn:wrenmq:problem:<name> for wrenmq's own.")
    title: str = Field(description="A short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong this time, for a person to read.")
    errors: list[FieldError] | None = Field(default=None, description="422: every field that was refused, and why.")
    reason_code: int | None = Field(default=None, description="A publish refused by a hook: its MQTT reason code.")


class Problem(Exception):
    """Raise to answer with a problem: ``Problem(404, "no client 'x'")``."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        title: str | None = None,
        errors: list[FieldError] | None = None,
        reason_code: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = TYPE_PREFIX + kind if kind else "about:blank"
        self.title = title or HTTPStatus(status).phrase
        self.errors = errors
        self.reason_code = reason_code

    @classmethod
    def invalid(cls, errors: list[FieldError]) -> Problem:
        """422 for request values that passed the schema but not the broker's rules."""
        detail = "; ".join(f"{error.field}: {error.message}" for error in errors)
        return cls(422, detail, kind="invalid-request", title="Invalid request", errors=errors)

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        body = ProblemDetails(
            type=self.type,
            title=self.title,
            status=self.status,
            detail=self.detail,
            errors=self.errors,
            reason_code=self.reason_code,
        )
        content = body.model_dump(exclude_none=True)
        return JSONResponse(content, self.status, headers=headers, media_type=MEDIA_TYPE)


def field_error(loc: tuple[int | str, ...] | list[int | str], message: str, kind: str = "value_error") -> FieldError:
    return FieldError(field=".".join(str(part) for part in loc), message=message, type=kind)


def _validation_errors(exc: RequestValidationError) -> list[FieldError]:
    found = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid"))
        # A validator's ValueError reads "Value error, <our message>": the prefix says nothing.
        message = message.removeprefix("Value error, ")
        found.append(field_error(tuple(error.get("loc", ())), message, str(error.get("type", "value_error"))))
    return found


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return exc.response()


async def _on_forbidden(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Forbidden)
    return Problem(403, exc.reason).response()


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    phrase = HTTPStatus(exc.status_code).phrase
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else ""
    if not detail:
        detail = {404: f"no such resource: {request.url.path}"}.get(exc.status_code, phrase)
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
    return Problem(exc.status_code, detail).response(dict(exc.headers) if exc.headers else None)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return Problem.invalid(_validation_errors(exc)).response()


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("API %s %s failed", request.method, request.url.path, exc_info=exc)
    return Problem(500, "internal error; the broker's log has the details").response()


async def _on_redis_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("API %s %s: the cluster's Redis failed: %s", request.method, request.url.path, exc)
    return Problem(503, "the cluster's Redis is out of reach; try again").response({"Retry-After": "1"})


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses (the schema is filled in by install)."""
    return {status: {"description": _DESCRIPTIONS.get(status, HTTPStatus(status).phrase)} for status in statuses}


_DESCRIPTIONS = {
    400: "The body could not be decoded (JSON must be UTF-8)",
    401: "No valid API key (Authorization: Bearer <key>)",
    403: (
        "Not allowed: the ACL refuses the topic, the key or session is read-only or may not manage, "
        "or a publish hook refused the message"
    ),
    404: "No such resource",
    409: "Not possible in the broker's configuration",
    413: "The body is over api_max_body_size (a signed-in publish: max_packet_size)",
    422: "A request value is invalid: `errors` names each field and why",
    503: "Too many requests without credentials at once (api_max_unauthenticated_requests)",
}


def _document_problems(schema: dict[str, Any]) -> None:
    """Every 4xx/5xx response of every operation is a ProblemDetails in application/problem+json
    (FastAPI would document its own 422 body as application/json)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    model_schema = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(model_schema.pop("$defs", {}))
    components["ProblemDetails"] = model_schema
    ref = {"$ref": "#/components/schemas/ProblemDetails"}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            if "requestBody" in operation:  # the bounds of limits.py, before the route runs
                responses = operation.setdefault("responses", {})
                for status in (413, 503):
                    responses.setdefault(str(status), {"description": _DESCRIPTIONS[status]})
            for status, response in operation.get("responses", {}).items():
                if str(status)[:1] in ("4", "5"):
                    response["content"] = {MEDIA_TYPE: {"schema": ref}}
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body, replaced above
        components.pop(unused, None)


def install(app: FastAPI, broker: Broker) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(Forbidden, _on_forbidden)
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
    if broker.config.cluster.url is not None:  # (redis is imported only in a cluster)
        from redis.exceptions import RedisError

        # The cluster's state (resources, keys, sessions) is in Redis: while it is away, say so.
        app.add_exception_handler(RedisError, _on_redis_error)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document_problems(generate())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
