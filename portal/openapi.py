"""JSON API operations declared once, served as Starlette routes and described as OpenAPI 3.1.

Each `Operation` names its method, path, request and response models (pydantic); the routes and
the document are both generated from that list, so the document cannot drift from the code.
Bodies are validated before a handler runs; handlers are synchronous and run in a worker thread.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, get_args, get_origin

import anyio
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from foundation.errors import AuthenticationFailed, NotFound, PayloadTooLarge, UnsupportedMediaType
from policy.principal import ANONYMOUS, Principal
from policy.store import DuplicateRecord

MAX_BODY_BYTES = 64 * 1024
_REF = "#/components/schemas/{model}"


class ErrorBody(BaseModel):
    """Every refusal: the reason in words, and the HTTP status again for logs."""

    error: str
    status: int


@dataclass(frozen=True)
class PathParameter:
    """A path segment's schema and its parser; a value the parser refuses is simply not found."""

    schema: Mapping[str, Any]
    parse: Callable[[str], Any]
    description: str = ""


@dataclass
class Call:
    """What a handler gets: who asks, the parsed path, query and body, and the app's state."""

    request: Request
    principal: Principal
    path: dict[str, Any]
    query: Any
    body: Any
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def state(self) -> Any:
        return self.request.app.state


Handler = Callable[[Call], Any]
Authenticate = Callable[[Request], Awaitable[Principal]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # OpenAPI form, relative to the mount: "/institutions/{code}"
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    response: Any = None  # a model, list[Model], or None for 204 No Content
    status: int = 200
    query: type[BaseModel] | None = None
    public: bool = False
    # The media type of a streamed answer: the handler returns a Response. With `response`
    # too, the handler returns either (JSON by default, the stream when the client asks).
    streams: str = ""
    asks_a_node: bool = False  # it talks to a DICOM node while the client waits: 502 possible

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


async def _read_body(request: Request, model: type[BaseModel]) -> BaseModel:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise UnsupportedMediaType("send the body as application/json")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"a request body may have at most {MAX_BODY_BYTES} bytes")
    try:
        return model.model_validate_json(bytes(raw))
    except ValidationError as error:
        raise HTTPException(422, _validation_message(error)) from None


def _read_query(request: Request, model: type[BaseModel] | None) -> Any:
    if model is None:
        return None
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as error:
        raise HTTPException(422, _validation_message(error)) from None


def _parse_path(request: Request, parameters: Mapping[str, PathParameter]) -> dict[str, Any]:
    parsed = {}
    for name, text in request.path_params.items():
        try:
            parsed[name] = parameters[name].parse(text)
        except ValueError:
            raise NotFound(f"no {name.replace('_', ' ')} {text!r}") from None
    return parsed


def _run(operation: Operation, call: Call) -> Any:
    try:
        return operation.handler(call)
    except DuplicateRecord as error:  # the core says "taken"; HTTP says 409
        raise HTTPException(409, str(error)) from None


def _endpoint(
    operation: Operation, parameters: Mapping[str, PathParameter], authenticate: Authenticate
) -> Callable[[Request], Awaitable[Response]]:
    adapter = _adapter(operation.response) if operation.response is not None else None

    async def endpoint(request: Request) -> Response:
        principal = ANONYMOUS if operation.public else await authenticate(request)
        if not operation.public and principal is ANONYMOUS:
            raise AuthenticationFailed("sign in, or send a bearer token")
        path = _parse_path(request, parameters)
        query = _read_query(request, operation.query)
        body = await _read_body(request, operation.body) if operation.body else None
        call = Call(request, principal, path, query, body)
        result = await anyio.to_thread.run_sync(_run, operation, call)
        if operation.streams and isinstance(result, Response):
            return result
        if adapter is None:
            return Response(status_code=204)
        return Response(adapter.dump_json(result), operation.status, media_type="application/json")

    endpoint.__name__ = operation.operation_id
    return endpoint


@functools.cache
def _adapter(response: Any) -> TypeAdapter[Any]:
    """One validator a response type, for every app built in the process (building one costs
    more than the requests of most tests)."""
    return TypeAdapter(response)


