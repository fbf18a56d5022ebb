"""The pages' refusals over plain HTTP, on SQLite and PostgreSQL: bad input answers a clear
4xx page (never 500), nothing is half-written, forms need their tokens, and Ferry still answers.
"""

from __future__ import annotations

import re

import httpx
import pytest

from policy import store
from tests.conftest import RunningServer
from tests.policy._people import PASSWORD, add_user

_TOKEN = re.compile(r'name="(form_token|csrf_token)" value="([^"]+)"')


def _token(page: httpx.Response, name: str) -> str:
    found = dict(_TOKEN.findall(page.text))
    return found[name]


@pytest.fixture
def web(server: RunningServer) -> httpx.Client:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        yield http


def _signed_in(web: httpx.Client, server: RunningServer, roles: str = "receiver") -> str:
    """Signs in through the form; the page's CSRF token."""
    email = f"person-{roles.replace(',', '-')}@ferry.test"
    add_user(server.archive.engine, email, memberships={server.institution_pk: roles})
    form = _token(web.get("/sign-in"), "form_token")
    fields = {"form_token": form, "email": email, "password": PASSWORD}
    landed = web.post("/sign-in", data={**fields, "next": "/account/notifications"})
    assert landed.status_code == 303 and landed.headers["location"] == "/account/notifications"
    return _token(web.get("/account/notifications"), "csrf_token")


def test_signing_in_goes_only_to_a_path_on_this_site(web: httpx.Client, server: RunningServer):
    add_user(server.archive.engine, "p@ferry.test", memberships={server.institution_pk: "viewer"})
    form = _token(web.get("/sign-in"), "form_token")
    for elsewhere in ("//evil.example/", "https://evil.example/x", "/\\evil", "javascript:x"):
        answer = web.post("/sign-in", data={"form_token": form, "email": "p@ferry.test",
                                            "password": PASSWORD, "next": elsewhere})  # fmt: skip
        assert answer.status_code == 303 and answer.headers["location"] == "/", elsewhere
    page = web.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/institutions/HOSP"
    assert "httponly" in answer.headers["set-cookie"].lower()
    assert "samesite=lax" in answer.headers["set-cookie"].lower()


def test_bad_forms_get_a_clear_refusal_and_nothing_is_written(
    web: httpx.Client, server: RunningServer
) -> None:
    page = web.get("/register")
    form = _token(page, "form_token")
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    bad = {"form_token": form, "email": "not an email", "name": "X", "institution": "HOSP",
           "password": PASSWORD, "password_again": PASSWORD}  # fmt: skip
    answer = web.post("/register", data=bad)
    assert answer.status_code == 400 and "Check the email" in answer.text
    assert 'value="not an email"' in answer.text  # the form is kept
    differ = {**bad, "email": "n@ferry.test", "password_again": PASSWORD + "!"}
    assert "The two passwords differ" in web.post("/register", data=differ).text
    huge = web.post("/register", data={**bad, "name": "x" * 70_000})
    assert huge.status_code == 413
    files = web.post("/register", data={"form_token": form}, files={"f": ("a.dcm", b"DICM")})
    assert files.status_code in (400, 403)
    odd = web.post("/register", content=b"form_token=\xff\xfe&email=%ZZ",
                   headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert odd.status_code in (400, 403)
    assert store.list_registrations(server.archive.engine, None, None) == []
    assert web.get("/healthz").status_code == 200


def test_a_csrf_token_in_any_characters_is_refused_not_an_error(web: httpx.Client, server):
    _signed_in(web, server)
    for offered in ("caf\u00e9", "\u2028", "\x00"):
        answer = web.post("/account/notifications", data={"choice": "none", "csrf_token": offered})
        assert answer.status_code == 403, offered
    latin = {"X-CSRF-Token": "caf\u00e9".encode("latin-1")}  # the API's own check, by header
    header = web.put("/api/me/notifications", headers=latin, json={"choice": "none"})
    assert header.status_code == 401


def test_page_forms_need_the_sessions_csrf_token(web: httpx.Client, server: RunningServer):
    csrf = _signed_in(web, server)
    for offered in ({}, {"csrf_token": "forged"}, {"csrf_token": csrf + "x"}):
        answer = web.post("/account/notifications", data={"choice": "none", **offered})
        assert answer.status_code == 403, offered
        assert "did not come from this Ferry page" in answer.text
    assert 'value="own" checked' in web.get("/account/notifications").text
    refused = web.post("/account/notifications", data={"choice": "whenever", "csrf_token": csrf})
    assert refused.status_code == 400 and "choice" in refused.text
    by_header = web.post(
        "/account/notifications", data={"choice": "none"}, headers={"X-CSRF-Token": csrf}
    )  # fmt: skip  (as htmx sends it)
    assert by_header.status_code == 303
    assert 'value="none" checked' in web.get("/account/notifications").text


def test_pages_take_no_bearer_tokens_and_send_the_anonymous_to_sign_in(
    web: httpx.Client, server: RunningServer
) -> None:
    for path in ("/institutions/HOSP", "/account/notifications", "/transfers/abcdefgh1234"):
        answer = web.get(path, headers=server.headers)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == f"/sign-in?next={path}"
    posted = web.post("/account/notifications", data={"choice": "none"}, headers=server.headers)
    assert posted.status_code == 303 and posted.headers["location"].startswith("/sign-in")
    htmx = web.get("/institutions/HOSP", headers={"HX-Request": "true"})
    assert htmx.headers["hx-redirect"] == "/sign-in?next=/institutions/HOSP"


def test_unknown_lists_and_odd_paging_are_answered_plainly(web: httpx.Client, server):
    _signed_in(web, server, "receiver,viewer")
    assert web.get("/institutions/HOSP?view=everything").status_code == 404
    assert web.get("/institutions/NOPE").status_code == 404
    assert web.get("/institutions/HOSP?offset=abc").status_code == 200
    assert web.get("/institutions/HOSP?status=nonsense").status_code == 200
    assert web.get("/institutions/HOSP?limit=999999&order=up").status_code == 400
    assert web.get("/transfers/%00%00%00%00%00%00%00%00").status_code == 404
    assert web.get("/requests/" + "a" * 200).status_code == 404
    assert web.get("/healthz").status_code == 200
