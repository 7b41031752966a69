"""The ``rserpool`` operator command: an argparse dispatcher.

Every command-line tool lives in this package, one module per command
family, listed in :data:`SUBCOMMANDS`.
Such a module defines ``register(subparsers)``, which adds its parser with
``subparsers.add_parser(...)`` and sets ``func`` to a handler
``(args: argparse.Namespace) -> int`` (the exit status).  Handlers read
``sys.stdin`` and write ``sys.stdout`` / ``sys.stderr`` when they run, and
import heavy modules inside the handler so ``rserpool --help`` stays fast.

To add a command, write ``rserpool/cli/<command>.py`` with ``register`` and
append its module name here.  The tools sit at the top of the layers: they
may import any package, and no package imports them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from rserpool import __version__

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

#: Modules providing ``register(subparsers)``, in the order of ``--help``.
SUBCOMMANDS: tuple[str, ...] = (
    "rserpool.cli.wire",
    "rserpool.cli.echo",
    "rserpool.cli.resolve",
    "rserpool.cli.filestore",
    "rserpool.cli.config",
    "rserpool.cli.admin",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rserpool",
        description="Operator tools for rserpool, secure Reliable Server Pooling (RFC 5351-5356).",
    )
    parser.add_argument("--version", action="version", version=f"rserpool {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the
    exit status (argparse usage errors exit with status 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args))
    except BrokenPipeError:  # e.g. piped into head(1)
        return 1
    except KeyboardInterrupt:
        return 130
