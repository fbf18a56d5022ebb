"""The audit trail: append-only, hash-chained events; record, search, verify, export (IHE ATNA)."""

from audit.models import AuditChainHead, AuditEvent, AuditShipping, Outcome
from audit.trail import AuditRecord, ChainHead, chain_head, record, record_many

__all__ = [
    "AuditChainHead",
    "AuditEvent",
    "AuditRecord",
    "AuditShipping",
    "ChainHead",
    "Outcome",
    "chain_head",
    "record",
    "record_many",
]
