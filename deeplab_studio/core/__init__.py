"""numpy-only data model: labels, brush, patches, fill, metrics."""
