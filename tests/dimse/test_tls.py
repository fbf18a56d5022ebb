"""DICOM over TLS (PS3.15 B.1): Ferry's TLS listener with DCMTK and pynetdicom, and TLS to nodes."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pynetdicom import AE, build_context
from pynetdicom.sop_class import Verification

from dimse._direct_send import DirectSend
from dimse.callers import find_node
from dimse.peers import PeerUnreachable, open_association
from dimse.server import Bridge
from dimse.shared_listeners import bind_shared
from ferry.settings import Settings
from tests._peers import start_scp
from tests.conftest import free_port, sqlite_only
from tests.dimse.conftest import Dimse, run_dcmtk
from tests.factories import StudySpec, write_series

pytestmark = [sqlite_only, pytest.mark.dcmtk]


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """A test CA, a server and a client certificate it signed, and a client it did not."""

    ca: Path
    server: KeyPair  # Ferry's: it is the TLS server of its listener and the client of nodes
    client: KeyPair
    node: KeyPair
    stranger: KeyPair  # a client certificate signed by another CA
    impostor: KeyPair  # a node certificate signed by another CA


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, key: rsa.RSAPrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _ca(common_name: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = _key()
    cert = (
        _builder(common_name, _name(common_name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    folder: Path,
    name: str,
    ca: tuple[x509.Certificate, rsa.RSAPrivateKey],
    *usages: x509.ObjectIdentifier,
) -> KeyPair:
    ca_cert, ca_key = ca
    key = _key()
    cert = (
        _builder(name, ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pair = KeyPair(folder / f"{name}.crt", folder / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return pair


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = _ca("Ferry Test CA"), _ca("Other CA")
    (folder / "ca.crt").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    return Pki(
        ca=folder / "ca.crt",
        server=_issue(folder, "ferry", ca, server, client),
        client=_issue(folder, "pacs", ca, client),
        node=_issue(folder, "node", ca, server),
        stranger=_issue(folder, "stranger", other, client),
        impostor=_issue(folder, "impostor", other, server),
    )


@dataclass
class TlsFerry:
    settings: Settings
    bridge: Bridge

    @property
    def plain_port(self) -> int:
        return self.settings.dicom_port

    @property
    def tls_port(self) -> int:
        return self.settings.dicom_tls_port


@pytest.fixture(params=["own-sockets", "shared-listeners"])
def tls_ferry(dimse: Dimse, pki: Pki, request: pytest.FixtureRequest) -> Iterator[TlsFerry]:
    """A bridge with a plain and a TLS listener; peers need a certificate from the test CA.
    The bridge binds them itself (`ferry dimse serve`), or accepts from the ones `ferry serve`
    binds for all its bridges."""
    settings = replace(
        dimse.web.settings,
        dicom_port=free_port(),
        dicom_tls_port=free_port(),
        dicom_tls_cert=pki.server.cert,
        dicom_tls_key=pki.server.key,
        dicom_tls_ca=pki.ca,
    )
    shared = bind_shared(settings.dimse(), 2) if request.param == "shared-listeners" else None
    bridge = Bridge(settings.dimse(), dimse.archive, clock=dimse.clock, shared=shared)
    bridge.start()
    try:
        yield TlsFerry(settings, bridge)
    finally:
        bridge.stop()


def dcmtk_tls(pki: Pki, pair: KeyPair | None) -> list[str]:
    """DCMTK's TLS options: our key and certificate (or none), trusting the test CA."""
    identity = ["+tls", str(pair.key), str(pair.cert)] if pair else ["+tla"]
    return [*identity, "+cf", str(pki.ca)]


def echo(port: int, *options: str) -> int:
    result = run_dcmtk(
        "echoscu", *options, "-aet", "MODALITY", "-aec", "FERRY", "127.0.0.1", str(port)
    )
    return result.returncode


