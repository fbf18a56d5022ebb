"""Application Entity titles: the AE value representation (PS3.5 6.2, Table 6.2-1).

At most 16 characters of the Default Character Repertoire (ASCII), without backslash (5CH) or
control characters; leading and trailing spaces are not significant, and a value of spaces
only shall not be used. One check, for settings, the policy store and the DIMSE edge alike.
"""

from __future__ import annotations

__all__ = ["MAX_AE_TITLE_LENGTH", "InvalidAETitle", "parse_ae_title"]

MAX_AE_TITLE_LENGTH = 16


class InvalidAETitle(ValueError):
    """The text is no AE title; the message says why."""


def parse_ae_title(text: str) -> str:
    """The AE title `text` names, without its non-significant spaces; InvalidAETitle if none."""
    title = text.strip(" ")
    if not title:
        raise InvalidAETitle(f"AE title {text!r} is empty or only spaces")
    if len(title) > MAX_AE_TITLE_LENGTH:
        raise InvalidAETitle(f"AE title {text!r} is longer than {MAX_AE_TITLE_LENGTH} characters")
    if "\\" in title:
        raise InvalidAETitle(f"AE title {text!r} contains a backslash")
    if not (title.isascii() and title.isprintable()):
        raise InvalidAETitle(f"AE title {text!r} must be printable ASCII, no control characters")
    return title
