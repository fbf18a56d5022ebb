"""Sign-in endpoints over a real server: tokens, refresh, sessions with CSRF, JWKS, bad input."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from jose import jwt

from archive.store import Archive
from ferry.settings import Settings
from policy.models import UserStatus
from tests.conftest import RunningServer, make_settings, run_server
from tests.policy._people import PASSWORD, add_institution, add_user, change_user

EMAIL = "ada@example.org"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Three failures lock an account here, to keep the lockout tests short."""
    return make_settings(tmp_path, database_url, login_max_failures=3, access_token_seconds=300)


@pytest.fixture
def web(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def user_pk(server: RunningServer) -> int:
    radb = add_institution(server.archive.engine, "RADB")
    return add_user(server.archive.engine, EMAIL, memberships={radb: "viewer,receiver"})


def _me(web: httpx.Client, token: str) -> httpx.Response:
    return web.get("/auth/me", headers={"authorization": f"Bearer {token}"})


def _token(web: httpx.Client, password: str = PASSWORD) -> httpx.Response:
    return web.post("/auth/token", json={"email": EMAIL, "password": password})


def _assert_refused(response: httpx.Response, status: int = 401) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_password_grant_and_the_token_at_work(web: httpx.Client, user_pk: int) -> None:
    response = _token(web)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    grant = response.json()
    assert grant["token_type"] == "Bearer" and grant["expires_in"] == 300
    assert grant["refresh_token"].startswith("ferry_rt_")
    claims = jwt.get_unverified_claims(grant["access_token"])
    assert claims["roles"] == {"RADB": ["receiver", "viewer"]}
    me = _me(web, grant["access_token"])
    assert me.status_code == 200
    assert me.json()["id"] == user_pk and me.json()["name"] == EMAIL


def test_the_oauth_form_works_too(web: httpx.Client, user_pk: int) -> None:
    form = {"grant_type": "password", "username": EMAIL, "password": PASSWORD}
    response = web.post("/auth/token", data=form)
    assert response.status_code == 200, response.text
    assert _me(web, response.json()["access_token"]).json()["id"] == user_pk


def test_wrong_password_and_unknown_email_answer_alike(web: httpx.Client, user_pk: int) -> None:
    wrong = _token(web, "not the password at all")
    unknown = web.post("/auth/token", json={"email": "who@example.org", "password": PASSWORD})
    _assert_refused(wrong)
    _assert_refused(unknown)
    assert wrong.json() == unknown.json()


def test_lockout_over_http(web: httpx.Client, server: RunningServer, user_pk: int) -> None:
    for _ in range(3):
        _assert_refused(_token(web, "a wrong guess, again"))
    _assert_refused(_token(web))  # locked: the right password is refused too
    login = web.post("/auth/login", json={"email": EMAIL, "password": PASSWORD})
    _assert_refused(login)
    past = datetime.now(UTC) - timedelta(seconds=1)  # as if the lockout time had passed
    change_user(server.archive.engine, user_pk, locked_until=past)
    assert _token(web).status_code == 200


def test_refresh_rotates_and_reuse_is_refused(web: httpx.Client, user_pk: int) -> None:
    first = _token(web).json()["refresh_token"]
    response = web.post("/auth/refresh", json={"refresh_token": first})
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["refresh_token"] != first
    assert _me(web, second["access_token"]).status_code == 200
    _assert_refused(web.post("/auth/refresh", json={"refresh_token": first}))
    # the reuse revoked the family: the successor is dead too
    _assert_refused(web.post("/auth/refresh", json={"refresh_token": second["refresh_token"]}))


def test_refresh_through_the_token_endpoint(web: httpx.Client, user_pk: int) -> None:
    refresh = _token(web).json()["refresh_token"]
    form = {"grant_type": "refresh_token", "refresh_token": refresh}
    response = web.post("/auth/token", data=form)
    assert response.status_code == 200, response.text


def test_disabled_users_live_tokens_stop_at_once(
    web: httpx.Client, server: RunningServer, user_pk: int
) -> None:
    grant = _token(web).json()
    assert _me(web, grant["access_token"]).status_code == 200
    change_user(server.archive.engine, user_pk, status=UserStatus.DISABLED)
    _assert_refused(_me(web, grant["access_token"]))
    _assert_refused(web.post("/auth/refresh", json={"refresh_token": grant["refresh_token"]}))


def test_token_version_bump_revokes(web: httpx.Client, server: RunningServer, user_pk: int) -> None:
    grant = _token(web).json()
    change_user(server.archive.engine, user_pk, token_version=1)
    _assert_refused(_me(web, grant["access_token"]))
    assert _me(web, _token(web).json()["access_token"]).status_code == 200


def _cookie(response: httpx.Response, name: str) -> str:
    (header,) = [
        value for value in response.headers.get_list("set-cookie") if value.startswith(name + "=")
    ]
    return header


def test_login_sets_session_and_csrf_cookies(web: httpx.Client, user_pk: int) -> None:
    response = web.post("/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 200, response.text
    session = _cookie(response, "ferry_session").lower()
    csrf = _cookie(response, "ferry_csrf").lower()
    assert "httponly" in session and "samesite=lax" in session and "path=/" in session
    assert "secure" not in session  # plain http here
    assert "httponly" not in csrf and "samesite=lax" in csrf
    assert response.json()["csrf_token"] == web.cookies["ferry_csrf"]
    assert response.json()["user"] == {"id": user_pk, "email": EMAIL}


def test_cookies_are_secure_behind_https(archive: Archive, settings: Settings) -> None:
    behind_proxy = dataclasses.replace(settings, public_url="https://ferry.example.org")
    add_user(archive.engine, EMAIL)
    for running in run_server(behind_proxy, archive):
        with httpx.Client(base_url=running.base_url) as web:
            response = web.post("/auth/login", json={"email": EMAIL, "password": PASSWORD})
        assert response.status_code == 200
        assert "secure" in _cookie(response, "ferry_session").lower()
        assert "secure" in _cookie(response, "ferry_csrf").lower()


def test_session_needs_csrf_for_unsafe_methods(web: httpx.Client, user_pk: int) -> None:
    login = web.post("/auth/login", data={"email": EMAIL, "password": PASSWORD})
    assert login.status_code == 200
    csrf = login.json()["csrf_token"]
    assert web.get("/auth/me").json()["id"] == user_pk  # a read needs the cookie only
    _assert_refused(web.post("/auth/logout"))
    _assert_refused(web.post("/auth/logout", headers={"x-csrf-token": "guessed"}))
    assert web.get("/auth/me").status_code == 200  # still signed in
    response = web.post("/auth/logout", headers={"x-csrf-token": csrf})
    assert response.status_code == 204
    assert "max-age=0" in _cookie(response, "ferry_session").lower()
    assert "ferry_session" not in web.cookies
    _assert_refused(web.get("/auth/me"))


def test_logout_with_a_dead_session_just_clears_it(web: httpx.Client) -> None:
    web.cookies.set("ferry_session", "expired.or.forged")
    response = web.post("/auth/logout")
    assert response.status_code == 204


def test_logout_revokes_a_refresh_token(web: httpx.Client, user_pk: int) -> None:
    refresh = _token(web).json()["refresh_token"]
    assert web.post("/auth/logout", json={"refresh_token": refresh}).status_code == 204
    _assert_refused(web.post("/auth/refresh", json={"refresh_token": refresh}))


def test_jwks_and_rotate_keys_command(
    web: httpx.Client, server: RunningServer, user_pk: int
) -> None:
    (key,) = web.get("/.well-known/jwks.json").json()["keys"]
    assert key["kty"] == "EC" and key["alg"] == "ES256" and "d" not in key
    old_token = _token(web).json()["access_token"]
    environment = {**os.environ, "FERRY_DATA_DIR": str(server.settings.data_dir)}
    command = [sys.executable, "-m", "ferry.cli", "admin", "rotate-keys"]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    assert "new signing key" in done.stdout
    kids = [key["kid"] for key in web.get("/.well-known/jwks.json").json()["keys"]]
    assert len(kids) == 2 and kids[1] == key["kid"]
    new_token = _token(web).json()["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == kids[0]
    assert _me(web, old_token).status_code == 200  # valid until it expires
    assert _me(web, new_token).status_code == 200


@pytest.mark.parametrize(
    "authorization",
    ["Basic YWRhOnBhc3N3b3Jk", "Bearer", "Bearer garbage", "Bearer ferry_0011223344556677_nope"],
)
def test_bad_authorization_headers(web: httpx.Client, authorization: str) -> None:
    _assert_refused(web.get("/auth/me", headers={"authorization": authorization}))


def test_anonymous_me_is_refused(web: httpx.Client) -> None:
    _assert_refused(web.get("/auth/me"))


JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}

BAD_BODIES = {
    "malformed JSON": (JSON, b'{"email": "ada@example.org", "password": ', 400),
    "JSON array": (JSON, b'["ada@example.org"]', 400),
    "JSON number field": (JSON, b'{"email": "ada@example.org", "password": 12}', 400),
    "JSON null field": (JSON, b'{"email": null, "password": "x"}', 400),
    "missing password": (JSON, b'{"email": "ada@example.org"}', 400),
    "missing email": (JSON, b'{"password": "whatever it is"}', 400),
    "empty body": (JSON, b"", 400),
    "empty form": (FORM, b"", 400),
    "form bad utf-8": (FORM, b"email=\xff\xfe&password=x", 400),
    "too many form fields": (FORM, b"&".join(b"f%d=1" % n for n in range(50)), 400),
    "huge field": (JSON, b'{"email": "' + b"a" * 10_000 + b'", "password": "x"}', 400),
    "unknown grant": (JSON, b'{"grant_type": "client_credentials"}', 400),
    "text/plain": ({"content-type": "text/plain"}, b"email=ada", 415),
    "no content type": ({}, b"email=ada", 415),
    "multipart": ({"content-type": "multipart/form-data; boundary=x"}, b"--x--", 415),
    "10 MB": (JSON, b'{"email": "' + b"a" * 10 * 1024 * 1024 + b'"}', 413),
}


@pytest.mark.parametrize("path", ["/auth/token", "/auth/login", "/auth/refresh"])
@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_bodies_are_4xx_with_a_reason(web: httpx.Client, path: str, case: str) -> None:
    headers, body, status = BAD_BODIES[case]
    if path == "/auth/refresh" and case in {"missing password", "missing email", "unknown grant"}:
        status = 400  # no refresh_token field either way
    response = web.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]


def test_chunked_body_over_the_cap_is_refused(web: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"email": "'
        for _ in range(200):
            yield b"a" * 1024

    response = web.post("/auth/token", content=chunks(), headers=JSON)
    assert response.status_code == 413


def test_wrong_methods(web: httpx.Client) -> None:
    assert web.get("/auth/token").status_code == 405
    assert web.post("/.well-known/jwks.json").status_code == 405


def test_the_sign_in_page_posts_a_form_and_returns_only_to_this_site(web) -> None:
    page = web.get("/auth/login")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/sign-in"' in page.text
    assert '<input type="hidden" name="next" value="/">' in page.text
    inside = web.get("/auth/login", params={"next": "/viewer/viewer?StudyInstanceUIDs=1.2"})
    assert 'name="next" value="/viewer/viewer?StudyInstanceUIDs=1.2"' in inside.text
    for elsewhere in ("//evil.example/", "https://evil.example/", "/\\evil", 'x");alert(1)//'):
        answer = web.get("/auth/login", params={"next": elsewhere})
        assert '<input type="hidden" name="next" value="/">' in answer.text, elsewhere
