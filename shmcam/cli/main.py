"""The `shmcam` command: one entry point, a sub-command per job."""

from __future__ import annotations

import argparse
import logging
import sys

from shmcam.coordinator import daemon as coordinator
from shmcam.supervisor import daemon

from . import check_config, demo, ring_demo, top


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shmcam",
        description="Real-time camera image processing: shared-memory rings, bsread streams.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_parser(commands)
    ring_demo.add_parser(commands)
    daemon.add_parser(commands)
    coordinator.add_parser(commands)
    top.add_parser(commands)
    check_config.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
