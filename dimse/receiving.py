"""A data set pynetdicom received for a C-STORE, moved into the spool and stored.

Shared by Ferry's SCP (C-STORE from nodes) and by Ferry's own C-GET, where the node's
sub-operations arrive on Ferry's association: both store exactly what came, as one institution.

pynetdicom writes each incoming C-STORE data set, as it arrives, to a NamedTemporaryFile in the
system temporary folder. `spool_received_data_sets` points it at the archive's spool instead: on
the blob store's filesystem (storing becomes a rename), and where a server killed mid-transfer
leaves its partial files for `ferry archive check --repair` to sweep.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from pynetdicom import dimse_messages

from archive.outcomes import StoreOutcome
from dimse import _messages, statuses
from dimse._spool_file import SpoolFile, was_cut_short
from dimse.context import BridgeContext
from foundation import metrics
from foundation.errors import is_disk_full
from foundation.writeback import start_file_writeback

log = logging.getLogger(__name__)

RECEIVING_PREFIX = "dimse-receiving-"


def spool_received_data_sets(spool_dir: Path) -> None:
    """Library set-up (called by the composition root): pynetdicom's C-STORE files go here,
    their File Meta written directly (`dimse._messages`)."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    _messages.install()
    dimse_messages.NamedTemporaryFile = lambda **_options: SpoolFile(  # type: ignore[assignment]
        spool_dir, RECEIVING_PREFIX
    )


def store_received(
    context: BridgeContext,
    event: Any,
    *,
    institution_pk: int,
    expected_study_uid: str | None = None,
) -> StoreOutcome:
    """The archive's outcome; disk or database trouble is a refusal, nothing half-stored.

    A full disk answers Out of Resources (0xA700), which senders retry later.
    """
    spooled = context.config.spool_dir / f"dimse-{uuid.uuid4().hex}.dcm"
    received = getattr(event, "dataset_path", None)
    if received is not None and was_cut_short(str(received)):
        Path(received).unlink(missing_ok=True)
        log.error("C-STORE refused, no space left while it was received")
        metrics.record_store("c-store", 0, 1, 0)
        request = event.request
        return StoreOutcome(
            str(request.AffectedSOPClassUID),
            str(request.AffectedSOPInstanceUID),
            failure_reason=statuses.STORE_OUT_OF_RESOURCES,
            message="no space left; send again later",
        )
    if received is not None:
        start_file_writeback(received)  # the rest of it, while it is parsed and checked
    try:
        _spool(event, spooled)
        size = spooled.stat().st_size
        outcome = context.archive.store_files(
            [spooled], expected_study_uid, institution_pk=institution_pk
        )[0]
    except Exception as error:
        if is_disk_full(error):
            log.error("C-STORE refused, no space left: %s", error)
        else:
            log.exception("a received data set could not be stored")
        spooled.unlink(missing_ok=True)
        metrics.record_store("c-store", 0, 1, 0)
        request = event.request
        return StoreOutcome(
            str(request.AffectedSOPClassUID),
            str(request.AffectedSOPInstanceUID),
            failure_reason=statuses.for_error(error),
            message="could not store",
        )
    metrics.record_store("c-store", int(outcome.stored), int(not outcome.stored), size)
    return outcome


def status_code(outcome: StoreOutcome) -> int:
    """The C-STORE response status for an outcome: failure, first warning, or success."""
    if outcome.failure_reason is not None:
        return outcome.failure_reason
    return outcome.warnings[0] if outcome.warnings else statuses.SUCCESS


def _spool(event: Any, spooled: Path) -> None:
    """The received file moved into the spool (written there when chunking is off)."""
    spooled.parent.mkdir(parents=True, exist_ok=True)
    try:
        received = Path(event.dataset_path)
    except AttributeError:
        spooled.write_bytes(event.encoded_dataset())
        return
    shutil.move(received, spooled)
