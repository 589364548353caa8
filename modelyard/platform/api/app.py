"""The FastAPI application: `create_app()` for uvicorn (`modelyard run api`), on the same Settings
and database as the CLI and the workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from modelyard.platform.settings import Settings

DESCRIPTION = """The modelyard control plane over HTTP.

* `/v1/...`: the registry (models, versions, history, promote, rollback, trainings, export),
  ingest of production data (logged predictions, labels) and tokens.
* `/v1/devices`, `/v1/rollouts`, `/v1/bundles`: the edge fleet (devices enroll, report and fetch signed
  bundles with their own credentials; operators deploy with canaries and watch).
* `/v2/...`: inference on the Open Inference Protocol (KServe v2), as Triton and MLServer speak it.

Every request needs `Authorization: Bearer <token>` (`modelyard tokens create NAME --scope ...`);
scopes: read, infer, ingest, operate, admin. Errors are `{"error": sentence, "code": stable code}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    from modelyard.platform.api import errors, fleet, inference, registry, server_meta, tokens
    from modelyard.platform.api.auth import Authenticator
    from modelyard.platform.api.middleware import RequestMiddleware
    from modelyard.platform.context import Platform
    from modelyard.platform.fleet.devices import Devices
    from modelyard.platform.services.bootstrap import prepare_stores
    from modelyard.platform.serving.metrics import Metrics
    from modelyard.platform.serving.server import ModelServer
    from modelyard.platform.store.inference import InferenceLog

    settings = settings or Settings()
    prepare_stores(settings)
    platform = Platform(settings)
    metrics = Metrics()
    auth = Authenticator(settings)  # refuses a misconfigured anonymous mode before serving anything
    server = ModelServer(platform, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import gc

        # Rollouts advance and followers follow on beat's fleet tick (a monitor-queue task), not here.
        await server.start()
        gc.freeze()  # what start-up imported (MLflow, SQLAlchemy, ...) is never scanned again: no long GC pauses
        try:
            yield
        finally:
            await server.stop()

    app = FastAPI(title="modelyard", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.platform = platform
    app.state.auth = auth
    app.state.server = server
    app.state.inference_log = InferenceLog(settings)
    app.state.devices = Devices(settings)
    errors.install(app)
    app.include_router(registry.router)
    app.include_router(inference.ingest)
    app.include_router(tokens.router)
    app.include_router(fleet.agents)
    app.include_router(fleet.router)
    app.include_router(server_meta.router)
    app.include_router(inference.router)

    from modelyard.platform.api.auth import Principal, require

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request, _: Principal = require("read")) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(await run_in_threadpool(generate_latest, metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestMiddleware, metrics=metrics, max_body=settings.api_max_body_bytes)
    return app
