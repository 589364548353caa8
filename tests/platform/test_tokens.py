"""API tokens: hashed at rest, scopes checked, revocation, the anonymous local mode's refusals."""

from __future__ import annotations

import pytest

from modelyard.errors import ConflictError, InputError, ModelyardError, NotFoundError


def test_a_token_is_shown_once_stored_hashed_and_revocable(settings) -> None:
    from sqlalchemy import create_engine, text

    from modelyard.platform.store.tokens import TokenStore, digest

    store = TokenStore(settings)
    token = store.create("ci", ["operate", "read", "read"], "cli")
    assert token.startswith("myd_") and len(token) > 40
    info = store.authenticate(token)
    assert info is not None and info.name == "ci" and info.scopes == ("read", "operate")
    assert info.allows("read") and not info.allows("admin") and not info.allows("infer")
    with create_engine(settings.platform_database_url).connect() as conn:
        stored = conn.execute(text("SELECT token_sha256, prefix FROM api_tokens")).one()
    assert stored == (digest(token), token[:10])  # the hash and a prefix to recognise it, never the token
    assert store.authenticate(token + "x") is None and store.authenticate("Bearer") is None

    assert store.revoke("ci").revoked is not None
    assert store.authenticate(token) is None
    with pytest.raises(ConflictError, match="a token named 'ci' already exists"):
        store.create("ci", ["read"], "cli")
    with pytest.raises(NotFoundError, match="no token named 'nobody'"):
        store.revoke("nobody")
    with pytest.raises(InputError, match=r"unknown scope 'root' \(scopes: read, infer, ingest, operate, admin\)"):
        store.create("x", ["root"], "cli")
    with pytest.raises(InputError, match="token name 'a b' is not valid"):
        store.create("a b", ["read"], "cli")
    assert store.authenticate(store.create("boss", ["admin"], "cli")).allows("infer")  # type: ignore[union-attr]


def test_anonymous_mode_only_in_embedded_mode_on_loopback(settings) -> None:
    from modelyard.platform.api.auth import anonymous_allowed

    assert anonymous_allowed(settings) is False
    assert anonymous_allowed(settings.model_copy(update={"api_anonymous": True})) is True
    with pytest.raises(ModelyardError, match=r"needs MODELYARD_API_HOST on 127\.0\.0\.1, not 0\.0\.0\.0"):
        anonymous_allowed(settings.model_copy(update={"api_anonymous": True, "api_host": "0.0.0.0"}))
    server = settings.model_copy(update={"api_anonymous": True, "broker_url": "redis://127.0.0.1:6379/0"})
    with pytest.raises(ModelyardError, match="refused in server mode"):
        anonymous_allowed(server)


def test_token_commands(settings) -> None:
    from typer.testing import CliRunner

    from modelyard.platform.cli.main import cli

    runner = CliRunner()
    made = runner.invoke(cli, ["tokens", "create", "ops", "--scope", "operate", "--scope", "read"])
    assert made.exit_code == 0, made.output
    token = made.output.strip().splitlines()[-1]
    assert token.startswith("myd_")
    listed = runner.invoke(cli, ["tokens", "list", "--json"])
    assert '"name": "ops"' in listed.output and token not in listed.output
    assert runner.invoke(cli, ["tokens", "revoke", "ops"]).exit_code == 0
    assert '"revoked": null' not in runner.invoke(cli, ["tokens", "list", "--json"]).output
