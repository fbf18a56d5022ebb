"""Ferry as a Query/Retrieve SCU towards a node (PS3.4 Annex C): C-FIND, then C-MOVE or C-GET.

A node Ferry may query (`can_query`) answers C-FIND; a study is fetched by C-MOVE to Ferry's own
AE title (the node then stores into Ferry's SCP like any node, so it must be allowed to write)
or, where the node cannot reach back through a firewall, by C-GET on the same association.
Either way the instances are stored like any other ingest, as the node's institution. Each
query and retrieve is one audit event: actor `ferry`, on behalf of whoever asked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import StoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from audit.trail import AuditRecord, record
from dimse import statuses
from dimse.context import BridgeContext
from dimse.peers import open_association
from dimse.receiving import status_code, store_received
from dimse.transfer_syntaxes import ACCEPTED_TRANSFER_SYNTAXES
from foundation.errors import Forbidden, NodeFailed, NodeUnavailable, StudyNotFound
from policy.decision import NodeFacts
from policy.models import RetrieveMethod

log = logging.getLogger(__name__)

ACTOR = "ferry"
MAX_STORAGE_CONTEXTS = 126  # 128 contexts at most (PS3.8), one each for C-FIND and C-GET


class Models(NamedTuple):
    find: str
    move: str
    get: str


QUERY_MODELS: dict[str, Models] = {
    "study": Models(
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelGet,
    ),
    "patient": Models(
        PatientRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelMove,
        PatientRootQueryRetrieveInformationModelGet,
    ),
}

_FAILURE_MEANINGS = {
    statuses.MOVE_DESTINATION_UNKNOWN: "the node does not know Ferry's AE title as a destination",
    statuses.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: "the node did not understand the identifier",
    statuses.UNABLE_TO_PROCESS: "the node was unable to process the request",
    statuses.MOVE_OUT_OF_RESOURCES_MATCHES: "the node is out of resources",
    statuses.SUBOPERATIONS_FAILED: "every instance failed to arrive",
    statuses.NOT_AUTHORIZED: "the node refused: not authorized",
}


class NodeRefused(Forbidden):
    """Ferry may not query or retrieve from this node (its rights say no)."""


class RemoteFailed(NodeFailed):
    """The node answered with a failure status, or stopped answering mid-operation."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RemoteUnavailable(RemoteFailed, NodeUnavailable):
    """The node went silent mid-operation, or answered that it is out of resources (0xA7xx):
    the same may succeed later."""


def _out_of_resources(code: int) -> bool:
    """Refused: Out of Resources (C-FIND 0xA700, C-MOVE and C-GET 0xA701/0xA702; PS3.4 C.4)."""
    return code & 0xFF00 == 0xA700


@dataclass(frozen=True)
class RetrieveResult:
    """What the node reported, and how many instances of the study Ferry now holds."""

    study_uid: str
    method: str
    completed: int
    failed: int
    warning: int
    stored: int
    failed_instances: tuple[str, ...] = field(default=())


# -- C-FIND ----------------------------------------------------------------------------------


def find_on_node(
    context: BridgeContext,
    node: NodeFacts,
    identifier: Dataset,
    model: str = "study",
    *,
    requested_by: str = "",
    institution_pk: int | None = None,
) -> Iterator[Dataset]:
    """The node's matches; checks rights now, queries as the iterator is consumed."""
    models = _models(model)
    query = _query_copy(identifier, model)
    audit = _Audit(context, node, "search", requested_by, institution_pk)
    audit.detail.update(model=model, level=str(query.QueryRetrieveLevel), query=_keys(query))
    if not node.can_query:
        raise audit.refused(f"node {node.ae_title} does not allow Ferry to query it")
    return _iter_find(context, node, query, models.find, audit)


