"""Bearer tokens of the HTTP API: created once (the only time the token is shown), stored as a
SHA-256 hash with its scopes, revoked by name.

A token is 256 random bits, so a plain SHA-256 (not a slow password hash) is what a leaked
table must be brute-forced against; looking one up is one indexed read.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from modelyard.errors import ConflictError, InputError, NotFoundError
from modelyard.platform.settings import Settings
from modelyard.platform.store.db import ApiToken, ensure_schema, session_factory, utcnow

# What each scope allows; `admin` implies every other one.
SCOPES = {
    "read": "read models, versions, history, requests, model metadata",
    "infer": "call inference endpoints",
    "ingest": "upload inference logs and feedback labels",
    "operate": "promote, roll back, submit trainings, export",
    "admin": "manage tokens; implies every other scope",
}
PREFIX = "myd_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,99}$")


@dataclass(frozen=True)
class TokenInfo:
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created: str
    created_by: str
    revoked: str | None
    last_used: str | None

    def allows(self, scope: str) -> bool:
        return allows(self.scopes, scope)

    def as_dict(self) -> dict[str, object]:
        return {**vars(self), "scopes": list(self.scopes)}


def allows(scopes: tuple[str, ...], scope: str) -> bool:
    """Whether a token with these scopes may do what `scope` covers (admin covers everything)."""
    return scope in scopes or "admin" in scopes


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_scopes(scopes: list[str]) -> tuple[str, ...]:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise InputError(
            f"unknown scope '{unknown[0]}' (scopes: {', '.join(SCOPES)})."
            if unknown
            else f"a token needs at least one scope (scopes: {', '.join(SCOPES)}).",
            code="invalid_scope",
        )
    return tuple(s for s in SCOPES if s in scopes)  # one order, no duplicates


class TokenStore:
    def __init__(self, settings: Settings) -> None:
        url = settings.platform_database_url
        ensure_schema(url, settings.run_folder)
        self._sessions = session_factory(url)

    def create(self, name: str, scopes: list[str], created_by: str) -> str:
        """A new token (returned once, never stored) for a unique name."""
        if not _NAME.match(name):
            raise InputError(
                f"token name '{name}' is not valid: use 1 to 100 letters, digits, '_', '.', '@', ':' or '-'.",
                code="invalid_token_name",
            )
        ordered = check_scopes(scopes)
        token = PREFIX + secrets.token_urlsafe(32)
        row = ApiToken(
            name=name, token_sha256=digest(token), prefix=token[:10], scopes=" ".join(ordered), created_by=created_by
        )
        try:
            with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            raise ConflictError(
                f"a token named '{name}' already exists (revoked ones keep their name).", code="token_exists"
            ) from None
        return token

    def list(self) -> list[TokenInfo]:
        with self._sessions() as session:
            return [_info(r) for r in session.scalars(select(ApiToken).order_by(ApiToken.id))]

    def revoke(self, name: str) -> TokenInfo:
        with self._sessions.begin() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.name == name).with_for_update())
            if row is None:
                raise NotFoundError(f"no token named '{name}'.", code="token_not_found")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            return _info(row)

    def authenticate(self, token: str) -> TokenInfo | None:
        """The live token with this value, or None (unknown or revoked)."""
        if not token.startswith(PREFIX):
            return None
        hashed = digest(token)
        with self._sessions() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == hashed))
            if row is None or row.revoked_at is not None:
                return None
            return _info(row)

    def touch(self, names: set[str]) -> None:
        """Record when tokens were last used (batched by the caller: not one write per request)."""
        if names:
            with self._sessions.begin() as session:
                session.execute(update(ApiToken).where(ApiToken.name.in_(names)).values(last_used_at=utcnow()))


def _info(row: ApiToken) -> TokenInfo:
    def fmt(t: object) -> str | None:
        return t.strftime("%Y-%m-%d %H:%M:%S") if t is not None else None  # type: ignore[attr-defined]

    return TokenInfo(
        row.name,
        row.prefix,
        tuple(row.scopes.split()),
        fmt(row.created_at) or "",
        row.created_by,
        fmt(row.revoked_at),
        fmt(row.last_used_at),
    )
