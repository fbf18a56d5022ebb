"""Attribute matching (PS3.4 C.2.2.2) as SQL conditions over the index's search columns.

Single value, list of UIDs, universal (empty value), wildcard (`*`, `?`) and range matching
(DA, TM; open at either end). PN matching is case-insensitive on each component group;
with fuzzy matching a query word also matches the start of any name component.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

from pydicom.uid import UID
from sqlalchemy import ColumnElement, and_, or_, true

from archive import normalise
from foundation.errors import InvalidQuery

_LIKE_ESCAPE = "\\"


class Kind(Enum):
    """How a search column is matched, by the VR of its attribute."""

    UID = "UI"
    TEXT = "text"
    CODE = "CS"
    PERSON_NAME = "PN"
    DATE = "DA"
    TIME = "TM"
    INTEGER = "IS"


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _like_pattern(value: str) -> str:
    escaped = value.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2).replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def match_wildcard(column: ColumnElement[Any], value: str) -> ColumnElement[bool]:
    return column.like(_like_pattern(value), escape=_LIKE_ESCAPE)


def match_single_value(column: ColumnElement[Any], value: str) -> ColumnElement[bool]:
    if _has_wildcard(value):
        return match_wildcard(column, value)
    return column == value


def split_values(value: str) -> list[str]:
    """DICOMweb sends lists comma-separated; DICOM itself uses backslash. Take both."""
    return [item.strip() for item in re.split(r"[,\\]", value) if item.strip()]


def match_uid_list(column: ColumnElement[Any], value: str, attribute: str) -> ColumnElement[bool]:
    uids = split_values(value)
    for uid in uids:
        if not UID(uid).is_valid:
            raise InvalidQuery(f"{attribute}: {uid[:80]!r} is not a valid UID")
    if len(uids) == 1:
        return column == uids[0]
    return column.in_(uids)


def _range(
    column: ColumnElement[Any], value: str, attribute: str, parse: Any, upper: Any
) -> ColumnElement[bool]:
    if "-" not in value:
        single = parse(value)
        if not single:
            raise InvalidQuery(f"{attribute}: {value[:80]!r} is not a valid value")
        return (
            column == single if upper is parse else and_(column >= single, column <= upper(value))
        )
    low_text, _, high_text = value.partition("-")
    if not low_text and not high_text:
        raise InvalidQuery(f"{attribute}: a range needs at least one end")
    conditions = [column != ""]
    if low_text:
        low = parse(low_text)
        if not low:
            raise InvalidQuery(f"{attribute}: {low_text[:80]!r} is not a valid value")
        conditions.append(column >= low)
    if high_text:
        high = upper(high_text)
        if not high:
            raise InvalidQuery(f"{attribute}: {high_text[:80]!r} is not a valid value")
        conditions.append(column <= high)
    if low_text and high_text and parse(low_text) > upper(high_text):
        raise InvalidQuery(f"{attribute}: range {value!r} ends before it starts")
    return and_(*conditions)


def match_date_range(column: ColumnElement[Any], value: str, attribute: str) -> ColumnElement[bool]:
    return _range(column, value, attribute, normalise.date, normalise.date)


def match_time_range(column: ColumnElement[Any], value: str, attribute: str) -> ColumnElement[bool]:
    return _range(
        column, value, attribute, normalise.time, lambda text: normalise.time(text, upper=True)
    )


def match_person_name(columns: list[Any], value: str, *, fuzzy: bool) -> ColumnElement[bool]:
    """One group matches any of the name's groups; `A=I=P` matches group by group."""
    if "=" in value and len(columns) > 1:
        groups = value.split("=")[: len(columns)]
        conditions = [
            match_person_name([column], group, fuzzy=fuzzy)
            for column, group in zip(columns, groups, strict=False)
            if group.strip()
        ]
        return and_(*conditions) if conditions else true()
    query = normalise.pn_query(value)
    if fuzzy and not _has_wildcard(query):
        pattern = _like_pattern(query)
        conditions = []
        for column in columns:
            conditions += [
                column.like(f"{pattern}%", escape=_LIKE_ESCAPE),
                column.like(f"%^{pattern}%", escape=_LIKE_ESCAPE),
                column.like(f"% {pattern}%", escape=_LIKE_ESCAPE),
            ]
        return or_(*conditions)
    return or_(*(match_single_value(column, query) for column in columns))


def match_integer(column: ColumnElement[Any], value: str, attribute: str) -> ColumnElement[bool]:
    numbers = []
    for item in split_values(value):
        number = normalise.integer(item)
        if number is None:
            raise InvalidQuery(f"{attribute}: {item[:80]!r} is not an integer")
        numbers.append(number)
    if not numbers:
        raise InvalidQuery(f"{attribute}: no integer given")
    return column.in_(numbers) if len(numbers) > 1 else column == numbers[0]


def match_code(column: ColumnElement[Any], value: str) -> ColumnElement[bool]:
    """CS values may be sent as a list (`Modality=CT,MR`): any of them matches."""
    values = split_values(value)
    if len(values) > 1:
        return or_(*(match_single_value(column, item) for item in values))
    return match_single_value(column, value.strip())


UNIVERSAL = "universal"
EQUAL = "equal"


def plain_match(kind: Kind, value: str, attribute: str) -> tuple[str, str] | None:
    """What `match` builds when it is `true()` (UNIVERSAL) or `column == text` (EQUAL, text),
    so a search of those alone can run a statement built once; None for anything more
    (wildcards, lists, ranges, names), which `match` builds. Refuses what `match` refuses."""
    if value == "" or value == "*":
        return UNIVERSAL, ""
    if kind is Kind.UID:
        uids = split_values(value)
        if len(uids) != 1:
            return None
        if not UID(uids[0]).is_valid:
            raise InvalidQuery(f"{attribute}: {uids[0][:80]!r} is not a valid UID")
        return EQUAL, uids[0]
    if kind is Kind.CODE:
        if len(split_values(value)) > 1:
            return None
        value = value.strip()
    elif kind is not Kind.TEXT:
        return None
    return None if _has_wildcard(value) else (EQUAL, value)


def match(
    kind: Kind, columns: list[Any], value: str, attribute: str, *, fuzzy: bool
) -> ColumnElement[bool]:
    """The condition for one query key; an empty value is universal matching."""
    if value == "" or value == "*":
        return true()
    column = columns[0]
    if kind is Kind.UID:
        return match_uid_list(column, value, attribute)
    if kind is Kind.PERSON_NAME:
        return match_person_name(columns, value, fuzzy=fuzzy)
    if kind is Kind.DATE:
        return match_date_range(column, value, attribute)
    if kind is Kind.TIME:
        return match_time_range(column, value, attribute)
    if kind is Kind.INTEGER:
        return match_integer(column, value, attribute)
    if kind is Kind.CODE:
        return match_code(column, value)
    return match_single_value(column, value)
