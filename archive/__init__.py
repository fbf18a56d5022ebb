"""The DICOM store: index tables, attribute matching, blob store, ingest, delete, DICOM JSON."""
