"""The assembled service: health, readiness, CORS, public base URLs, migrations."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from archive.store import Archive
from ferry.app import build_archive
from ferry.settings import Settings
from tests import factories
from tests.conftest import RunningServer, fresh_database, run_server


def test_health_and_readiness(server: RunningServer) -> None:
    assert httpx.get(f"{server.base_url}/healthz").json() == {"status": "up"}
    assert httpx.get(f"{server.base_url}/readyz").json() == {"status": "ready"}


def test_the_home_address_is_the_front_page(server: RunningServer) -> None:
    page = httpx.get(f"{server.base_url}/", follow_redirects=False)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<form method="post" action="/sign-in"' in page.text and 'href="/register"' in page.text


def test_readiness_fails_when_the_blob_store_is_gone(server: RunningServer) -> None:
    spool = server.archive.blobs.spool_dir
    spool.rename(spool.with_name("moved"))
    try:
        response = httpx.get(f"{server.base_url}/readyz")
        assert response.status_code == 503
    finally:
        spool.with_name("moved").rename(spool)


@fresh_database
def test_migrations_match_the_models(archive: Archive) -> None:
    with archive.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        assert compare_metadata(context, SQLModel.metadata) == []


@fresh_database
def test_migrating_twice_is_harmless(settings: Settings) -> None:
    build_archive(settings).engine.dispose()
    build_archive(settings).engine.dispose()


@pytest.fixture
def cors_server(settings: Settings, archive: Archive) -> Iterator[RunningServer]:
    changed = dataclasses.replace(settings, cors_origins=("https://viewer.example",))
    yield from run_server(changed, archive)


def test_cors_preflight_allows_the_configured_origin(cors_server: RunningServer) -> None:
    response = httpx.options(
        f"{cors_server.dicomweb_url}/studies",
        headers={
            "Origin": "https://viewer.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "accept, authorization",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://viewer.example"
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "accept" in allowed


def test_cors_refuses_other_origins(cors_server: RunningServer) -> None:
    response = httpx.options(
        f"{cors_server.dicomweb_url}/studies",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert response.status_code == 400
    get = httpx.get(
        f"{cors_server.dicomweb_url}/studies",
        headers={"Origin": "https://evil.example", **cors_server.headers},
    )
    assert get.status_code == 200
    assert "access-control-allow-origin" not in get.headers


def _store_one(server: RunningServer) -> str:
    ds = factories.ct_slice()
    body = (
        b"--b\r\nContent-Type: application/dicom\r\n\r\n"
        + factories.part10_bytes(ds)
        + b"\r\n--b--\r\n"
    )
    response = httpx.post(
        f"{server.dicomweb_url}/studies",
        content=body,
        headers={
            "Content-Type": "multipart/related; type=application/dicom; boundary=b",
            **server.headers,
        },
    )
    assert response.status_code == 200
    return str(ds.StudyInstanceUID)


@pytest.fixture
def request_based_server(settings: Settings, archive: Archive) -> Iterator[RunningServer]:
    yield from run_server(dataclasses.replace(settings, public_url=None), archive)


def test_urls_follow_the_request_host_and_ignore_forwarded_headers(
    request_based_server: RunningServer,
) -> None:
    server = request_based_server
    _store_one(server)
    studies = httpx.get(
        f"{server.dicomweb_url}/studies",
        headers={"X-Forwarded-Host": "evil.example", "Host": "ferry.test:81", **server.headers},
    ).json()
    assert studies[0]["00081190"]["Value"][0].startswith("http://ferry.test:81/dicom-web/")


@pytest.fixture
def proxied_server(settings: Settings, archive: Archive) -> Iterator[RunningServer]:
    changed = dataclasses.replace(settings, public_url=None, trusted_proxy=True)
    yield from run_server(changed, archive)


def test_trusted_proxy_headers_shape_the_urls(proxied_server: RunningServer) -> None:
    study = _store_one(proxied_server)
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "pacs.example.org",
        "X-Forwarded-Prefix": "/ferry",
        **proxied_server.headers,
    }
    studies = httpx.get(f"{proxied_server.dicomweb_url}/studies", headers=headers).json()
    assert studies[0]["00081190"]["Value"] == [
        f"https://pacs.example.org/ferry/dicom-web/studies/{study}"
    ]
