"""C-MOVE and C-GET SCP, Patient Root and Study Root models (PS3.4 C.4.2, C.4.3).

The identifier names studies, series or instances by their unique keys; each named study is a
policy decision (download) for the calling node, and a study it may not download matches
nothing, exactly like one that does not exist. Each study retrieved leaves an audit event.

C-MOVE sends over a new association to the move destination, which must be a node of the
caller's own institution marked as one (else 0xA801); C-GET sends back over the requestor's
own association, Ferry taking the SCU role of the storage contexts the requestor offered with
role selection.
Instances are read one at a time and go as stored when the receiver accepted their transfer
syntax, else transcoded to an uncompressed one it accepted; one it cannot take is a failed
sub-operation (C.4.2.3.1), listed in the final response's Failed SOP Instance UID List.

pynetdicom drives the sub-operations and their responses from what the handlers yield. A C-MOVE
handler must name the destination before any status; a refusal (not authorised, a malformed
identifier) therefore goes to the destination as an association that carries nothing.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import orjson
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from archive import transcoding
from archive.levels import Level
from archive.search import Filter, SearchQuery, StudyScope, search
from archive.store import Archive, StoredInstance, StudyAccess
from audit.trail import AuditRecord, record_many
from dimse import statuses
from dimse.callers import Caller, find_node
from dimse.context import BridgeContext
from dimse.identifiers import (
    PATIENT_ID,
    QueryLevel,
    RetrieveRequest,
    identifier_of,
    model_of,
    read_retrieve_request,
)
from dimse.peers import associate_options
from dimse.query import PAGE, failure_for, service_decision
from dimse.sending import choose_syntax, read_dataset, requested_contexts
from foundation.errors import InvalidQuery, NotFound
from policy.decision import Decision, NodeFacts
from policy.roles import Action

log = logging.getLogger(__name__)

MAX_SUB_OPERATIONS = 0xFFFF  # Number of Remaining Sub-operations is a US (PS3.7 Table 9.3-5)


def handle_move(context: BridgeContext, caller: Caller, event: Any) -> Iterator[Any]:
    destination = (event.move_destination or "").strip()
    node = find_node(context.engine, destination) if destination else None
    refusal = _destination_refusal(caller, destination, node)
    if refusal is not None:
        context.audit(
            caller,
            Action.DOWNLOAD,
            refusal,
            institution_pk=caller.institution_pk,
            service="C-MOVE",
            destination=destination,
        )
        yield None, None  # pynetdicom answers 0xA801 Refused: Move Destination unknown
        return
    assert node is not None
    selected = _select(context, caller, event, "C-MOVE", node.ae_title)
    if isinstance(selected, Dataset):
        yield node.host, node.port, _association(context, node, [], _Receiver())
        yield 1
        yield selected, None
        return
    receiver = _Receiver(context.config.forward_response_timeout)
    yield node.host, node.port, _association(context, node, selected, receiver)
    yield len(selected)
    yield from _iter_sub_operations(context.archive, event, selected, receiver.current)


def _destination_refusal(
    caller: Caller, destination: str, node: NodeFacts | None
) -> Decision | None:
    """A move goes to a node of the caller's own institution that may receive moves; sending
    to another institution is a transfer, under the transfer policy, not a C-MOVE."""
    if node is None or not node.move_destination:
        reason = f"move destination {destination!r} is not a node that may receive moves"
        return Decision(False, "move-destination-unknown", reason)
    if node.institution_pk != caller.institution_pk:
        reason = f"move destination {destination!r} is a node of another institution"
        return Decision(False, "move-destination-elsewhere", reason)
    return None


def handle_get(context: BridgeContext, caller: Caller, event: Any) -> Iterator[Any]:
    selected = _select(context, caller, event, "C-GET", caller.calling_ae_title)
    if isinstance(selected, Dataset):
        yield 1
        yield selected, None
        return
    yield len(selected)
    yield from _iter_sub_operations(context.archive, event, selected, lambda: event.assoc)


# -- selection -------------------------------------------------------------------------------


def _select(
    context: BridgeContext, caller: Caller, event: Any, service: str, destination: str
) -> list[StoredInstance] | Dataset:
    """The instances to send, or the status refusing the request."""
    decision = service_decision(context, caller, Action.DOWNLOAD)
    if not decision.allowed:
        context.audit(
            caller,
            Action.DOWNLOAD,
            decision,
            institution_pk=caller.institution_pk,
            service=service,
            destination=destination,
        )
        return statuses.status_dataset(statuses.NOT_AUTHORIZED, decision.reason)
    try:
        request = read_retrieve_request(
            identifier_of(event), model_of(event.request.AffectedSOPClassUID)
        )
        instances = _authorised_instances(context, caller, request, service, destination)
    except InvalidQuery as error:
        context.audit(
            caller,
            Action.DOWNLOAD,
            decision,
            outcome="failed",
            institution_pk=caller.institution_pk,
            service=service,
            destination=destination,
            error=str(error),
        )
        return failure_for(error)
    except Exception as error:  # the index is gone, say: a failure status, not a crash
        log.exception("%s selection failed", service)
        return statuses.status_dataset(statuses.for_error(error, query=True), "could not select")
    if len(instances) > MAX_SUB_OPERATIONS:
        return statuses.status_dataset(
            statuses.MOVE_OUT_OF_RESOURCES_SUBOPERATIONS,
            f"{len(instances)} instances match; retrieve at a lower level",
        )
    return instances


def _authorised_instances(
    context: BridgeContext,
    caller: Caller,
    request: RetrieveRequest,
    service: str,
    destination: str,
) -> list[StoredInstance]:
    """Every named instance of the studies the caller may download; one audit event a study."""
    instances: list[StoredInstance] = []
    records: list[AuditRecord] = []
    detail = {"service": service, "destination": destination, **request.keys()}
    for access in _named_studies(context, caller, request):
        decision = context.decide_study(caller, Action.DOWNLOAD, access)
        if not decision.allowed:  # matches nothing for the caller; the owner's auditors see it
            records.append(
                context.audit_record(caller, Action.DOWNLOAD, decision, access=access, **detail)
            )
            continue
        found = _instances_of(context.archive, access.study_instance_uid, request)
        if found:
            instances += found
            records.append(
                context.audit_record(
                    caller, Action.DOWNLOAD, decision, access=access, instances=len(found), **detail
                )
            )
    if records:
        record_many(context.engine, records)
    return instances


def _named_studies(
    context: BridgeContext, caller: Caller, request: RetrieveRequest
) -> Iterator[StudyAccess]:
    if request.level is QueryLevel.PATIENT:
        study_uids: Iterator[str] = _patient_studies(context, caller, request.patient_id or "")
    else:
        study_uids = iter(request.study_uids)
    for study_uid in study_uids:
        access = context.archive.read_study_access(study_uid)
        if access is None:
            continue
        if request.patient_id is not None and access.patient_id != request.patient_id:
            continue  # a Patient Root retrieve names the patient too: it must be this one
        yield access


def _patient_studies(context: BridgeContext, caller: Caller, patient_id: str) -> Iterator[str]:
    """The studies of one patient the caller may see, paged through the index."""
    scope = StudyScope(
        caller.principal.institutions_for(Action.DOWNLOAD),
        context.clock(),
        action=Action.DOWNLOAD.value,
    )
    query = SearchQuery(
        level=Level.STUDY,
        filters=(Filter(PATIENT_ID, patient_id, "PatientID"),),
        scope=scope,
        limit=PAGE,
    )
    offset = 0
    while True:
        result = search(context.engine, replace(query, offset=offset), "")
        for document in result.documents:
            yield _study_uid(document)
        if not result.truncated:
            return
        offset += PAGE


def _study_uid(document: bytes) -> str:
    return str(orjson.loads(document)["0020000D"]["Value"][0])


def _instances_of(
    archive: Archive, study_uid: str, request: RetrieveRequest
) -> list[StoredInstance]:
    try:
        if request.level in (QueryLevel.PATIENT, QueryLevel.STUDY):
            return archive.find_instances(study_uid)
        if request.level is QueryLevel.SERIES:
            found: list[StoredInstance] = []
            for series_uid in request.series_uids:
                found += _or_none(archive, study_uid, series_uid)
            return found
        wanted = set(request.sop_instance_uids)
        in_series = _or_none(archive, study_uid, request.series_uids[0])
        return [instance for instance in in_series if instance.sop_instance_uid in wanted]
    except NotFound:
        return []


def _or_none(archive: Archive, study_uid: str, series_uid: str) -> list[StoredInstance]:
    try:
        return archive.find_instances(study_uid, series_uid)
    except NotFound:
        return []


# -- sub-operations --------------------------------------------------------------------------


class _Receiver:
    """The C-MOVE destination's association, caught as pynetdicom establishes it."""

    def __init__(self, response_timeout: float | None = None) -> None:
        self.assoc: Association | None = None
        self.response_timeout = response_timeout

    def established(self, event: evt.Event) -> None:
        self.assoc = event.assoc
        if self.response_timeout is not None:  # a destination that stops answering C-STOREs
            event.assoc.dimse_timeout = self.response_timeout

    def current(self) -> Association | None:
        return self.assoc


