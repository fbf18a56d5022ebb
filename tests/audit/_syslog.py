"""A real syslog receiver on loopback (TLS with octet counting, RFC 5425; or UDP, RFC 5426),
and a throw-away certificate authority for it, made with `cryptography`."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import re
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import free_port

WAIT = 30.0  # a bound on a busy machine, not a timing assertion
HEADER = re.compile(  # RFC 5424: PRI VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD, BOM
    rb"^<85>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (\S{1,255}) (\S{1,48}) (\d+) "
    rb"IHE\+RFC-3881 - \xef\xbb\xbf"
)


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: KeyPair
    client: KeyPair


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(folder: Path, name: str, cert: x509.Certificate, key: Any) -> KeyPair:
    pair = KeyPair(folder / f"{name}.crt", folder / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pair


def make_pki(folder: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Test Audit CA"))
        .issuer_name(_name("Test Audit CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(name: str) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        return _write(folder, name, cert, key)

    return Pki(folder / "ca.crt", issue("collector"), issue("ferry"))


def server_context(pki: Pki, *, require_client: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server.cert, pki.server.key)
    if require_client:
        context.load_verify_locations(pki.ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class SyslogReceiver:
    """Keeps each message it receives; stop and start again on the same port."""

    def __init__(self, transport: str = "tls", tls: ssl.SSLContext | None = None) -> None:
        self.transport = transport
        self.tls = tls
        self.port = free_port()
        self.messages: list[bytes] = []
        self.refused_handshakes = 0
        self._lock = threading.Lock()
        self._server: socketserver.BaseServer | None = None

    @property
    def url(self) -> str:
        return f"syslog+{self.transport}://127.0.0.1:{self.port}"

    def start(self) -> None:
        server_class = _TcpServer if self.transport == "tls" else _UdpServer
        handler = _StreamHandler if self.transport == "tls" else _DatagramHandler
        deadline = time.monotonic() + WAIT
        while True:  # the port may linger a moment after a stop
            try:
                server = server_class(("127.0.0.1", self.port), handler)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        server.receiver = self  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def keep(self, message: bytes) -> None:
        with self._lock:
            self.messages.append(message)

    def received(self) -> list[bytes]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, count: int) -> list[bytes]:
        deadline = time.monotonic() + WAIT
        while len(self.received()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received())} of {count} messages arrived")
            time.sleep(0.02)
        return self.received()


class _TcpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class _UdpServer(socketserver.UDPServer):
    allow_reuse_address = True
    max_packet_size = 65535


class _StreamHandler(socketserver.BaseRequestHandler):
    """RFC 5425: TLS, then `MSG-LEN SP SYSLOG-MSG` frames until the client closes."""

    def handle(self) -> None:
        receiver: SyslogReceiver = self.server.receiver  # type: ignore[attr-defined]
        assert receiver.tls is not None
        try:
            connection = receiver.tls.wrap_socket(self.request, server_side=True)
        except (ssl.SSLError, OSError):
            receiver.refused_handshakes += 1
            return
        stream = connection.makefile("rb")
        while (length := _frame_length(stream)) is not None:
            receiver.keep(stream.read(length))
        stream.close()
        with contextlib.suppress(ssl.SSLError, OSError):
            connection.unwrap()  # answer the client's close_notify with ours
        connection.close()


def _frame_length(stream: Any) -> int | None:
    digits = b""
    while (character := stream.read(1)) not in (b" ", b""):
        digits += character
    return int(digits) if digits else None


class _DatagramHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.receiver.keep(self.request[0])  # type: ignore[attr-defined]


def parse(message: bytes) -> tuple[re.Match[bytes], ElementTree.Element]:
    """The RFC 5424 header and the PS3.15 A.5 AuditMessage it carries."""
    header = HEADER.match(message)
    assert header is not None, message[:120]
    return header, ElementTree.fromstring(message[header.end() :])


def event_pk(root: ElementTree.Element) -> int:
    """The Ferry audit event pk the message names (ParticipantObjectDetail FerryAuditEvent)."""
    import base64

    for detail in root.iter("ParticipantObjectDetail"):
        if detail.get("type") == "FerryAuditEvent":
            return int(base64.b64decode(detail.get("value", "")).decode().split(":")[0])
    raise AssertionError("no FerryAuditEvent detail")


def unused_port() -> int:
    """A loopback port nothing listens on (for a collector that is down)."""
    port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port
