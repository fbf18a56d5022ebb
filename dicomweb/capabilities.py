"""Retrieve Capabilities: a WADL of the routes Ferry really serves (PS3.18 8.9, Annex H).

OPTIONS on the service describes every resource; OPTIONS on any other resource describes that
one, with its methods in the `Allow` header (RFC 9110 10.2.1).

The document is generated from the application's route table on each request, so it cannot
list a resource that is not routed, or miss one that is. What a route's table entry cannot say
(media types, query parameters) comes from a `Capability` the endpoint declares with
`@declare(...)`, or else from `DECLARED`, keyed by the endpoint's qualified name, for the
endpoints of the other DICOMweb modules. An endpoint declaring nothing is still listed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from pydicom.datadict import keyword_for_tag
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from archive.search import MATCHABLE, REQUEST_ATTRIBUTES_SEQUENCE, SEQUENCE_MATCHABLE
from dicomweb.media import InvalidMediaType, accept_header, parse_accept
from dicomweb.rendering import IMAGE_TYPES
from dicomweb.urls import DICOMWEB_PREFIX, public_base
from foundation.errors import InvalidQuery, NotAcceptable

WADL = "application/vnd.sun.wadl+xml"  # PS3.18 8.9.2
WADL_NAMESPACE = "http://wadl.dev.java.net/2009/02"
XSD_NAMESPACE = "http://www.w3.org/2001/XMLSchema"
JSON = "application/json"
CAPABILITY_ATTRIBUTE = "dicomweb_capability"

DICOM_JSON = "application/dicom+json"
DICOM_PARTS = 'multipart/related; type="application/dicom"'

# Path parameters as Ferry names them, and as PS3.18 names them in URI templates.
TEMPLATE_NAMES = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID"}
TEMPLATE_NAMES |= {"instance": "SOPInstanceUID", "frames": "FrameList"}
_SCOPES = {"study": "Study", "series": "Series", "instance": "Instance", "frames": "Frames"}
_CONVERTOR = re.compile(r"{(\w+)(?::\w+)?}")

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


@dataclass(frozen=True)
class Capability:
    """What one endpoint takes and gives, i.e. the body of its WADL `method`."""

    service: str
    produces: tuple[str, ...] = ()
    consumes: tuple[str, ...] = ()
    query: tuple[str, ...] = ()


def declare(capability: Capability) -> Callable[[Endpoint], Endpoint]:
    """Mark an endpoint with what it serves; the route table stays the one list of routes."""

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, CAPABILITY_ATTRIBUTE, capability)
        return endpoint

    return mark


def _qido_keys() -> tuple[str, ...]:
    """The matching keys QIDO-RS honours, named as the index knows them (PS3.18 8.3.4)."""
    plain = sorted(keyword_for_tag(tag) for tag in MATCHABLE if tag not in SEQUENCE_MATCHABLE)
    sequence = keyword_for_tag(REQUEST_ATTRIBUTES_SEQUENCE)
    nested = sorted(f"{sequence}.{keyword_for_tag(tag)}" for tag in SEQUENCE_MATCHABLE)
    return (*plain, *nested, "includefield", "fuzzymatching", "limit", "offset")


_SEARCH = Capability("QIDO-RS", produces=(DICOM_JSON, JSON), query=_qido_keys())
_STORE = Capability("STOW-RS", produces=(DICOM_JSON,), consumes=(DICOM_PARTS,))

# For endpoints of modules that do not use @declare; keyed by "module.function".
DECLARED: dict[str, Capability] = {
    "dicomweb.qido.search_for_studies": _SEARCH,
    "dicomweb.qido.search_for_series": _SEARCH,
    "dicomweb.qido.search_for_instances": _SEARCH,
    "dicomweb.stow.store_instances": _STORE,
    "dicomweb.wado.retrieve_instances": Capability("WADO-RS", produces=(DICOM_PARTS,)),
    "dicomweb.wado.retrieve_metadata": Capability("WADO-RS", produces=(DICOM_JSON, JSON)),
    "dicomweb.wado.delete_instances": Capability("Delete"),
    "dicomweb.rendered.retrieve_rendered": Capability(
        "WADO-RS",
        produces=(*IMAGE_TYPES, "video/mpeg", "video/mp4"),
        query=("accept", "annotation", "quality", "viewport", "window", "charset"),
    ),
    "dicomweb.rendered.retrieve_thumbnail": Capability(
        "WADO-RS", produces=IMAGE_TYPES, query=("accept", "viewport", "charset")
    ),
}


@dataclass
class _Method:
    name: str
    id: str
    capability: Capability | None


@dataclass
class _Resource:
    """One path segment of the URI tree, with the methods routed to exactly that path."""

    segment: str
    methods: list[_Method] = field(default_factory=list)
    children: dict[str, _Resource] = field(default_factory=dict)


def capability_of(endpoint: Callable[..., Any]) -> Capability | None:
    declared = getattr(endpoint, CAPABILITY_ATTRIBUTE, None)
    if isinstance(declared, Capability):
        return declared
    return DECLARED.get(f"{endpoint.__module__}.{endpoint.__qualname__}")


def iter_routes(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, Route]]:
    """Every plain route with its full path, descending into mounts."""
    for route in routes:
        if isinstance(route, Mount):
            yield from iter_routes(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            yield prefix + route.path, route


def dicomweb_routes(routes: Iterable[BaseRoute]) -> Iterator[tuple[str, Route]]:
    """The routes under /dicom-web, with their paths relative to it ("" is the service)."""
    for path, route in iter_routes(routes):
        if path == DICOMWEB_PREFIX or path.startswith(DICOMWEB_PREFIX + "/"):
            yield path[len(DICOMWEB_PREFIX) :].strip("/"), route


def _template(path: str) -> str:
    return _CONVERTOR.sub(lambda m: "{" + TEMPLATE_NAMES.get(m[1], m[1]) + "}", path)


def _method_id(endpoint: Callable[..., Any], path: str) -> str:
    """A readable xsd:ID: the endpoint's name, and the level it works on when not the root."""
    name = "".join(word.capitalize() for word in endpoint.__name__.split("_"))
    scopes = [_SCOPES[p] for p in _CONVERTOR.findall(path) if p in _SCOPES]
    if scopes and name.endswith(scopes[-1]):
        scopes.pop()  # RetrieveFramesOfInstance, not RetrieveFramesOfFrames
    return name + (f"Of{scopes[-1]}" if scopes else "")


