"""A C-STORE whose blob cannot be flushed is refused, and nothing of it is kept.

A disk that fails the blob's flush (`fsync`, `fdatasync`: EIO, or ENOSPC from a thin-provisioned
or network disk) must answer the sender Out of Resources (0xA700, which senders retry) with a
reason, and leave no blob, no index row and nothing in the spool. The disk's failure is injected
at the system calls.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlmodel import Session, select

from archive.check import check_archive
from archive.models import Instance
from tests import factories
from tests.dimse.conftest import Dimse

OUT_OF_RESOURCES = 0xA700  # PS3.4 Table B.2-1


def _c_store(dimse: Dimse) -> Any:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    association = ae.associate("127.0.0.1", dimse.port, ae_title=dimse.ae_title)
    assert association.is_established
    try:
        return association.send_c_store(factories.ct_slice())
    finally:
        association.release()


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_a_blob_that_cannot_be_flushed_is_refused_and_not_kept(
    dimse: Dimse, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def failing(_fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fdatasync", failing)
    monkeypatch.setattr(os, "fsync", failing)
    status = _c_store(dimse)
    assert status.Status == OUT_OF_RESOURCES
    assert status.ErrorComment == "could not store"

    blobs = dimse.archive.blobs
    assert list(blobs.iter_keys()) == []
    assert list(blobs.spool_dir.iterdir()) == []
    with Session(dimse.archive.engine) as session:
        assert session.exec(select(Instance)).all() == []
    assert check_archive(dimse.archive).consistent

    monkeypatch.undo()  # the disk recovers: the same instance is stored
    assert _c_store(dimse).Status == 0x0000
    assert len(list(blobs.iter_keys())) == 1
