"""The receiver's side of the transfers API: the viewer link, the ZIP download, a node delivery.

The ZIP streams (`exchange.downloads`): the decision and the audit come first, the stream after;
a failure halfway ends the connection without the ZIP's central directory, and is audited. Its
bytes are planned before the first is sent, so it has a length and a strong ETag, and a Range
(with If-Range naming that ETag) is answered 206 with exactly those bytes of the same ZIP: an
interrupted download resumes. HEAD answers the headers alone, and is no download.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlencode

import orjson
from sqlmodel import Session
from starlette.responses import Response

from exchange import sending
from exchange.downloads import ZipDownload, iter_zip, plan_zip, prepare_zip
from exchange.models import TransferStatus
from exchange.parties import Actor, audit_step, decide_on, require, side_of
from exchange.receiving import check_study_action, deliver_to_node, selected_studies
from foundation.byte_ranges import ByteRange, InvalidRange, RangeNotSatisfiable, parse_range
from foundation.errors import InvalidQuery
from policy.decision import Decision
from policy.models import User
from policy.principal import PrincipalKind
from policy.roles import Action
from portal.openapi import Call, Operation
from portal.transfer_schemas import DeliverIn, TransferOut, ViewerLinkIn, ViewerLinkOut
from portal.transfers_api import OPERATIONS as TRANSFER_OPERATIONS
from portal.transfers_api import (
    PARAMETERS,
    VIEWER_PATH,
    VIEWER_TOKEN_SECONDS,
    _actor,
    _archive,
    _engine,
    _policy,
    transfer_out,
)
from portal.zip_response import ZipResponse

log = logging.getLogger(__name__)


def _is_receiver(actor: Actor, action: Action, transfer: object) -> bool:
    return side_of(decide_on(actor, action, transfer)) == "receiver"  # type: ignore[arg-type]


def create_viewer_link(call: Call) -> ViewerLinkOut:
    body: ViewerLinkIn = call.body
    actor, archive = _actor(call), _archive(call)
    transfer = require(archive.engine, actor, Action.READ_PIXELS, call.path["transfer_id"])
    [study] = selected_studies(archive, transfer, [body.study] if body.study else [])[:1] or [""]
    decision = check_study_action(archive, actor, transfer, Action.READ_PIXELS, [study])
    if call.principal.kind is not PrincipalKind.USER or call.principal.id is None:
        raise InvalidQuery("viewer links are for people; a tool reads with its own token")
    with Session(archive.engine) as session:
        user = session.get(User, call.principal.id)
    assert user is not None
    lifetime = timedelta(seconds=VIEWER_TOKEN_SECONDS)
    token = call.state.authenticator.issue_study_token(
        user, [study], call.now, lifetime, call.principal.session_id
    )
    audit_step(archive.engine, actor, transfer, "view", decision, studies=[study], link=True)
    if _is_receiver(actor, Action.READ_PIXELS, transfer):
        sending.note_received(archive.engine, actor, transfer, TransferStatus.VIEWED)
    base = (call.state.portal.public_url or str(call.request.base_url)).rstrip("/")
    query = urlencode({"StudyInstanceUIDs": study, "token": token})
    return ViewerLinkOut(
        url=f"{base}{VIEWER_PATH}/viewer?{query}", study=study, expires_in=VIEWER_TOKEN_SECONDS
    )


def _range_not_satisfiable(message: str, download: ZipDownload) -> Response:
    """416 with the ZIP's length (RFC 9110 15.5.17), for a range past its end or not a range."""
    body = orjson.dumps({"error": message, "status": 416})
    headers = {"Content-Range": f"bytes */{download.length}", "Accept-Ranges": "bytes"}
    return Response(body, 416, headers, media_type="application/json")


def _asked_range(call: Call, download: ZipDownload) -> ByteRange | None:
    headers = call.request.headers
    return parse_range(headers.get("range"), download.length, headers.get("if-range"),
                       download.etag)  # fmt: skip


def download_zip(call: Call) -> Response:
    actor, archive = _actor(call), _archive(call)
    transfer = require(archive.engine, actor, Action.DOWNLOAD, call.path["transfer_id"])
    wanted = call.request.query_params.getlist("study")
    studies = selected_studies(archive, transfer, wanted)
    decision = check_study_action(archive, actor, transfer, Action.DOWNLOAD, studies)
    download = prepare_zip(archive, plan_zip(archive, studies), transfer.created_at)
    try:
        asked = _asked_range(call, download)
    except (InvalidRange, RangeNotSatisfiable) as error:
        return _range_not_satisfiable(str(error), download)
    start, end = (asked.start, asked.end) if asked else (0, download.length)
    name = f"transfer-{transfer.public_id}.zip"  # no patient data in file names
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "ETag": download.etag,
               "Accept-Ranges": "bytes", "Content-Length": str(end - start)}  # fmt: skip
    if asked:
        headers["Content-Range"] = asked.content_range
    status = 206 if asked else 200
    if call.request.method == "HEAD":
        return Response(None, status, headers, media_type="application/zip")
    part = {"range": asked.content_range} if asked else {}
    audit_step(archive.engine, actor, transfer, "download", decision, studies=studies,
               format="zip", **part)  # fmt: skip
    receiver = _is_receiver(actor, Action.DOWNLOAD, transfer)

    def finished(error: Exception | None) -> None:
        """Audits a download that broke off; a whole one marks the transfer downloaded."""
        if error is not None:
            log.warning("download of transfer %s broke off: %s", transfer.public_id, error)
            failed = Decision(False, "stream-failed", f"the download broke off: {error}"[:1024])
            audit_step(archive.engine, actor, transfer, "download", failed, outcome="failed",
                       studies=studies, **part)  # fmt: skip
        elif receiver and end == download.length:
            sending.note_received(archive.engine, actor, transfer, TransferStatus.DOWNLOADED)

    def stream() -> Iterator[bytes]:
        try:
            yield from iter_zip(archive, download, start, end)
        except Exception as error:
            finished(error)
            raise
        finished(None)

    return ZipResponse(stream(), status, headers, blobs=archive.blobs, download=download,
                       span=(start, end), finished=finished)  # fmt: skip


def deliver_transfer(call: Call) -> TransferOut:
    body: DeliverIn = call.body
    transfer = deliver_to_node(
        _archive(call), _actor(call), call.path["transfer_id"], body.node,
        call.state.enqueue_forward, body.studies,
    )  # fmt: skip
    return transfer_out(call, transfer, _policy(call), detail=True)


_T = "transfers"
OPERATIONS = [
    *TRANSFER_OPERATIONS,
    Operation("POST", "/transfers/{transfer_id}/viewer-link", create_viewer_link,
              "open the bundled viewer on a study of the transfer (a short-lived token that "
              "reads that study only)", _T, ViewerLinkIn, ViewerLinkOut),
    Operation("GET", "/transfers/{transfer_id}/download.zip", download_zip,
              "the transfer's studies (or ?study=UID...) as DICOM files with a DICOMDIR, "
              "streamed; Range and If-Range resume it (206)", _T, streams="application/zip"),
    Operation("POST", "/transfers/{transfer_id}/deliver", deliver_transfer,
              "download to a node of the receiving institution (a forwarding job per study; "
              "all of them, or those named)", _T,
              DeliverIn, TransferOut),
]  # fmt: skip
__all__ = ["OPERATIONS", "PARAMETERS", "_engine"]