def _iter_find(
    context: BridgeContext, node: NodeFacts, query: Dataset, sop_class: str, audit: _Audit
) -> Iterator[Dataset]:
    matches, finished = 0, False
    try:
        assoc = open_association(context.config, node, [build_context(sop_class)])
        try:
            for answer in iter_find_responses(assoc, node, query, sop_class):
                matches += 1
                yield answer
            finished = True
        finally:
            end_association(assoc, finished)
    except GeneratorExit:
        audit.done(matches=matches, stopped_early=True)
        raise
    except Exception as error:
        audit.failed(str(error), matches=matches)
        raise
    audit.done(matches=matches)


def iter_find_responses(
    assoc: Association, node: NodeFacts, query: Dataset, sop_class: str
) -> Iterator[Dataset]:
    """Each pending C-FIND answer; RemoteFailed on a failure status or silence."""
    _require_context(assoc, node, sop_class)
    for status, answer in assoc.send_c_find(query, sop_class):
        code = _status_code(status, node, "C-FIND")
        if code in (statuses.PENDING, statuses.PENDING_WARNING):
            if answer is not None:
                yield answer
            continue
        if code == statuses.SUCCESS:
            return
        raise _failure(node, "C-FIND", status)


# -- C-ECHO ---------------------------------------------------------------------------------


def echo_node(context: BridgeContext, node: NodeFacts) -> float:
    """C-ECHO the node (Verification, PS3.4 Annex A): seconds from the association request to
    the answer; PeerUnreachable or RemoteFailed saying why not."""
    started = time.perf_counter()
    assoc = open_association(context.config, node, [build_context(Verification)])
    answered = False
    try:
        status = assoc.send_c_echo()
        code = _status_code(status, node, "C-ECHO")
        answered = True
    finally:
        end_association(assoc, answered)
    if code != statuses.SUCCESS:
        raise _failure(node, "C-ECHO", status)
    return time.perf_counter() - started


# -- C-MOVE / C-GET --------------------------------------------------------------------------


def retrieve_from_node(
    context: BridgeContext,
    node: NodeFacts,
    study_uid: str,
    *,
    institution_pk: int | None,
    requested_by: str,
) -> RetrieveResult:
    """Fetch a study from the node into Ferry (stored as the node's institution).

    Study Root, which needs only the Study Instance UID. `institution_pk` is the institution on
    whose behalf Ferry asks (the audit event's).
    """
    models = QUERY_MODELS["study"]
    method = node.retrieve_method
    audit = _Audit(context, node, "retrieve", requested_by, institution_pk)
    audit.detail.update(method=method)
    audit.study_uid = study_uid
    if not node.can_query:
        raise audit.refused(f"node {node.ae_title} does not allow Ferry to retrieve from it")
    if method == RetrieveMethod.MOVE and not node.can_write:
        raise audit.refused(
            f"node {node.ae_title} may not store into Ferry, so it cannot answer a C-MOVE"
            " (allow it to write, or retrieve by C-GET)"
        )
    if method not in (RetrieveMethod.MOVE, RetrieveMethod.GET):
        raise audit.refused(f"node {node.ae_title} has unknown retrieve method {method!r}")
    try:
        if method == RetrieveMethod.MOVE:
            result = _move(context, node, study_uid, models.move)
        else:
            result = _get(context, node, study_uid, models)
    except Exception as error:
        audit.failed(str(error))
        raise
    audit.done(
        completed=result.completed,
        failed=result.failed,
        warning=result.warning,
        stored=result.stored,
    )
    return result


