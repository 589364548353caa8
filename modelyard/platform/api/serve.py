"""`modelyard run api`: uvicorn with the app, JSON access logs on stdout, no uvicorn access lines."""

from __future__ import annotations

import logging
import sys

from modelyard.platform.settings import Settings


def run(settings: Settings) -> None:
    import uvicorn

    from modelyard.platform.api.app import create_app
    from modelyard.platform.api.middleware import MAX_HEADER_BYTES, header_limited_http

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stdout)
    for noisy in ("alembic", "mlflow", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        access_log=False,  # the app writes one JSON line per request, with its id and the token's name
        log_config=None,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=10,
        server_header=False,
        http=header_limited_http(MAX_HEADER_BYTES),  # httptools has no limit on a request's headers
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,  # the same limit where uvicorn uses h11
    )
