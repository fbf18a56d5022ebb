"""TLS contexts for DICOM associations (PS3.15 B.1 secure transport connection profile)."""

from __future__ import annotations

import ssl

from ferry.settings import Settings


def server_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if settings.dicom_tls_cert is None:
        raise ValueError("FERRY_DICOM_TLS_CERT is needed for the TLS listener")
    context.load_cert_chain(settings.dicom_tls_cert, settings.dicom_tls_key)
    if settings.dicom_tls_ca is not None:
        context.load_verify_locations(settings.dicom_tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(settings: Settings) -> ssl.SSLContext:
    """For associations Ferry opens to nodes marked `tls`: verify them against the CA if set."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False  # nodes are named by AE title and address, not host names
    if settings.dicom_tls_ca is not None:
        context.load_verify_locations(settings.dicom_tls_ca)
    else:
        context.verify_mode = ssl.CERT_NONE
    if settings.dicom_tls_cert is not None:
        context.load_cert_chain(settings.dicom_tls_cert, settings.dicom_tls_key)
    return context
