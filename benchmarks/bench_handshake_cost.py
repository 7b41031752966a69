"""What a TLS 1.3 handshake costs the server inside OpenSSL, with and without
a client certificate: no Twisted, no sockets.

A pyOpenSSL client and a server built by ``rserpool.security.tls.server_options``
(the registrar's settings: ECDSA P-256 certificate, client certificate
required and verified against the CA, or not requested) exchange their
flights through memory BIOs; only the server's calls are timed
(``time.thread_time``).  The client offers X25519 only, as the C generator
of ``bench_sessions.py`` (OpenSSL 3.0) does.  This separates OpenSSL's own
handshake work from what Twisted, TCP and the registrar add per session.

    .venv/bin/python benchmarks/bench_handshake_cost.py [--handshakes N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from OpenSSL import SSL

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_registrar as br  # noqa: E402

from rserpool.security import tls  # noqa: E402


def client_context(cert: Path, key: Path) -> SSL.Context:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.use_certificate_chain_file(str(cert))
    context.use_privatekey_file(str(key))
    context.set_verify(SSL.VERIFY_NONE)
    lib = getattr(SSL, "_lib", None)
    if lib is not None and hasattr(lib, "SSL_CTX_set1_curves_list"):
        lib.SSL_CTX_set1_curves_list(context._context, b"X25519")
    return context


def server_seconds(server_options: tls.ServerTLSOptions, client: SSL.Context) -> float:
    """One handshake; the server's CPU seconds."""
    server = server_options.serverConnectionForTLS(None)
    server.set_accept_state()
    peer = SSL.Connection(client, None)
    peer.set_connect_state()
    spent = 0.0
    for _ in range(10):
        try:
            peer.do_handshake()
        except SSL.WantReadError:
            pass
        try:
            flight = peer.bio_read(65536)
        except SSL.WantReadError:
            flight = b""
        began = time.thread_time()
        if flight:
            server.bio_write(flight)
        try:
            server.do_handshake()
            done = True
        except SSL.WantReadError:
            done = False
        try:
            answer = server.bio_read(65536)
        except SSL.WantReadError:
            answer = b""
        spent += time.thread_time() - began
        if answer:
            peer.bio_write(answer)
        if done:
            try:
                peer.do_handshake()
            except SSL.WantReadError:
                pass
            return spent
    raise RuntimeError("the handshake did not finish")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handshakes", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rserpool-hs-") as tmp:
        bench_pki = br.make_pki(Path(tmp), 1)
        _, cert, key = bench_pki.clients[0]
        client = client_context(cert, key)
        servers = {
            "server_only": tls.server_options(bench_pki.server_cert, bench_pki.server_key, (),
                                              require_client_cert=False),
            "client_certificate": tls.server_options(bench_pki.server_cert, bench_pki.server_key, [bench_pki.ca],
                                                     require_client_cert=True),
        }
        figures = {}
        for _ in range(2):  # alternate, twice, so that other load hits both
            for name, options in servers.items():
                for _ in range(50):
                    server_seconds(options, client)
                total = sum(server_seconds(options, client) for _ in range(args.handshakes))
                figures.setdefault(name, []).append(total / args.handshakes * 1e6)
    summary = {name: round(min(values), 1) for name, values in figures.items()}
    for name, value in summary.items():
        br.say(f"  {name:20s} {value:7.1f} us of server CPU per handshake (best of 2 rounds of "
               f"{args.handshakes})")
    if args.json:
        print(json.dumps({"server_us_per_handshake": summary}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