def client_context(pki: Pki, pair: KeyPair | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    context.check_hostname = False
    if pair:
        context.load_cert_chain(pair.cert, pair.key)
    return context


def pynetdicom_echo(port: int, context: ssl.SSLContext | None) -> int | None:
    """The C-ECHO status, or None when no association was established."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    tls_args = (context, None) if context else None
    assoc = ae.associate("127.0.0.1", port, ae_title="FERRY", tls_args=tls_args)
    if not assoc.is_established:
        return None
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def test_dcmtk_echoes_and_stores_over_tls(
    dimse: Dimse, tls_ferry: TlsFerry, pki: Pki, tmp_path: Path
) -> None:
    assert echo(tls_ferry.tls_port, *dcmtk_tls(pki, pki.client)) == 0
    spec = StudySpec()
    write_series(tmp_path / "in", 2, spec=spec)
    sent = run_dcmtk(
        "storescu",
        *dcmtk_tls(pki, pki.client),
        "-aet",
        "MODALITY",
        "-aec",
        "FERRY",
        "+sd",
        "127.0.0.1",
        str(tls_ferry.tls_port),
        str(tmp_path / "in"),
    )
    assert sent.returncode == 0, sent.stderr
    with dimse.web.http() as http:
        found = http.get(f"{dimse.web.dicomweb_url}/studies/{spec.study_uid}/instances")
    assert found.status_code == 200
    assert len(found.json()) == 2
    assert echo(tls_ferry.plain_port) == 0  # the plain listener still serves


def test_pynetdicom_associates_over_tls(tls_ferry: TlsFerry, pki: Pki) -> None:
    assert pynetdicom_echo(tls_ferry.tls_port, client_context(pki, pki.client)) == 0x0000
    assert pynetdicom_echo(tls_ferry.plain_port, None) == 0x0000
    assert pynetdicom_echo(tls_ferry.plain_port, client_context(pki, pki.client)) is None


def test_the_tls_port_refuses_peers_without_a_trusted_certificate(
    tls_ferry: TlsFerry, pki: Pki
) -> None:
    assert echo(tls_ferry.tls_port, *dcmtk_tls(pki, None)) != 0  # no client certificate
    assert echo(tls_ferry.tls_port, *dcmtk_tls(pki, pki.stranger)) != 0  # another CA's
    assert echo(tls_ferry.tls_port) != 0  # plain DICOM to the TLS port
    assert pynetdicom_echo(tls_ferry.tls_port, client_context(pki, None)) is None
    assert pynetdicom_echo(tls_ferry.tls_port, client_context(pki, pki.stranger)) is None
    # A TCP connection that never starts the handshake holds nobody else up.
    with socket.create_connection(("127.0.0.1", tls_ferry.tls_port)):
        assert echo(tls_ferry.tls_port, *dcmtk_tls(pki, pki.client)) == 0
    assert echo(tls_ferry.plain_port) == 0


# -- Ferry as the TLS client ----------------------------------------------------------------


def tls_node(pki: Pki, pair: KeyPair) -> Iterator[int]:
    """A node that speaks DICOM only over TLS and wants a client certificate from the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(pair.cert, pair.key)
    ae = AE(ae_title="TLSNODE")
    ae.add_supported_context(Verification)
    port = free_port()
    server = start_scp(ae, port, ssl_context=context)
    try:
        yield port
    finally:
        server.shutdown()


def echo_node(dimse: Dimse, settings: Settings, ae_title: str) -> int:
    node = find_node(dimse.archive.engine, ae_title)
    assert node is not None
    assoc = open_association(settings.dimse(), node, [build_context(Verification)])
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def test_ferry_opens_tls_associations_to_nodes_marked_tls(
    dimse: Dimse, tls_ferry: TlsFerry, pki: Pki
) -> None:
    for port in tls_node(pki, pki.node):
        dimse.add_node("TLSNODE", port=port, tls=True)
        dimse.add_node("TLSNODE-PLAIN", port=port, tls=False)
        assert echo_node(dimse, tls_ferry.settings, "TLSNODE") == 0x0000
        with pytest.raises(PeerUnreachable):
            echo_node(dimse, tls_ferry.settings, "TLSNODE-PLAIN")
        without_certificate = replace(tls_ferry.settings, dicom_tls_cert=None, dicom_tls_key=None)
        with pytest.raises(PeerUnreachable):  # the node wants a client certificate
            echo_node(dimse, without_certificate, "TLSNODE")


def test_ferry_does_not_trust_a_node_certificate_from_another_ca(
    dimse: Dimse, tls_ferry: TlsFerry, pki: Pki
) -> None:
    for port in tls_node(pki, pki.impostor):
        dimse.add_node("TLSNODE", port=port, tls=True)
        with pytest.raises(PeerUnreachable):
            echo_node(dimse, tls_ferry.settings, "TLSNODE")


def test_a_tls_association_leaves_its_writes_to_its_dul_thread(
    tls_ferry: TlsFerry, pki: Pki
) -> None:
    """An SSL socket is not written by one thread while another may read it: no direct write."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    tls_args = (client_context(pki, pki.client), None)
    assoc = ae.associate("127.0.0.1", tls_ferry.tls_port, ae_title="FERRY", tls_args=tls_args)
    assert assoc.is_established
    try:
        (context,) = assoc.accepted_contexts
        assert not DirectSend(assoc).send_command(context.context_id, b"\0" * 8)
        assert int(assoc.send_c_echo().Status) == 0x0000
    finally:
        assoc.release()
