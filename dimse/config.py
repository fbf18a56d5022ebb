"""DIMSE configuration: the values the bridge reads, built from Settings by the composition root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DimseConfig:
    """Ferry's AE, its listeners and limits, TLS material, forwarding and reconciliation."""

    spool_dir: Path  # incoming C-STORE data sets, on the blob store's filesystem
    dicom_host: str = "127.0.0.1"  # the listeners' address
    dicom_port: int = 11112  # 0: no plain listener
    dicom_tls_port: int = 0  # 0: no TLS listener
    dicom_ae_title: str = "FERRY"
    dicom_accept_unknown_callers: bool = False  # unknown calling AEs may then only C-ECHO
    dicom_max_pdu: int = 262144
    dicom_max_associations: int = 32
    dicom_acse_timeout: int = 30
    dicom_dimse_timeout: int = 120
    dicom_network_timeout: int = 120
    dicom_tls_cert: Path | None = None
    dicom_tls_key: Path | None = None
    dicom_tls_ca: Path | None = None  # peers' certificates are verified against it when set
    forward_max_attempts: int = 8
    forward_retry_seconds: int = 5
    forward_response_timeout: float = 30.0  # a silent peer's association is aborted after it
    reconcile_map: tuple[str, ...] = ()  # `Target=Source` or `Keyword` entries