def _listed_methods(route: Route) -> list[str]:
    """Starlette answers HEAD wherever GET is routed; the WADL lists the GET only."""
    methods = set(route.methods or ())
    return sorted(methods - {"HEAD"} if "GET" in methods else methods)


def build_tree(routes: Iterable[BaseRoute]) -> _Resource:
    root = _Resource("")
    used: set[str] = set()
    for path, route in dicomweb_routes(routes):
        node = root
        for segment in filter(None, _template(path).split("/")):
            node = node.children.setdefault(segment, _Resource(segment))
        names = _listed_methods(route)
        for name in names:
            if any(method.name == name for method in node.methods):
                continue  # the same resource routed twice, e.g. with and without a slash
            method_id = _method_id(route.endpoint, path)
            method_id += name.capitalize() if len(names) > 1 else ""
            unique, count = method_id, 1
            while unique in used:
                count += 1
                unique = f"{method_id}-{count}"
            used.add(unique)
            node.methods.append(_Method(name, unique, capability_of(route.endpoint)))
    return root


def _wadl_method(parent: ET.Element, method: _Method) -> None:
    element = ET.SubElement(parent, "method", name=method.name, id=method.id)
    capability = method.capability
    if capability is None:
        return
    ET.SubElement(element, "doc", title=capability.service)
    if capability.query or capability.consumes:
        request = ET.SubElement(element, "request")
        for name in capability.query:
            ET.SubElement(request, "param", name=name, style="query")
        for media_type in capability.consumes:
            ET.SubElement(request, "representation", mediaType=media_type)
    if capability.produces:
        response = ET.SubElement(element, "response", status="200")
        for media_type in capability.produces:
            ET.SubElement(response, "representation", mediaType=media_type)


def _wadl_resource(parent: ET.Element, node: _Resource) -> None:
    element = ET.SubElement(parent, "resource", path=node.segment)
    if node.segment.startswith("{"):
        name = node.segment.strip("{}")
        attributes = {"name": name, "style": "template", "type": "xsd:string"}
        ET.SubElement(element, "param", attributes, required="true")
    for method in node.methods:
        _wadl_method(element, method)
    for child in node.children.values():
        _wadl_resource(element, child)


