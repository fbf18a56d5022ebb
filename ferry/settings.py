"""Settings: one frozen object, read once from FERRY_* variables and an optional TOML file.

Only the composition root sees it whole; each layer gets its own small frozen configuration,
built here (`auth()`, `dicomweb()`, `dimse()`, `portal()`), so nothing below `ferry` imports it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicomweb.config import DicomwebConfig
from dimse.config import DimseConfig
from exchange.retention_defaults import RetentionDefaults
from foundation.ae_titles import parse_ae_title
from policy.config import AuthConfig
from portal.config import PortalConfig
from retention.config import RetentionConfig

if TYPE_CHECKING:  # imported where used: every `ferry` command reads the settings first
    from audit.export import AuditSource


class SettingsError(ValueError):
    """A setting has a value Ferry cannot use; the message names the variable."""


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} outside 0-65535")
    return port


def _parse_positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"expected a positive integer, got {value}")
    return value


def _parse_not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected zero or a positive integer, got {value}")
    return value


def _parse_pause(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 3600:
        raise ValueError(f"expected seconds between 0 and 3600, got {text}")
    return value


def _parse_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"expected a positive number of seconds, got {text!r}")
    return value


def _parse_size(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected a byte count of 0 or more, got {value}")
    return value


def _parse_count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected 0 or more, got {value}")
    return value


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _parse_tag_map(text: str) -> tuple[str, ...]:
    """`Target=Source` or `Keyword` entries (DICOM keywords; a source may be `Sequence.Keyword`)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    entries = _parse_list(text)
    for entry in entries:
        target, _, source = entry.partition("=")
        keywords = [target.strip(), *(source.strip().split(".") if source else [])]
        unknown = [k for k in keywords if tag_for_keyword(k) is None]
        if unknown:
            raise ValueError(f"{entry!r}: unknown DICOM keyword {unknown[0]!r}")
        if dictionary_VR(target.strip()) == "SQ" or dictionary_VR(keywords[-1]) == "SQ":
            raise ValueError(f"{entry!r}: a sequence cannot be copied, only an item's attribute")
    return entries


def _parse_path(text: str) -> Path | None:
    return Path(text.strip()) if text.strip() else None


def _parse_url(text: str) -> str | None:
    url = text.strip().rstrip("/")
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    return url


def _parse_atna_url(text: str) -> str:
    from audit.syslog import parse_destination

    return parse_destination(text).label if text.strip() else ""


def _parse_syslog_token(text: str) -> str:
    """RFC 5424 APP-NAME and HOSTNAME: printable US-ASCII without spaces."""
    token = text.strip()
    if token and not all(33 <= ord(c) <= 126 for c in token):
        raise ValueError(f"expected printable ASCII without spaces, got {text!r}")
    return token


def _parse_token(text: str) -> str:
    token = text.strip()
    if token and (len(token) < 16 or not all(33 <= ord(c) <= 126 for c in token)):
        raise ValueError("expected at least 16 printable ASCII characters without spaces")
    return token


def _parse_address(text: str) -> str:
    from email.utils import parseaddr

    address = parseaddr(text.strip())[1]
    if "@" not in address or not text.isprintable():
        raise ValueError(f"expected an email address, got {text!r}")
    return text.strip()


