"""Data in and out of files: the schema, the readers, encoded data on disk, sampling and
the synthetic click logs. Knows nothing of features or models."""
