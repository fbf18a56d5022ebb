"""Forwarding jobs: C-STORE a study to a node (PS3.4 Annex B) as an outbox job, resumably.

A job names a study and a node. Each run opens one association for the study and sends what the
node has not yet accepted: the node's answer to every instance is a `forwarded_instance` row,
committed as soon as it arrives, so a worker that dies mid-study loses at most the instance in
flight and the run that resumes it (after the lease runs out) sends only the rest. Refusals and
unreachable nodes fail the run (`JobFailed`): the queue retries with backoff and parks the job
after `max_attempts`, where administrators see it. Each run is audited as Ferry's own action, and
a delivery that belongs to a transfer reports its outcome to `exchange.transfers` (a transfer of
several studies is delivered when the node has taken in the last of them; before, each study
delivered is a note in its history).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from sqlalchemy import Connection, Engine, insert, select, update

from archive.store import StoredInstance
from audit.models import Outcome
from audit.trail import AuditRecord, record
from dimse.callers import get_node
from dimse.context import BridgeContext
from dimse.models import ForwardedInstance
from dimse.peers import PeerUnreachable, open_association
from dimse.reconcile import NoWorklistMatch, Reconciler, reconciler_for
from dimse.sending import NO_ANSWER, Sent, read_dataset, requested_contexts, send_instance
from exchange import transfers
from exchange.models import TransferStatus
from foundation import metrics
from foundation.errors import NotFound, StudyNotFound
from foundation.jobs import DEFAULT_MAX_ATTEMPTS, ClaimedJob, JobFailed, JobStatus, enqueue
from policy.decision import NodeFacts

log = logging.getLogger(__name__)

FORWARD_STUDY = "forward-study"
EXTEND_EVERY_SECONDS = 30.0  # the lease is minutes long; a long study renews it as it goes
ACTOR = "ferry"


def enqueue_forward(
    connection: Connection,
    *,
    study_uid: str,
    node_pk: int,
    now: datetime,
    transfer_pk: int | None = None,
    requested_by: str = "",
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> int:
    """Queue the delivery inside the caller's transaction (pass config.forward_max_attempts)."""
    payload = {
        "study_uid": study_uid,
        "node_pk": node_pk,
        "transfer_pk": transfer_pk,
        "requested_by": requested_by,
    }
    return enqueue(connection, FORWARD_STUDY, payload, now=now, max_attempts=max_attempts)


def forward_handler(context: BridgeContext) -> Callable[[ClaimedJob], str]:
    """The job handler; the queue's backoff base becomes config.forward_retry_seconds."""
    context.jobs.retry_base_seconds = float(context.config.forward_retry_seconds)

    def forward_study(job: ClaimedJob) -> str:
        return _Run(context, job).deliver()

    return forward_study


@dataclass(frozen=True)
class ForwardRequest:
    study_uid: str
    node_pk: int
    transfer_pk: int | None
    requested_by: str
    as_sent: bool = False  # a person chose to deliver without worklist reconciliation

    @classmethod
    def of(cls, payload: Mapping[str, Any]) -> ForwardRequest:
        transfer = payload.get("transfer_pk")
        return cls(
            str(payload["study_uid"]),
            int(payload["node_pk"]),
            int(transfer) if transfer is not None else None,
            str(payload.get("requested_by") or ""),
            bool(payload.get("as_sent", False)),
        )


@dataclass(frozen=True)
class Delivery:
    """Where a study stands at a node after one run: earlier acceptances plus this run's answers."""

    node_ae_title: str
    total: int
    earlier: int  # accepted in earlier runs of the job
    sent: tuple[Sent, ...]

    @property
    def accepted(self) -> int:
        return self.earlier + sum(1 for item in self.sent if item.ok)

    @property
    def refused(self) -> list[Sent]:
        return [item for item in self.sent if not item.ok and item.status != NO_ANSWER]

    @property
    def unsent(self) -> int:
        return self.total - self.accepted - len(self.refused)

    @property
    def complete(self) -> bool:
        return self.accepted == self.total

    def summary(self) -> str:
        text = f"sent {self.accepted} of {self.total} to {self.node_ae_title}"
        notes = [f"{self.earlier} in earlier attempts"] if self.earlier else []
        transcoded = Counter(item.transcoded_to for item in self.sent if item.transcoded_to)
        notes += [f"{count} transcoded to {syntax}" for syntax, count in sorted(transcoded.items())]
        return f"{text} ({', '.join(notes)})" if notes else text

    def problem(self) -> str:
        parts = [self.summary()]
        if self.refused:
            codes = Counter(f"0x{item.status:04X}" for item in self.refused)
            named = ", ".join(f"{code} x{count}" for code, count in sorted(codes.items()))
            parts.append(f"{len(self.refused)} refused by the node ({named})")
        if self.unsent:
            parts.append(f"{self.unsent} not answered (association lost)")
        return "; ".join(parts)

    def detail(self) -> dict[str, Any]:
        return {
            "instances": self.total,
            "sent": sum(1 for item in self.sent if item.ok),
            "failed": len(self.refused),
            "unsent": self.unsent,
            "earlier": self.earlier,
            "refused": [f"{i.sop_instance_uid}:0x{i.status:04X}" for i in self.refused[:20]],
        }


