"""Pseudonymisation profiles under `/api`: an institution's recipes for research and teaching
copies (`exchange.pseudonymisation_profiles`).

Adding and removing one is administration (`decide(..., ADMINISTER, institution)`); listing
them is also for those who may send for the institution (`TRANSFER`), who choose one when they
send pseudonymised copies. Another institution's profiles answer like a missing institution.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from sqlalchemy import Engine

from archive.pseudonymise import TABLE_VERSION, Dates, PrivateTags
from exchange.models import PseudonymisationProfile
from exchange.pseudonymisation_profiles import (
    MAX_RULES,
    MAX_VALUE_CHARS,
    ProfileRules,
    create_profile,
    delete_profile,
    find_profile,
    list_profiles,
    rules_of,
)
from policy.decision import InstitutionFacts
from policy.roles import Action
from portal.admin_access import Access
from portal.api_schemas import Input, Output
from portal.openapi import Call, Operation

Keyword = Annotated[str, Field(min_length=1, max_length=64)]
ProfileName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\s/][^/]*$")]


class ProfileIn(Input):
    """Beyond the basic profile (PS3.15 Annex E): DICOM keywords (`PatientSex`) or tags
    (`(0010,0040)`) to keep as they are, to remove, or to set to a value."""

    name: ProfileName
    description: Annotated[str, Field(max_length=500)] = ""
    keep: list[Keyword] = Field(default_factory=list, max_length=MAX_RULES)
    remove: list[Keyword] = Field(default_factory=list, max_length=MAX_RULES)
    replace: dict[Keyword, Annotated[str, Field(max_length=MAX_VALUE_CHARS)]] = Field(
        default_factory=dict
    )
    dates: Literal["remove", "shift", "keep"] = "remove"
    private_tags: Literal["remove", "keep"] = "remove"


class ProfileOut(Output):
    name: str
    description: str
    keep: list[str]
    remove: list[str]
    replace: dict[str, str]
    dates: str
    private_tags: str
    basic_profile: str = TABLE_VERSION
    created_by: str


def _engine(call: Call) -> Engine:
    engine: Engine = call.state.archive.engine
    return engine


def profile_out(row: PseudonymisationProfile) -> ProfileOut:
    rules = rules_of(row)
    return ProfileOut(
        name=row.name, description=row.description, keep=rules.get("keep", []),
        remove=rules.get("remove", []), replace=rules.get("replace", {}), dates=row.dates,
        private_tags=row.private_tags, created_by=row.created_by,
    )  # fmt: skip


def _readable(call: Call) -> InstitutionFacts:
    """The institution whose profiles the caller may read: its senders (who choose one) and
    its administrators; refusals as for administration."""
    access, code = Access(call), call.path["code"]
    pk = access.pk_of(code)
    facts = access.snapshot.institutions.get(pk or -1)
    if facts is not None and pk is not None and access.decide(pk, Action.TRANSFER).allowed:
        return facts
    return access.require_code(code)


def list_institution_profiles(call: Call) -> list[ProfileOut]:
    facts = _readable(call)
    return [profile_out(row) for row in list_profiles(_engine(call), facts.pk)]


def get_profile(call: Call) -> ProfileOut:
    facts = _readable(call)
    return profile_out(find_profile(_engine(call), facts.pk, call.path["profile"]))


def add_profile(call: Call) -> ProfileOut:
    facts = Access(call).require_code(call.path["code"])
    body: ProfileIn = call.body
    rules = ProfileRules(body.keep, body.remove, body.replace, Dates(body.dates),
                         PrivateTags(body.private_tags))  # fmt: skip
    row = create_profile(_engine(call), facts.pk, body.name, body.description, rules,
                         now=call.now, created_by=call.principal.label)  # fmt: skip
    return profile_out(row)


def remove_profile(call: Call) -> None:
    facts = Access(call).require_code(call.path["code"])
    delete_profile(_engine(call), facts.pk, call.path["profile"])


_P = "pseudonymisation profiles"
OPERATIONS: list[Operation] = [
    Operation("GET", "/institutions/{code}/pseudonymisation-profiles", list_institution_profiles,
              "an institution's pseudonymisation profiles", _P, response=list[ProfileOut]),
    Operation("POST", "/institutions/{code}/pseudonymisation-profiles", add_profile,
              "add a pseudonymisation profile", _P, ProfileIn, ProfileOut, 201),
    Operation("GET", "/institutions/{code}/pseudonymisation-profiles/{profile}", get_profile,
              "one profile", _P, response=ProfileOut),
    Operation("DELETE", "/institutions/{code}/pseudonymisation-profiles/{profile}", remove_profile,
              "remove a profile (copies made with it stay)", _P, status=204),
]  # fmt: skip
