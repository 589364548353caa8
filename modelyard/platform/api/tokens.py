"""Token management over HTTP (admin scope): the same store as `modelyard tokens`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool

from modelyard.platform.api.auth import Principal, require
from modelyard.platform.api.schemas import ERRORS, TokenBody, TokenCreated

router = APIRouter(prefix="/v1/tokens", tags=["tokens"], responses=ERRORS)
TokenName = Annotated[str, Path(min_length=1, max_length=100)]


@router.get("", summary="Every token: name, scopes, created, revoked, last used (never the token)")
async def list_tokens(request: Request, _: Principal = require("admin")) -> list[dict[str, Any]]:
    return [t.as_dict() for t in await run_in_threadpool(request.app.state.auth.tokens.list)]


@router.post("", status_code=201, summary="Create a token (shown once)")
async def create_token(request: Request, body: TokenBody, who: Principal = require("admin")) -> TokenCreated:
    store = request.app.state.auth.tokens
    token = await run_in_threadpool(store.create, body.name, list(body.scopes), who.name)
    return TokenCreated(name=body.name, token=token, scopes=sorted(set(body.scopes)))


@router.delete("/{name}", summary="Revoke a token: it stops working at once")
async def revoke_token(request: Request, name: TokenName, _: Principal = require("admin")) -> dict[str, Any]:
    auth = request.app.state.auth
    info = await run_in_threadpool(auth.tokens.revoke, name)
    auth.forget(name)
    return info.as_dict()  # type: ignore[no-any-return]
