"""TLS contexts for DICOM associations (PS3.15 B.1 secure transport, BCP 195: TLS 1.2 or later).

When a CA is configured it is the only trust anchor, both ways: a node's certificate is
verified against it, and a client of the TLS listener must present a certificate it signed.
The system's public CAs would let anyone with a web certificate in.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from dimse.config import DimseConfig


class _ListenerContext(ssl.SSLContext):
    """Leaves the handshake to the association's own thread.

    pynetdicom wraps accepted sockets in its accept loop; a handshake there would let one
    peer that connects and stays silent hold up every other connection to the TLS port. The
    handshake then happens at the association's first read, under the network timeout.
    """

    network_timeout: float | None = None

    def wrap_socket(  # type: ignore[override]
        self, sock: socket.socket, server_side: bool = False, **options: Any
    ) -> ssl.SSLSocket:
        if server_side:
            sock.settimeout(self.network_timeout)
            options["do_handshake_on_connect"] = False
        return super().wrap_socket(sock, server_side=server_side, **options)


def server_context(config: DimseConfig) -> ssl.SSLContext:
    """For the TLS listener; with a CA configured, peers must present a certificate it signed."""
    if config.dicom_tls_cert is None:
        raise ValueError("FERRY_DICOM_TLS_CERT is needed for the TLS listener")
    context = _ListenerContext(ssl.PROTOCOL_TLS_SERVER)
    context.network_timeout = config.dicom_network_timeout
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.dicom_tls_cert, config.dicom_tls_key)
    if config.dicom_tls_ca is not None:
        context.load_verify_locations(config.dicom_tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(config: DimseConfig) -> ssl.SSLContext:
    """For associations Ferry opens to nodes marked `tls`.

    The node is verified against the configured CA, else against the system's trust store;
    Ferry presents its own certificate, since nodes commonly require one.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # nodes are named by AE title and address, not host names
    if config.dicom_tls_ca is not None:
        context.load_verify_locations(config.dicom_tls_ca)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if config.dicom_tls_cert is not None:
        context.load_cert_chain(config.dicom_tls_cert, config.dicom_tls_key)
    return context
