"""Storage Commitment Push Model SCP (PS3.4 Annex J): which instances Ferry holds durably.

The N-ACTION is answered at once; the N-EVENT-REPORT follows from a thread once that answer is
on the wire (J.3.3): on the same association while the requestor keeps it open, otherwise on a
new association to the requestor's node, where Ferry proposes the SCP role through SCP/SCU Role
Selection (J.3.3, PS3.7 D.3.3.4) since it sends the N-EVENT-REPORT.

An instance counts as committed when its index row exists (archive.store commits the row only
after the blob is durable) and the caller's institution may see its study. Anything else fails
with "no such object instance", so a commitment never tells what another institution holds.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID
from pynetdicom import build_context, build_role, evt
from pynetdicom.association import Association
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.sop_class import StorageCommitmentPushModel
from sqlalchemy import select

from archive.models import Instance, Series, Study
from dimse import peers, statuses
from dimse._reactor import hold_reactor_for_sends, requests_kept_for_reactor
from dimse.callers import Caller
from dimse.context import BridgeContext
from policy.decision import Decision, Resource
from policy.roles import Action, Scope

log = logging.getLogger(__name__)

# The well-known SOP Instance of the Push Model (PS3.4 J.3.2, PS3.6 Annex A).
STORAGE_COMMITMENT_INSTANCE = UID("1.2.840.10008.1.20.1.1")
REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID (PS3.4 Table J.3-1)
ALL_COMMITTED = 1  # Event Type ID: Storage Commitment Request Successful (Table J.3-2)
SOME_FAILED = 2  # Event Type ID: Storage Commitment Request Complete - Failures Exist
_LOOKUP_CHUNK = 500  # SOP Instance UIDs per IN (...) query
# A requestor that does not want the report on its association releases at once on receiving
# the N-ACTION response; sending into that release would stall both sides (PS3.8 Sta7/Sta13).
_RELEASE_GRACE_SECONDS = 1.0


class InvalidRequest(Exception):
    """The N-ACTION cannot be acted on; carries the status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Reference:
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class Request:
    transaction_uid: str
    references: tuple[Reference, ...]


@dataclass(frozen=True)
class Commitment:
    """The answer to one request: committed references, failed ones with their reason."""

    transaction_uid: str
    committed: tuple[Reference, ...]
    failed: tuple[tuple[Reference, int], ...]
    studies: tuple[str, ...]

    @property
    def event_type_id(self) -> int:
        return SOME_FAILED if self.failed else ALL_COMMITTED

    def event_information(self, retrieve_ae_title: str) -> Dataset:
        """The N-EVENT-REPORT's Event Information (PS3.4 Table J.3-2)."""
        info = Dataset()
        info.TransactionUID = self.transaction_uid
        if self.committed:
            info.RetrieveAETitle = retrieve_ae_title
        if self.committed or not self.failed:
            info.ReferencedSOPSequence = DicomSequence(
                [_item(reference) for reference in self.committed]
            )
        if self.failed:
            info.FailedSOPSequence = DicomSequence(
                [_item(reference, reason) for reference, reason in self.failed]
            )
        return info


