"""HTTP media types and Accept negotiation input (RFC 9110 §8.3, §12.5.1; PS3.18 8.7).

Errors::

    ValueError
    └── InvalidMediaType
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "InvalidMediaType",
    "MediaRange",
    "accept_header",
    "parse_accept",
    "parse_content_type",
]

_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_OWS = " \t"
# RFC 9110 §12.4.2 qvalue: at most three decimals, never above 1.
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")


class InvalidMediaType(ValueError):
    """A Content-Type or Accept header that does not follow RFC 9110's grammar."""


@dataclass(frozen=True)
class MediaRange:
    """One media type, or one Accept element with its weight (q is 1.0 for a Content-Type).

    Type, subtype and parameter names are case-insensitive (§8.3.1), so they are kept lower-cased;
    parameter values keep their case, since a boundary or a transfer syntax UID is matched exactly.
    """

    type: str
    subtype: str
    params: Mapping[str, str]
    q: float = 1.0

    @property
    def essence(self) -> str:
        """The "type/subtype" pair that decides what a representation is; parameters refine it."""
        return f"{self.type}/{self.subtype}".lower()

    def param(self, name: str) -> str | None:
        """Look a parameter up by name; names are case-insensitive, values are not (§5.6.6)."""
        return self.params.get(name.lower())


def parse_content_type(header: str) -> MediaRange:
    """Parse a Content-Type value, e.g. the multipart/related header of a STOW-RS request."""
    cursor = _Cursor(header, stops=";")
    cursor.skip_ows()
    media = cursor.media_type()
    cursor.skip_ows()
    if not cursor.at_end():
        raise cursor.error("unexpected text after the media type")
    return media


def parse_accept(header: str | None) -> list[MediaRange]:
    """Parse an Accept value into ranges, most preferred first.

    A missing or empty header accepts anything (§12.5.1). Repeated Accept headers arrive
    here joined by commas, which the list grammar absorbs. Ranges with q=0 are dropped:
    they name what the client refuses, and a WADO-RS choice only needs what it takes.
    """
    if header is None or not header.strip(_OWS):
        return [MediaRange("*", "*", MappingProxyType({}), 1.0)]
    cursor = _Cursor(header, stops=";,")
    ranges: list[MediaRange] = []
    while True:
        cursor.skip_ows()
        if cursor.at_end():
            break
        if cursor.consume(","):  # §5.6.1: empty list elements are legal
            continue
        ranges.append(_weighted(cursor, cursor.media_type()))
        cursor.skip_ows()
        if not cursor.at_end() and not cursor.consume(","):
            raise cursor.error("expected ',' between media ranges")
    ranges.sort(key=lambda media: -media.q)  # stable: equal weights keep the client's order
    return [media for media in ranges if media.q > 0]


def _weighted(cursor: _Cursor, media: MediaRange) -> MediaRange:
    """Move a "q" parameter into the weight; §12.5.1 says to treat it so wherever it stands."""
    if media.type == "*" and media.subtype != "*":
        raise cursor.error(f"'{media.type}/{media.subtype}' is not a media range")
    params = dict(media.params)
    raw = params.pop("q", None)
    if raw is None:
        return media
    if not _QVALUE.fullmatch(raw):
        raise cursor.error(f"invalid q-value {raw!r}")
    return MediaRange(media.type, media.subtype, MappingProxyType(params), float(raw))


class _Cursor:
    """A position in a header value, consumed left to right by the RFC 9110 productions."""

    def __init__(self, text: str, stops: str) -> None:
        self.text = text
        self.pos = 0
        # Characters that end an unquoted parameter value; ',' only inside a list like Accept.
        self.stops = frozenset(stops + _OWS + '"')

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def consume(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def skip_ows(self) -> None:
        while self.peek() and self.peek() in _OWS:
            self.pos += 1

    def error(self, problem: str) -> InvalidMediaType:
        return InvalidMediaType(f"{problem} at position {self.pos} in {self.text!r}")

    def token(self, what: str) -> str:
        start = self.pos
        while self.peek() and self.peek() in _TCHARS:
            self.pos += 1
        if self.pos == start:
            raise self.error(f"expected {what}")
        return self.text[start : self.pos]

    def media_type(self) -> MediaRange:
        type_ = self.token("a type").lower()
        if not self.consume("/"):
            raise self.error("expected '/' after the type")
        subtype = self.token("a subtype").lower()
        params: dict[str, str] = {}
        while self._next_parameter():
            if self.at_end() or self.peek() in ";,":  # empty, as in "text/plain;;charset=x"
                continue
            name, value = self.parameter()
            if name in params:
                raise self.error(f"parameter {name!r} given twice")
            params[name] = value
        return MediaRange(type_, subtype, MappingProxyType(params), 1.0)

    def _next_parameter(self) -> bool:
        self.skip_ows()
        if not self.consume(";"):
            return False
        self.skip_ows()
        return True

    def parameter(self) -> tuple[str, str]:
        name = self.token("a parameter name").lower()
        self.skip_ows()  # RFC 9110 forbids space around '=', but some senders put it there
        if not self.consume("="):
            raise self.error(f"expected '=' after parameter {name!r}")
        self.skip_ows()
        if self.peek() == '"':
            return name, self.quoted_string()
        return name, self.unquoted_value(name)

    def unquoted_value(self, name: str) -> str:
        """Read leniently: boundaries like "----=_Part_1" arrive unquoted though '=' is no tchar."""
        start = self.pos
        while self.peek() and self.peek() not in self.stops and self.peek().isprintable():
            self.pos += 1
        if self.pos == start:
            raise self.error(f"expected a value for parameter {name!r}")
        return self.text[start : self.pos]

    def quoted_string(self) -> str:
        self.pos += 1  # the opening DQUOTE
        value: list[str] = []
        while not self.at_end():
            char = self.text[self.pos]
            self.pos += 1
            if char == '"':
                return "".join(value)
            if char == "\\":
                if self.at_end():
                    break
                char = self.text[self.pos]
                self.pos += 1
            if char != "\t" and (ord(char) < 0x20 or ord(char) == 0x7F):
                raise self.error("control character in quoted string")
            value.append(char)
        raise self.error("unterminated quoted string")


def accept_header(values: list[str]) -> str | None:
    """Repeated Accept header fields are one list (RFC 9110 §5.3)."""
    return ", ".join(values) if values else None
