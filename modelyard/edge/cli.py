"""`modelyard-agent`: enroll, run, status (argparse: the agent installs without typer/rich)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from modelyard.edge.config import Options
from modelyard.edge.errors import EdgeError
from modelyard.edge.version import AGENT_VERSION


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelyard-agent", description="modelyard edge device agent.")
    parser.add_argument("--version", action="version", version=f"modelyard-agent {AGENT_VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)

    enroll = commands.add_parser("enroll", help="enroll this device with a one-time token")
    enroll.add_argument("--server", required=True, help="control plane URL, e.g. http://10.0.0.5:8000")
    enroll.add_argument("--token", required=True, help="one-time enrollment token")
    enroll.add_argument("--device-id", required=True, help="this device's id (letters, digits, _ . -)")
    enroll.add_argument("--tag", action="append", default=[], metavar="K=V", help="device tag (repeatable)")
    enroll.add_argument("--home", required=True, type=Path, help="agent home folder")

    run = commands.add_parser("run", help="serve locally and follow the control plane")
    run.add_argument("--home", required=True, type=Path)
    run.add_argument("--port", type=int, default=0, help="local OIP port on 127.0.0.1 (0: any free; see <home>/port)")
    run.add_argument("--heartbeat-seconds", type=float, default=None, help="override the control plane's interval")
    run.add_argument("--max-bundle-bytes", type=int, default=1024**3, help="largest bundle accepted (default 1 GiB)")
    run.add_argument("--max-telemetry-bytes", type=int, default=64 * 1024**2, help="telemetry buffer bound (64 MiB)")
    run.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    run.add_argument(
        "--backoff-cap-seconds",
        type=float,
        default=300.0,
        help="longest wait between retries while the control "
        "plane is unreachable (jittered exponential backoff up to this)",
    )
    limits = Options()
    run.add_argument(
        "--download-timeout-seconds", type=float, default=limits.download_timeout_seconds,
        help="longest one bundle download may take before it gives up and is reported failed (0: no limit)",
    )  # fmt: skip
    run.add_argument(
        "--download-min-rate", type=float, default=limits.download_min_bytes_per_second, metavar="BYTES_PER_S",
        help="a download bringing less than this per rate window gives up (0: no minimum)",
    )  # fmt: skip
    run.add_argument(
        "--download-rate-window-seconds", type=float, default=limits.download_rate_window_seconds,
        help="the window the minimum download rate is measured over",
    )  # fmt: skip
    run.add_argument(
        "--probation-successes", type=int, default=limits.probation_successes,
        help="good inferences that commit a freshly switched bundle (0: commit at the switch)",
    )  # fmt: skip
    run.add_argument(
        "--probation-seconds", type=float, default=limits.probation_seconds,
        help="time without a failed inference that commits a freshly switched bundle (0: commit at the switch)",
    )  # fmt: skip
    run.add_argument(
        "--probation-max-failures", type=int, default=limits.probation_max_failures,
        help="failed inferences on probation that roll a bundle back locally (or the control plane's limit, if lower)",
    )  # fmt: skip
    run.add_argument("--log-level", default="INFO")

    status = commands.add_parser("status", help="print the agent's state as JSON")
    status.add_argument("--home", required=True, type=Path)
    return parser


def _tags(pairs: list[str]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise EdgeError(f"--tag {pair!r} is not KEY=VALUE.")
        tags[key] = value
    return tags


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from modelyard.edge.agent import Agent

        if args.command == "enroll":
            enrollment = Agent(args.home).enroll(args.server, args.token, args.device_id, _tags(args.tag))
            print(f"enrolled as {enrollment.device_id} (group {enrollment.group or '-'}) with {args.server}")
        elif args.command == "run":
            logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
            options = Options(
                heartbeat_seconds=args.heartbeat_seconds, max_bundle_bytes=args.max_bundle_bytes,
                max_telemetry_bytes=args.max_telemetry_bytes, threads=args.threads,
                backoff_cap_seconds=args.backoff_cap_seconds, download_timeout_seconds=args.download_timeout_seconds,
                download_min_bytes_per_second=args.download_min_rate,
                download_rate_window_seconds=args.download_rate_window_seconds,
                probation_successes=args.probation_successes, probation_seconds=args.probation_seconds,
                probation_max_failures=args.probation_max_failures,
            )  # fmt: skip
            Agent(args.home, options).run(port=args.port)
        else:
            print(json.dumps(Agent(args.home).status(), indent=2))
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