def build_routes(
    operations: Sequence[Operation],
    parameters: Mapping[str, PathParameter],
    authenticate: Authenticate,
    info: Mapping[str, Any],
    mount_path: str,
) -> list[Route]:
    """One route per path (methods grouped), plus `/openapi.json` describing them all."""
    by_path: dict[str, dict[str, Operation]] = {}
    for operation in operations:
        methods = by_path.setdefault(operation.path, {})
        if operation.method in methods:  # two modules claiming one route: a silent override
            raise ValueError(f"{operation.method} {operation.path} is defined twice")
        methods[operation.method] = operation
    routes = [
        Route(path, _dispatch(methods, parameters, authenticate), methods=list(methods))
        for path, methods in by_path.items()
    ]
    document = functools.cache(lambda: openapi_document(operations, parameters, info, mount_path))

    async def openapi_json(_request: Request) -> Response:
        return JSONResponse(document())

    return [Route("/openapi.json", openapi_json, methods=["GET"]), *routes]


def _dispatch(
    methods: Mapping[str, Operation],
    parameters: Mapping[str, PathParameter],
    authenticate: Authenticate,
) -> Callable[[Request], Awaitable[Response]]:
    endpoints = {m: _endpoint(op, parameters, authenticate) for m, op in methods.items()}

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await endpoints[method](request)

    return dispatch


def _schema_models(operations: Sequence[Operation]) -> list[tuple[type[BaseModel], Any]]:
    models: dict[tuple[type[BaseModel], str], None] = {(ErrorBody, "serialization"): None}
    for operation in operations:
        for model in (operation.body, operation.query):
            if model is not None:
                models[(model, "validation")] = None
        response = operation.response
        if get_origin(response) is list:
            response = get_args(response)[0]
        if response is not None:
            models[(response, "serialization")] = None
    return list(models)


def _response_schema(response: Any, refs: Mapping[Any, Any]) -> dict[str, Any]:
    if get_origin(response) is list:
        return {"type": "array", "items": refs[(get_args(response)[0], "serialization")]}
    return dict(refs[(response, "serialization")])


_ERRORS = {
    "400": "a value the policy model cannot hold",
    "401": "no valid credentials",
    "403": "refused by the policy; the reason says which rule",
    "404": "no such thing, or none you may see",
    "409": "taken, already decided, or still in use",
    "413": "the body is too large",
    "415": "the body is not JSON",
    "422": "the body or query does not match the schema",
}


_NODE_FAILED = "the DICOM node could not be reached or answered with a failure; the reason says"


def _operation_entry(
    operation: Operation, parameters: Mapping[str, PathParameter], refs: Mapping[Any, Any]
) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": refs[(ErrorBody, "serialization")]}}}
    responses: dict[str, Any] = {
        code: {**error, "description": text} for code, text in _ERRORS.items()
    }
    if operation.asks_a_node:
        responses["502"] = {**error, "description": _NODE_FAILED}
    if operation.streams:
        binary = {"schema": {"type": "string", "format": "binary"}}
        content = {operation.streams: binary}
        if operation.response is not None:  # JSON by default, or the stream when asked for
            content = {"application/json": {"schema": _response_schema(operation.response, refs)}}
            content[operation.streams] = {"schema": {"type": "string"}}
        responses[str(operation.status)] = {"description": operation.summary, "content": content}
    elif operation.response is None:
        responses[str(operation.status)] = {"description": "done"}
    else:
        schema = _response_schema(operation.response, refs)
        content = {"application/json": {"schema": schema}}
        responses[str(operation.status)] = {"description": operation.summary, "content": content}
    entry: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
        "responses": responses,
        "parameters": _parameters(operation, parameters),
    }
    if operation.body is not None:
        schema = refs[(operation.body, "validation")]
        entry["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    entry["security"] = [] if operation.public else [{"bearer": []}]
    return entry


def _parameters(operation: Operation, parameters: Mapping[str, PathParameter]) -> list[Any]:
    names = [part[1:-1] for part in operation.path.split("/") if part.startswith("{")]
    listed: list[Any] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": dict(parameters[name].schema),
            "description": parameters[name].description,
        }
        for name in names
    ]
    if operation.query is not None:
        schema = operation.query.model_json_schema(ref_template=_REF)
        for name, prop in schema.get("properties", {}).items():
            required = name in schema.get("required", ())
            listed.append({"name": name, "in": "query", "required": required, "schema": prop})
    return listed


def openapi_document(
    operations: Sequence[Operation],
    parameters: Mapping[str, PathParameter],
    info: Mapping[str, Any],
    mount_path: str,
) -> dict[str, Any]:
    refs, definitions = models_json_schema(_schema_models(operations), ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        entry = _operation_entry(operation, parameters, refs)
        paths.setdefault(mount_path + operation.path, {})[operation.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": dict(info),
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a Ferry access token (JWT) or an API token ferry_<id>_<secret>",
                }
            },
        },
    }
