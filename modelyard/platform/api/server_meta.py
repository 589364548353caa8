"""GET /v2: the Open Inference Protocol's server metadata (name, version, extensions), which clients
such as tritonclient ask for before anything else."""

from __future__ import annotations

from fastapi import APIRouter

from modelyard import __version__
from modelyard.oip import server_metadata
from modelyard.platform.api.auth import Principal, require
from modelyard.platform.api.schemas import ERRORS, ServerMetadata

router = APIRouter(tags=["inference"], responses=ERRORS)
# Triton's binary tensor data extension: tensors in and out as raw bytes after the JSON (api/inference.py).
EXTENSIONS = ("binary_tensor_data",)


@router.get("/v2", summary="Server metadata: name, version and the protocol extensions it speaks")
async def metadata(_: Principal = require("read")) -> ServerMetadata:
    return ServerMetadata(**server_metadata("modelyard", __version__, EXTENSIONS))
