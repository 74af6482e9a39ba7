"""`kd` entry point. Each module adds its own sub-commands, so this file stays a table of contents."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that define add_commands(subparsers); each sub-command sets func(args) -> int.
COMMAND_MODULES = ("kdcli.local", "kdcli.client", "kdcli.admin")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kd", description="Knowledge distillation with robustness evidence")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
