"""The DICOMweb edge (PS3.18): QIDO-RS, WADO-RS, STOW-RS."""
