"""Signing in to the portal with an OpenID Connect provider, over HTTP against a real provider.

The tiny provider (tests/_oidc_provider.py) runs on loopback; Ferry discovers it, sends the
browser there, redeems the code and verifies the ID token. Each way the answer can be wrong is
refused with the sign-in page and a reason, and no session.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from archive.store import Archive
from audit.search import AuditQuery, search_events
from ferry.app import build_archive
from ferry.settings import Settings
from policy.models import UserStatus
from tests._oidc_provider import CLIENT_ID, RsaKey, TinyProvider, providers_file, run_provider
from tests.conftest import RunningServer, make_settings, run_server, sqlite_only
from tests.policy._people import add_institution, add_user

EMAIL = "ada@hospital.example"
START = "/sign-in/oidc/harbour"


@pytest.fixture
def idp() -> Iterator[TinyProvider]:
    yield from run_provider()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, idp: TinyProvider) -> Settings:
    path = providers_file(idp, tmp_path / "oidc.toml")
    return make_settings(tmp_path, database_url, oidc_providers=str(path))


@dataclasses.dataclass
class Setting:
    server: RunningServer
    idp: TinyProvider
    far: int
    user_pk: int

    def browser(self) -> httpx.Client:
        """One browser: its own cookie jar, redirects looked at one by one."""
        return httpx.Client(base_url=self.server.base_url, timeout=30, follow_redirects=False)


@pytest.fixture
def setting(server: RunningServer, idp: TinyProvider) -> Setting:
    far = add_institution(server.archive.engine, "FAR")
    # In Ferry Ada is a system administrator and FAR's administrator: the provider gives neither.
    user_pk = add_user(server.archive.engine, EMAIL, memberships={far: "admin"}, system_admin=True)
    idp.person = {"email": "Ada@Hospital.example", "groups": ["radiology", "lunch-club"]}
    return Setting(server, idp, far, user_pk)


def _to_provider(browser: httpx.Client, next_path: str = "/") -> str:
    """The sign-in begun at Ferry: the provider's authorization URL it sends the browser to."""
    begun = browser.get(START, params={"next": next_path})
    assert begun.status_code == 303, begun.text
    return begun.headers["location"]


def _back_from_provider(authorize_url: str) -> str:
    """The provider signs the person in and sends the browser back: the callback URL."""
    answered = httpx.get(authorize_url, follow_redirects=False, timeout=30)
    assert answered.status_code == 302, answered.text
    return answered.headers["location"]


def _sign_in(browser: httpx.Client, next_path: str = "/") -> httpx.Response:
    return browser.get(_back_from_provider(_to_provider(browser, next_path)))


def _login_events(server: RunningServer) -> list[Any]:
    found = search_events(server.archive.engine, AuditQuery(action="login"))
    return list(reversed(found.entries))


