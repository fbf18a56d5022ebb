"""An institution's pseudonymisation profiles: the recipes of research and teaching copies.

A profile is the basic profile of PS3.15 Annex E plus what the institution's administrators
add (`archive.pseudonymise`): attributes kept, removed or set to a value, dates removed,
shifted or kept, private attributes removed or kept, under a secret of its own that keys the
pseudonyms (never shown). Administering them needs `administer` on the institution; a sender
lists them to choose one (`exchange.pseudonymisation` makes the copies).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydicom import config
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.tag import BaseTag
from pydicom.valuerep import validate_value
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from archive.pseudonymise import (
    PATIENT_ID,
    PATIENT_NAME,
    Dates,
    PrivateTags,
    Profile,
    name_of,
    tag_of,
)
from exchange.models import PseudonymisationProfile
from foundation.errors import Conflict, InvalidQuery, NotFound

MAX_RULES = 200
# The VRs whose values a profile may set as text (PS3.5 Table 6.2-1).
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"}
)
MAX_VALUE_CHARS = 64
# Who the patient is and which study it is: always pseudonymised, never kept or set by hand.
_ALWAYS_PSEUDONYMISED = frozenset(
    {PATIENT_ID, PATIENT_NAME, tag_of("StudyInstanceUID"), tag_of("SeriesInstanceUID"),
     tag_of("SOPInstanceUID")}
)  # fmt: skip


class ProfileNotFound(NotFound):
    pass


@dataclass(frozen=True)
class ProfileRules:
    """A profile as an administrator writes it: DICOM keywords or tags, as text."""

    keep: Sequence[str] = ()
    remove: Sequence[str] = ()
    replace: Mapping[str, str] | None = None
    dates: Dates = Dates.REMOVE
    private_tags: PrivateTags = PrivateTags.REMOVE


def _tags(words: Sequence[str], what: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for word in words:
        try:
            tag = tag_of(word)
        except ValueError as error:
            raise InvalidQuery(f"{what}: {error}") from None
        if tag in _ALWAYS_PSEUDONYMISED:
            raise InvalidQuery(f"{what}: {name_of(tag)} is always pseudonymised")
        found[name_of(tag)] = tag
    return found


def _check_value(tag: BaseTag, word: str, value: str) -> None:
    """A value set by a profile fits its attribute's VR (PS3.5 6.2), or 400 with why."""
    vr = dictionary_VR(tag) if dictionary_has_tag(tag) else ""
    if vr not in _TEXT_VRS:
        raise InvalidQuery(f"replace: {word} is not a text attribute; remove or keep it instead")
    try:
        validate_value(vr, value, config.RAISE)
    except ValueError:
        raise InvalidQuery(
            f"replace: {value[:40]!r} is not a valid {vr} value for {word}"
        ) from None


def check_rules(rules: ProfileRules) -> dict[str, Any]:
    """The rules as stored (keywords, each once), or 400 with the reason."""
    replace = rules.replace or {}
    if len(rules.keep) + len(rules.remove) + len(replace) > MAX_RULES:
        raise InvalidQuery(f"a profile has at most {MAX_RULES} rules")
    keep, remove = _tags(rules.keep, "keep"), _tags(rules.remove, "remove")
    replaced = _tags(list(replace), "replace")
    values = dict(zip(replaced, replace.values(), strict=True))
    if any(len(value) > MAX_VALUE_CHARS for value in values.values()):
        raise InvalidQuery(f"a replacement value has at most {MAX_VALUE_CHARS} characters")
    for word, value in values.items():
        _check_value(replaced[word], word, value)
    twice = (keep.keys() & remove.keys()) | (keep.keys() & values.keys())
    twice |= remove.keys() & values.keys()
    if twice:
        raise InvalidQuery(f"{', '.join(sorted(twice))[:200]}: one rule per attribute")
    return {"keep": sorted(keep), "remove": sorted(remove), "replace": values}


def profile_of(row: PseudonymisationProfile) -> tuple[Profile, bytes]:
    """The stored profile as `archive.pseudonymise` applies it, and its secret."""
    rules = orjson.loads(row.rules)
    profile = Profile(
        name=row.name,
        keep=frozenset(tag_of(word) for word in rules.get("keep", [])),
        remove=frozenset(tag_of(word) for word in rules.get("remove", [])),
        replace={tag_of(word): value for word, value in rules.get("replace", {}).items()},
        dates=Dates(row.dates),
        private_tags=PrivateTags(row.private_tags),
    )
    return profile, bytes.fromhex(row.secret)


def rules_of(row: PseudonymisationProfile) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(row.rules)
    return loaded


def list_profiles(engine: Engine, institution_pk: int) -> list[PseudonymisationProfile]:
    with Session(engine) as session:
        statement = (
            select(PseudonymisationProfile)
            .where(PseudonymisationProfile.institution_pk == institution_pk)
            .order_by(col(PseudonymisationProfile.name))
        )
        return list(session.exec(statement))


def find_profile(engine: Engine, institution_pk: int, name: str) -> PseudonymisationProfile:
    with Session(engine) as session:
        row = session.exec(
            select(PseudonymisationProfile).where(
                PseudonymisationProfile.institution_pk == institution_pk,
                PseudonymisationProfile.name == name,
            )
        ).first()
    if row is None:
        raise ProfileNotFound(f"no pseudonymisation profile {name[:64]!r}")
    return row


def create_profile(
    engine: Engine,
    institution_pk: int,
    name: str,
    description: str,
    rules: ProfileRules,
    *,
    now: datetime,
    created_by: str,
) -> PseudonymisationProfile:
    checked = check_rules(rules)
    if not name.strip():
        raise InvalidQuery("a profile needs a name")
    row = PseudonymisationProfile(
        institution_pk=institution_pk, name=name.strip(), description=description,
        rules=orjson.dumps(checked).decode(), dates=Dates(rules.dates).value,
        private_tags=PrivateTags(rules.private_tags).value, created_at=now,
        created_by=created_by[:256],
    )  # fmt: skip
    try:
        with Session(engine, expire_on_commit=False) as session:
            session.add(row)
            session.commit()
    except IntegrityError:
        raise Conflict(f"there is already a profile {name.strip()[:64]!r}") from None
    return row


def delete_profile(engine: Engine, institution_pk: int, name: str) -> None:
    """Copies made with it stay; the secret goes, so later copies never match earlier ones."""
    row = find_profile(engine, institution_pk, name)
    with Session(engine) as session:
        stored = session.get(PseudonymisationProfile, row.pk)
        if stored is not None:
            session.delete(stored)
            session.commit()
