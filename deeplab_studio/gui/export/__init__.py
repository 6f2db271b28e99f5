"""Datasets in and out: the export dialog (every format) and the import dialog."""
