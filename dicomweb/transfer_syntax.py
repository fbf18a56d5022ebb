"""Which transfer syntax a retrieved instance is sent in, and making it (PS3.18 8.7.3, 8.7.8).

One rule for WADO-RS and WADO-URI: a client that names no transfer syntax gets Explicit VR
Little Endian, the default of application/dicom (PS3.18 8.7.3.5.2 since 2016c; for WADO-URI's
`transferSyntax` parameter, 9.4.2.4), wherever it can be produced; an instance that cannot be
decoded (a video, a codec Ferry lacks) goes as stored. `*` means "as stored". A named syntax
must be producible, or the choice is refused with the reason (406).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from tempfile import SpooledTemporaryFile
from typing import IO

from pydicom.uid import UID, ExplicitVRLittleEndian

from archive import transcoding
from archive.blobstore import BlobStore
from archive.pixel_module import PixelModule
from archive.store import StoredInstance
from dicomweb.media import MediaRange
from foundation.errors import NotAcceptable, StoredDataUnreadable

log = logging.getLogger(__name__)

DICOM = "application/dicom"
ANY_TRANSFER_SYNTAX = "*"
# Stands for "no transfer-syntax named": Explicit VR Little Endian, for each instance that
# can be made so.
DEFAULT_SYNTAX = "default"
Targets = dict[str, str]  # SOP Instance UID -> the transfer syntax it is sent in
ReadPixels = Callable[[StoredInstance], PixelModule]


def _wants_dicom(media: MediaRange) -> bool:
    if media.essence in {"*/*", "multipart/*"}:
        return True
    if media.essence != "multipart/related":
        return False
    part_type = media.param("type")
    return part_type is None or part_type.lower() == DICOM


def _acceptable_syntaxes(ranges: list[MediaRange]) -> tuple[list[str | None], list[str]]:
    """Transfer syntaxes the client takes, most preferred first; None stands for "as stored".

    `*/*` and `multipart/*` take any representation, so what is stored. A value that is not a
    transfer syntax UID is ignored, as PS3.18 8.7.7 says of any invalid or unsupported Accept
    value; it is named in the 406 if nothing else is left.
    """
    choices: list[str | None] = []
    ignored: list[str] = []
    for media in ranges:
        if not _wants_dicom(media):
            continue
        syntax = media.param("transfer-syntax")
        if syntax == ANY_TRANSFER_SYNTAX or media.essence != "multipart/related":
            choices.append(None)
        elif syntax is None:
            choices.append(DEFAULT_SYNTAX)
        elif UID(syntax).is_valid and UID(syntax).is_transfer_syntax:
            choices.append(syntax)
        else:
            ignored.append(syntax)
    return choices, ignored


def negotiate_transfer_syntax(
    ranges: list[MediaRange], instances: list[StoredInstance], read_pixels: ReadPixels
) -> Targets:
    """WADO-RS: the transfer syntax each instance is sent in, from the first acceptable choice.

    A named transfer syntax must be producible for every instance, or the next choice is
    tried (406 when none is left). Headers are read only where a codec's limits could matter.
    """
    choices, ignored = _acceptable_syntaxes(ranges)
    if not choices and not ignored:
        raise NotAcceptable(f'instances are available as multipart/related; type="{DICOM}"')
    refusals = [f"{value!r} is not a transfer syntax UID" for value in ignored]
    headers: dict[str, PixelModule] = {}
    for choice in choices:
        if choice is None:
            return {i.sop_instance_uid: i.transfer_syntax_uid for i in instances}
        if choice == DEFAULT_SYNTAX:
            return {
                i.sop_instance_uid: default_syntax(i, headers, read_pixels)[0] for i in instances
            }
        refusal = _first_refusal(choice, instances, headers, read_pixels)
        if refusal is None:
            return {i.sop_instance_uid: choice for i in instances}
        refusals.append(f"{choice}: {refusal}")
    raise NotAcceptable("no acceptable transfer syntax can be produced: " + "; ".join(refusals))


def choose_transfer_syntax(
    choice: str | None, instance: StoredInstance, read_pixels: ReadPixels
) -> tuple[str, str | None]:
    """WADO-URI: the syntax one instance is sent in, for the client's one choice (None: as
    stored; DEFAULT_SYNTAX; or a UID), and why the default had to be left, if it was."""
    if choice is None:
        return instance.transfer_syntax_uid, None
    if choice == DEFAULT_SYNTAX:
        return default_syntax(instance, {}, read_pixels)
    refusal = _first_refusal(choice, [instance], {}, read_pixels)
    if refusal is not None:
        raise NotAcceptable(refusal)
    return choice, None


def default_syntax(
    instance: StoredInstance, headers: dict[str, PixelModule], read_pixels: ReadPixels
) -> tuple[str, str | None]:
    """Explicit VR Little Endian where it can be produced, else as stored and why."""
    refusal = _refusal(ExplicitVRLittleEndian, instance, headers, read_pixels)
    if refusal is None:
        return ExplicitVRLittleEndian, None
    log.info("%s sent as stored: %s", instance.sop_instance_uid, refusal)
    stored = instance.transfer_syntax_uid
    return stored, f"sent as stored, {UID(stored).name} ({stored}): {refusal}"


def _first_refusal(
    target: str,
    instances: list[StoredInstance],
    headers: dict[str, PixelModule],
    read_pixels: ReadPixels,
) -> str | None:
    for instance in instances:
        reason = _refusal(target, instance, headers, read_pixels)
        if reason is not None:
            stored = instance.transfer_syntax_uid
            return (
                f"instance {instance.sop_instance_uid} is stored as {UID(stored).name} "
                f"({stored}); {reason}"
            )
    return None


def _refusal(
    target: str,
    instance: StoredInstance,
    headers: dict[str, PixelModule],
    read_pixels: ReadPixels,
) -> str | None:
    stored = instance.transfer_syntax_uid
    if stored == target or {stored, target} <= transcoding.NATIVE:
        return None
    key = instance.sop_instance_uid
    if key not in headers:
        headers[key] = read_pixels(instance)
    return transcoding.reason_not_producible(stored, target, headers[key])


def read_stored_pixels(blobs: BlobStore, instance: StoredInstance) -> PixelModule:
    with blobs.open(instance.blob_key) as fp:
        return transcoding.read_pixels(fp)  # bad values tolerated: refused as not producible


def spool_transcoded(blobs: BlobStore, instance: StoredInstance, target: str) -> IO[bytes]:
    """The instance made in `target`, in a spooled file (on disk past SPOOL_BYTES) at its
    start; the caller closes it.

    A codec failing on stored pixels (damaged data) when only decoding was asked (a native
    target) is StoredDataUnreadable: a 422 before a response starts, never a 500. Otherwise
    (an encoder may be at fault) the codec's own error is raised.
    """
    # Outlives this function: the caller streams it, then closes it.
    spool: IO[bytes] = SpooledTemporaryFile(  # noqa: SIM115
        max_size=transcoding.SPOOL_BYTES, dir=str(blobs.spool_dir)
    )
    try:
        with blobs.open(instance.blob_key) as source:
            transcoding.transcode(source, target, spool)
    except (ValueError, RuntimeError, NotImplementedError) as error:
        spool.close()
        if target in transcoding.NATIVE:
            raise StoredDataUnreadable(
                f"instance {instance.sop_instance_uid} cannot be decoded: {error}"
            ) from error
        raise
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool
