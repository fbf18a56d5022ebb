"""Associations Ferry opens to nodes: its own AE title, the node's address, TLS, timeouts.

Every one gets `_reactor.steady_reactor` (see there: pynetdicom's reactor can take a response
meant for the thread waiting in send_c_store), including the C-MOVE destination's association,
which pynetdicom opens from the options a C-MOVE handler yields.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from dimse import tls
from dimse._reactor import steady_reactor
from dimse.config import DimseConfig
from foundation.errors import NodeUnavailable
from policy.decision import NodeFacts


class PeerUnreachable(NodeUnavailable):
    """The node refused, rejected or did not answer the association request (a job that
    talks to nodes tries again later)."""


def no_delay(event: evt.Event) -> None:
    """Nagle's algorithm would hold each small DIMSE message back ~40 ms (both directions)."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def requestor_ae(config: DimseConfig) -> AE:
    ae = AE(ae_title=config.dicom_ae_title)
    ae.maximum_pdu_size = config.dicom_max_pdu
    ae.acse_timeout = config.dicom_acse_timeout
    ae.dimse_timeout = config.dicom_dimse_timeout
    ae.network_timeout = config.dicom_network_timeout
    return ae


def associate_options(config: DimseConfig, node: NodeFacts) -> dict[str, Any]:
    """Keyword arguments for `AE.associate` (also what a C-MOVE handler yields to pynetdicom)."""
    options: dict[str, Any] = {
        "ae_title": node.ae_title,
        "evt_handlers": [(evt.EVT_CONN_OPEN, no_delay), (evt.EVT_CONN_OPEN, steady_reactor)],
    }
    if node.tls:
        options["tls_args"] = (tls.client_context(config), None)
    return options


def open_association(
    config: DimseConfig,
    node: NodeFacts,
    contexts: Sequence[PresentationContext],
    *,
    ext_neg: list[Any] | None = None,
    evt_handlers: list[Any] | None = None,
) -> Association:
    """An established association to the node, or PeerUnreachable saying why not."""
    ae = requestor_ae(config)
    options = associate_options(config, node)
    if evt_handlers:
        options["evt_handlers"] = [*options["evt_handlers"], *evt_handlers]
    try:
        assoc = ae.associate(
            node.host, node.port, contexts=list(contexts), ext_neg=ext_neg, **options
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise PeerUnreachable(f"{node.ae_title} at {node.host}:{node.port}: {error}") from error
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no answer"
        raise PeerUnreachable(f"{node.ae_title} at {node.host}:{node.port}: association {why}")
    return assoc