def test_signing_in_gives_a_session_with_the_mappings_memberships_only(setting: Setting) -> None:
    server, idp = setting.server, setting.idp
    with setting.browser() as browser:
        signed_in = _sign_in(browser)
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
        assert "ferry_session" in browser.cookies and "ferry_oidc_state" not in browser.cookies
        me = browser.get("/auth/me").json()
    assert (me["id"], me["name"]) == (setting.user_pk, EMAIL)
    assert me["memberships"] == {str(server.institution_pk): ["receiver", "viewer"]}
    assert me["system_admin"] is False
    # The authentication request (Core §3.1.2.1) and the token request with PKCE (RFC 7636)
    [asked] = idp.authorize_requests
    assert asked["redirect_uri"] == f"{server.base_url}/sign-in/oidc/harbour/callback"
    assert asked["scope"] == "openid email" and asked["client_id"] == CLIENT_ID
    assert asked["code_challenge_method"] == "S256" and asked["nonce"] and asked["state"]
    [redeemed] = idp.token_requests
    digest = hashlib.sha256(redeemed["code_verifier"].encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == asked["code_challenge"]
    assert "client_secret" not in redeemed  # it went in the Basic header
    [event] = _login_events(server)
    assert (event.actor, event.outcome) == (f"user:{EMAIL}", "allowed")
    assert json.loads(event.detail) | {"method": "oidc", "provider": "harbour"} == json.loads(
        event.detail
    )


@pytest.mark.parametrize(
    ("asked", "lands"),
    [
        ("/account/notifications", "/account/notifications"),
        ("/institutions/HOSP?tab=urgent", "/institutions/HOSP?tab=urgent"),
        ("//evil.example/phish", "/"),
        ("https://evil.example/phish", "/"),
        ("/\\evil.example", "/"),
    ],
)
@sqlite_only
def test_the_person_returns_to_a_page_of_this_site_only(
    setting: Setting, asked: str, lands: str
) -> None:
    with setting.browser() as browser:
        assert _sign_in(browser, asked).headers["location"] == lands


@sqlite_only
def test_the_pages_of_an_institution_the_mapping_does_not_name_are_missing(
    setting: Setting,
) -> None:
    with setting.browser() as browser:
        _sign_in(browser)
        assert browser.get("/institutions/HOSP").status_code == 200
        assert browser.get("/institutions/FAR").status_code == 404  # Ferry's own membership


def _refused(answer: httpx.Response, status: int, words: str, browser: httpx.Client) -> None:
    assert answer.status_code == status, answer.text
    assert "text/html" in answer.headers["content-type"]
    assert words in answer.text
    assert "ferry_session" not in browser.cookies
    assert browser.get("/auth/me").status_code == 401


@sqlite_only
def test_a_refusal_at_the_provider_is_said_and_audited(setting: Setting) -> None:
    setting.idp.authorize_error = "access_denied"
    with setting.browser() as browser:
        _refused(_sign_in(browser), 401, "did not sign you in", browser)
    [event] = _login_events(setting.server)
    assert event.outcome == "denied" and "did not sign you in" in event.reason


@sqlite_only
def test_a_provider_error_code_is_shown_but_not_its_free_text(setting: Setting) -> None:
    with setting.browser() as browser:
        callback = _back_from_provider(_to_provider(browser))
        state = parse_qs(urlsplit(callback).query)["state"][0]
        odd = browser.get(
            "/sign-in/oidc/harbour/callback",
            params={"state": state, "error": "server_error",
                    "error_description": "Call +1 555 0100 to unlock"},
        )  # fmt: skip
        _refused(odd, 401, "(server_error)", browser)
        assert "555" not in odd.text


@sqlite_only
def test_an_answer_without_a_sign_in_of_this_browser_is_refused(setting: Setting) -> None:
    with setting.browser() as browser:
        # never begun here: no state cookie, no state
        _refused(
            browser.get(f"{START}/callback?code=abc"), 400, "not begun in this browser", browser
        )
        callback = _back_from_provider(_to_provider(browser))
    with setting.browser() as elsewhere:  # the answer carried to another browser
        _refused(elsewhere.get(callback), 400, "not begun in this browser", elsewhere)


@sqlite_only
def test_an_answer_with_another_state_is_refused(setting: Setting) -> None:
    with setting.browser() as browser:
        callback = _back_from_provider(_to_provider(browser))
        parts = urlsplit(callback)
        code = parse_qs(parts.query)["code"][0]
        forged = browser.get(f"{START}/callback", params={"code": code, "state": "x" * 43})
        _refused(forged, 400, "belongs to another sign-in", browser)


@sqlite_only
def test_a_replayed_answer_is_refused(setting: Setting) -> None:
    with setting.browser() as browser:
        callback = _back_from_provider(_to_provider(browser))
        state = browser.cookies["ferry_oidc_state"]
        assert browser.get(callback).status_code == 303
    with setting.browser() as replaying:  # the same answer, with the same state cookie
        replaying.cookies.set("ferry_oidc_state", state, path="/sign-in/oidc/harbour/")
        _refused(replaying.get(callback), 400, "already used", replaying)
    assert len(setting.idp.token_requests) == 1  # the code was never offered again


@sqlite_only
def test_a_refusal_at_the_token_endpoint_is_said(setting: Setting) -> None:
    setting.idp.token_refusal = "invalid_grant"
    with setting.browser() as browser:
        _refused(_sign_in(browser), 401, "refused to complete the sign-in (invalid_grant)", browser)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"nonce": "not-the-nonce-of-this-sign-in"}, "nonce"),
        ({"nonce": None}, "nonce"),
        ({"aud": "another-client"}, "could not be verified"),
        ({"aud": [CLIENT_ID, "another-client"], "azp": "another-client"}, "another client"),
        ({"iss": "https://idp.elsewhere.example"}, "could not be verified"),
        ({"exp": 1_000_000_000}, "expired"),
        ({"email_verified": False}, "verified email"),
    ],
)
@sqlite_only
def test_an_id_token_that_does_not_hold_is_refused(
    setting: Setting, changes: dict[str, Any], words: str
) -> None:
    setting.idp.id_token_claims = changes
    with setting.browser() as browser:
        _refused(_sign_in(browser), 401, words, browser)


