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

from archive.pseudonymise import TABLE_VERSION, Dates, PrivateTags, What, new_uid, preview
from archive.store import Archive
from audit.trail import AuditRecord, record
from exchange.models import PseudonymisationProfile
from exchange.parties import Actor
from exchange.pseudonymisation_profiles import (
    MAX_RULES,
    MAX_VALUE_CHARS,
    ProfileRules,
    create_profile,
    delete_profile,
    find_profile,
    list_profiles,
    profile_of,
    rules_of,
)
from exchange.sending import check_own_studies
from policy.decision import InstitutionFacts
from policy.roles import Action
from portal.admin_access import Access
from portal.api_schemas import Input, Output, Uid
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


class PreviewIn(Input):
    study: Uid = Field(description="a study of the institution's own, which you may read")


class ChangeOut(Output):
    tag: str
    keyword: str
    before: str | None  # null: absent
    after: str | None
    what: What


class PreviewOut(Output):
    """A copy's attributes against its original's (one instance, top level, no pixel data)."""

    profile: str
    study: str
    copy_study: str
    instance: str
    attributes: list[ChangeOut]


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


def preview_profile(call: Call) -> PreviewOut:
    """What the profile makes of one of the institution's studies (its first instance), before
    anything is sent: for the administrator who may also read that study."""
    facts = Access(call).require_code(call.path["code"])
    body: PreviewIn = call.body
    row = find_profile(_engine(call), facts.pk, call.path["profile"])
    profile, secret = profile_of(row)
    archive: Archive = call.state.archive
    client = call.request.client.host if call.request.client else ""
    actor = Actor(call.principal, call.now, client, "api")
    check_own_studies(archive, actor, [body.study], facts.pk)
    first = archive.find_instances(body.study)[0]
    with archive.blobs.open(first.blob_key) as source:
        changes = preview(source, profile, secret)
    access = archive.read_study_access(body.study)
    record(archive.engine, AuditRecord(
        action="pseudonymise", outcome="allowed", actor=actor.label,
        actor_kind=actor.principal.kind.value, institution_pk=facts.pk, rule="preview",
        reason=f"preview of profile {row.name}", study_uid=body.study,
        patient_id=access.patient_id if access else "",
        accession_number=access.accession_number if access else "",
        client_address=client, detail={"preview": True, "profile": row.name},
    ))  # fmt: skip
    return PreviewOut(
        profile=row.name, study=body.study, copy_study=new_uid(secret, body.study),
        instance=first.sop_instance_uid,
        attributes=[ChangeOut(tag=c.tag, keyword=c.keyword, before=c.before, after=c.after,
                              what=c.what) for c in changes],
    )  # fmt: skip


_P = "pseudonymisation profiles"
OPERATIONS: list[Operation] = [
    Operation("GET", "/institutions/{code}/pseudonymisation-profiles", list_institution_profiles,
              "an institution's pseudonymisation profiles", _P, response=list[ProfileOut]),
    Operation("POST", "/institutions/{code}/pseudonymisation-profiles", add_profile,
              "add a pseudonymisation profile", _P, ProfileIn, ProfileOut, 201),
    Operation("GET", "/institutions/{code}/pseudonymisation-profiles/{profile}", get_profile,
              "one profile", _P, response=ProfileOut),
    Operation("POST", "/institutions/{code}/pseudonymisation-profiles/{profile}/preview",
              preview_profile, "what the profile makes of one of your studies, attribute by "
              "attribute, before anything is sent", _P, PreviewIn, PreviewOut),
    Operation("DELETE", "/institutions/{code}/pseudonymisation-profiles/{profile}", remove_profile,
              "remove a profile (copies made with it stay)", _P, status=204),
]  # fmt: skip
