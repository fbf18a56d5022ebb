"""Where the sign-in page sends the browser afterwards: a path on this site, by the server."""

from __future__ import annotations

import json

import pytest

from portal.sign_in_page import DEFAULT_NEXT, safe_next, script_string


@pytest.mark.parametrize(
    ("offered", "kept"),
    [
        ("/viewer/viewer?StudyInstanceUIDs=1.2.3", True),
        ("/viewer/", True),
        ("/healthz#top", True),
        ("/%09/evil.example/", True),  # still encoded: a path on this site
        ("/\t/evil.example/", False),  # the attack: browsers drop the tab, leaving //evil
        ("/\n/evil.example/", False),
        ("/\r/evil.example/", False),
        ("/\x00/evil.example/", False),
        ("/\x7f", False),
        ("/ /evil.example/", False),
        ("//evil.example/", False),
        ("///evil.example/", False),
        ("/\\evil.example/", False),
        ("\\\\evil.example/", False),
        ("https://evil.example/", False),
        ("javascript:alert(1)", False),
        ("evil.example", False),
        ("/caf\u00e9", False),
        ("/\u2028", False),
        ("", False),
        (None, False),
    ],
)
def test_only_a_path_on_this_site_is_kept(offered, kept) -> None:
    assert safe_next(offered) == (offered if kept else DEFAULT_NEXT)


@pytest.mark.parametrize(
    "value", ["/</script><script>alert(1)</script>", '/"-alert(1)-"', "/&amp;"]
)
def test_the_path_is_written_as_a_script_string_that_cannot_end_the_script(value) -> None:
    literal = script_string(safe_next(value))
    assert "<" not in literal and ">" not in literal and "&" not in literal
    assert json.loads(literal) == value  # the browser reads back exactly the checked path