@sqlite_only
def test_an_id_token_signed_by_another_key_is_refused(setting: Setting) -> None:
    setting.idp.signing_key = RsaKey.new("intruder")  # signed under the provider's own kid
    with setting.browser() as browser:
        _refused(_sign_in(browser), 401, "signature is not valid", browser)


@pytest.mark.parametrize("status", [UserStatus.DISABLED, UserStatus.PENDING, None])
@sqlite_only
def test_the_person_must_be_an_active_ferry_user(
    setting: Setting, status: UserStatus | None
) -> None:
    email = "bea@hospital.example"
    if status is not None:
        add_user(setting.server.archive.engine, email, status=status)
    setting.idp.person = {"email": email, "groups": ["radiology"]}
    with setting.browser() as browser:
        _refused(_sign_in(browser), 401, "has no active Ferry account", browser)
    [event] = _login_events(setting.server)
    assert (event.actor, event.outcome) == (f"user:{email}", "denied")


@sqlite_only
def test_an_unknown_provider_is_not_found(setting: Setting) -> None:
    with setting.browser() as browser:
        _refused(browser.get("/sign-in/oidc/elsewhere"), 404, "no such way", browser)
        _refused(browser.get("/sign-in/oidc/elsewhere/callback"), 404, "no such way", browser)


@sqlite_only
def test_the_front_page_offers_a_button_per_provider_with_a_client(setting: Setting) -> None:
    with setting.browser() as browser:
        for path in ("/", "/sign-in?next=/account/notifications"):
            page = browser.get(path).text
            assert page.count('action="/sign-in/oidc/') == 1  # not the bearer-only provider
            assert "Sign in with Harbour Health ID" in page


def _front_and_start(tmp_path: Path, database_url: str, text: str, start: str) -> tuple[str, Any]:
    """The front page and the answer to beginning a sign-in, of a Ferry with this file."""
    path = tmp_path / "providers.toml"
    path.write_text(text)
    settings = make_settings(tmp_path, database_url, oidc_providers=str(path))
    archive: Archive = build_archive(settings)
    running = run_server(settings, archive)
    try:
        server = next(running)
        front = httpx.get(f"{server.base_url}/").text
        return front, httpx.get(f"{server.base_url}{start}", follow_redirects=False)
    finally:
        running.close()  # the server stops
        archive.engine.dispose()


@sqlite_only
def test_a_provider_without_a_client_has_no_button(tmp_path: Path, database_url: str) -> None:
    front, begun = _front_and_start(
        tmp_path, database_url,
        '[[providers]]\nissuer = "https://idp.example/realms/x"\n'
        'jwks_url = "https://idp.example/realms/x/certs"\naudience = "ferry"\n',
        "/sign-in/oidc/x",
    )  # fmt: skip
    assert "Sign in with" not in front and "/sign-in/oidc/" not in front
    assert begun.status_code == 404


@sqlite_only
def test_an_unreachable_provider_is_said(tmp_path: Path, database_url: str) -> None:
    front, begun = _front_and_start(
        tmp_path, database_url,
        '[[providers]]\nname = "gone"\ndisplay_name = "Gone ID"\n'
        'issuer = "http://127.0.0.1:9"\nclient_id = "ferry"\n',
        "/sign-in/oidc/gone",
    )  # fmt: skip
    assert "Sign in with Gone ID" in front
    assert begun.status_code == 503 and "Gone ID cannot be reached now" in begun.text
    assert "ferry_oidc_state" not in begun.cookies


@sqlite_only
def test_a_discovery_document_of_another_issuer_is_refused(
    tmp_path: Path, database_url: str, idp: TinyProvider
) -> None:
    _, begun = _front_and_start(
        tmp_path, database_url,
        '[[providers]]\nname = "liar"\ndisplay_name = "Liar ID"\n'
        'issuer = "https://idp.elsewhere.example"\nclient_id = "ferry"\n'
        f'discovery_url = "{idp.issuer}/.well-known/openid-configuration"\n',
        "/sign-in/oidc/liar",
    )  # fmt: skip
    assert begun.status_code == 503 and "names another issuer" in begun.text