def _identifier(study_uid: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    return identifier


def _move(
    context: BridgeContext, node: NodeFacts, study_uid: str, sop_class: str
) -> RetrieveResult:
    destination = context.config.dicom_ae_title
    assoc = open_association(context.config, node, [build_context(sop_class)])
    final: Dataset | None = None
    try:
        _require_context(assoc, node, sop_class)
        responses = assoc.send_c_move(_identifier(study_uid), destination, sop_class)
        final = _final_status(responses, node, "C-MOVE")
    finally:
        end_association(assoc, final is not None)
    result = _result(context, node, study_uid, RetrieveMethod.MOVE, final)
    if result.stored == 0 and result.completed:
        raise RemoteFailed(
            f"{node.ae_title} reported {result.completed} instances sent to {destination},"
            " but none arrived in Ferry: check the node's address for Ferry's AE title"
        )
    return result


def _get(context: BridgeContext, node: NodeFacts, study_uid: str, models: Models) -> RetrieveResult:
    classes = _classes_in_study(context, node, study_uid, models.find)
    receiver = _GetReceiver(context, node, study_uid)
    contexts: list[PresentationContext] = [build_context(models.get)]
    contexts += [build_context(uid, ACCEPTED_TRANSFER_SYNTAXES) for uid in classes]
    roles = [build_role(uid, scp_role=True) for uid in classes]
    assoc = open_association(
        context.config,
        node,
        contexts,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, receiver.on_store)],
    )
    final: Dataset | None = None
    try:
        _require_context(assoc, node, models.get)
        responses = assoc.send_c_get(_identifier(study_uid), models.get)
        final = _final_status(responses, node, "C-GET")
    finally:
        end_association(assoc, final is not None)
    result = _result(context, node, study_uid, RetrieveMethod.GET, final)
    return replace(result, failed_instances=tuple(receiver.refused))


def _final_status(
    responses: Iterator[tuple[Dataset, Dataset | None]], node: NodeFacts, service: str
) -> Dataset:
    """The last response of a C-MOVE or C-GET (pending ones only count sub-operations)."""
    for status, _ in responses:
        if _status_code(status, node, service) != statuses.PENDING:
            return status
    raise RemoteUnavailable(f"{node.ae_title} ended the {service} without a final response")


def _classes_in_study(
    context: BridgeContext, node: NodeFacts, study_uid: str, find_class: str
) -> list[str]:
    """SOP classes to offer for C-GET: the study's own (when the node says), else common ones.

    Also tells early, and plainly, when the node has no such study.
    """
    query = _identifier(study_uid)
    query.SOPClassesInStudy = None
    query.NumberOfStudyRelatedInstances = None
    assoc = open_association(context.config, node, [build_context(find_class)])
    finished = False
    try:
        answers = list(iter_find_responses(assoc, node, query, find_class))
        finished = True
    finally:
        end_association(assoc, finished)
    if not answers:
        raise StudyNotFound(f"{node.ae_title} has no study {study_uid}")
    named = {str(uid) for answer in answers for uid in _values(answer, "SOPClassesInStudy")}
    if named and len(named) <= MAX_STORAGE_CONTEXTS:
        return sorted(named)
    common = [str(cx.abstract_syntax) for cx in StoragePresentationContexts]
    return common[:MAX_STORAGE_CONTEXTS]


class _GetReceiver:
    """C-STORE sub-operations arriving on Ferry's own C-GET association (Ferry in the SCP role)."""

    def __init__(self, context: BridgeContext, node: NodeFacts, study_uid: str) -> None:
        self.context = context
        self.node = node
        self.study_uid = study_uid
        self.refused: list[str] = []

    def on_store(self, event: evt.Event) -> int:
        outcome = store_received(
            self.context,
            event,
            institution_pk=self.node.institution_pk,
            expected_study_uid=self.study_uid,
        )
        if outcome.failure_reason is not None:
            self.refused.append(outcome.sop_instance_uid)
        return status_code(outcome)


def _result(
    context: BridgeContext, node: NodeFacts, study_uid: str, method: str, final: Dataset
) -> RetrieveResult:
    code = int(final.Status)
    completed = int(final.get("NumberOfCompletedSuboperations") or 0)
    failed = int(final.get("NumberOfFailedSuboperations") or 0)
    warning = int(final.get("NumberOfWarningSuboperations") or 0)
    if code not in (statuses.SUCCESS, statuses.SUBOPERATIONS_WARNING):
        raise _failure(node, f"C-{method.upper()}", final)
    stored = _stored_count(context, study_uid)
    if not completed and not failed and not warning and not stored:
        raise StudyNotFound(f"{node.ae_title} has no instances of study {study_uid}")
    return RetrieveResult(study_uid, method, completed, failed, warning, stored)


