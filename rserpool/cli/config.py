"""``rserpool config-doc`` and ``rserpool config-check``."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    doc = subparsers.add_parser("config-doc", help="print the configuration reference (docs/configuration.md)")
    doc.set_defaults(func=_doc)
    check = subparsers.add_parser(
        "config-check", help="validate a registrar configuration file",
        description="Load FILE and check it as twistd rserpool-registrar does before starting "
                    "(files, keys, plugins, backends, listening endpoints), without starting "
                    "anything: one line per problem, exit status 1 if there is any.")
    check.add_argument("config", metavar="FILE", help="the ini file")
    check.add_argument("--try-bind", action="store_true",
                       help="also open and close every listening endpoint (finds a port in use or "
                            "an address this host does not have)")
    check.set_defaults(func=_check)


def _doc(args: argparse.Namespace) -> int:
    from rserpool.config import schema_markdown

    sys.stdout.write(schema_markdown())
    return 0


def _check(args: argparse.Namespace) -> int:
    from rserpool.config import ConfigError, load_config
    from rserpool.startup import check
    from rserpool.tap import build_registrar

    try:
        problems = check(load_config(args.config), build=build_registrar, try_bind=args.try_bind)
    except ConfigError as exc:
        problems = [line.removeprefix(f"{args.config}: ") for line in str(exc).splitlines()]
    for problem in problems:
        print(f"{args.config}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{args.config}: valid")
    return 0
