"""The providers file's browser part: what a provider needs for the portal's sign-in button."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from policy.oidc_client import Endpoints, authorization_url, s256_challenge
from policy.oidc_config import BrowserClient, OidcConfigError, load_providers

ISSUER = "https://login.hospital.example/realms/staff"
RFC_7636_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 Appendix B


def _load(tmp_path: Path, text: str) -> list[object]:
    path = tmp_path / "oidc.toml"
    path.write_text(text)
    return list(load_providers(path))


def test_a_browser_provider_discovers_what_it_is_not_told(tmp_path: Path) -> None:
    [provider] = _load(
        tmp_path,
        f'[[providers]]\nname="harbour"\ndisplay_name="Harbour ID"\nissuer="{ISSUER}"\n'
        'client_id="ferry-portal"\nclient_secret="s3cret"\n',
    )
    browser = provider.browser  # type: ignore[attr-defined]
    assert browser == BrowserClient(
        "harbour", "Harbour ID", "ferry-portal", "s3cret", "client_secret_basic",
        f"{ISSUER}/.well-known/openid-configuration",
    )  # fmt: skip
    assert provider.audience == "ferry-portal"  # type: ignore[attr-defined]
    assert provider.jwks_url == ""  # type: ignore[attr-defined]  # the discovery's jwks_uri
    assert "s3cret" not in repr(provider)


def test_the_secret_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secret").write_text("from-a-file\n")
    monkeypatch.setenv("HARBOUR_SECRET", "from-the-environment")
    head = f'[[providers]]\nname="h"\nissuer="{ISSUER}"\nclient_id="c"\n'
    [from_file] = _load(tmp_path, head + f'client_secret_file="{tmp_path / "secret"}"\n')
    [from_env] = _load(tmp_path, head + 'client_secret_env="HARBOUR_SECRET"\n')
    assert from_file.browser.client_secret == "from-a-file"  # type: ignore[attr-defined]
    assert from_env.browser.client_secret == "from-the-environment"  # type: ignore[attr-defined]


def test_a_public_client_and_named_endpoints(tmp_path: Path) -> None:
    [provider] = _load(
        tmp_path,
        f'[[providers]]\nname="h"\nissuer="{ISSUER}"\nclient_id="c"\n'
        f'authorization_endpoint="{ISSUER}/auth"\ntoken_endpoint="{ISSUER}/token"\n'
        f'jwks_url="{ISSUER}/certs"\n',
    )
    browser = provider.browser  # type: ignore[attr-defined]
    assert (browser.token_auth_method, browser.discovery_url) == ("none", "")
    assert browser.display_name == "h"


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ('name="Harbour Hospital"\nclient_id="c"\n', "name must be"),
        ('client_id="c"\n', "name must be"),
        ('name="h"\nclient_id=""\n', "client_id must be non-empty"),
        ('name="h"\nclient_id="c"\ntoken_endpoint_auth_method="client_secret_post"\n', "secret"),
        ('name="h"\nclient_id="c"\nclient_secret="s"\ntoken_endpoint_auth_method="none"\n',
         "secret"),
        ('name="h"\nclient_id="c"\nclient_secret_env="FERRY_TEST_UNSET_SECRET"\n', "is not set"),
        ('name="h"\nclient_id="c"\nclient_secret_file="/nonexistent/secret"\n',
         "client_secret_file"),
        ('name="h"\nclient_id="c"\ndiscovery_url="http://idp.example/.well-known/x"\n', "https"),
        ('name="h"\nclient_id="c"\nauthorization_endpoint="https://a"\ntoken_endpoint="https://t"\n',
         "jwks_url is needed"),
    ],
)  # fmt: skip
def test_bad_browser_entries_are_refused(tmp_path: Path, extra: str, complaint: str) -> None:
    with pytest.raises(OidcConfigError, match=complaint):
        _load(tmp_path, f'[[providers]]\nissuer="{ISSUER}"\n{extra}')


def test_two_buttons_may_not_share_a_name(tmp_path: Path) -> None:
    entry = f'[[providers]]\nname="h"\nissuer="{ISSUER}"\nclient_id="c"\n'
    with pytest.raises(OidcConfigError, match="same name"):
        _load(tmp_path, entry + entry.replace(ISSUER, ISSUER + "2"))


def test_the_code_challenge_is_rfc_7636s_example() -> None:
    assert s256_challenge(RFC_7636_VERIFIER) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_the_authentication_request_carries_state_nonce_and_challenge() -> None:
    client = BrowserClient("h", "H", "ferry-portal")
    endpoints = Endpoints(f"{ISSUER}/auth?kc_idp_hint=staff", f"{ISSUER}/token")
    url = authorization_url(
        client, endpoints, "https://ferry.example/sign-in/oidc/h/callback",
        state="the-state", nonce="the-nonce", verifier=RFC_7636_VERIFIER,
    )  # fmt: skip
    query = {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}
    assert query == {
        "kc_idp_hint": "staff",
        "response_type": "code",
        "client_id": "ferry-portal",
        "redirect_uri": "https://ferry.example/sign-in/oidc/h/callback",
        "scope": "openid email",
        "state": "the-state",
        "nonce": "the-nonce",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
