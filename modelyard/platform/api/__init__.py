"""The HTTP service: registry routes, Open Inference Protocol routes, ingest, tokens (FastAPI)."""
