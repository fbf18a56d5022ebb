"""Ferry: a standards-first DICOM image exchange (platform and composition root)."""

__version__ = "0.1.0"
