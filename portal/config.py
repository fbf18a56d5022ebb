"""Portal configuration: what the portal reads, built from Settings by the composition root."""

from __future__ import annotations

from dataclasses import dataclass, field

from exchange.retention_defaults import RetentionDefaults


@dataclass(frozen=True)
class PortalConfig:
    """Links people follow, Ferry's own AE title, whether mail is sent, request expiry.

    The composition root puts it in `app.state.portal`; handlers read it from there.
    """

    public_url: str | None = None  # configured: links start here, else the request's base URL
    dicom_ae_title: str = "FERRY"  # a route may not take it
    mail_sending: bool = False  # an SMTP server is configured (else notifications are recorded)
    request_expiry_days: int = 30
    retention: RetentionDefaults = field(default_factory=RetentionDefaults)
