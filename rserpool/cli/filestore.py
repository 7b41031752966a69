"""``rserpool srp|chap|certmap|group|store|rules``: manage the embedded files.

    rserpool srp add IDENTITY [--password-file F] [--replace]   (else a TTY prompt)
    rserpool srp remove IDENTITY
    rserpool chap set IDENTITY [--secret-file F]                (else a TTY prompt)
    rserpool chap remove IDENTITY
    rserpool certmap add FINGERPRINT|SUBJECT IDENTITY [--groups a,b]
    rserpool certmap remove FINGERPRINT|SUBJECT
    rserpool group set IDENTITY GROUP[,GROUP...]
    rserpool group remove IDENTITY
    rserpool store list
    rserpool rules check FILE [--identity X --groups a,b --action register --pool P]

Every command takes ``--file`` (default ``$RSERPOOL_CREDENTIALS`` or
``/etc/rserpool/credentials``).  Passwords and secrets are read from a file
(first line) or from a TTY with ``getpass`` (twice); they are never taken on
the command line, echoed or printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

__all__ = ["register"]

DEFAULT_FILE = "/etc/rserpool/credentials"
MAX_SECRET_FILE = 4096


class _ToolError(Exception):
    pass


def _secret(path: str | None, what: str) -> str:
    """A password or secret from the first line of ``path`` or from a TTY."""
    if path is not None:
        try:
            with open(path, "rb") as handle:
                raw = handle.read(MAX_SECRET_FILE + 1)
        except OSError as exc:
            raise _ToolError(f"{path}: {exc.strerror}") from None
        if len(raw) > MAX_SECRET_FILE:
            raise _ToolError(f"{path}: a {what} file holds one line of at most {MAX_SECRET_FILE} bytes")
        lines = raw.decode("utf-8", "strict").splitlines()
        value = lines[0] if lines else ""
    else:
        import getpass

        if not sys.stdin.isatty():
            raise _ToolError(f"no TTY to prompt for the {what}: use --{what}-file")
        value = getpass.getpass(f"{what.capitalize()}: ")
        if getpass.getpass(f"{what.capitalize()} again: ") != value:
            raise _ToolError(f"the two {what}s differ")
    if not value:
        raise _ToolError(f"empty {what}")
    return value


def _edit(args: argparse.Namespace, edit: Callable[[str], str]) -> None:
    from rserpool.backends import filestore as fs

    fs.update_file(args.file, edit)


def _srp_add(args: argparse.Namespace) -> int:
    from rserpool.backends import filestore_format as fmt
    from rserpool.security import srp

    identity = fmt.check_identity(args.identity)
    password = _secret(args.password_file, "password")
    salt, verifier = srp.make_verifier(identity, password)
    line = fmt.srp_line(identity, salt, verifier)
    outcome: list[bool] = []

    def edit(text: str) -> str:
        if not args.replace and identity in fmt.parse_credentials(text, args.file).srp:
            raise _ToolError(f"{identity} already has an SRP verifier (use --replace)")
        new_text, replaced = fmt.set_entry(text, line)
        outcome.append(replaced)
        return new_text

    _edit(args, edit)
    print(f"{'replaced' if outcome[0] else 'added'} SRP verifier for {identity} in {args.file}")
    return 0


def _remove(kind: str, label: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from rserpool.backends import filestore_format as fmt

        key = args.key if kind == "cert" else fmt.check_identity(args.key)
        removed: list[int] = []

        def edit(text: str) -> str:
            new_text, count = fmt.remove_entry(text, kind, key)
            removed.append(count)
            return new_text

        _edit(args, edit)
        if not removed[0]:
            print(f"no {label} for {args.key} in {args.file}", file=sys.stderr)
            return 1
        print(f"removed {label} for {args.key} from {args.file}")
        return 0

    return run


def _chap_set(args: argparse.Namespace) -> int:
    from rserpool.backends import filestore_format as fmt

    identity = fmt.check_identity(args.identity)
    secret = _secret(args.secret_file, "secret").encode("utf-8")
    outcome: list[bool] = []

    def edit(text: str) -> str:
        new_text, replaced = fmt.set_entry(text, fmt.chap_line(identity, secret))
        outcome.append(replaced)
        return new_text

    _edit(args, edit)
    print(f"{'replaced' if outcome[0] else 'set'} CHAP secret for {identity} in {args.file} (mode 0600)")
    return 0


def _groups_arg(text: str | None) -> list[str]:
    return [g.strip() for g in (text or "").split(",") if g.strip()]


def _certmap_add(args: argparse.Namespace) -> int:
    from rserpool.backends import filestore_format as fmt

    line = fmt.cert_line(args.key, args.identity, _groups_arg(args.groups))
    _edit(args, lambda text: fmt.set_entry(text, line)[0])
    print(f"mapped {fmt.cert_key(args.key)} to {args.identity} in {args.file}")
    return 0


def _group_set(args: argparse.Namespace) -> int:
    from rserpool.backends import filestore_format as fmt

    line = fmt.group_line(args.identity, _groups_arg(args.groups))
    _edit(args, lambda text: fmt.set_entry(text, line)[0])
    print(f"groups of {args.identity}: {', '.join(sorted(_groups_arg(args.groups)))}")
    return 0


def _store_list(args: argparse.Namespace) -> int:
    from rserpool.backends import filestore as fs

    data, warnings = fs.load_file(args.file)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for identity, entry in sorted(data.srp.items()):
        print(f"srp    {identity}  {entry.group}")
    for identity in sorted(data.chap):
        print(f"chap   {identity}  (secret set)")
    for key, cert in sorted(data.certs.items()):
        print(f"cert   {cert.identity}  {','.join(sorted(cert.groups)) or '-'}  {key}")
    for identity, groups in sorted(data.groups.items()):
        print(f"groups {identity}  {','.join(sorted(groups))}")
    return 0


def _rules_check(args: argparse.Namespace) -> int:
    from rserpool.security.authz import RulesAuthorizer, load_rules

    rules = load_rules(args.rules_file)
    print(f"{args.rules_file}: {len(rules)} rules, OK")
    if args.action is None:
        return 0
    if args.pool is None:
        raise _ToolError("--action needs --pool")
    allowed = RulesAuthorizer(rules).decide(args.identity, _groups_arg(args.groups), args.action,
                                            args.pool.encode("utf-8"))
    who = args.identity if args.identity is not None else "(anonymous)"
    print(f"{who} {args.action} {args.pool}: {'allowed' if allowed else 'refused'}")
    return 0 if allowed else 1


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from rserpool.backends.filestore_format import FileStoreError
        from rserpool.security.authz import RulesError

        try:
            return func(args)
        except (_ToolError, FileStoreError, RulesError, UnicodeDecodeError) as exc:
            print(f"rserpool {args.command}: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"rserpool {args.command}: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
            return 1

    return run


def _file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", "-f", default=os.environ.get("RSERPOOL_CREDENTIALS", DEFAULT_FILE),
                        help="credentials file (default: $RSERPOOL_CREDENTIALS or %(default)s)")


def _leaf(sub: argparse._SubParsersAction, name: str, help_text: str,
          func: Callable[[argparse.Namespace], int], command: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(func=_guarded(func), command=f"{command} {name}")
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    srp = subparsers.add_parser("srp", help="SRP-6a verifiers in the credentials file")
    srp_sub = srp.add_subparsers(title="srp commands", metavar="ACTION", required=True)
    p = _leaf(srp_sub, "add", "create an SRP verifier (password from a file or a TTY prompt)", _srp_add, "srp")
    p.add_argument("identity")
    p.add_argument("--password-file", help="read the password from the first line of this file")
    p.add_argument("--replace", action="store_true", help="replace an existing verifier")
    _file_option(p)
    p = _leaf(srp_sub, "remove", "remove an identity's SRP verifier", _remove("srp", "SRP verifier"), "srp")
    p.add_argument("key", metavar="identity")
    _file_option(p)

    chap = subparsers.add_parser("chap", help="CHAP secrets in the credentials file")
    chap_sub = chap.add_subparsers(title="chap commands", metavar="ACTION", required=True)
    p = _leaf(chap_sub, "set", "set a CHAP secret (from a file or a TTY prompt)", _chap_set, "chap")
    p.add_argument("identity")
    p.add_argument("--secret-file", help="read the secret from the first line of this file")
    _file_option(p)
    p = _leaf(chap_sub, "remove", "remove an identity's CHAP secret", _remove("chap", "CHAP secret"), "chap")
    p.add_argument("key", metavar="identity")
    _file_option(p)

    certmap = subparsers.add_parser("certmap", help="certificate to identity mappings")
    cert_sub = certmap.add_subparsers(title="certmap commands", metavar="ACTION", required=True)
    p = _leaf(cert_sub, "add", "map a SHA-256 fingerprint or an RFC 4514 subject to an identity",
              _certmap_add, "certmap")
    p.add_argument("key", metavar="FINGERPRINT|SUBJECT")
    p.add_argument("identity")
    p.add_argument("--groups", help="comma-separated groups of the identity")
    _file_option(p)
    p = _leaf(cert_sub, "remove", "remove a certificate mapping", _remove("cert", "certificate mapping"),
              "certmap")
    p.add_argument("key", metavar="FINGERPRINT|SUBJECT")
    _file_option(p)

    group = subparsers.add_parser("group", help="groups of identities (for @group rules)")
    group_sub = group.add_subparsers(title="group commands", metavar="ACTION", required=True)
    p = _leaf(group_sub, "set", "set an identity's groups", _group_set, "group")
    p.add_argument("identity")
    p.add_argument("groups", help="comma-separated group names")
    _file_option(p)
    p = _leaf(group_sub, "remove", "remove an identity's group line", _remove("group", "groups"), "group")
    p.add_argument("key", metavar="identity")
    _file_option(p)

    store = subparsers.add_parser("store", help="inspect the credentials file")
    store_sub = store.add_subparsers(title="store commands", metavar="ACTION", required=True)
    p = _leaf(store_sub, "list", "check the file and list its entries (never secrets)", _store_list, "store")
    _file_option(p)

    rules = subparsers.add_parser("rules", help="pool authorization rules files")
    rules_sub = rules.add_subparsers(title="rules commands", metavar="ACTION", required=True)
    p = _leaf(rules_sub, "check", "parse a rules file; optionally evaluate one request", _rules_check, "rules")
    p.add_argument("rules_file", metavar="FILE")
    p.add_argument("--identity", help="the identity asking (default: anonymous)")
    p.add_argument("--groups", help="comma-separated groups of the identity")
    p.add_argument("--action", choices=("register", "deregister", "resolve", "peer", "admin", "opaque-transport",
                                        "enrp"),
                   help="the action asked about ('enrp' is read as 'peer')")
    p.add_argument("--pool", help="pool handle (UTF-8)")
