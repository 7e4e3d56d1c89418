"""Data path: ingest -> validate -> deduplicate -> threshold -> index -> split."""