class _LeaseLost(Exception):
    """Another worker took the job over (our lease ran out): stop sending at once."""


class _Run:
    """One run of a forwarding job: what to send, sending it, and saying how it went."""

    def __init__(self, context: BridgeContext, job: ClaimedJob) -> None:
        self.context = context
        self.job = job
        self.request = ForwardRequest.of(job.payload)
        self.access = context.archive.read_study_access(self.request.study_uid)
        self.node_label = f"node {self.request.node_pk}"
        self._extended_at = time.monotonic()

    @property
    def engine(self) -> Engine:
        return self.context.engine  # type: ignore[no-any-return]

    def deliver(self) -> str:
        node = self._node()
        instances = self._instances()
        earlier = accepted_instances(self.engine, self.job.pk)
        remaining = [item for item in instances if item.sop_instance_uid not in earlier]
        sent = self._send(node, remaining) if remaining else []
        done = Delivery(
            node.ae_title,
            len(instances),
            len(instances) - len(remaining),
            tuple(sent),
        )
        if not done.complete:
            self._give_up(done.problem(), retry_status=TransferStatus.PARTIAL, **done.detail())
        summary = done.summary()
        waiting = self._studies_waiting()
        if waiting:  # a transfer of several studies is delivered when the last one is
            self._note(f"{summary}; waiting for {len(waiting)} more of the transfer's studies")
        else:
            self._mark(TransferStatus.DELIVERED, summary)
        metrics.FORWARD_RESULTS.labels("delivered").inc()
        self._audit(Outcome.ALLOWED, summary, **done.detail())
        return summary

    def _node(self) -> NodeFacts:
        node = get_node(self.engine, self.request.node_pk)
        if node is None:
            self._give_up(f"{self.node_label} no longer exists", permanent=True)
        self.node_label = node.ae_title
        if not node.can_write:
            self._give_up(
                f"{node.ae_title} may not receive studies (no write right)", permanent=True
            )
        return node

    def _instances(self) -> list[StoredInstance]:
        try:
            return self.context.archive.find_instances(self.request.study_uid)
        except StudyNotFound:
            self._give_up(
                f"study {self.request.study_uid} is no longer in the archive", permanent=True
            )

    def _send(self, node: NodeFacts, remaining: Sequence[StoredInstance]) -> list[Sent]:
        """One association; each answer recorded as it comes; stops when the association goes."""
        try:
            contexts = requested_contexts(remaining)
        except ValueError as error:  # more SOP classes and syntaxes than one association holds
            self._give_up(f"cannot send to {node.ae_title}: {error}", permanent=True)
        reconciler = (
            None
            if self.request.as_sent
            else reconciler_for(self.context, node, self.request.study_uid)
        )
        sent: list[Sent] = []
        try:
            # The RIS is asked before the node is called: without a match nothing is sent.
            first = self._dataset(reconciler, remaining[0])
            assoc = open_association(self.context.config, node, contexts)
            # A node that stops answering costs this long, not the general DIMSE timeout.
            assoc.dimse_timeout = self.context.config.forward_response_timeout
            try:
                self._send_each(assoc, remaining, reconciler, first, sent)
            finally:
                _close(assoc)
        except NoWorklistMatch as error:
            self._unreconciled(node, error, sent)
        except PeerUnreachable as error:  # the node, or its RIS (WorklistUnavailable)
            self._give_up(f"{error} (attempt {self.job.attempts} of {self.job.max_attempts})")
        except _LeaseLost:
            raise JobFailed(f"lease lost to another worker after {len(sent)} instances") from None
        return sent

    def _send_each(
        self,
        assoc: Association,
        remaining: Sequence[StoredInstance],
        reconciler: Reconciler | None,
        first: Dataset | None,
        sent: list[Sent],
    ) -> None:
        for position, instance in enumerate(remaining):
            if not assoc.is_established:
                return
            dataset = first if position == 0 else self._dataset(reconciler, instance)
            answer = send_instance(assoc, self.context.archive, instance, dataset=dataset)
            record_answer(self.engine, self.job.pk, answer, self.context.clock())
            sent.append(answer)
            if answer.status == NO_ANSWER:
                return
            self._keep_lease()

    def _dataset(self, reconciler: Reconciler | None, instance: StoredInstance) -> Dataset | None:
        """None: send the blob as stored; else the reconciled copy."""
        if reconciler is None:
            return None
        return reconciler.coerce(read_dataset(self.context.archive, instance))

    def _keep_lease(self) -> None:
        if time.monotonic() - self._extended_at < EXTEND_EVERY_SECONDS:
            return
        if not self.context.jobs.extend(self.job):
            raise _LeaseLost()
        self._extended_at = time.monotonic()

    def _unreconciled(self, node: NodeFacts, error: NoWorklistMatch, sent: list[Sent]) -> NoReturn:
        message = (
            f"no worklist match for study {self.request.study_uid} before delivery to "
            f"{node.ae_title}: {error}; a person must reconcile it (fix the order in the RIS "
            "and retry the job, or retry it --as-sent)"
        )
        self._mark(TransferStatus.NEEDS_RECONCILIATION, message)
        self._audit(Outcome.FAILED, message, sent=sum(1 for item in sent if item.ok))
        raise JobFailed(message, permanent=True)

    def _give_up(
        self,
        message: str,
        permanent: bool = False,
        *,
        retry_status: TransferStatus | None = None,
        **detail: Any,
    ) -> NoReturn:
        """Fail this run: the transfer shows it (FAILED once parked), the audit trail too."""
        parked = permanent or self.job.attempts >= self.job.max_attempts
        status = TransferStatus.FAILED if parked else retry_status
        reason = f"{message}; parked after {self.job.attempts} attempts" if parked else message
        if status is not None:
            self._mark(status, reason)
        self._audit(Outcome.FAILED, reason, parked=parked, **detail)
        metrics.FORWARD_RESULTS.labels("parked" if parked else "retry").inc()
        raise JobFailed(message, permanent=permanent)

    def _mark(self, status: TransferStatus, reason: str) -> None:
        if self.request.transfer_pk is None:
            return
        try:
            transfers.mark_delivery(
                self.engine, self.request.transfer_pk, status.value, reason, self.context.clock(),
                self.request.study_uid,
            )  # fmt: skip
        except NotFound:  # the transfer was deleted; the delivery itself still stands
            log.warning("transfer %s is gone; not marked %s", self.request.transfer_pk, status)

    def _studies_waiting(self) -> list[str]:
        """The transfer's other studies queued for the node that it has not taken in full: their
        jobs are not done, nor has the node accepted every instance (a job finishing meanwhile)."""
        if self.request.transfer_pk is None:
            return []
        jobs = transfers.delivery_jobs(self.engine, self.request.transfer_pk)
        waiting = []
        for uid, job_pk in jobs.items():
            job = self.context.jobs.get(job_pk)
            if uid == self.request.study_uid or (job and job.status == JobStatus.DONE):
                continue
            try:
                total = len(self.context.archive.find_instances(uid))
            except StudyNotFound:
                total = -1  # gone from the archive: its job fails, the transfer with it
            if len(accepted_instances(self.engine, job_pk)) != total:
                waiting.append(uid)
        return waiting

    def _note(self, reason: str) -> None:
        if self.request.transfer_pk is None:
            return
        try:
            transfers.note_delivery(
                self.engine, self.request.transfer_pk, reason, self.context.clock()
            )
        except NotFound:
            log.warning("transfer %s is gone; not noted", self.request.transfer_pk)

    def _transaction(self) -> str:
        """The transfer's opaque id: `ferry audit search --transaction` then finds the delivery."""
        transfer_pk = self.request.transfer_pk
        return transfers.public_id_of(self.engine, transfer_pk) if transfer_pk else ""

    def _audit(self, outcome: Outcome, reason: str, **detail: Any) -> None:
        access = self.access
        record(
            self.engine,
            AuditRecord(
                action="forward",
                outcome=outcome,
                actor=ACTOR,
                actor_kind="system",
                institution_pk=access.institution_pk if access else None,
                reason=reason,
                study_uid=self.request.study_uid,
                patient_id=access.patient_id if access else "",
                accession_number=access.accession_number if access else "",
                transaction=self._transaction(),
                detail={
                    "protocol": "dimse",
                    "node": self.node_label,
                    "node_pk": self.request.node_pk,
                    "job_pk": self.job.pk,
                    "attempt": self.job.attempts,
                    "transfer_pk": self.request.transfer_pk,
                    "requested_by": self.request.requested_by,
                    "without_reconciliation": self.request.as_sent,
                    **detail,
                },
            ),
        )


def _close(assoc: Association) -> None:
    if assoc.is_established:
        assoc.release()


def accepted_instances(engine: Engine, job_pk: int) -> set[str]:
    """SOP Instance UIDs the node accepted (success or warning) in earlier runs of the job."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(ForwardedInstance.sop_instance_uid, ForwardedInstance.status).where(  # type: ignore[call-overload]
                ForwardedInstance.job_pk == job_pk
            )
        ).all()
    return {uid for uid, status in rows if Sent(uid, status).ok}


def record_answer(engine: Engine, job_pk: int, answer: Sent, now: datetime) -> None:
    """The node's answer to one instance, committed at once (a retry overwrites a failure)."""
    values = {"status": answer.status, "sent_at": now}
    with engine.begin() as connection:
        changed = connection.execute(
            update(ForwardedInstance)
            .where(
                ForwardedInstance.job_pk == job_pk,  # type: ignore[arg-type]
                ForwardedInstance.sop_instance_uid == answer.sop_instance_uid,  # type: ignore[arg-type]
            )
            .values(**values)
        )
        if changed.rowcount == 0:
            connection.execute(
                insert(ForwardedInstance).values(
                    job_pk=job_pk, sop_instance_uid=answer.sop_instance_uid, **values
                )
            )
