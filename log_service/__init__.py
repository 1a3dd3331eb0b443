"""log_service: log ingest, query, tail, stats and retention."""