def _association(
    context: BridgeContext, node: NodeFacts, instances: list[StoredInstance], receiver: _Receiver
) -> dict[str, Any]:
    """What pynetdicom's AE.associate takes for the destination: TLS, contexts, our handler."""
    options = associate_options(context.config, node)
    options["contexts"] = (
        requested_contexts(instances) if instances else [build_context(Verification)]
    )
    options["evt_handlers"] = [
        *options["evt_handlers"],
        (evt.EVT_ESTABLISHED, receiver.established),
    ]
    return options


def _iter_sub_operations(
    archive: Archive,
    event: Any,
    instances: list[StoredInstance],
    receiver: Callable[[], Association | None],
) -> Iterator[tuple[int, Dataset | None]]:
    for instance in instances:
        if event.is_cancelled:
            yield statuses.CANCEL, None  # pynetdicom adds the counts and the failed UIDs
            return
        yield statuses.PENDING, dataset_for(archive, instance, receiver())


def dataset_for(archive: Archive, instance: StoredInstance, assoc: Association | None) -> Dataset:
    """The instance in a syntax the receiver accepted; else a stub its C-STORE fails on."""
    accepted = _accepted_syntaxes(assoc, instance.sop_class_uid) if assoc else set()
    target = choose_syntax(instance.transfer_syntax_uid, accepted)
    if target is None:
        return _unsendable(instance)
    try:
        if target == instance.transfer_syntax_uid:
            return read_dataset(archive, instance)
        return _transcoded(archive, instance, target)
    except Exception as error:  # a blob gone or a codec that cannot decode what was stored
        log.warning("cannot prepare %s for sending: %s", instance.sop_instance_uid, error)
        return _unsendable(instance)


def _accepted_syntaxes(assoc: Association, sop_class_uid: str) -> set[str]:
    """Syntaxes accepted for the SOP class in contexts where Ferry may send (the SCU role)."""
    return {
        str(context.transfer_syntax[0])
        for context in assoc.accepted_contexts
        if context.abstract_syntax == sop_class_uid and context.as_scu
    }


def _transcoded(archive: Archive, instance: StoredInstance, target: str) -> Dataset:
    with archive.blobs.open(instance.blob_key) as stored, tempfile.TemporaryFile() as sink:
        transcoding.transcode(stored, target, sink)
        sink.seek(0)
        return dcmread(sink)


def _unsendable(instance: StoredInstance) -> Dataset:
    """No transfer syntax to send in: without file meta, pynetdicom's C-STORE refuses it, and
    counts the sub-operation failed under this SOP Instance UID."""
    stub = Dataset()
    stub.SOPClassUID = instance.sop_class_uid
    stub.SOPInstanceUID = instance.sop_instance_uid
    return stub