def _stored_count(context: BridgeContext, study_uid: str) -> int:
    try:
        return len(context.archive.find_instances(study_uid))
    except StudyNotFound:
        return 0


# -- shared --------------------------------------------------------------------------------


def _models(model: str) -> Models:
    try:
        return QUERY_MODELS[model]
    except KeyError:
        raise ValueError(f"query model {model!r} is not one of {sorted(QUERY_MODELS)}") from None


def _query_copy(identifier: Dataset, model: str) -> Dataset:
    query = Dataset()
    query.update(identifier)
    if "QueryRetrieveLevel" not in query:
        query.QueryRetrieveLevel = "STUDY" if model == "study" else "PATIENT"
    return query


def _keys(query: Dataset) -> dict[str, str]:
    """The query's non-empty matching keys, for the audit event."""
    keys = {}
    for element in query:
        if element.VR != "SQ" and element.value not in (None, "", b""):
            keys[element.keyword or str(element.tag)] = str(element.value)[:64]
    return keys


def _values(answer: Dataset, keyword: str) -> list[str]:
    value = answer.get(keyword)
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(item) for item in value]


def _status_code(status: Dataset, node: NodeFacts, service: str) -> int:
    """The response's status; no status means the peer went silent or away."""
    if "Status" not in status:
        raise RemoteUnavailable(
            f"{node.ae_title} at {node.host}:{node.port} did not answer the {service}"
            " (timed out or the association was lost)"
        )
    return int(status.Status)


def _failure(node: NodeFacts, service: str, status: Dataset) -> RemoteFailed:
    code = int(status.Status)
    meaning = _FAILURE_MEANINGS.get(code, "failed")
    comment = str(status.get("ErrorComment") or "").strip()
    message = f"{node.ae_title} answered the {service} with status 0x{code:04X}: {meaning}"
    kind = RemoteUnavailable if _out_of_resources(code) else RemoteFailed
    return kind(f"{message} ({comment})" if comment else message, code)


def _require_context(assoc: Association, node: NodeFacts, sop_class: str) -> None:
    if not any(cx.abstract_syntax == sop_class for cx in assoc.accepted_contexts):
        raise RemoteFailed(f"{node.ae_title} does not support {UID(sop_class).name}")


def end_association(assoc: Association, finished: bool) -> None:
    """Release after a complete exchange; abort when we stop in the middle of one."""
    if not assoc.is_established:
        return
    if finished:
        assoc.release()
    else:
        assoc.abort()


class _Audit:
    """One audit event per query or retrieve: actor `ferry`, on behalf of the requester."""

    def __init__(
        self,
        context: BridgeContext,
        node: NodeFacts,
        action: str,
        requested_by: str,
        institution_pk: int | None,
    ) -> None:
        self.context = context
        self.node = node
        self.action = action
        self.institution_pk = institution_pk
        self.study_uid = ""
        self.detail: dict[str, Any] = {
            "protocol": "dimse",
            "node": node.ae_title,
            "node_pk": node.pk,
            "on_behalf_of": requested_by,
        }

    def refused(self, reason: str) -> NodeRefused:
        """Records the refusal; the caller raises what it returns."""
        self._record("denied", "node-rights", reason)
        return NodeRefused(reason)

    def failed(self, reason: str, **detail: Any) -> None:
        self._record("failed", "", reason, **detail)

    def done(self, **detail: Any) -> None:
        self._record("allowed", "", "", **detail)

    def _record(self, outcome: str, rule: str, reason: str, **detail: Any) -> None:
        access = self.context.archive.read_study_access(self.study_uid) if self.study_uid else None
        record(
            self.context.engine,
            AuditRecord(
                action=self.action,
                outcome=outcome,
                actor=ACTOR,
                actor_kind="system",
                institution_pk=self.institution_pk,
                rule=rule,
                reason=reason,
                study_uid=self.study_uid,
                patient_id=access.patient_id if access else "",
                accession_number=access.accession_number if access else "",
                client_address=self.node.host,
                detail={**self.detail, **detail},
            ),
        )
