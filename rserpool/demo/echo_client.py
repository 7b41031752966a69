"""``rserpool echo``: talk to the echo pool through the PU-PE session layer.

    rserpool echo --pool echo --registrar 127.0.0.1:3864 --ca ca.pem \\
        [--cert pu.pem --key pu.key] [--registrar-name localhost] [--pe-name NAME]

Each line read from stdin is sent as one data message to a PE of the pool
(chosen by the PU library from the registrar's answer); each echo is printed
on stdout as it arrives.  If the PE dies the session fails over: the PE is
reported unreachable, another one is chosen (the last business card first),
the sealed cookie is echoed, and the lines that were not answered yet are
sent again from the failover callback before any new line, so no line is
lost; a line may then be processed by two PEs (if the old one echoed it and
died before the echo left): at-least-once, a choice an application building
on the session layer's at-most-once delivery has to make for itself.

:class:`EchoSession` is the reusable part (tests drive it directly).
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger

from rserpool.asap.session import DEFAULT_DATA_PPID, PuSessionSettings, PuState
from rserpool.service.channel import ChannelSettings
from rserpool.service.session import PeTLSOptions, SessionClient
from rserpool.wire import PoolElement

__all__ = ["EchoSession", "register"]

_log = Logger()


class _Pending:
    __slots__ = ("payload", "done", "on_wire")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.done: defer.Deferred[bytes] = defer.Deferred()
        self.on_wire = False


class EchoSession:
    """A session with the echo pool: ``send(payload)`` fires with the echo.

    ``selector`` / ``report_unreachable`` are usually a
    ``rserpool.service.pu.PoolUser``'s ``select`` and ``report_unreachable``.
    ``on_failover(old_pe, new_pe, cookie_echoed)`` is called for display.
    """

    def __init__(
        self,
        reactor: Any,
        *,
        selector: Callable[[bytes], Any],
        report_unreachable: Callable[[bytes, int], Any],
        tls_options_for: PeTLSOptions,
        pool_handle: bytes = b"echo",
        ppid: int = DEFAULT_DATA_PPID,
        settings: PuSessionSettings | None = None,
        channel_settings: ChannelSettings | None = None,
        on_failover: Callable[[PoolElement, PoolElement, bool], None] | None = None,
        max_outstanding: int = 64,
    ) -> None:
        self.on_failover = on_failover
        self.max_outstanding = max_outstanding
        self._outstanding: deque[_Pending] = deque()
        self.unexpected: list[bytes] = []
        self.client = SessionClient(
            pool_handle, reactor=reactor, selector=selector,
            report_unreachable=report_unreachable, tls_options_for=tls_options_for,
            on_data=self._on_data, failover_callback=self._failover, ppid=ppid,
            settings=settings, channel_settings=channel_settings)

    def start(self) -> defer.Deferred[PoolElement]:
        return self.client.start()

    def send(self, payload: bytes) -> defer.Deferred[bytes]:
        """Send one message; fires with its echo."""
        if len(self._outstanding) >= self.max_outstanding:
            return defer.fail(RuntimeError("too many messages waiting for their echo"))
        item = _Pending(payload)
        established = self.client.state is PuState.ESTABLISHED
        self.client.send(payload)  # may raise SessionBusyError / SessionClosedError
        item.on_wire = established
        self._outstanding.append(item)
        return item.done

    def close(self) -> defer.Deferred[None]:
        waiting, self._outstanding = self._outstanding, deque()
        for item in waiting:
            item.done.errback(defer.CancelledError("echo session closed"))
            item.done.addErrback(lambda _: None)
        return self.client.close()

    def _on_data(self, payload: bytes) -> None:
        if self._outstanding and self._outstanding[0].payload == payload:
            self._outstanding.popleft().done.callback(payload)
        else:
            self.unexpected.append(payload)

    def _failover(self, old_pe: PoolElement, new_pe: PoolElement, cookie_echoed: bool) -> None:
        if self.on_failover is not None:
            self.on_failover(old_pe, new_pe, cookie_echoed)
        # Messages the old PE never answered go first to the new PE; those
        # sent during the failover are still in the session's queue.
        for item in self._outstanding:
            if item.on_wire:
                self.client.send(item.payload, during_failover=True)
        for item in self._outstanding:
            item.on_wire = True


# --------------------------------------------------------------------------
# The command


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "echo", help="send stdin lines to the echo pool through the session layer",
        description="Send each stdin line to a PE of the pool over TLS (PU-PE session "
                    "layer, with failover) and print the echoes.")
    parser.add_argument("--pool", default="echo", help="pool handle (default: echo)")
    parser.add_argument("--registrar", action="append", required=True, metavar="HOST:PORT",
                        help="a registrar to resolve the pool at (repeatable)")
    parser.add_argument("--registrar-name", default=None,
                        help="TLS name the registrars' certificates must carry (default: the host)")
    parser.add_argument("--ca", required=True, help="PEM trust roots for registrars and PEs")
    parser.add_argument("--cert", help="PU client certificate (PEM)")
    parser.add_argument("--key", help="its private key")
    parser.add_argument("--pe-name", default=None,
                        help="DNS name every PE certificate must carry (default: the PE's IP address)")
    parser.add_argument("--ppid", type=int, default=DEFAULT_DATA_PPID, help="data PPID (default 0)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for each echo (default 30)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from twisted.internet import task

    if (args.cert is None) != (args.key is None):
        print("rserpool echo: --cert and --key go together", file=sys.stderr)
        return 2
    result: list[int] = [0]

    async def main(reactor: Any) -> None:
        result[0] = await _echo_lines(reactor, args, sys.stdin.buffer, sys.stdout, sys.stderr)

    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    return result[0]


async def _echo_lines(reactor: Any, args: argparse.Namespace, stdin: Any, stdout: Any,
                      stderr: Any) -> int:
    from twisted.internet import threads

    from rserpool.service.pu import PoolUser
    from rserpool.service.session import pe_tls_options

    client_cert = (args.cert, args.key) if args.cert else None
    pu = PoolUser.connecting_to(reactor, args.registrar, [args.ca], client_cert=client_cert,
                                server_name=args.registrar_name)

    def failover(old: PoolElement, new: PoolElement, echoed: bool) -> None:
        print(f"# failover from PE {old.pe_id:08x} to PE {new.pe_id:08x}"
              f" (cookie echoed: {'yes' if echoed else 'no'})", file=stderr, flush=True)

    session = EchoSession(
        reactor, selector=pu.select, report_unreachable=pu.report_unreachable,
        tls_options_for=pe_tls_options([args.ca], client_cert=client_cert, pe_name=args.pe_name),
        pool_handle=args.pool.encode(), ppid=args.ppid, on_failover=failover)
    status = 0
    try:
        pe = await session.start()
        print(f"# connected to PE {pe.pe_id:08x} ({pe.user_transport})", file=stderr, flush=True)
        # One line at a time, read in a thread so the reactor (heartbeats,
        # failover) runs while the user types; each is sent once the
        # previous echo came back.
        while True:
            line = await threads.deferToThreadPool(reactor, reactor.getThreadPool(), stdin.readline)
            if not line:
                break
            answer = session.send(line.rstrip(b"\r\n"))
            answer.addTimeout(args.timeout, reactor)
            echo = await answer
            print(echo.decode(errors="replace"), file=stdout, flush=True)
    except Exception as exc:  # reported, not raised: this is a command
        print(f"rserpool echo: {exc or type(exc).__name__}", file=stderr, flush=True)
        status = 1
    finally:
        await session.close()
        await pu.stop()
    return status
