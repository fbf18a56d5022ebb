"""The portal's words: one catalogue of localisable text, English first (gettext style).

Templates and page handlers write the English text itself, `_("Sign in")`, so the English
page reads naturally and a missing translation falls back to it. A catalogue for another
language maps the English text to its own; `{name}` placeholders are filled after lookup.

A count takes its words from `ngettext("{n} study", "{n} studies", count)`, as GNU gettext
does: the catalogue holds, for the English pair, as many forms as its language has, and its
`plural` rule (gettext's `Plural-Forms`) picks one for the count (Polish has three forms,
Japanese one). `{n}` is the count. Adding a language is a new `Catalogue` in `CATALOGUES` (or a
`.po` file read into one), nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_LOCALE = "en"

PluralRule = Callable[[int], int]


def germanic_plural(n: int) -> int:
    """English, German, Dutch, the Nordic languages: `nplurals=2; plural=(n != 1);`."""
    return 0 if n == 1 else 1


@dataclass(frozen=True)
class Catalogue:
    """One language: its words, its plural forms, and the rule that picks among them."""

    words: Mapping[str, str]
    plurals: Mapping[tuple[str, str], Sequence[str]] = field(default_factory=dict)
    plural: PluralRule = germanic_plural


# English is the source text, so its catalogue holds only the states, whose source is the
# machine value the API speaks ("in-progress"): a person reads words. Others map source -> own.
STATE_WORDS: Mapping[str, str] = {
    "on-worklist": "on the worklist",
    "needs-reconciliation": "needs reconciliation",
    "in-progress": "in progress",
    "partly-answered": "partly answered",
    "nothing-found": "nothing found",
    "partial": "partly delivered",
    "expired-unused": "expired unused",
}
CATALOGUES: dict[str, Catalogue] = {DEFAULT_LOCALE: Catalogue(STATE_WORDS)}


def gettext(text: str, locale: str = DEFAULT_LOCALE, **values: object) -> str:
    """The text in `locale` (English when it has none), with `{name}` placeholders filled."""
    catalogue = CATALOGUES.get(locale)
    translated = catalogue.words.get(text, text) if catalogue else text
    return translated.format(**values) if values else translated


def ngettext(
    singular: str, plural: str, n: int, locale: str = DEFAULT_LOCALE, **values: object
) -> str:
    """The form of `locale` for `n` things (English's when it has none), `{n}` filled."""
    catalogue = CATALOGUES.get(locale) or CATALOGUES[DEFAULT_LOCALE]
    forms = catalogue.plurals.get((singular, plural))
    if forms:
        index = min(max(catalogue.plural(n), 0), len(forms) - 1)
        chosen = forms[index]
    else:
        chosen = singular if germanic_plural(n) == 0 else plural
    return chosen.format(n=n, **values)


def translator(locale: str = DEFAULT_LOCALE) -> Callable[..., str]:
    """`_` for one page: bound to the locale the page is shown in."""

    def _(text: str, **values: object) -> str:
        return gettext(text, locale, **values)

    return _


def plural_translator(locale: str = DEFAULT_LOCALE) -> Callable[..., str]:
    """`ngettext` for one page: `ngettext("{n} study", "{n} studies", count)`."""

    def bound(singular: str, plural: str, n: int, **values: object) -> str:
        return ngettext(singular, plural, n, locale, **values)

    return bound


def choose_locale(accept_language: str) -> str:
    """The first language of `Accept-Language` (RFC 9110 §12.5.4) that has a catalogue."""
    for item in accept_language.split(","):
        tag = item.split(";")[0].strip().lower()
        for candidate in (tag, tag.partition("-")[0]):
            if candidate in CATALOGUES:
                return candidate
    return DEFAULT_LOCALE
