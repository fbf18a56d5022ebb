"""Transfers of pseudonymised copies: research and teaching copies made with a profile.

A transfer made with a profile (`exchange.pseudonymisation_profiles`) never carries the
sender's studies: an outbox job (`exchange.transfer-pseudonymise`, queued with the draft by
`exchange.sending.create_transfer`) copies each study through the profile
(`archive.pseudonymise`), stores the copy as the sending institution's (new UIDs, the patient a
pseudonym), puts the copy in the draft, and sends the transfer once every copy is in (if asked
to). The same study copied twice with one profile gives the same copy, instance for instance.
Which original became which copy is in the sending institution's audit trail only
(`pseudonymise` events: the original's patient and study, the copy's Study Instance UID); the
transfer and its history name only the copies.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.errors import InvalidDicomError
from sqlalchemy import Engine
from sqlmodel import Session

from archive.pseudonymise import Profile, new_uid, pseudonymise_file
from archive.store import Archive
from audit.trail import AuditRecord, record
from exchange import sending
from exchange.draft_filling import finish, not_sent, note_on_draft
from exchange.models import Transfer, TransferStatus
from exchange.parties import Actor, actor_from_payload, load_transfer, study_facts, study_uids
from exchange.pseudonymisation_profiles import ProfileNotFound, find_profile, profile_of
from exchange.routing import EnqueueForward
from foundation.clock import Clock
from foundation.errors import FerryError
from foundation.jobs import ClaimedJob, JobFailed
from policy.decision import PolicySnapshot

_STORE_BATCH = 50


@dataclass(frozen=True)
class CopyServices:
    archive: Archive
    enqueue_forward: EnqueueForward
    policy: Callable[[], PolicySnapshot]
    clock: Clock


def copy_handler(services: CopyServices) -> Callable[[ClaimedJob], str]:
    """The job: copy each study through the profile into the draft, noting each; send when
    all are in. A study that cannot be copied leaves the draft unsent, with the reason."""
    archive = services.archive

    def run(job: ClaimedJob) -> str:
        payload = job.payload
        actor = actor_from_payload(archive.engine, payload, services.clock())
        transfer = load_transfer(archive.engine, str(payload["transfer"]))
        if transfer.status != TransferStatus.DRAFT:
            return f"the transfer is {transfer.status}: nothing copied"
        try:
            row = find_profile(archive.engine, transfer.sender_institution_pk,
                               str(payload["profile"]))  # fmt: skip
        except ProfileNotFound as error:
            not_sent(archive.engine, actor, transfer, f"not sent: {error}")
            raise JobFailed(str(error), permanent=True) from error
        profile, secret = profile_of(row)
        originals: list[str] = list(payload["studies"])
        failed = _copy_all(archive, actor, transfer, originals, profile, secret)
        return finish(archive, actor, transfer, failed=failed, total=len(originals),
                      done="copied", send=bool(payload.get("send")), policy=services.policy,
                      enqueue_forward=services.enqueue_forward)  # fmt: skip

    return run


def _copy_all(
    archive: Archive,
    actor: Actor,
    transfer: Transfer,
    originals: Sequence[str],
    profile: Profile,
    secret: bytes,
) -> list[str]:
    """Copies each study not yet in the draft; the reasons of those that could not be."""
    with Session(archive.engine) as session:
        in_draft = set(study_uids(session, transfer))
    failed: list[str] = []
    for number, uid in enumerate(originals, start=1):
        copy_uid = new_uid(secret, uid)
        if copy_uid in in_draft:  # an earlier run made it
            continue
        try:
            # Still there, still theirs to see, still the institution's own.
            sending.check_own_studies(archive, actor, [uid], transfer.sender_institution_pk)
            made = copy_study(archive, transfer.sender_institution_pk, uid, profile, secret)
        except FerryError as error:
            failed.append(f"study {number}: {error}"[:300])
            why = f"could not copy study {number} of {len(originals)}: {error}"
            note_on_draft(archive.engine, actor, transfer, why)
            continue
        _audit_copy(archive.engine, actor, transfer, uid, made, profile.name)
        sending.add_studies(archive.engine, transfer, [made])
        made_note = (f"pseudonymised copy {made} made with profile {profile.name} "
                     f"({number} of {len(originals)})")  # fmt: skip
        note_on_draft(archive.engine, actor, transfer, made_note)
    return failed


def copy_study(
    archive: Archive, institution_pk: int, study_uid: str, profile: Profile, secret: bytes
) -> str:
    """The study's pseudonymised copy, stored as the institution's; its Study Instance UID.
    Instances are copied one at a time through the spool and stored in batches."""
    copy_uid = new_uid(secret, study_uid)
    batch: list[Path] = []
    try:
        for stored in archive.find_instances(study_uid):
            descriptor, name = tempfile.mkstemp(dir=archive.blobs.spool_dir, prefix=".copy-")
            os.close(descriptor)
            batch.append(Path(name))
            with archive.blobs.open(stored.blob_key) as source:
                try:
                    pseudonymise_file(source, Path(name), profile, secret)
                except (InvalidDicomError, ValueError, KeyError, TypeError) as error:
                    raise FerryError(f"an instance cannot be read: {error}"[:200]) from None
            if len(batch) >= _STORE_BATCH:
                _store(archive, institution_pk, batch)
                batch = []
        _store(archive, institution_pk, batch)
        batch = []
    finally:
        for path in batch:
            with contextlib.suppress(OSError):
                path.unlink()
    return copy_uid


def _store(archive: Archive, institution_pk: int, paths: list[Path]) -> None:
    if not paths:
        return
    outcomes = archive.store_files(paths, institution_pk=institution_pk)
    refused = [outcome for outcome in outcomes if not outcome.stored]
    if refused:
        raise FerryError(f"{len(refused)} instances of the copy not stored: {refused[0].message}")


def _audit_copy(
    engine: Engine, actor: Actor, transfer: Transfer, original: str, copy_uid: str, profile: str
) -> None:
    """Which original became which copy: the sending institution's audit trail only. The
    event names the transfer in its detail, not as its transaction: the receiving institution
    sees the events of the transactions it received (docs/oversight.md), and must not see
    these."""
    with Session(engine) as session:
        facts = study_facts(session, [original])
    for study in facts:
        record(engine, AuditRecord(
            action="pseudonymise", outcome="allowed", actor=actor.label,
            actor_kind=actor.principal.kind.value, institution_pk=transfer.sender_institution_pk,
            rule="profile", reason=f"copy made with profile {profile}",
            study_uid=study.study_uid, patient_id=study.patient_id,
            accession_number=study.accession_number, client_address=actor.client_address,
            detail={"transfer": transfer.public_id, "copy": copy_uid, "profile": profile},
        ))  # fmt: skip
