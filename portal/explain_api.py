"""`GET /api/explain`: the decision for a user, a study and an action, with its rule chain.

Administrators of the study's institution (or system administrators) may ask, about people of
institutions they administer; for anyone else the study, or the person, answers as if it did
not exist.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from archive.store import Archive
from foundation.errors import NotFound
from policy.decision import Context, Resource, decide
from policy.explain import user_principal
from policy.roles import Action
from policy.store import UnknownRecord
from portal.admin_access import Access
from portal.api_schemas import Input, Output
from portal.openapi import Call, Operation

ActionName = Literal["search", "read-metadata", "read-pixels", "download", "delete"]


class ExplainQuery(Input):
    user: Annotated[str, Field(min_length=3, max_length=320)]
    study: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9]+(\.[0-9]+)*$")]
    action: ActionName


class ExplainOut(Output):
    user: str
    study: str
    action: str
    allowed: bool
    rule: str
    reason: str
    chain: list[str]
    obligations: list[str]


def explain_decision(call: Call) -> ExplainOut:
    query: ExplainQuery = call.query
    archive: Archive = call.state.archive
    access = Access(call)
    study = archive.read_study_access(query.study)
    if study is None or study.institution_pk is None:
        if not access.is_system().allowed:
            raise NotFound(f"no study {query.study}")
    else:
        access.require(study.institution_pk, f"study {query.study}")
    principal = user_principal(archive.engine, query.user)
    if not access.is_system().allowed and not set(principal.memberships) & access.administered():
        # Another institution's person answers exactly like an email nobody has.
        raise UnknownRecord(f"no user with email {query.user!r}")
    resource = Resource.study_from_rows(
        query.study, study.institution_pk if study else None, study.grants if study else ()
    )
    decision = decide(principal, Action(query.action), resource, Context(call.now), access.snapshot)
    return ExplainOut(
        user=principal.label,
        study=query.study,
        action=query.action,
        allowed=decision.allowed,
        rule=decision.rule,
        reason=decision.reason,
        chain=list(decision.chain),
        obligations=list(decision.obligations),
    )


OPERATIONS = [
    Operation(
        "GET",
        "/explain",
        explain_decision,
        "the decision for a user, study and action, with the rules looked at",
        "policy",
        response=ExplainOut,
        query=ExplainQuery,
    )
]