@dataclass(frozen=True)
class Settings:
    """Everything Ferry can be told; built once by the composition root and passed down."""

    data_dir: Path = Path("var")
    database_url: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = 8042
    http_header_timeout: int = 10  # seconds a client has to send a request's headers
    http_max_header_bytes: int = 64 * 1024  # request line and headers; more answers 431
    http_workers: int = 0  # HTTP processes of `ferry serve`; 0: one per CPU core
    dicom_port: int = 11112  # 0: no DIMSE listener
    dicom_ae_title: str = "FERRY"
    dicom_host: str = ""  # empty: the HTTP host
    dicom_accept_unknown_callers: bool = False  # unknown calling AEs may then only C-ECHO
    dicom_max_pdu: int = 262144
    dicom_max_associations: int = 32  # per bridge process
    dicom_processes: int = 0  # bridge processes sharing the DIMSE port; 0: one per CPU core
    dicom_acse_timeout: int = 30
    dicom_dimse_timeout: int = 120
    dicom_network_timeout: int = 120
    dicom_tls_port: int = 0  # 0: no TLS listener (2762 is the registered DICOM TLS port)
    dicom_tls_cert: Path | None = None
    dicom_tls_key: Path | None = None
    dicom_tls_ca: Path | None = None  # peers' certificates are verified against it when set
    forward_max_attempts: int = 8
    forward_retry_seconds: int = 5
    # A forwarding or C-MOVE association whose peer stops answering C-STOREs is aborted after this.
    forward_response_timeout: float = 30.0
    fetch_max_attempts: int = 8  # runs of a fetch from a PACS that cannot be reached
    request_expiry_days: int = 30  # an unanswered request expires after this many days
    # Worklist reconciliation: attributes that take the RIS's values (`Target=Source`, `Keyword`).
    reconcile_map: tuple[str, ...] = (
        "PatientID",
        "IssuerOfPatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
    )
    jobs_enabled: bool = True  # run the job worker inside `ferry serve`
    retention_days: int = 15  # after a study arrives at an institution, unless it says otherwise
    retention_max_days: int = 3650  # the ceiling no institution's period may pass
    retention_warn_days: int = 2  # warning email this many days before a deletion
    retention_batch_size: int = 100  # studies per batch of a sweep
    retention_pause_seconds: float = 1.0  # between batches: deleting never starves the service
    retention_interval_seconds: float = 3600.0  # how often the job worker sweeps
    audit_retention_days: int = 2557  # seven years: `ferry retention audit [--prune]`
    public_url: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_request_bytes: int = 4 * 1024**3
    min_free_bytes: int = 1024**3  # below it new stores are refused; reads and audit go on
    trusted_proxy: bool = False
    replace_duplicates: bool = False
    qido_max_limit: int = 1000
    blob_fsync: bool = True
    log_level: str = "info"
    token_issuer: str = "ferry"
    token_audience: str = "ferry"
    access_token_seconds: int = 300
    refresh_token_seconds: int = 8 * 3600
    login_max_failures: int = 5
    login_lockout_seconds: int = 900
    oidc_providers: str = ""
    demo: bool = False
    smtp_host: str = ""  # empty: notifications are recorded, not sent
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_starttls: bool = True
    smtp_ca: Path | None = None  # CA bundle trusted for the SMTP server's certificate
    mail_from: str = "ferry@localhost"
    # Audit shipping to an audit record repository (syslog+tls://HOST:PORT or syslog+udp://...)
    atna_url: str = ""  # empty: events are not shipped
    atna_ca: Path | None = None  # CA bundle for the collector's certificate (else the system's)
    atna_cert: Path | None = None  # client certificate for mutual TLS
    atna_key: Path | None = None
    atna_app_name: str = "ferry"  # RFC 5424 APP-NAME
    atna_hostname: str = ""  # RFC 5424 HOSTNAME; empty: this host's name
    metrics_token: str = field(default="", repr=False)  # bearer token for GET /metrics
    metrics_port: int = 0  # a separate loopback listener for /metrics; 0: none
    metrics_dir: Path | None = None  # None: in /dev/shm, named after the data folder
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.database_url:
            url = f"sqlite:///{(self.data_dir / 'ferry.db').resolve()}"
            object.__setattr__(self, "database_url", url)

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    def metrics_folder(self) -> Path:
        """Every process's metric files (prometheus-client multiprocess mode).

        Not on the data disk: the files are memory-mapped, and a page that cannot be allocated
        on a full filesystem kills the process (SIGBUS), where Ferry must keep serving reads.
        In RAM (/dev/shm) by default, one folder per data folder; else under the data folder.
        """
        if self.metrics_dir is not None:
            return self.metrics_dir
        shared_memory = Path("/dev/shm")
        if not shared_memory.is_dir() or not os.access(shared_memory, os.W_OK):
            return self.data_dir / "metrics"
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:16]
        return shared_memory / f"ferry-metrics-{digest}"

    def audit_source(self) -> AuditSource:
        """Ferry as the audit messages name it: public host (or this host), AE title, host."""
        from audit.export import AuditSource

        host = socket.gethostname()
        source_id = host
        if self.public_url:
            source_id = self.public_url.split("://", 1)[-1].split("/", 1)[0]
        return AuditSource(source_id, self.dicom_ae_title, self.atna_hostname or host)

    @property
    def keys_dir(self) -> Path:
        """Token signing keys, generated on first start, kept with the data."""
        return self.data_dir / "keys"

    @property
    def spool_dir(self) -> Path:
        """Incoming parts land here, on the blob store's filesystem, so storing is a rename."""
        return self.data_dir / "blobs" / ".incoming"

    def auth(self) -> AuthConfig:
        """What policy reads: tokens, sign-in lockout, OpenID Connect providers."""
        return AuthConfig(
            keys_dir=self.keys_dir,
            token_issuer=self.token_issuer,
            token_audience=self.token_audience,
            access_token_seconds=self.access_token_seconds,
            refresh_token_seconds=self.refresh_token_seconds,
            login_max_failures=self.login_max_failures,
            login_lockout_seconds=self.login_lockout_seconds,
            oidc_providers=self.oidc_providers,
        )

    def dicomweb(self) -> DicomwebConfig:
        """What the DICOMweb edge reads: its public address, limits and folders."""
        return DicomwebConfig(
            data_dir=self.data_dir,
            spool_dir=self.spool_dir,
            public_url=self.public_url,
            http_host=self.http_host,
            http_port=self.http_port,
            trusted_proxy=self.trusted_proxy,
            qido_max_limit=self.qido_max_limit,
            max_request_bytes=self.max_request_bytes,
        )

    def dimse(self) -> DimseConfig:
        """What the DIMSE bridge reads; its listeners take the HTTP host unless told otherwise."""
        return DimseConfig(
            spool_dir=self.spool_dir,
            dicom_host=self.dicom_host or self.http_host,
            dicom_port=self.dicom_port,
            dicom_tls_port=self.dicom_tls_port,
            dicom_ae_title=self.dicom_ae_title,
            dicom_accept_unknown_callers=self.dicom_accept_unknown_callers,
            dicom_max_pdu=self.dicom_max_pdu,
            dicom_max_associations=self.dicom_max_associations,
            dicom_acse_timeout=self.dicom_acse_timeout,
            dicom_dimse_timeout=self.dicom_dimse_timeout,
            dicom_network_timeout=self.dicom_network_timeout,
            dicom_tls_cert=self.dicom_tls_cert,
            dicom_tls_key=self.dicom_tls_key,
            dicom_tls_ca=self.dicom_tls_ca,
            forward_max_attempts=self.forward_max_attempts,
            forward_retry_seconds=self.forward_retry_seconds,
            forward_response_timeout=self.forward_response_timeout,
            reconcile_map=self.reconcile_map,
        )

    def retention_defaults(self) -> RetentionDefaults:
        return RetentionDefaults(
            days=min(self.retention_days, self.retention_max_days),
            max_days=self.retention_max_days,
            warn_days=self.retention_warn_days,
        )

    def retention(self) -> RetentionConfig:
        """What the retention sweeper reads: periods, ceiling, batches and pace, audit's period."""
        return RetentionConfig(
            defaults=self.retention_defaults(),
            batch_size=self.retention_batch_size,
            pause_seconds=self.retention_pause_seconds,
            interval_seconds=self.retention_interval_seconds,
            audit_days=self.audit_retention_days,
        )

    def portal(self) -> PortalConfig:
        """What the portal reads: links, Ferry's AE title, whether mail goes out, expiry."""
        return PortalConfig(
            public_url=self.public_url,
            dicom_ae_title=self.dicom_ae_title,
            mail_sending=bool(self.smtp_host),
            request_expiry_days=self.request_expiry_days,
            retention=self.retention_defaults(),
        )


