"""The one place domain errors become HTTP: a status, and the body
``{"success": false, "error": <code>, "message": <text>}``."""

from __future__ import annotations

from typing import Any

import structlog
from quart import Quart, Response, jsonify
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from actors.runtime import ActorError, AskTimeout
from cpms.kernel.errors import (
    Conflict,
    CpmsError,
    Forbidden,
    InsufficientBalance,
    InvalidRequest,
    NotFound,
    PaymentRefused,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    Unprocessable,
)
from storage.errors import StorageUnavailable

log = structlog.stdlib.get_logger("api.errors")

#: Seconds a client is asked to wait when the database or an actor is briefly away.
RETRY_AFTER = 5

_STATUS: list[tuple[type[CpmsError], int]] = [
    (InvalidRequest, 400),
    (Unauthorized, 401),
    (InsufficientBalance, 402),
    (PaymentRefused, 402),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (Unprocessable, 422),
    (TooManyRequests, 429),
    (Unavailable, 503),
]


def status_for(error: CpmsError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    body = {"success": False, "error": code, "message": message}
    body.update(details)
    return body


def error_response(code: str, message: str, status: int, **details: Any) -> Response:
    response = jsonify(error_body(code, message, **details))
    response.status_code = status
    return response


def describe(error: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    """What the client is answered for ``error`` (a refusal, a part of cpms briefly away, no
    answer in time, or a bug, which is logged): status, body, extra headers. Shared by the app's
    error handlers and the doors served before it (:mod:`api.webhook_door`)."""
    if isinstance(error, TooManyRequests):
        body = error_body(error.code, error.message, **error.details)
        return 429, body, {"Retry-After": str(error.retry_after)}
    if isinstance(error, CpmsError):
        return status_for(error), error_body(error.code, error.message, **error.details), {}
    if isinstance(error, AskTimeout):  # an ActorError too: first
        return 504, error_body("timeout", "no answer in time; retry shortly"), {}
    if isinstance(error, StorageUnavailable | ActorError):
        log.warning("briefly unavailable", error=str(error))
        body = error_body(
            "service_unavailable", "the service is briefly unavailable; retry shortly"
        )
        return 503, body, {"Retry-After": str(RETRY_AFTER)}
    log.exception("unhandled error", exc_info=error)
    return 500, error_body("internal_error", "internal server error"), {}


def _described(error: Exception) -> Response:
    status, body, headers = describe(error)
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers)
    return response


def install_error_handlers(app: Quart) -> None:
    """Register the handlers; every error leaves the app in that one shape."""

    @app.errorhandler(CpmsError)
    async def _domain(error: CpmsError) -> Response:
        return _described(error)

    @app.errorhandler(HTTPException)
    async def _http(error: HTTPException) -> Response:
        status = error.code or 500
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            status, "invalid_request" if status < 500 else "internal_error"
        )
        response = error_response(code, error.description or error.name, status)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return response

    async def _briefly_unavailable(error: StorageUnavailable | ActorError) -> Response:
        """The database is unreachable, or an actor is restarting or gone: retry shortly."""
        return _described(error)

    @app.errorhandler(AskTimeout)
    async def _ask_timeout(error: AskTimeout) -> Response:
        return _described(error)

    app.register_error_handler(StorageUnavailable, _briefly_unavailable)
    app.register_error_handler(ActorError, _briefly_unavailable)

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        return _described(error)
