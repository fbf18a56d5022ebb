"""The catalogue's plural forms: English's two, and a language with its own rule and forms."""

from __future__ import annotations

import pytest

from portal.i18n import CATALOGUES, Catalogue, choose_locale, ngettext, plural_translator


def polish_plural(n: int) -> int:
    """gettext's Plural-Forms for Polish: one, few (2-4, not 12-14), many."""
    if n == 1:
        return 0
    if n % 10 in (2, 3, 4) and n % 100 not in (12, 13, 14):
        return 1
    return 2


@pytest.mark.parametrize(
    ("count", "words"),
    [(0, "0 studies"), (1, "1 study"), (2, "2 studies"), (21, "21 studies")],
)
def test_english_says_one_study_and_two_studies(count: int, words: str) -> None:
    assert ngettext("{n} study", "{n} studies", count) == words
    assert plural_translator("en")("{n} study", "{n} studies", count) == words


def test_a_language_brings_its_own_rule_and_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    forms = {("{n} study", "{n} studies"): ("{n} badanie", "{n} badania", "{n} badań")}
    monkeypatch.setitem(CATALOGUES, "pl", Catalogue({}, forms, polish_plural))
    assert choose_locale("pl-PL,en;q=0.5") == "pl"
    said = [ngettext("{n} study", "{n} studies", n, "pl") for n in (1, 2, 5, 12, 22)]
    assert said == ["1 badanie", "2 badania", "5 badań", "12 badań", "22 badania"]
    assert ngettext("{n} image", "{n} images", 1, "pl") == "1 image"  # untranslated: English
    assert ngettext("{n} study on {node}", "{n} studies on {node}", 3, "xx", node="A") == (
        "3 studies on A"
    )
