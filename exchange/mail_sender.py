"""Sending email over SMTP (RFC 5321) with smtplib, STARTTLS (RFC 3207) and AUTH when configured.

Every failure to hand a message over (the server unreachable, gone mid-conversation, a 4xx or
5xx answer) is a `MailNotSent`: the notification job fails its run, the queue retries it with
backoff and parks it after its last attempt, and nothing is lost meanwhile.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from foundation.errors import FerryError


class MailNotSent(FerryError):
    """The SMTP server did not take the message; the text says what it answered."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 587
    user: str = ""
    password: str = ""
    starttls: bool = True
    sender: str = "ferry@localhost"  # the From address
    ca_file: Path | None = None  # trust this CA (a private or self-signed server certificate)
    timeout: float = 30.0

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}{' (STARTTLS)' if self.starttls else ''}"


class MailSender:
    """One SMTP connection per batch of messages (one notification job's emails)."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    def _tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=str(self.config.ca_file) if self.config.ca_file else None
        )
        return context

    def open(self) -> smtplib.SMTP:
        config = self.config
        try:
            connection = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
            try:
                if config.starttls:
                    connection.starttls(context=self._tls())
                if config.user:
                    connection.login(config.user, config.password)
            except BaseException:
                connection.close()
                raise
        except (OSError, smtplib.SMTPException) as error:
            raise MailNotSent(f"SMTP server {config.label}: {_describe(error)}") from error
        return connection

    def send(self, connection: smtplib.SMTP, message: EmailMessage) -> None:
        try:
            refused = connection.send_message(message, from_addr=self.config.sender)
        except (OSError, smtplib.SMTPException) as error:
            raise MailNotSent(f"SMTP server {self.config.label}: {_describe(error)}") from error
        if refused:  # several recipients and some refused; Ferry sends one a message
            raise MailNotSent(f"SMTP server {self.config.label} refused {sorted(refused)}")

    @staticmethod
    def close(connection: smtplib.SMTP) -> None:
        try:
            connection.quit()
        except (OSError, smtplib.SMTPException):
            connection.close()


def _describe(error: BaseException) -> str:
    if isinstance(error, smtplib.SMTPResponseException):
        text = (
            error.smtp_error.decode("utf-8", "replace")
            if isinstance(error.smtp_error, bytes)
            else str(error.smtp_error)
        )
        return f"{error.smtp_code} {text}"
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return "; ".join(
            f"{to}: {code} {text.decode('utf-8', 'replace')}"
            for to, (code, text) in error.recipients.items()
        )
    return f"{type(error).__name__}: {error}"
