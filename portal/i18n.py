"""The portal's words: one catalogue of localisable text, English first (gettext style).

Templates and page handlers write the English text itself, `_("Sign in")`, so the English
page reads naturally and a missing translation falls back to it. A catalogue for another
language maps the English text to its own; `{name}` placeholders are filled after lookup.
Adding a language is a new entry in `CATALOGUES` (or a `.po` file read into one), nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

DEFAULT_LOCALE = "en"

# English is the source text, so its catalogue holds only the states, whose source is the
# machine value the API speaks ("in-progress"): a person reads words. Others map source -> own.
STATE_WORDS: Mapping[str, str] = {
    "on-worklist": "on the worklist",
    "needs-reconciliation": "needs reconciliation",
    "in-progress": "in progress",
    "partly-answered": "partly answered",
    "nothing-found": "nothing found",
    "partial": "partly delivered",
}
CATALOGUES: dict[str, Mapping[str, str]] = {DEFAULT_LOCALE: STATE_WORDS}


def gettext(text: str, locale: str = DEFAULT_LOCALE, **values: object) -> str:
    """The text in `locale` (English when it has none), with `{name}` placeholders filled."""
    translated = CATALOGUES.get(locale, {}).get(text, text)
    return translated.format(**values) if values else translated


def translator(locale: str = DEFAULT_LOCALE) -> Callable[..., str]:
    """`_` for one page: bound to the locale the page is shown in."""

    def _(text: str, **values: object) -> str:
        return gettext(text, locale, **values)

    return _


def choose_locale(accept_language: str) -> str:
    """The first language of `Accept-Language` (RFC 9110 §12.5.4) that has a catalogue."""
    for item in accept_language.split(","):
        tag = item.split(";")[0].strip().lower()
        for candidate in (tag, tag.partition("-")[0]):
            if candidate in CATALOGUES:
                return candidate
    return DEFAULT_LOCALE