# Variable name -> (field name, parser). The README's configuration table mirrors this.
_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "FERRY_DATA_DIR": ("data_dir", Path),
    "FERRY_DATABASE_URL": ("database_url", str),
    "FERRY_HTTP_HOST": ("http_host", str),
    "FERRY_HTTP_PORT": ("http_port", _parse_port),
    "FERRY_HTTP_HEADER_TIMEOUT": ("http_header_timeout", _parse_positive),
    "FERRY_HTTP_MAX_HEADER_BYTES": ("http_max_header_bytes", _parse_positive),
    "FERRY_HTTP_WORKERS": ("http_workers", _parse_count),
    "FERRY_DICOM_PORT": ("dicom_port", _parse_port),
    "FERRY_DICOM_AE_TITLE": ("dicom_ae_title", parse_ae_title),
    "FERRY_DICOM_HOST": ("dicom_host", str),
    "FERRY_DICOM_ACCEPT_UNKNOWN_CALLERS": ("dicom_accept_unknown_callers", _parse_bool),
    "FERRY_DICOM_MAX_PDU": ("dicom_max_pdu", _parse_positive),
    "FERRY_DICOM_MAX_ASSOCIATIONS": ("dicom_max_associations", _parse_positive),
    "FERRY_DICOM_PROCESSES": ("dicom_processes", _parse_count),
    "FERRY_DICOM_ACSE_TIMEOUT": ("dicom_acse_timeout", _parse_positive),
    "FERRY_DICOM_DIMSE_TIMEOUT": ("dicom_dimse_timeout", _parse_positive),
    "FERRY_DICOM_NETWORK_TIMEOUT": ("dicom_network_timeout", _parse_positive),
    "FERRY_DICOM_TLS_PORT": ("dicom_tls_port", _parse_port),
    "FERRY_DICOM_TLS_CERT": ("dicom_tls_cert", _parse_path),
    "FERRY_DICOM_TLS_KEY": ("dicom_tls_key", _parse_path),
    "FERRY_DICOM_TLS_CA": ("dicom_tls_ca", _parse_path),
    "FERRY_FORWARD_MAX_ATTEMPTS": ("forward_max_attempts", _parse_positive),
    "FERRY_FORWARD_RETRY_SECONDS": ("forward_retry_seconds", _parse_positive),
    "FERRY_FORWARD_RESPONSE_TIMEOUT": ("forward_response_timeout", _parse_seconds),
    "FERRY_FETCH_MAX_ATTEMPTS": ("fetch_max_attempts", _parse_positive),
    "FERRY_REQUEST_EXPIRY_DAYS": ("request_expiry_days", _parse_positive),
    "FERRY_RETENTION_DAYS": ("retention_days", _parse_positive),
    "FERRY_RETENTION_MAX_DAYS": ("retention_max_days", _parse_positive),
    "FERRY_RETENTION_WARN_DAYS": ("retention_warn_days", _parse_not_negative),
    "FERRY_RETENTION_BATCH_SIZE": ("retention_batch_size", _parse_positive),
    "FERRY_RETENTION_PAUSE_SECONDS": ("retention_pause_seconds", _parse_pause),
    "FERRY_RETENTION_INTERVAL_SECONDS": ("retention_interval_seconds", _parse_seconds),
    "FERRY_AUDIT_RETENTION_DAYS": ("audit_retention_days", _parse_positive),
    "FERRY_RECONCILE_MAP": ("reconcile_map", _parse_tag_map),
    "FERRY_JOBS_ENABLED": ("jobs_enabled", _parse_bool),
    "FERRY_PUBLIC_URL": ("public_url", _parse_url),
    "FERRY_CORS_ORIGINS": ("cors_origins", _parse_list),
    "FERRY_MAX_REQUEST_BYTES": ("max_request_bytes", _parse_positive),
    "FERRY_MIN_FREE_BYTES": ("min_free_bytes", _parse_size),
    "FERRY_TRUSTED_PROXY": ("trusted_proxy", _parse_bool),
    "FERRY_REPLACE_DUPLICATES": ("replace_duplicates", _parse_bool),
    "FERRY_QIDO_MAX_LIMIT": ("qido_max_limit", _parse_positive),
    "FERRY_BLOB_FSYNC": ("blob_fsync", _parse_bool),
    "FERRY_LOG_LEVEL": ("log_level", str),
    "FERRY_TOKEN_ISSUER": ("token_issuer", str),
    "FERRY_TOKEN_AUDIENCE": ("token_audience", str),
    "FERRY_ACCESS_TOKEN_SECONDS": ("access_token_seconds", _parse_positive),
    "FERRY_REFRESH_TOKEN_SECONDS": ("refresh_token_seconds", _parse_positive),
    "FERRY_LOGIN_MAX_FAILURES": ("login_max_failures", _parse_positive),
    "FERRY_LOGIN_LOCKOUT_SECONDS": ("login_lockout_seconds", _parse_positive),
    "FERRY_OIDC_PROVIDERS": ("oidc_providers", str),
    "FERRY_SMTP_HOST": ("smtp_host", str.strip),
    "FERRY_SMTP_PORT": ("smtp_port", _parse_port),
    "FERRY_SMTP_USER": ("smtp_user", str),
    "FERRY_SMTP_PASSWORD": ("smtp_password", str),
    "FERRY_SMTP_STARTTLS": ("smtp_starttls", _parse_bool),
    "FERRY_SMTP_CA": ("smtp_ca", _parse_path),
    "FERRY_MAIL_FROM": ("mail_from", _parse_address),
    "FERRY_ATNA_URL": ("atna_url", _parse_atna_url),
    "FERRY_ATNA_CA": ("atna_ca", _parse_path),
    "FERRY_ATNA_CERT": ("atna_cert", _parse_path),
    "FERRY_ATNA_KEY": ("atna_key", _parse_path),
    "FERRY_ATNA_APP_NAME": ("atna_app_name", _parse_syslog_token),
    "FERRY_ATNA_HOSTNAME": ("atna_hostname", _parse_syslog_token),
    "FERRY_METRICS_TOKEN": ("metrics_token", _parse_token),
    "FERRY_METRICS_PORT": ("metrics_port", _parse_port),
    "FERRY_METRICS_DIR": ("metrics_dir", _parse_path),
}


