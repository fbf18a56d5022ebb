"""Retrieve Capabilities: the WADL lists exactly what is routed (PS3.18 8.9, Annex H)."""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from archive.store import Archive
from dicomweb.capabilities import Capability, capability_of, declare
from dicomweb.routes import ROUTES
from ferry.app import create_app
from ferry.settings import Settings
from tests.conftest import RunningServer, run_coroutine, run_server


@pytest.fixture
def server(module_server: RunningServer) -> RunningServer:
    """The module's one server: what it declares is the same for every test."""
    return module_server


WADL = "application/vnd.sun.wadl+xml"
NS = {"w": "http://wadl.dev.java.net/2009/02"}


def _shape(path: str) -> str:
    """A path with its template names blanked: Ferry says {study}, the WADL {StudyInstanceUID}."""
    return re.sub(r"{[^}]+}", "{}", path).strip("/")


def _routed() -> set[tuple[str, str]]:
    return {
        (_shape(route.path), method)
        for route in ROUTES
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }


def _wadl_methods(document: bytes) -> dict[tuple[str, str], ET.Element]:
    root = ET.fromstring(document)
    found: dict[tuple[str, str], ET.Element] = {}

    def walk(element: ET.Element, prefix: str) -> None:
        for resource in element.findall("w:resource", NS):
            path = f"{prefix}/{resource.get('path')}".strip("/")
            for method in resource.findall("w:method", NS):
                found[(_shape(path), str(method.get("name")))] = method
            walk(resource, path)

    resources = root.find("w:resources", NS)
    assert resources is not None
    walk(resources, "")
    return found


def test_options_lists_every_dicomweb_route_with_its_methods(server: RunningServer) -> None:
    response = httpx.options(server.dicomweb_url)
    assert response.status_code == 200
    assert response.headers["content-type"] == WADL
    assert set(_wadl_methods(response.content)) == _routed()
    resources = ET.fromstring(response.content).find("w:resources", NS)
    assert resources is not None and resources.get("base") == server.dicomweb_url + "/"


