"""Search forms of attribute values, so that PS3.4 C.2.2.2 matching is plain SQL comparison.

PN: each component group upper-cased with spaces collapsed and trailing empty components
dropped (`Doe^John^^` -> `DOE^JOHN`). DA: `YYYYMMDD`. TM: `HHMMSS.ffffff`, padded, so that
string order is time order. Values that cannot be read become empty, which only matches
universal or empty-value queries, never a wrong study.
"""

from __future__ import annotations

import re

_SPACES = re.compile(r"\s+")
_DATE = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")
_TIME = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")


def person_name_groups(value: str) -> tuple[str, str, str]:
    """Alphabetic, ideographic and phonetic groups in search form."""
    groups = [*value.split("="), "", ""][:3]
    return (_pn_group(groups[0]), _pn_group(groups[1]), _pn_group(groups[2]))


def _pn_group(group: str) -> str:
    components = [_SPACES.sub(" ", part).strip().upper() for part in group.split("^")]
    while components and not components[-1]:
        components.pop()
    return "^".join(components)


def pn_query(value: str) -> str:
    """The same normalisation for a query value (wildcards untouched)."""
    return _pn_group(value)


def date(value: str) -> str:
    match = _DATE.match(value.strip())
    return "".join(match.groups()) if match else ""


def time(value: str, *, upper: bool = False) -> str:
    """Padded to full precision; an upper bound of a range is padded to the end of its unit."""
    match = _TIME.match(value.strip())
    if not match:
        return ""
    hh, mm, ss, frac = match.groups()
    fill, frac_fill = ("59", "9") if upper else ("00", "0")
    return f"{hh}{mm or fill}{ss or fill}.{(frac or '').ljust(6, frac_fill)}"


def integer(value: object) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def clip(value: str, length: int) -> str:
    return value[:length]
