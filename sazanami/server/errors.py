"""Exceptions as HTTP answers in OpenAI's error format: :class:`ApiError`, :func:`api_error`
(which status and ``code`` each exception gets) and :func:`install` (the app's handlers).

Sazanami's own errors are the client's (400 naming the ``param``; 404 an unknown model; 413 a
schema or rows too large for the memory budget); a client that went away is 499, a search cut
at its time limit 504, anything else 500.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from sazanami.errors import ModelNotFoundError, ParameterError, SazanamiError
from sazanami.server.batcher import Cancelled, SearchTimeout
from sazanami.server.memory import MemoryTooLarge
from sazanami.server.responses import error_body
from sazanami.server.schemas import SchemaTooLarge

__all__ = ["ApiError", "api_error", "install"]


class ApiError(Exception):
    """An error answered in OpenAI's format."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def api_error(exc: BaseException) -> ApiError:
    """The HTTP answer to an exception (sazanami's own errors are the client's; others are 500s)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, SchemaTooLarge):
        return ApiError(413, str(exc), param=exc.param, code="schema_too_large")
    if isinstance(exc, MemoryTooLarge):
        return ApiError(413, str(exc), param=exc.param, code="memory_budget_exceeded")
    if isinstance(exc, ParameterError):
        return ApiError(400, str(exc), param=exc.param, code="invalid_value")
    if isinstance(exc, ModelNotFoundError):
        return ApiError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, ValidationError):
        return _validation_error(exc.errors())
    if isinstance(exc, Cancelled):
        return ApiError(499, str(exc), "cancelled", code="client_closed_request")
    if isinstance(exc, SearchTimeout):
        return ApiError(504, str(exc), "server_error", param="search", code="search_timeout")
    if isinstance(exc, SazanamiError):
        return ApiError(400, str(exc))
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")


def _validation_error(errors: list[Any]) -> ApiError:
    e = errors[0]
    param = ".".join(str(x) for x in e["loc"] if x not in ("body",)) or None
    if e["type"] == "json_invalid":  # an empty body, a lone surrogate …
        reason = str((e.get("ctx") or {}).get("error") or e["msg"])
        if "hex escape" in reason or "surrogate" in reason:
            reason += " (a \\u escape that is a lone UTF-16 surrogate is not text)"
        elif "recursion limit" in reason:
            reason = f"nested too deeply ({reason})"
        return ApiError(400, f"the body is not valid JSON: {reason}", param="body", code="invalid_json")
    if param is None:
        return ApiError(400, f"the body must be a JSON object: {e['msg']}", param="body", code="invalid_type")
    if e["type"] == "extra_forbidden":
        return ApiError(400, f"unknown field {param!r} (see /docs for the fields)", param=param, code="unknown_field")
    if e["type"] == "missing":
        return ApiError(400, f"{param} is required", param=param, code="missing_field")
    return ApiError(400, f"{param}: {e['msg']}, got {e.get('input')!r}", param=param, code="invalid_type")


def install(app: FastAPI) -> None:
    """Answer the app's errors in OpenAI's format: an :class:`ApiError` as it says, Starlette's
    HTTP errors (unknown path, wrong method) with their status, any other exception through
    :func:`api_error`."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(str(exc.detail), "invalid_request_error", code=str(exc.status_code)), status_code=exc.status_code
        )

    @app.exception_handler(Exception)
    async def _other(request: Request, exc: Exception) -> JSONResponse:
        err = api_error(exc)
        return JSONResponse(err.body(), status_code=err.status)
