"""The one table from domain errors to HTTP statuses, and the handlers that apply it."""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from foundation import errors

log = logging.getLogger(__name__)

HTTP_STATUS: dict[type[errors.FerryError], int] = {
    errors.NotFound: 404,
    errors.InvalidQuery: 400,
    errors.BadRequestBody: 400,
    errors.NotAcceptable: 406,
    errors.StoredDataUnreadable: 422,  # RFC 9110 15.5.21: understood, cannot be processed
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.AuthenticationFailed: 401,
    errors.Forbidden: 403,
    errors.Conflict: 409,
    errors.InsufficientStorage: 507,  # RFC 4918 11.5
    errors.NodeFailed: 502,  # RFC 9110 15.6.3: the node behind Ferry failed, Ferry did not
    errors.ServiceUnavailable: 503,
}


def status_for(error: errors.FerryError) -> int:
    for kind in type(error).__mro__:
        if kind in HTTP_STATUS:
            return HTTP_STATUS[kind]
    return 500


def error_response(status: int, message: str) -> Response:
    body = orjson.dumps({"error": message, "status": status})
    return Response(body, status_code=status, media_type="application/json")


async def handle_ferry_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, errors.FerryError)
    response = error_response(status_for(error), str(error))
    if response.status_code == 401:  # RFC 6750 section 3: say how to authenticate
        response.headers["WWW-Authenticate"] = 'Bearer realm="ferry"'
    if isinstance(error, errors.ServiceUnavailable):  # RFC 9110 10.2.3
        response.headers["Retry-After"] = str(error.retry_after)
    return response


async def handle_http_exception(_request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return error_response(error.status_code, error.detail)


async def handle_unexpected(request: Request, error: Exception) -> Response:
    """A complete 500 that says the connection ends: Starlette re-raises the error after it,
    and the server then closes the connection, which a client must know before reusing it."""
    if errors.is_disk_full(error):  # a disk-full path not yet named where it happened
        log.error("no space left on %s %s: %s", request.method, request.url.path, error)
        response = await handle_ferry_error(request, errors.StorageFull("storage is full"))
    else:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        response = error_response(500, "internal error; the event is logged")
    response.headers["Connection"] = "close"
    return response


EXCEPTION_HANDLERS = {
    errors.FerryError: handle_ferry_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
