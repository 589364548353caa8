"""Bearer tokens with scopes: 401 without a valid token, 403 without the scope.

A checked token is trusted for `token_cache_seconds` (one database read per token and
period, not per request); revoking through the API forgets it at once, revoking from the
CLI takes effect within that period. Anonymous local mode (embedded, 127.0.0.1, explicitly
configured) acts as 'local' with every scope.

What sends evidence (ingest by token, telemetry by device) is also held to a rate per source: a token
bucket per token name or device id in this process, answered past it with 429, Retry-After and one
sentence.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from modelyard.errors import AuthError, ForbiddenError, ModelyardError
from modelyard.platform.api.schemas import ErrorBody
from modelyard.platform.settings import Settings
from modelyard.platform.store.tokens import SCOPES, TokenInfo, TokenStore, allows

bearer = HTTPBearer(auto_error=False, description="A token from `modelyard tokens create`.")


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: tuple[str, ...]


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.tokens = TokenStore(settings)
        self.anonymous = anonymous_allowed(settings)
        self._ttl = settings.token_cache_seconds
        self._cache: dict[str, tuple[float, TokenInfo]] = {}
        self._generation = 0  # bumped by every revocation through the API

    async def principal(self, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        if credentials is None:
            if self.anonymous:
                return Principal("local", tuple(SCOPES))
            raise AuthError("this endpoint needs a bearer token (Authorization: Bearer <token>).")
        token = credentials.credentials
        hit = self._cache.get(token)
        now = time.monotonic()
        if hit is None or now - hit[0] > self._ttl:
            generation = self._generation
            info = await run_in_threadpool(self.tokens.authenticate, token)
            if info is None:
                self._cache.pop(token, None)
                raise AuthError("the bearer token is unknown or revoked.")
            await run_in_threadpool(self.tokens.touch, {info.name})
            if len(self._cache) > 10_000:
                self._cache.clear()
            hit = (now, info)
            if generation == self._generation:  # no revocation ran meanwhile: safe to remember
                self._cache[token] = hit
        info = hit[1]
        return Principal(info.name, info.scopes)

    def forget(self, name: str) -> None:
        self._generation += 1
        for token, (_, info) in list(self._cache.items()):
            if info.name == name:
                del self._cache[token]


def anonymous_allowed(settings: Settings) -> bool:
    """Whether requests without a token may act as 'local'; a refusal when configured where it must not be."""
    if not settings.api_anonymous:
        return False
    if settings.mode != "embedded":
        raise ModelyardError("MODELYARD_API_ANONYMOUS is refused in server mode: every request needs a token there.")
    try:
        loopback = ipaddress.ip_address(settings.api_host).is_loopback
    except ValueError:
        loopback = settings.api_host == "localhost"
    if not loopback:
        raise ModelyardError(f"MODELYARD_API_ANONYMOUS needs MODELYARD_API_HOST on 127.0.0.1, not {settings.api_host}.")
    return True


async def authorize(request: Request, scope: str) -> Principal:
    """The caller of this request, who must hold `scope` (or admin)."""
    header = request.headers.get("authorization")
    credentials = None
    if header:
        kind, _, value = header.partition(" ")
        if kind.lower() != "bearer" or not value.strip():
            raise AuthError("the Authorization header must be 'Bearer <token>'.")
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=value.strip())
    return _check(request, await request.app.state.auth.principal(credentials), scope)


def _check(request: Request, who: Principal, scope: str) -> Principal:
    request.scope["modelyard.actor"] = who.name  # the access log names who was served, or refused
    if not allows(who.scopes, scope):
        raise ForbiddenError(f"token '{who.name}' lacks the '{scope}' scope this endpoint needs.")
    return who


# For routes that check the token themselves (the inference hot path: FastAPI's dependency
# machinery costs more per request than the model): what /docs and the OpenAPI schema show.
BEARER: dict[str, Any] = {"security": [{"HTTPBearer": []}]}


def require(scope: str, limit: Limited | None = None) -> Depends:  # type: ignore[valid-type]
    """A dependency: the caller, who must hold `scope` (or admin), and, with `limit`, be within its rate
    (checked before the body is validated: a flood costs little)."""

    async def check(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
        auth: Authenticator = request.app.state.auth
        who = _check(request, await auth.principal(credentials), scope)
        if limit is not None:
            rate_limit(request, limit, who.name)
        return who

    return Depends(check)


# -- rates ---------------------------------------------------------------------------------------
Limited = Literal["ingest", "telemetry"]
RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorBody,
        "description": "The sender (a token, a device) is past its rate; Retry-After says when to try again.",
    }
}


class TokenBuckets:
    """One token bucket per source: `rate` requests a second on average, bursts of `burst`. In memory, per API
    process (several processes each allow the rate)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, when counted)
        self._lock = threading.Lock()  # sync routes run on the thread pool

    def take(self, source: str, now: float | None = None) -> float:
        """Spend one request of the source's bucket: 0 when it may go now, else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, then = self._buckets.get(source, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            if tokens < 1.0:
                self._buckets[source] = (tokens, now)
                return (1.0 - tokens) / self.rate
            if len(self._buckets) > 10_000:  # sources that went quiet are full again: forgetting them is exact
                full = [k for k, (t, w) in self._buckets.items() if t + (now - w) * self.rate >= self.burst]
                for key in full:
                    del self._buckets[key]
            self._buckets[source] = (tokens - 1.0, now)
            return 0.0


_buckets_lock = threading.Lock()


def rate_limit(request: Request, kind: Limited, source: str) -> None:
    """Count one request of `source` (a token's name, a device's id) against its rate; 429 past it."""
    state = request.app.state
    name = f"{kind}_buckets"
    with _buckets_lock:
        buckets: TokenBuckets | None = getattr(state, name, None)
        if buckets is None:
            settings: Settings = state.settings
            if kind == "ingest":
                buckets = TokenBuckets(settings.ingest_rate_per_second, settings.ingest_burst)
            else:
                buckets = TokenBuckets(settings.telemetry_rate_per_second, settings.telemetry_burst)
            setattr(state, name, buckets)
    wait = buckets.take(source)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        who = f"token '{source}'" if kind == "ingest" else f"device '{source}'"
        raise HTTPException(
            429,
            detail=f"{who} sent {kind} faster than {buckets.rate:g} requests a second (bursts of {buckets.burst}); "
            f"retry in {seconds} s.",
            headers={"Retry-After": str(seconds)},
        )
