"""The edge fleet's commands: keys, bundle, devices, deploy, rollout (registered by cli/main.py)."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer
from rich.console import Console

from modelyard.errors import InputError
from modelyard.platform.cli.common import JsonOpt
from modelyard.platform.cli.common import current_platform as _platform
from modelyard.platform.cli.common import print_json as _print_json

out = Console()
keys_cli = typer.Typer(no_args_is_help=True, help="The key pair that signs edge bundles.")
devices_cli = typer.Typer(help="Enrolled devices; enrollment tokens; decommission.", invoke_without_command=True)
rollout_cli = typer.Typer(no_args_is_help=True, help="Rollouts of bundles to device groups.")


@keys_cli.command("create")
def keys_create() -> None:
    """Make the signing key pair: the private key stays here (mode 0600), the public key goes to devices."""
    from modelyard.platform.fleet.bundles import create_keys

    private, public = create_keys(_platform())
    out.print(f"private key: {private} (mode 0600, never leaves the control plane)")
    out.print(f"public key:  {public} (devices receive it when they enroll)")


def bundle(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION (NAME alone: the champion).")],
    target: Annotated[str, typer.Option(help="The export target whose variant is bundled.")] = "edge-cpu",
    force: Annotated[bool, typer.Option("--force", help="Build a new bundle even if one exists.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build a version's signed edge bundle (stored as an MLflow artifact of the version)."""
    from modelyard.platform.fleet.operations import bundle as build

    row = build(_platform(), ref, target, "cli", force)
    if as_json:
        return _print_json(row)
    out.print(
        f"bundle {row['model']}/{row['version']} ({row['target']}): {row['variant']}, {row['size']} bytes, "
        f"sha256 {row['sha256'][:16]}…, signed\n  {row['artifact']}"
    )


@devices_cli.callback()
def devices(
    ctx: typer.Context,
    group: Annotated[str | None, typer.Option(help="Only this group.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Enrolled devices: group, tags, profile, installed version, health, last seen."""
    if ctx.invoked_subcommand is not None:
        return
    from modelyard.platform.fleet.operations import device_rows
    from modelyard.platform.views.fleet import print_devices

    rows = device_rows(_platform(), group)
    if as_json:
        return _print_json(rows)
    print_devices(out, rows)


@devices_cli.command("token")
def devices_token(
    group: Annotated[str, typer.Option(help="The group devices enrolling with it join.")],
    tag: Annotated[list[str] | None, typer.Option(help="key=value, given to every device (repeatable).")] = None,
    uses: Annotated[int, typer.Option(help="How many devices may enroll with it.")] = 1,
    hours: Annotated[float | None, typer.Option(help="How long it stays valid; default 24.")] = None,
) -> None:
    """An enrollment token (shown once; stored hashed)."""
    from modelyard.platform.fleet.devices import Devices

    tags = _tags(tag or [])
    token = Devices(_platform().settings).create_token(group, tags, uses, hours, "cli")
    out.print(f"enrollment token for group [bold]{group}[/bold] ({uses} use{'s' * (uses != 1)}); shown once:")
    typer.echo(token)


def _tags(given: list[str]) -> dict[str, str]:
    tags = {}
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or not re.match(r"^[A-Za-z0-9_.-]{1,50}$", key):
            raise InputError(f"tag '{item}' is not key=value.")
        tags[key] = value
    return tags


@devices_cli.command("decommission")
def devices_decommission(device_id: str) -> None:
    """Revoke a device's credential: it is refused from its next request on."""
    from modelyard.platform.fleet.devices import Devices

    device = Devices(_platform().settings).decommission(device_id, "cli")
    out.print(f"device {device.id} decommissioned; its credential is revoked")


def deploy(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION, e.g. cancer@champion.")],
    group: Annotated[str, typer.Option(help="The device group.")],
    canary: Annotated[str | None, typer.Option(help="Canary share, e.g. 10%; default: the group's.")] = None,
    observe: Annotated[float | None, typer.Option(help="Seconds to watch the canary; default: the group's.")] = None,
    max_failures: Annotated[
        float | None, typer.Option(help="Share of a phase's devices that may fail before it halts (0-1).")
    ] = None,
    follow: Annotated[
        bool | None, typer.Option("--follow/--no-follow", help="The group follows the model's champion from now on.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the rollout until it ends.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 900.0,
    as_json: JsonOpt = False,
) -> None:
    """Roll a version out to a group: canary, observation window, then the rest; halts by itself on failures."""
    from modelyard.platform.fleet.operations import deploy as start
    from modelyard.platform.fleet.operations import wait as follow_rollout
    from modelyard.platform.views.fleet import print_rollout, rollout_progress

    share = None if canary is None else _percent(canary)
    status = start(_platform(), ref, group, "cli", share, observe, max_failures, follow)
    if wait:
        if not as_json:
            out.print(f"rollout {status['id']}: {status['model']}/{status['version']} to group {group}")
        status = follow_rollout(
            _platform(), status["id"], timeout, None if as_json else lambda s: out.print(rollout_progress(s))
        )
    if as_json:
        return _print_json(status)
    print_rollout(out, status)
    if wait and status["state"] != "completed":
        raise typer.Exit(1)


def _percent(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise InputError(f"--canary '{text}' is not a percentage such as 10%.") from None
    if not 0 < value <= 100:
        raise InputError(f"--canary must be between 0% and 100%, not {text}.")
    return value


@rollout_cli.command("status")
def rollout_status(
    rollout_id: Annotated[int | None, typer.Argument(help="A rollout id; default: the newest ones.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model's.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """One rollout with its devices, or the newest rollouts."""
    from modelyard.platform.fleet.rollouts import Rollouts
    from modelyard.platform.views.fleet import print_rollout, print_rollouts

    rollouts = Rollouts(_platform().settings)
    data: Any = rollouts.status(rollout_id) if rollout_id else rollouts.recent(model)
    if as_json:
        return _print_json(data)
    (print_rollout if rollout_id else print_rollouts)(out, data)


@rollout_cli.command("pause")
def rollout_pause(rollout_id: int) -> None:
    """Stop assigning devices; installs under way finish."""
    from modelyard.platform.fleet.rollouts import Rollouts

    Rollouts(_platform().settings).pause(rollout_id, "cli")
    out.print(f"rollout {rollout_id} paused")


@rollout_cli.command("resume")
def rollout_resume(rollout_id: int) -> None:
    """Go on from the phase it paused in (an observation window starts again)."""
    from modelyard.platform.fleet.rollouts import Rollouts

    Rollouts(_platform().settings).resume(rollout_id, "cli")
    out.print(f"rollout {rollout_id} resumed")


@rollout_cli.command("abort")
def rollout_abort(
    rollout_id: int,
    reason: Annotated[str, typer.Option(help="Why; kept in the audit log.")] = "aborted by an operator",
) -> None:
    """Stop a rollout: every device it touched goes back to what it ran before."""
    from modelyard.platform.fleet.rollouts import Rollouts

    Rollouts(_platform().settings).abort(rollout_id, "cli", reason)
    out.print(f"rollout {rollout_id} aborted; the devices it touched go back")


def register(cli: typer.Typer) -> None:
    cli.add_typer(keys_cli, name="keys")
    cli.command()(bundle)
    cli.add_typer(devices_cli, name="devices")
    cli.command()(deploy)
    cli.add_typer(rollout_cli, name="rollout")