def test_methods_declare_media_types_query_parameters_and_templates(
    server: RunningServer,
) -> None:
    methods = _wadl_methods(httpx.options(server.dicomweb_url).content)
    search = methods[("studies", "GET")]
    params = {p.get("name") for p in search.findall("w:request/w:param", NS)}
    assert {"PatientName", "StudyDate", "includefield", "fuzzymatching", "limit"} <= params
    produced = {r.get("mediaType") for r in search.findall("w:response/w:representation", NS)}
    assert "application/dicom+json" in produced
    store = methods[("studies", "POST")]
    consumed = store.find("w:request/w:representation", NS)
    assert consumed is not None
    assert consumed.get("mediaType") == 'multipart/related; type="application/dicom"'
    root = ET.fromstring(httpx.options(server.dicomweb_url).content)
    templates = {
        p.get("name") for p in root.iter(f"{{{NS['w']}}}param") if p.get("style") == "template"
    }
    assert {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"} <= templates
    ids = [m.get("id") for m in root.iter(f"{{{NS['w']}}}method")]
    assert len(ids) == len(set(ids)), "method ids are xsd:IDs, unique in the document"


def test_every_routed_endpoint_says_what_it_serves() -> None:
    """Without a declaration the WADL still lists the method, but not its media types."""
    undeclared = [
        f"{route.path} -> {route.endpoint.__module__}.{route.endpoint.__qualname__}"
        for route in ROUTES
        if isinstance(route, Route) and capability_of(route.endpoint) is None
    ]
    assert not undeclared, f"use dicomweb.capabilities.declare on: {undeclared}"


@pytest.mark.parametrize("path", ["", "/"])
def test_get_asking_for_wadl_or_json(server: RunningServer, path: str) -> None:
    url = server.dicomweb_url + path
    wadl = httpx.get(url, headers={"Accept": WADL})
    assert wadl.status_code == 200 and wadl.headers["content-type"] == WADL
    as_json = httpx.get(url, headers={"Accept": "application/json"})
    assert as_json.headers["content-type"] == "application/json"
    listed = {
        (_shape(resource["path"]), method["method"])
        for resource in as_json.json()["resources"]
        for method in resource["methods"]
    }
    assert listed == _routed()


def test_unacceptable_and_malformed_accept(server: RunningServer) -> None:
    refused = httpx.options(server.dicomweb_url, headers={"Accept": "image/png"})
    assert refused.status_code == 406
    assert WADL in refused.json()["error"]
    malformed = httpx.options(server.dicomweb_url, headers={"Accept": "text"})
    assert malformed.status_code == 400 and "Accept" in malformed.json()["error"]


async def _options(app: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://ferry.test") as client:
        return await client.options("/dicom-web", headers={"Accept": "application/json"})


def test_a_route_added_at_runtime_is_listed(settings: Settings, archive: Archive) -> None:
    """The document is generated from the live route table, not from a list of its own."""

    @declare(Capability("Test", produces=("text/plain",), query=("greeting",)))
    async def say_hello(_request: Request) -> Response:
        return Response("hello")

    async def undeclared(_request: Request) -> Response:
        return Response(status_code=204)

    app = create_app(settings, archive)
    mount = next(r for r in app.routes if isinstance(r, Mount) and r.path == "/dicom-web")
    mount.routes.append(Route("/studies/{study}/hello", say_hello, methods=["PUT"]))
    app.add_route("/dicom-web/extra", undeclared, methods=["PATCH"])
    app.add_route("/elsewhere", undeclared, methods=["GET"])
    listed = {
        r["path"]: r["methods"] for r in run_coroutine(lambda: _options(app)).json()["resources"]
    }
    (hello,) = listed["/studies/{StudyInstanceUID}/hello"]
    assert hello["method"] == "PUT" and hello["id"] == "SayHelloOfStudy"
    assert hello["produces"] == ["text/plain"] and hello["query"] == ["greeting"]
    assert listed["/extra"][0]["method"] == "PATCH" and listed["/extra"][0]["service"] is None
    assert "/elsewhere" not in listed


@pytest.fixture
def cors_server(settings: Settings, archive: Archive) -> Iterator[RunningServer]:
    changed = dataclasses.replace(settings, cors_origins=("https://viewer.example",))
    yield from run_server(changed, archive)


def test_cors_preflight_is_still_answered_by_the_cors_layer(cors_server: RunningServer) -> None:
    preflight = httpx.options(
        cors_server.dicomweb_url,
        headers={"Origin": "https://viewer.example", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://viewer.example"
    assert preflight.headers["content-type"].startswith("text/plain")  # not the WADL
    capabilities = httpx.options(
        cors_server.dicomweb_url, headers={"Origin": "https://viewer.example"}
    )
    assert capabilities.headers["content-type"] == WADL
    assert capabilities.headers["access-control-allow-origin"] == "https://viewer.example"


ALLOWED = {
    "/studies": "GET, HEAD, OPTIONS, POST",
    "/series": "GET, HEAD, OPTIONS",
    "/studies/1.2.3": "DELETE, GET, HEAD, OPTIONS, POST",
    "/studies/1.2.3/metadata": "GET, HEAD, OPTIONS",
    "/studies/1.2.3/series": "GET, HEAD, OPTIONS",
    "/studies/1.2.3/series/4.5": "DELETE, GET, HEAD, OPTIONS",
    "/studies/1.2.3/series/4.5/instances/6.7": "DELETE, GET, HEAD, OPTIONS",
    "/studies/1.2.3/series/4.5/instances/6.7/frames/1,2": "GET, HEAD, OPTIONS",
    "/studies/1.2.3/series/4.5/instances/6.7/bulk/00420011": "GET, HEAD, OPTIONS",
    "/studies/1.2.3/series/4.5/instances/6.7/frames/1/rendered": "GET, HEAD, OPTIONS",
    "/studies/1.2.3/thumbnail": "GET, HEAD, OPTIONS",
}


@pytest.mark.parametrize("path", sorted(ALLOWED))
def test_options_on_every_resource_says_what_it_allows(server: RunningServer, path: str) -> None:
    """PS3.18 8.9: any resource answers OPTIONS, describing itself, whether a study exists."""
    response = httpx.options(server.dicomweb_url + path)
    assert response.status_code == 200, response.text
    assert response.headers["allow"] == ALLOWED[path]
    assert response.headers["content-type"] == WADL
    root = ET.fromstring(response.content)
    (resource,) = root.iter(f"{{{NS['w']}}}resource")
    listed = sorted(m.get("name") for m in resource.iter(f"{{{NS['w']}}}method"))
    assert listed == sorted(set(ALLOWED[path].split(", ")) - {"HEAD"})
    assert _shape(resource.get("path", "")) == _shape(re.sub(r"\d[\d.,]*", "{}", path))
    as_json = httpx.options(server.dicomweb_url + path, headers={"Accept": "application/json"})
    (described,) = as_json.json()["resources"]
    assert sorted(m["method"] for m in described["methods"]) == listed