def render_wadl(root: _Resource, base: str) -> bytes:
    # Namespaces as plain attributes: ElementTree would otherwise invent prefixes.
    application = ET.Element("application", xmlns=WADL_NAMESPACE)
    application.set("xmlns:xsd", XSD_NAMESPACE)
    resources = ET.SubElement(application, "resources", base=base + "/")
    if root.methods:  # the service itself, e.g. this capabilities resource
        _wadl_resource(resources, _Resource("", root.methods))
    for child in root.children.values():
        _wadl_resource(resources, child)
    ET.indent(application)
    document: bytes = ET.tostring(application, encoding="utf-8", xml_declaration=True)
    return document


def _json_resources(node: _Resource, path: str) -> Iterator[dict[str, Any]]:
    if node.methods:
        yield {"path": path or "/", "methods": [_json_method(m) for m in node.methods]}
    for child in node.children.values():
        yield from _json_resources(child, f"{path}/{child.segment}")


def _json_method(method: _Method) -> dict[str, Any]:
    capability = method.capability or Capability("")
    return {
        "method": method.name,
        "id": method.id,
        "service": capability.service or None,
        "produces": list(capability.produces),
        "consumes": list(capability.consumes),
        "query": list(capability.query),
    }


def _negotiate(request: Request) -> str:
    try:
        ranges = parse_accept(accept_header(request.headers.getlist("accept")))
    except InvalidMediaType as error:
        raise InvalidQuery(f"Accept: {error}") from None
    for media in ranges:
        if media.essence in {WADL, "*/*", "application/*"}:
            return WADL
        if media.essence == JSON:
            return JSON
    raise NotAcceptable(f"capabilities are available as {WADL} or {JSON}")


def _node_at(tree: _Resource, path: str) -> _Resource:
    node = tree
    for segment in filter(None, _template(path).split("/")):
        node = node.children[segment]
    return node


def _allow(node: _Resource) -> str:
    names = [method.name for method in node.methods]
    if "GET" in names:
        names.append("HEAD")  # Starlette answers HEAD wherever GET is routed
    return ", ".join(sorted(set(names) | {"OPTIONS"}))


def _render_one(node: _Resource, path: str, base: str, media_type: str) -> bytes:
    """The document for one resource: its methods under its full URI template."""
    template = _template(path).strip("/")
    if media_type == JSON:
        methods = [_json_method(m) for m in node.methods]
        described = [{"path": "/" + template, "methods": methods}]
        return orjson.dumps({"base": base, "resources": described})
    application = ET.Element("application", xmlns=WADL_NAMESPACE)
    application.set("xmlns:xsd", XSD_NAMESPACE)
    resources = ET.SubElement(application, "resources", base=base + "/")
    element = ET.SubElement(resources, "resource", path=template)
    for name in re.findall(r"{(\w+)}", template):
        attributes = {"name": name, "style": "template", "type": "xsd:string"}
        ET.SubElement(element, "param", attributes, required="true")
    for method in node.methods:
        _wadl_method(element, method)
    ET.indent(application)
    document: bytes = ET.tostring(application, encoding="utf-8", xml_declaration=True)
    return document


def resource_capabilities(path: str) -> Callable[[Request], Any]:
    """The OPTIONS endpoint of the resource routed at `path` (PS3.18 8.9).

    It describes the resource, not a study: it answers alike whether a study exists or not.
    """

    @declare(Capability("Capabilities", produces=(WADL, JSON)))
    async def retrieve_capabilities(request: Request) -> Response:
        media_type = _negotiate(request)
        base = public_base(request, request.app.state.dicomweb)
        node = _node_at(build_tree(request.app.routes), path)
        body = _render_one(node, path, base, media_type)
        return Response(body, media_type=media_type, headers={"Allow": _allow(node)})

    return retrieve_capabilities


@declare(Capability("Capabilities", produces=(WADL, JSON)))
async def retrieve_capabilities(request: Request) -> Response:
    """OPTIONS (or GET asking for WADL) on the service; CORS preflights never get here."""
    media_type = _negotiate(request)
    base = public_base(request, request.app.state.dicomweb)
    tree = build_tree(request.app.routes)
    if media_type == JSON:
        body = orjson.dumps({"base": base, "resources": list(_json_resources(tree, ""))})
    else:
        body = render_wadl(tree, base)
    return Response(body, media_type=media_type, headers={"Allow": "GET, HEAD, OPTIONS"})
