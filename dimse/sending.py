"""C-STORE of stored instances to a peer: contexts to propose, and one instance at a time.

Each instance is sent as stored when the peer accepted its transfer syntax (read from the blob in
PDU-sized chunks, never decoded); otherwise it is transcoded to an uncompressed syntax the peer
accepted, in a temporary file. Used by C-MOVE (a new association to the destination), C-GET
(the requestor's association) and forwarding jobs.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import _config
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context

from archive import transcoding
from archive.store import Archive, StoredInstance
from dimse import statuses
from dimse.transfer_syntaxes import UNCOMPRESSED

log = logging.getLogger(__name__)

# A file path given to send_c_store is streamed as stored, not decoded (exact context needed,
# which `send_instance` checks first).
_config.STORE_SEND_CHUNKED_DATASET = True

MAX_CONTEXTS = 128  # PS3.8: presentation context ids are odd numbers 1-255
NO_ANSWER = -1  # the association went away before the peer answered


def requested_contexts(instances: Iterable[StoredInstance]) -> list[PresentationContext]:
    """Per SOP class: one context per stored syntax, and one offering the uncompressed pair."""
    wanted: dict[str, set[str]] = {}
    for instance in instances:
        wanted.setdefault(instance.sop_class_uid, set()).add(instance.transfer_syntax_uid)
    contexts: list[PresentationContext] = []
    for sop_class, syntaxes in sorted(wanted.items()):
        # Each stored syntax on its own, so a peer taking it gets the bytes as they are...
        for syntax in sorted(syntaxes):
            contexts.append(build_context(sop_class, [syntax]))
        # ...and the uncompressed pair as the fallback Ferry can always produce.
        contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
    if len(contexts) > MAX_CONTEXTS:
        raise ValueError(f"{len(contexts)} presentation contexts needed, at most 128 fit")
    return contexts


def accepted_syntaxes(assoc: Association, sop_class: str, *, as_scp: bool = False) -> set[str]:
    """Syntaxes the peer accepted for this SOP class (for C-GET: where Ferry is the SCU role)."""
    found: set[str] = set()
    for context in assoc.accepted_contexts:
        if context.abstract_syntax != sop_class:
            continue
        if as_scp and not context.as_scp:
            continue
        found.update(str(syntax) for syntax in context.transfer_syntax)
    return found


@dataclass(frozen=True)
class Sent:
    sop_instance_uid: str
    status: int  # the peer's DIMSE status; NO_ANSWER when there was none
    transcoded_to: str = ""

    @property
    def ok(self) -> bool:
        return self.status == statuses.SUCCESS or (self.status & 0xF000) == 0xB000


def choose_syntax(stored: str, accepted: set[str]) -> str | None:
    """The stored syntax when accepted, else an uncompressed one we can produce, else None."""
    if stored in accepted:
        return stored
    for syntax in UNCOMPRESSED:
        if syntax in accepted:
            return syntax
    return None


def send_instance(
    assoc: Association,
    archive: Archive,
    instance: StoredInstance,
    *,
    originator_aet: str | None = None,
    originator_id: int | None = None,
    dataset: Dataset | None = None,
) -> Sent:
    """Send one stored instance (or `dataset`, an edited copy of it) over an open association."""
    accepted = accepted_syntaxes(assoc, instance.sop_class_uid)
    target = choose_syntax(instance.transfer_syntax_uid, accepted)
    if target is None:
        return Sent(instance.sop_instance_uid, statuses.NO_SUCH_SOP_CLASS)
    with tempfile.TemporaryDirectory(prefix="ferry-send-") as scratch:
        try:
            path = _file_for(archive, instance, target, Path(scratch), dataset)
        except Exception as error:  # a codec cannot decode what was stored
            log.warning("cannot prepare %s for sending: %s", instance.sop_instance_uid, error)
            return Sent(instance.sop_instance_uid, statuses.PROCESSING_FAILURE)
        try:
            answer = assoc.send_c_store(
                path, originator_aet=originator_aet, originator_id=originator_id
            )
        except (ValueError, RuntimeError, OSError) as error:
            log.warning("C-STORE of %s failed: %s", instance.sop_instance_uid, error)
            return Sent(instance.sop_instance_uid, NO_ANSWER)
    status = int(answer.Status) if "Status" in answer else NO_ANSWER
    transcoded = target if target != instance.transfer_syntax_uid else ""
    return Sent(instance.sop_instance_uid, status, transcoded)


def _file_for(
    archive: Archive,
    instance: StoredInstance,
    target: str,
    scratch: Path,
    dataset: Dataset | None,
) -> Path:
    """The blob itself when it can go as stored; else a transcoded or edited copy in scratch."""
    if dataset is not None:
        copy = scratch / "edited.dcm"
        with tempfile.SpooledTemporaryFile() as encoded:
            dataset.save_as(encoded, enforce_file_format=True)
            encoded.seek(0)
            with copy.open("wb") as sink:
                transcoding.transcode(encoded, target, sink)  # type: ignore[arg-type]
        return copy
    with archive.blobs.open(instance.blob_key) as stored:
        if target == instance.transfer_syntax_uid:
            return Path(stored.name)
        copy = scratch / "transcoded.dcm"
        with copy.open("wb") as sink:
            transcoding.transcode(stored, target, sink)
        return copy


def read_dataset(archive: Archive, instance: StoredInstance) -> Dataset:
    """One instance, decoded (C-GET yields datasets; reconciliation edits them)."""
    with archive.blobs.open(instance.blob_key) as stored:
        return dcmread(stored)
