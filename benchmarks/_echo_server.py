"""The baseline of ``bench_registrar.py``: a minimal Twisted TLS server that
speaks just enough of the TCP mapping to be driven by the same load
generator.

It answers each DATA chunk with a precomputed response (an INIT before the
first one, then a DATA chunk of exactly the size the registrar's answer to
that request has, followed by the ACK chunk), chosen by the request chunk's
length.  It decodes nothing beyond chunk headers, keeps no state and has no
TSNs or timers (it sets TCP_NODELAY, as the registrar's channels do), so its
rate is what Twisted's TLS transport and reactor reach for these message
sizes on one core: the ceiling for a registrar.  Like the registrar, it
writes each answer and its ACK in one ``write``.

    python benchmarks/_echo_server.py SPEC.json

SPEC holds ``cert``, ``key``, ``ca`` (PEM paths) and ``responses``
(``{request chunk length: response bytes in hex}``).
``"style": "twisted-default"`` (used by ``bench_echo_styles.py``) replaces
the registrar's TLS settings with Twisted's defaults
(``PrivateCertificate.options()``: no client certificate requested) and
leaves Nagle's algorithm on, as the performance anchors' echo server did.  TLS is configured
exactly as the registrar's (``rserpool.security.tls.server_options`` with
client certificates required).  It prints ``READY <port>`` once listening
and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory

_INIT = b"\x01\x00\x00\x04"  # INIT, no fields omitted: what the registrar sends


class EchoChannel(Protocol):
    """Answers every DATA chunk with the precomputed response for its length."""

    def __init__(self, responses: dict[int, bytes], default: bytes, no_delay: bool = True) -> None:
        self._responses = responses
        self._default = default
        self._no_delay = no_delay
        self._buf = b""
        self._first = True

    def connectionMade(self) -> None:
        # The registrar's channels set TCP_NODELAY (through the TLS wrapper):
        # the baseline does the same so both are measured alike.
        if self._no_delay and hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)

    def dataReceived(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        size = len(buf)
        offset = 0
        write = self.transport.write
        while size - offset >= 4:
            length = (buf[offset + 2] << 8) | buf[offset + 3]
            if length < 4:
                self.transport.abortConnection()
                return
            total = (length + 3) & ~3
            if size - offset < total:
                break
            if buf[offset] == 0:  # DATA
                response = self._responses.get(length, self._default)
                if self._first:
                    self._first = False
                    response = _INIT + response
                write(response)
            offset += total
        self._buf = buf[offset:] if offset < size else b""


class EchoFactory(Factory):
    def __init__(self, responses: dict[int, bytes], no_delay: bool = True) -> None:
        self.responses = responses
        self.default = next(iter(responses.values()))
        self.no_delay = no_delay

    def buildProtocol(self, addr: Any) -> EchoChannel:
        return EchoChannel(self.responses, self.default, self.no_delay)


def main(argv: list[str]) -> int:
    from twisted.internet import reactor

    from rserpool.security import tls

    with open(argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    responses = {int(k): bytes.fromhex(v) for k, v in spec["responses"].items()}
    twisted_default = spec.get("style") == "twisted-default"
    if twisted_default:
        from twisted.internet.ssl import PrivateCertificate

        with open(spec["cert"], encoding="ascii") as cert, open(spec["key"], encoding="ascii") as key:
            options: Any = PrivateCertificate.loadPEM(cert.read() + key.read()).options()
    else:
        options = tls.server_options(spec["cert"], spec["key"], [spec["ca"]], require_client_cert=True)
    factory = EchoFactory(responses, no_delay=not twisted_default)
    port = reactor.listenTCP(0, TLSMemoryBIOFactory(options, False, factory), interface="127.0.0.1")
    print(f"READY {port.getHost().port}", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
