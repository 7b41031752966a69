"""``rserpool config-doc`` and ``rserpool config-check``."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    doc = subparsers.add_parser("config-doc", help="print the configuration reference (docs/configuration.md)")
    doc.set_defaults(func=_doc)
    check = subparsers.add_parser("config-check", help="validate a registrar configuration file")
    check.add_argument("config", help="the ini file")
    check.set_defaults(func=_check)


def _doc(args: argparse.Namespace) -> int:
    from rserpool.config import schema_markdown

    sys.stdout.write(schema_markdown())
    return 0


def _check(args: argparse.Namespace) -> int:
    from rserpool.config import ConfigError, load_config

    try:
        load_config(args.config)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    print(f"{args.config}: valid")
    return 0