def settings_variables() -> dict[str, str]:
    """Each FERRY_* variable with its default, for documentation and `ferry config`."""
    defaults = Settings()
    return {name: str(getattr(defaults, attr)) for name, (attr, _) in _VARIABLES.items()}


def _from_toml(path: Path) -> dict[str, str]:
    try:
        with path.open("rb") as handle:
            table = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise SettingsError(f"FERRY_CONFIG: cannot read {path}: {error}") from error
    values: dict[str, str] = {}
    for key, value in table.items():
        name = f"FERRY_{key.upper()}"
        if name not in _VARIABLES:
            raise SettingsError(f"FERRY_CONFIG: unknown setting {key!r} in {path}")
        values[name] = ",".join(value) if isinstance(value, list) else str(value)
    return values


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (if FERRY_CONFIG names one), then the environment over it."""
    environ = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    if config := environ.get("FERRY_CONFIG"):
        raw.update(_from_toml(Path(config)))
    raw.update({k: v for k, v in environ.items() if k in _VARIABLES})
    values: dict[str, Any] = {}
    for name, text in raw.items():
        attr, parse = _VARIABLES[name]
        try:
            values[attr] = parse(text)
        except ValueError as error:
            raise SettingsError(f"{name}: {error}") from error
    values.update(overrides)
    return Settings(**values)


def replace_settings(settings: Settings, **changes: Any) -> Settings:
    """A copy with some fields changed; the database URL follows a new data folder if derived."""
    if "data_dir" in changes and "database_url" not in changes:
        default = f"sqlite:///{(settings.data_dir / 'ferry.db').resolve()}"
        if settings.database_url == default:
            changes["database_url"] = ""
    return dataclasses.replace(settings, **changes)
