"""A bare Twisted mutual-TLS server and its load, for benchmarks/bench_storm.py:
the yardstick the registrars' re-registration rate is compared with.

``server``: a Twisted TLS listener built by ``rserpool.security.tls.
server_options`` exactly as the registrar's (the same certificate, client
certificates required and verified against the CA), doing nothing but the
handshake: once it completes it writes one byte, the client closes.  With
``--resume`` it keeps sessions (cache and TLS 1.3 tickets).

``client``: keeps ``--parallel`` connections in flight until ``--count``
handshakes completed, each with the PE's client certificate, verifying the
server by name; with ``--resume`` every connection after the first offers
the session of an earlier one.  It prints one JSON line: how many, when
the first started and the last ended, how many resumed.

    python benchmarks/_bare_tls.py server --cert ... --key ... --ca ... [--resume]
    python benchmarks/_bare_tls.py client --port P --name N --cert ... --key ... --ca ... --count 1000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from twisted.internet import defer, endpoints, protocol, reactor  # noqa: E402
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator  # noqa: E402
from zope.interface import implementer  # noqa: E402

from rserpool.security import tls  # noqa: E402
from rserpool.security._internals import session_reused  # noqa: E402
from rserpool.service.tlsfactory import TLSServerFactory  # noqa: E402


@implementer(IHandshakeListener)
class _Server(protocol.Protocol):
    def handshakeCompleted(self) -> None:  # noqa: N802 (Twisted)
        self.factory.handshakes += 1
        self.transport.write(b"x")


@implementer(IOpenSSLClientConnectionCreator)
class _Resuming:
    """``ClientTLSOptions`` offering the last session it saw."""

    def __init__(self, options: tls.ClientTLSOptions) -> None:
        self.options = options
        self.session = None

    def clientConnectionForTLS(self, tls_protocol):  # noqa: N802 (Twisted)
        connection = self.options.clientConnectionForTLS(tls_protocol)
        if self.session is not None:
            connection.set_session(self.session)
        return connection


class _Client(protocol.Protocol):
    def __init__(self, load: "_Load") -> None:
        self.load = load

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted)
        handle = self.transport.getHandle()
        if self.load.resuming is not None:
            if session_reused(handle):
                self.load.resumed += 1
            self.load.resuming.session = handle.get_session()  # the tickets have arrived with the byte
        self.load.done += 1
        self.transport.loseConnection()


class _Warm:
    """The warm-up connection's view of the load: keeps its session, counts nothing."""

    def __init__(self, work: "_Load") -> None:
        self.resuming = work.resuming
        self.resumed = 0
        self.done = 0


class _Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        options = tls.client_options(args.name, [args.ca], client_cert=(args.cert, args.key))
        self.resuming = _Resuming(options) if args.resume else None
        self.creator = self.resuming or options
        self.started = 0
        self.done = 0
        self.failed = 0
        self.resumed = 0
        self.finished: defer.Deferred = defer.Deferred()
        self.t0 = reactor.seconds()
        self.t1 = self.t0

    def next(self, _: object = None) -> None:
        if self.started >= self.args.count:
            if self.done + self.failed >= self.args.count and not self.finished.called:
                self.t1 = reactor.seconds()
                self.finished.callback(None)
            return
        self.started += 1
        endpoint = endpoints.wrapClientTLS(self.creator, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1",
                                                                                      self.args.port, timeout=10))
        d = endpoints.connectProtocol(endpoint, _Client(self))
        d.addCallback(_closed)
        d.addErrback(self._failed)
        d.addBoth(self.next)

    def _failed(self, failure: object) -> None:
        self.failed += 1


def _closed(proto: _Client) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()
    lost = proto.connectionLost

    def connection_lost(reason: object) -> None:
        lost(reason)
        d.callback(None)

    proto.connectionLost = connection_lost  # type: ignore[method-assign]
    return d


def serve(args: argparse.Namespace) -> None:
    options = tls.server_options(args.cert, args.key, [args.ca], require_client_cert=True,
                                 session_tickets=args.resume, session_cache=args.resume)
    factory = protocol.Factory.forProtocol(_Server)
    factory.handshakes = 0
    wrapped = TLSServerFactory(options, factory, reactor)
    port = reactor.listenTCP(0, wrapped, interface="127.0.0.1", backlog=1024)
    print(json.dumps({"port": port.getHost().port}), flush=True)
    reactor.run()


def load(args: argparse.Namespace) -> None:
    work = _Load(args)

    def start() -> None:
        work.t0 = reactor.seconds()
        work.resumed = 0
        for _ in range(min(args.parallel, args.count)):
            work.next()

    def warmed(_: object = None) -> None:
        # Every client starts at the same moment (the harness's barrier), so
        # that the span covers all of them working together.
        reactor.callLater(max(0.0, (args.start_at or 0.0) - reactor.seconds()), start)

    def warm_up() -> None:
        if not args.resume:
            warmed()
            return
        # One connection first: its session is what the timed ones resume.
        endpoint = endpoints.wrapClientTLS(work.creator, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1",
                                                                                      args.port, timeout=10))
        d = endpoints.connectProtocol(endpoint, _Client(_Warm(work)))
        d.addCallback(_closed)
        d.addBoth(warmed)

    def report(_: object) -> None:
        print(json.dumps({"done": work.done, "failed": work.failed, "resumed": work.resumed,
                          "t0": work.t0, "t1": work.t1}), flush=True)
        reactor.stop()

    work.finished.addCallback(report)
    reactor.callWhenRunning(warm_up)
    reactor.run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("server", "client"))
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--port", type=int)
    parser.add_argument("--name", default="127.0.0.1")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--start-at", type=float, default=None, help="start the timed run at this time (epoch s)")
    args = parser.parse_args(argv)
    (serve if args.mode == "server" else load)(args)


if __name__ == "__main__":
    main()
