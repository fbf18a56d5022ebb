"""Signing in with the hospital's own identity provider, clicked in Chromium.

The tiny provider (tests/_oidc_provider.py) runs on loopback as a peer; its mapping gives the
group `radiology` HOSP's viewer and receiver roles. Ada is a Ferry user whose own memberships
are elsewhere (FAR's administrator): signed in through the provider she has only the mapping's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from ferry.settings import Settings
from policy import store
from tests._oidc_provider import TinyProvider, providers_file, run_provider
from tests.conftest import make_settings
from tests.portal.pages.conftest import World, assert_accessible, snapshot

EMAIL = "ada.oidc@hospital.example"


@pytest.fixture
def idp() -> Iterator[TinyProvider]:
    yield from run_provider()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, idp: TinyProvider) -> Settings:
    path = providers_file(idp, tmp_path / "oidc.toml")
    return make_settings(tmp_path, database_url, oidc_providers=str(path))


@pytest.fixture
def ada(world: World, idp: TinyProvider) -> str:
    engine = world.server.archive.engine
    user = store.create_user(engine, EMAIL, name="Ada Lovelace")
    store.set_membership(engine, user.pk or 0, world.pks["FAR"], ["admin"])
    idp.person = {"email": EMAIL, "groups": ["radiology"]}
    return EMAIL


def test_the_front_page_button_signs_in_with_the_provider(
    world: World, idp: TinyProvider, ada: str
) -> None:
    page = world.anonymous()
    page.goto("/")
    button = page.get_by_role("button", name="Sign in with Harbour Health ID")
    expect(button).to_be_visible()
    assert_accessible(page)
    snapshot(page, "front-page-with-provider")
    button.click()
    expect(page).to_have_url(re.compile(r"/institutions/HOSP$"))
    expect(page.get_by_role("banner")).to_contain_text("Ada Lovelace")
    assert_accessible(page)
    # Her institutions come from the provider's mapping: HOSP, and not FAR, her own in Ferry.
    nav = page.get_by_role("navigation").first
    expect(nav).to_contain_text("Harbour Hospital")
    expect(nav).not_to_contain_text("Far Away Imaging")
    answer = page.goto("/institutions/FAR")
    assert answer is not None and answer.status == 404
    [asked] = idp.authorize_requests
    assert asked["code_challenge_method"] == "S256"


def test_the_provider_returns_the_person_to_the_page_they_wanted(
    world: World, idp: TinyProvider, ada: str
) -> None:
    page = world.anonymous()
    page.goto("/account/notifications")
    expect(page).to_have_url(re.compile(r"/sign-in\?next=/account/notifications$"))
    page.get_by_role("button", name="Sign in with Harbour Health ID").click()
    expect(page).to_have_url(re.compile(r"/account/notifications$"))


def test_a_refusal_shows_the_sign_in_page_with_the_reason(
    world: World, idp: TinyProvider, ada: str
) -> None:
    idp.authorize_error = "access_denied"
    page = world.anonymous()
    page.goto("/")
    page.get_by_role("button", name="Sign in with Harbour Health ID").click()
    expect(page.get_by_role("alert")).to_contain_text("Harbour Health ID did not sign you in")
    assert_accessible(page)
    expect(page.get_by_role("button", name="Sign in with Harbour Health ID")).to_be_visible()
    page.goto("/account/notifications")
    expect(page).to_have_url(re.compile(r"/sign-in"))  # no session