def _item(reference: Reference, failure_reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = reference.sop_class_uid
    item.ReferencedSOPInstanceUID = reference.sop_instance_uid
    if failure_reason is not None:
        item.FailureReason = failure_reason
    return item


def read_request(action_type: int | None, information: Dataset | None) -> Request:
    """The Transaction UID and references of a Request Storage Commitment, or InvalidRequest."""
    if action_type != REQUEST_STORAGE_COMMITMENT:
        raise InvalidRequest(statuses.NO_SUCH_ACTION, f"no such action type {action_type}")
    try:
        transaction_uid = str(information.get("TransactionUID", "") if information else "")
        items = list(information.get("ReferencedSOPSequence", []) if information else [])
        references = tuple(
            Reference(
                str(item.get("ReferencedSOPClassUID", "")),
                str(item.get("ReferencedSOPInstanceUID", "")),
            )
            for item in items
        )
    except Exception as error:  # pydicom decodes lazily: a broken dataset fails here
        raise InvalidRequest(statuses.PROCESSING_FAILURE, "cannot decode the request") from error
    if not transaction_uid:
        raise InvalidRequest(statuses.INVALID_ARGUMENT_VALUE, "Transaction UID is missing")
    if not references or any(not r.sop_class_uid or not r.sop_instance_uid for r in references):
        raise InvalidRequest(
            statuses.INVALID_ARGUMENT_VALUE, "Referenced SOP Sequence needs class and instance"
        )
    return Request(transaction_uid, references)


def _held(context: BridgeContext, uids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """SOP Instance UID -> (SOP Class UID, Study Instance UID) of what the index holds."""
    held: dict[str, tuple[str, str]] = {}
    with context.engine.connect() as connection:
        for start in range(0, len(uids), _LOOKUP_CHUNK):
            rows = connection.execute(
                select(Instance.sop_instance_uid, Instance.sop_class_uid, Study.study_instance_uid)
                .join(Series, Series.pk == Instance.series_pk)
                .join(Study, Study.pk == Series.study_pk)
                .where(Instance.sop_instance_uid.in_(uids[start : start + _LOOKUP_CHUNK]))
            ).all()
            held.update((row[0], (row[1], row[2])) for row in rows)
    return held


def _visible_studies(context: BridgeContext, caller: Caller, studies: Iterable[str]) -> set[str]:
    """The studies the caller's institution may see.

    Judged for the institution rather than the node's own rights: modalities that only write
    ask for commitment too, and an answer names no more than the UIDs they sent.
    """
    viewer = dataclasses.replace(
        caller, principal=dataclasses.replace(caller.principal, scopes=frozenset({Scope.READ}))
    )
    visible: set[str] = set()
    for study in studies:
        access = context.archive.read_study_access(study)
        if access is None:
            continue
        resource = Resource.study_from_rows(study, access.institution_pk, access.grants)
        if context.decide(viewer, Action.SEARCH, resource).allowed:
            visible.add(study)
    return visible


def commit(context: BridgeContext, caller: Caller, request: Request) -> Commitment:
    held = _held(context, sorted({r.sop_instance_uid for r in request.references}))
    visible = _visible_studies(context, caller, {study for _, study in held.values()})
    committed: list[Reference] = []
    failed: list[tuple[Reference, int]] = []
    for reference in request.references:
        sop_class, study = held.get(reference.sop_instance_uid, ("", ""))
        if study not in visible:
            failed.append((reference, statuses.NO_SUCH_OBJECT_INSTANCE))
        elif sop_class != reference.sop_class_uid:
            failed.append((reference, statuses.CLASS_INSTANCE_CONFLICT))
        else:
            committed.append(reference)
    studies = sorted({held[r.sop_instance_uid][1] for r in committed})
    return Commitment(request.transaction_uid, tuple(committed), tuple(failed), tuple(studies))


# -- the N-ACTION ----------------------------------------------------------------------------


def handle_n_action(context: BridgeContext, caller: Caller, event: Any) -> tuple[Any, None]:
    try:
        if caller.node is None:
            raise InvalidRequest(statuses.NOT_AUTHORIZED, "an unknown AE may only C-ECHO")
        # Commitment is asked by whoever stores: a node that may not store has nothing to ask.
        may_store = context.decide(
            caller, Action.STORE, Resource.institution(caller.node.institution_pk)
        )
        if not may_store.allowed:
            raise InvalidRequest(statuses.NOT_AUTHORIZED, may_store.reason)
        request = read_request(event.action_type, _information(event))
    except InvalidRequest as refused:
        outcome = "denied" if refused.status == statuses.NOT_AUTHORIZED else "failed"
        context.audit(
            caller,
            "commit",
            Decision(False, "storage-commitment", refused.reason),
            outcome=outcome,
            institution_pk=caller.institution_pk,
            status=f"{refused.status:04X}",
        )
        return statuses.status_dataset(refused.status, refused.reason), None
    # The report may go on this association from the thread below: its reactor must hold
    # while it waits for the requestor's answer (dimse/_reactor.py), or it may take the answer.
    hold_reactor_for_sends(event.assoc)
    threading.Thread(
        target=_report,
        args=(context, caller, request, _Watch(event.assoc)),
        name=f"commitment-{request.transaction_uid}",
        daemon=True,
    ).start()
    return statuses.SUCCESS, None


def _information(event: Any) -> Dataset | None:
    try:
        return event.action_information  # type: ignore[no-any-return]
    except Exception as error:
        raise InvalidRequest(statuses.PROCESSING_FAILURE, "cannot decode the request") from error


class _Watch:
    """What happens on the requestor's association after the N-ACTION handler returns.

    The handler runs before pynetdicom sends its response, and the report must not overtake it;
    a requestor that releases right after the response wants the report on a new association.
    """

    _EVENTS = (evt.EVT_RELEASED, evt.EVT_ABORTED, evt.EVT_CONN_CLOSE)

    def __init__(self, assoc: Association) -> None:
        self.assoc = assoc
        self.answered_at: float | None = None
        self.ended = False
        self._changed = threading.Condition()
        assoc.bind(evt.EVT_PDU_SENT, self._on_sent)
        for event in self._EVENTS:
            assoc.bind(event, self._on_ended)

    def _on_sent(self, event: evt.Event) -> None:
        pdu = event.pdu  # type: ignore[attr-defined]
        if isinstance(pdu, P_DATA_TF) and any(
            item.data and item.data[0] & 0x03 == 0x03  # command, last fragment: the response
            for item in pdu.presentation_data_value_items
        ):
            with self._changed:
                self.answered_at = self.answered_at or time.monotonic()
                self._changed.notify_all()

    def _on_ended(self, _event: evt.Event) -> None:
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def wait_answered(self, timeout: float) -> bool:
        with self._changed:
            self._changed.wait_for(lambda: self.answered_at is not None or self.ended, timeout)
            return self.answered_at is not None

    def still_open(self) -> bool:
        """False when the requestor released (or dropped) within the grace after the answer."""
        with self._changed:
            since = time.monotonic() - (self.answered_at or 0.0)
            self._changed.wait_for(lambda: self.ended, max(0.0, _RELEASE_GRACE_SECONDS - since))
            return not self.ended and self.assoc.is_established

    def close(self) -> None:
        self.assoc.unbind(evt.EVT_PDU_SENT, self._on_sent)
        for event in self._EVENTS:
            self.assoc.unbind(event, self._on_ended)


# -- the N-EVENT-REPORT ----------------------------------------------------------------------


def _report(context: BridgeContext, caller: Caller, request: Request, watch: _Watch) -> None:
    config = context.config
    detail: dict[str, Any] = {"transaction_uid": request.transaction_uid}
    try:
        if not watch.wait_answered(config.dicom_network_timeout):
            watch.close()
            _audit(context, caller, request, None, "not delivered: no N-ACTION response", detail)
            return
        commitment = commit(context, caller, request)
        same = watch.still_open()
        watch.close()
        if same and _report_on(watch.assoc, commitment, config.dicom_ae_title, detail):
            delivered = "same association"
        else:
            delivered = _report_on_new_association(context, caller, commitment, detail)
    except Exception as error:
        log.exception("storage commitment %s failed", request.transaction_uid)
        _audit(context, caller, request, None, f"not delivered: {error}", detail)
        return
    _audit(context, caller, request, commitment, delivered, detail)


def _report_on(
    assoc: Association, commitment: Commitment, ae_title: str, detail: dict[str, Any]
) -> bool:
    """Sends on the requestor's association; False when it was closed or is closing."""
    if not assoc.is_established or _closing(assoc):
        return False
    try:
        # The requestor may ask its next commitment before it answers this report.
        with requests_kept_for_reactor(assoc):
            status, _ = assoc.send_n_event_report(
                commitment.event_information(ae_title),
                commitment.event_type_id,
                StorageCommitmentPushModel,
                STORAGE_COMMITMENT_INSTANCE,
            )
    except (RuntimeError, ValueError):  # released between the check and the send
        return False
    if "Status" not in status:
        return False
    detail["report_status"] = f"{status.Status:04X}"
    return True


def _closing(assoc: Association) -> bool:
    """The requestor asked to release (peeked: the reactor must still answer it)."""
    pending = assoc.dul.peek_next_pdu()
    return isinstance(pending, A_RELEASE) and pending.result is None


def _report_on_new_association(
    context: BridgeContext, caller: Caller, commitment: Commitment, detail: dict[str, Any]
) -> str:
    node = caller.node
    assert node is not None  # unknown callers were refused at the N-ACTION
    try:
        assoc = peers.open_association(
            context.config,
            node,
            [build_context(StorageCommitmentPushModel)],
            ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)],
        )
    except peers.PeerUnreachable as error:
        return f"not delivered: {error}"
    try:
        if not assoc.accepted_contexts:
            return "not delivered: the node does not accept Storage Commitment"
        status, _ = assoc.send_n_event_report(
            commitment.event_information(context.config.dicom_ae_title),
            commitment.event_type_id,
            StorageCommitmentPushModel,
            STORAGE_COMMITMENT_INSTANCE,
        )
        if "Status" not in status:
            return "not delivered: no answer to the N-EVENT-REPORT"
        detail["report_status"] = f"{status.Status:04X}"
        return "new association"
    finally:
        if assoc.is_established:
            assoc.release()


def _audit(
    context: BridgeContext,
    caller: Caller,
    request: Request,
    commitment: Commitment | None,
    delivered: str,
    detail: dict[str, Any],
) -> None:
    reasons: Counter[str] = Counter()
    if commitment is not None:
        reasons.update(f"{reason:04X}" for _, reason in commitment.failed)
    delivered_ok = commitment is not None and not delivered.startswith("not delivered")
    studies = commitment.studies if commitment else ()
    context.audit(
        caller,
        "commit",
        Decision(True, "storage-commitment", "a node asks which instances Ferry holds"),
        outcome="allowed" if delivered_ok else "failed",
        study_uid=studies[0] if len(studies) == 1 else "",
        institution_pk=caller.institution_pk,
        requested=len(request.references),
        committed=len(commitment.committed) if commitment else 0,
        failed=dict(reasons),
        studies=list(studies),
        report=delivered,
        **detail,
    )
