"""Syslog transports to an Audit Record Repository: TLS (RFC 5425) and UDP (RFC 5426).

The destination is a URL: `syslog+tls://host:6514` or `syslog+udp://host:514`. Over TLS the
collector's certificate is verified (against `ca_file`, or the system's trust store), and a
client certificate is presented for mutual TLS when one is configured.

A TLS batch is one connection: the framed messages (RFC 5425 4.3, octet counting), then Ferry's
close_notify, then Ferry waits for the collector to close its side. RFC 5425 has no
acknowledgement; the collector closing after Ferry's close means it has read every byte before
it. A write that fails, a reset, or no close within the timeout is a failed batch, sent again
later: delivery is at least once. Over UDP each message is one datagram and nothing comes back:
a sent datagram counts as delivered (best effort; RFC 5426 3.6), so a collector that is down
loses what was sent meanwhile, unless its host answers "port unreachable" within a moment
of the batch (then the batch fails and is sent again).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from audit.export import frame_octet_counted

TRANSPORTS = {"syslog+tls": "tls", "syslog+udp": "udp"}
DEFAULT_PORTS = {"tls": 6514, "udp": 514}  # RFC 5425 4.1, RFC 5426 3.3


class SyslogConfigError(ValueError):
    """The destination or its TLS files cannot be used; the message says which and why."""


class CollectorUnavailable(OSError):
    """The collector could not be reached, or did not confirm a batch; send it again later."""


@dataclass(frozen=True)
class SyslogDestination:
    transport: str  # "tls" or "udp"
    host: str
    port: int

    @property
    def label(self) -> str:
        return f"syslog+{self.transport}://{self.host}:{self.port}"


def parse_destination(url: str) -> SyslogDestination:
    """`syslog+tls://host[:port]` or `syslog+udp://host[:port]`; SyslogConfigError otherwise."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise SyslogConfigError(f"{url!r} is not a URL: {error}") from None
    transport = TRANSPORTS.get(parts.scheme)
    if transport is None:
        expected = "syslog+tls://HOST:PORT or syslog+udp://HOST:PORT"
        raise SyslogConfigError(f"expected {expected}, got {url!r}")
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.username:
        raise SyslogConfigError(f"expected only a host and a port in {url!r}")
    return SyslogDestination(transport, parts.hostname, port or DEFAULT_PORTS[transport])


class SyslogSender(Protocol):
    destination: SyslogDestination

    def send(self, messages: Sequence[bytes]) -> None:
        """Deliver the messages in order, or raise CollectorUnavailable."""


class TlsSyslogSender:
    """RFC 5425: one confirmed connection per batch (see the module's description)."""

    def __init__(
        self,
        destination: SyslogDestination,
        *,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.destination = destination
        self.timeout = timeout
        self.context = tls_context(ca_file, cert_file, key_file)

    def send(self, messages: Sequence[bytes]) -> None:
        payload = b"".join(frame_octet_counted(message) for message in messages)
        host, port = self.destination.host, self.destination.port
        try:
            with socket.create_connection((host, port), timeout=self.timeout) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self.context.wrap_socket(raw, server_hostname=host) as tls:
                    tls.sendall(payload)
                    _close_confirmed(tls)
        except (OSError, ssl.SSLError) as error:
            raise CollectorUnavailable(f"{self.destination.label}: {_reason(error)}") from error


class UdpSyslogSender:
    """RFC 5426: one datagram per message, nothing confirmed."""

    def __init__(self, destination: SyslogDestination, unreachable_wait: float = 0.05) -> None:
        self.destination = destination
        self.unreachable_wait = unreachable_wait

    def send(self, messages: Sequence[bytes]) -> None:
        host, port = self.destination.host, self.destination.port
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM
            )[0]
            with socket.socket(family, kind, proto) as datagrams:
                datagrams.connect(address)  # so that "port unreachable" is reported
                for message in messages:
                    datagrams.send(message)
                _pending_error(datagrams, self.unreachable_wait)
        except OSError as error:
            raise CollectorUnavailable(f"{self.destination.label}: {_reason(error)}") from error


def tls_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> ssl.SSLContext:
    """A client context that verifies the collector; SyslogConfigError for unusable files."""
    if key_file is not None and cert_file is None:
        raise SyslogConfigError("a client key needs its certificate (FERRY_ATNA_CERT)")
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as error:
        raise SyslogConfigError(f"CA file {ca_file}: {_reason(error)}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 5425 as updated by RFC 9662
    if cert_file is not None:
        try:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        except (OSError, ssl.SSLError) as error:
            raise SyslogConfigError(f"client certificate {cert_file}: {_reason(error)}") from None
    return context


def _close_confirmed(tls: ssl.SSLSocket) -> None:
    """Send close_notify and wait until the collector closes too (it has then read it all)."""
    try:
        plain = tls.unwrap()  # returns once the collector's close_notify arrives
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return  # the collector closed the connection without its own close_notify: also done
    while plain.recv(4096):
        pass  # a collector has nothing to say; read to its end of stream


def _pending_error(datagrams: socket.socket, wait: float) -> None:
    """A collector sends nothing back; a read shows whether "port unreachable" came in."""
    datagrams.settimeout(wait)
    try:
        datagrams.recv(1)
    except TimeoutError:
        return


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError | socket.timeout):
        return "no answer in time"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
