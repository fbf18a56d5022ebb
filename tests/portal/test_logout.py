"""Logout ends the sign-in on the server: copies of its cookie and tokens stop working at once."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import RunningServer
from tests.policy._people import PASSWORD, add_institution, add_user

EMAIL = "ada@example.org"


@pytest.fixture
def web(server: RunningServer) -> Iterator[httpx.Client]:
    radb = add_institution(server.archive.engine, "RADB")
    add_user(server.archive.engine, EMAIL, memberships={radb: "admin"})
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


def _login(web: httpx.Client) -> httpx.Response:
    """In a client of its own, so that no cookie jar keeps what the test sends by hand."""
    url = f"{str(web.base_url).rstrip('/')}/auth/login"
    signed_in = httpx.post(url, json={"email": EMAIL, "password": PASSWORD}, timeout=30)
    assert signed_in.status_code == 200, signed_in.text
    return signed_in


def _cookie(signed_in: httpx.Response) -> dict[str, str]:
    return {"cookie": f"ferry_session={signed_in.cookies['ferry_session']}"}


def _token(web: httpx.Client) -> dict[str, str]:
    grant = web.post("/auth/token", json={"email": EMAIL, "password": PASSWORD})
    assert grant.status_code == 200, grant.text
    return grant.json()


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_a_copied_session_cookie_dies_with_the_logout(web: httpx.Client) -> None:
    signed_in = _login(web)
    stolen = _cookie(signed_in)
    other_device = _cookie(_login(web))
    assert web.get("/auth/me", headers=stolen).status_code == 200
    assert web.get("/api/institutions", headers=stolen).status_code == 200
    csrf = {"x-csrf-token": signed_in.json()["csrf_token"]}
    out = web.post("/auth/logout", headers={**stolen, **csrf})
    assert out.status_code == 204
    assert web.get("/auth/me", headers=stolen).status_code == 401
    refused = web.get("/api/institutions", headers=stolen)
    assert refused.status_code == 401 and "sign in again" in refused.json()["error"]
    assert web.get("/auth/me", headers=other_device).status_code == 200  # its own sign-in


def test_an_access_token_dies_with_the_logout_of_its_sign_in(web: httpx.Client) -> None:
    grant = _token(web)
    other = _token(web)
    assert web.get("/auth/me", headers=_bearer(grant["access_token"])).status_code == 200
    out = web.post("/auth/logout", json={"refresh_token": grant["refresh_token"]})
    assert out.status_code == 204
    assert web.get("/auth/me", headers=_bearer(grant["access_token"])).status_code == 401
    again = web.post("/auth/refresh", json={"refresh_token": grant["refresh_token"]})
    assert again.status_code == 401
    assert web.get("/auth/me", headers=_bearer(other["access_token"])).status_code == 200


def test_logging_out_with_the_access_token_ends_its_refresh_tokens_too(
    web: httpx.Client,
) -> None:
    grant = _token(web)
    refreshed = web.post("/auth/refresh", json={"refresh_token": grant["refresh_token"]})
    assert refreshed.status_code == 200
    newer = refreshed.json()
    out = web.post("/auth/logout", headers=_bearer(newer["access_token"]))
    assert out.status_code == 204
    for token in (grant["access_token"], newer["access_token"]):  # same sign-in, both dead
        assert web.get("/auth/me", headers=_bearer(token)).status_code == 401
    after = web.post("/auth/refresh", json={"refresh_token": newer["refresh_token"]})
    assert after.status_code == 401
