"""The edge fleet's commands: `keys`, `versions bundle`, `devices`, `rollouts`."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from modelyard.errors import InputError
from modelyard.platform.cli.common import (
    JsonOpt,
    ReasonOpt,
    RefArg,
    TimeoutOpt,
    WaitOpt,
    current_platform,
    out,
    percent,
    print_json,
)

keys_cli = typer.Typer(no_args_is_help=True, help="The key pair that signs edge bundles.")
devices_cli = typer.Typer(no_args_is_help=True, help="Enrolled devices: list, enrollment tokens, decommission.")
rollouts_cli = typer.Typer(no_args_is_help=True, help="Phased rollouts of bundles to device groups.")


@keys_cli.command("create")
def keys_create() -> None:
    """Make the signing key pair: the private key stays here (mode 0600), the public key goes to devices."""
    from modelyard.platform.fleet.bundles import create_keys

    private, public = create_keys(current_platform())
    out.print(f"private key: {private} (mode 0600, never leaves the control plane)")
    out.print(f"public key:  {public} (devices receive it when they enroll)")


def versions_bundle(
    ref: RefArg,
    target: Annotated[str, typer.Option(help="The export target whose variant is bundled.")] = "edge-cpu",
    force: Annotated[bool, typer.Option("--force", help="Build a new bundle even if one exists.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build a version's signed edge bundle (stored as an MLflow artifact of the version)."""
    from modelyard.platform.fleet.operations import bundle as build

    row = build(current_platform(), ref, target, "cli", force)
    if as_json:
        return print_json(row)
    out.print(
        f"bundle {row['model']}/{row['version']} ({row['target']}): {row['variant']}, {row['size']} bytes, "
        f"sha256 {row['sha256'][:16]}…, signed\n  {row['artifact']}"
    )


@devices_cli.command("list")
def devices_list(
    group: Annotated[str | None, typer.Option(help="Only this group.")] = None, as_json: JsonOpt = False
) -> None:
    """Enrolled devices: group, tags, profile, installed version, health, last seen."""
    from modelyard.platform.fleet.operations import device_rows
    from modelyard.platform.views.fleet import print_devices

    rows = device_rows(current_platform(), group)
    if as_json:
        return print_json(rows)
    print_devices(out, rows)


@devices_cli.command("enrollment-token")
def devices_enrollment_token(
    group: Annotated[str, typer.Option(help="The group devices enrolling with it join.")],
    tag: Annotated[list[str] | None, typer.Option(help="key=value, given to every device (repeatable).")] = None,
    uses: Annotated[int, typer.Option(min=1, help="How many devices may enroll with it.")] = 1,
    hours: Annotated[float | None, typer.Option(help="How long it stays valid; default 24.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """An enrollment token (shown once; stored hashed)."""
    from modelyard.platform.fleet.devices import Devices

    token = Devices(current_platform().settings).create_token(group, _tags(tag or []), uses, hours, "cli")
    if as_json:
        return print_json({"group": group, "uses": uses, "token": token})
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

    device = Devices(current_platform().settings).decommission(device_id, "cli")
    out.print(f"device {device.id} decommissioned; its credential is revoked")


@rollouts_cli.command("start")
def rollouts_start(
    ref: RefArg,
    group: Annotated[str, typer.Option(help="The device group.")],
    canary: Annotated[str | None, typer.Option(help="Canary share, e.g. 10%; default: the group's.")] = None,
    observe: Annotated[float | None, typer.Option(help="Seconds to watch the canary; default: the group's.")] = None,
    max_failures: Annotated[
        str | None, typer.Option(help="Share of a phase's devices that may fail before it halts, e.g. 20%.")
    ] = None,
    follow: Annotated[
        bool | None, typer.Option("--follow/--no-follow", help="The group follows the model's champion from now on.")
    ] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 900.0,
    as_json: JsonOpt = False,
) -> None:
    """Roll a version out to a group: canary, observation window, then the rest; halts by itself on failures."""
    from modelyard.platform.fleet.operations import deploy

    share = None if canary is None else percent(canary, "--canary")
    failures = None if max_failures is None else percent(max_failures, "--max-failures") / 100
    status = deploy(current_platform(), ref, group, "cli", share, observe, failures, follow)
    if wait and not as_json:
        out.print(f"rollout {status['id']}: {status['model']}/{status['version']} to group {group}")
    _show(status, wait, timeout, as_json)


@rollouts_cli.command("list")
def rollouts_list(
    model: Annotated[str | None, typer.Option(help="Only this model's.")] = None,
    group: Annotated[str | None, typer.Option(help="Only this group's.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The newest rollouts with their device counts."""
    from modelyard.platform.fleet.rollouts import Rollouts
    from modelyard.platform.views.fleet import print_rollouts

    data = Rollouts(current_platform().settings).recent(model, group, limit)
    if as_json:
        return print_json(data)
    print_rollouts(out, data)


@rollouts_cli.command("show")
def rollouts_show(
    rollout_id: int, wait: WaitOpt = False, timeout: TimeoutOpt = 900.0, as_json: JsonOpt = False
) -> None:
    """One rollout with its devices; --wait follows it until it stops running."""
    from modelyard.platform.fleet.rollouts import Rollouts

    _show(Rollouts(current_platform().settings).status(rollout_id), wait, timeout, as_json)


def _show(status: dict[str, Any], wait: bool, timeout: float, as_json: bool) -> None:
    from modelyard.platform.fleet.operations import wait as follow_rollout
    from modelyard.platform.views.fleet import print_rollout, rollout_progress

    if wait:
        on_change = None if as_json else (lambda s: out.print(rollout_progress(s)))
        status = follow_rollout(current_platform(), status["id"], timeout, on_change)
    if as_json:
        print_json(status)
    else:
        print_rollout(out, status)
    if wait and status["state"] != "completed":
        raise typer.Exit(1)


@rollouts_cli.command("pause")
def rollouts_pause(rollout_id: int) -> None:
    """Stop assigning devices; installs under way finish."""
    from modelyard.platform.fleet.rollouts import Rollouts

    Rollouts(current_platform().settings).pause(rollout_id, "cli")
    out.print(f"rollout {rollout_id} paused")


@rollouts_cli.command("resume")
def rollouts_resume(rollout_id: int) -> None:
    """Go on from the phase it paused in (an observation window starts again)."""
    from modelyard.platform.fleet.rollouts import Rollouts

    Rollouts(current_platform().settings).resume(rollout_id, "cli")
    out.print(f"rollout {rollout_id} resumed")


@rollouts_cli.command("abort")
def rollouts_abort(rollout_id: int, reason: ReasonOpt = "aborted by an operator") -> None:
    """Stop a rollout: every device it touched goes back to what it ran before."""
    from modelyard.platform.fleet.rollouts import Rollouts

    Rollouts(current_platform().settings).abort(rollout_id, "cli", reason)
    out.print(f"rollout {rollout_id} aborted; the devices it touched go back")


def register(cli: typer.Typer, panel: str) -> None:
    from modelyard.platform.cli.registry import versions_cli

    versions_cli.command("bundle")(versions_bundle)
    cli.add_typer(devices_cli, name="devices", rich_help_panel=panel)
    cli.add_typer(rollouts_cli, name="rollouts", rich_help_panel=panel)
    cli.add_typer(keys_cli, name="keys", rich_help_panel=panel)
