"""The admin API's OpenAPI 3.1 document: valid, complete, and true (schemathesis finds no 500)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from starlette.routing import Mount, Route

from audit.search import AuditQuery, iter_events
from policy import store
from tests import factories
from tests._peers import start_scp
from tests.conftest import RunningServer, free_port, issue_token_for

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
)


def api_routes(server: RunningServer) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves under /api."""
    [mount] = [r for r in server.app.routes if isinstance(r, Mount) and r.path == "/api"]
    found = set()
    for route in mount.routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, f"/api{route.path}"))
    return found


def test_document_is_valid_openapi_31_and_names_every_route(server: RunningServer):
    document = httpx.get(f"{server.base_url}/api/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(document).validate()
    described = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    served = api_routes(server) - {("GET", "/api/openapi.json")}
    assert served == described
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["operationId"] and operation["summary"], (method, path)
            if method in {"post", "put", "patch"}:
                assert "requestBody" in operation, (method, path)


def test_request_bodies_come_from_the_code(server: RunningServer):
    document = httpx.get(f"{server.base_url}/api/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert schemas["NodeIn"]["properties"]["port"]["maximum"] == 65535
    assert set(schemas["Role"]["enum"]) == {
        "admin",
        "sender",
        "receiver",
        "viewer",
        "requester",
        "auditor",
    }
    registration = document["paths"]["/api/registrations"]["post"]
    assert registration["security"] == []  # public
    assert document["paths"]["/api/users"]["get"]["security"] == [{"bearer": []}]


@pytest.fixture
def demo_pacs() -> Iterator[int]:
    """DEMO's PACS: a pynetdicom SCP that answers C-ECHO (`POST /api/nodes/{pk}/echo`); its
    port."""
    ae = AE(ae_title="DEMO_PACS")
    ae.add_supported_context(Verification)
    port = free_port()
    start_scp(ae, port)
    try:
        yield port
    finally:
        ae.shutdown()


def system_admin_token(server: RunningServer, pacs_port: int = 104) -> str:
    """A system administrator, and a little data for the generated requests to find."""
    engine = server.archive.engine
    demo = store.create_institution(engine, "DEMO", "Demo")
    factories.create_node(engine, demo.pk, "DEMO_PACS", "127.0.0.1", pacs_port)
    client = store.create_api_client(engine, "tool", demo.pk, "viewer")
    store.issue_api_token(engine, client.pk)
    admin = store.create_user(engine, "root@ferry.test", system_admin=True)
    store.set_membership(engine, admin.pk, demo.pk, "admin")
    return issue_token_for(server.app, server.archive, admin.pk)


def schemathesis(server: RunningServer, token: str, cwd: Path, *selection: str) -> None:
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{server.base_url}/api/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--max-examples",
        "20",
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        "--seed",
        "20261128",
        "--request-timeout",
        "30",
        *selection,
    ]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]


EXCHANGE_PATHS = "transfers|requests|worklist|destinations|grants|notifications|me|jobs|oversight"
# The whole API in three slices that xdist runs side by side, each on its own server: together
# they are every operation (the last slice is what the first two leave out).
SLICES = {
    "institutions": ("--include-path-regex", "^/api/institutions"),
    "exchange": ("--include-path-regex", f"^/api/({EXCHANGE_PATHS})"),
    "the rest": ("--exclude-path-regex", f"^/api/(institutions|{EXCHANGE_PATHS})"),
}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("part", list(SLICES))
def test_schemathesis_finds_no_server_error(
    server: RunningServer, tmp_path: Path, part: str, demo_pacs: int
):
    """Every operation, generated inputs valid and invalid, as a system administrator.

    Changing users runs last: it may disable or re-password the very administrator the run
    authenticates as, after which everything else would only see 401.
    """
    token = system_admin_token(server, demo_pacs)
    schemathesis(server, token, tmp_path, *SLICES[part], "--exclude-operation-id", "update_user")
    if part == "the rest":
        schemathesis(server, token, tmp_path, "--include-operation-id", "update_user")


@pytest.mark.slow
def test_schemathesis_over_an_institutions_oversight(server: RunningServer, tmp_path: Path):
    """The oversight operations with an institution that exists (DEMO, whose administrator
    the token's user is), so the generated filters reach the queries, JSON and CSV alike, in a
    query string and in a search's body."""
    token = system_admin_token(server)
    (tmp_path / "schemathesis.toml").write_text(
        '[parameters]\n"query.institution" = "DEMO"\n'
        '"body.institution" = { dictionary = "codes", probability = 0.9 }\n'
        '[dictionaries.codes]\nvalues = ["DEMO"]\n'
    )
    schemathesis(server, token, tmp_path, "--include-path-regex", "^/api/oversight/")
    readings = AuditQuery(action="audit", outcome="allowed")
    read = [json.loads(e.detail) for e in iter_events(server.archive.engine, readings)]
    views = {(e.get("view"), e.get("path", "").endswith("/search")) for e in read}
    assert {
        ("transactions", False),
        ("audit trail", False),
        ("statistics", False),
        ("transactions", True),
        ("audit trail", True),
    } <= views  # answered, not only refused
