"""The echo pool's client side: talk to the echo pool through the PU-PE
session layer.

Each payload given to :meth:`EchoSession.send` is sent as one data message
to a PE of the pool (chosen by the PU library from the registrar's answer);
the Deferred fires with its echo.  If the PE dies the session fails over:
the PE is reported unreachable, another one is chosen (the last business
card first), the sealed cookie is echoed, and the messages that were not
answered yet are sent again from the failover callback before any new one,
so no message is lost; a message may then be processed by two PEs (if the
old one echoed it and died before the echo left): at-least-once, a choice
an application building on the session layer's at-most-once delivery has
to make for itself.

The ``rserpool echo`` command (``rserpool.cli.echo``) drives it from stdin;
tests drive it directly.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger

from rserpool.asap.pu_session import PuSessionSettings, PuState
from rserpool.asap.session import DEFAULT_DATA_PPID
from rserpool.service.channel import ChannelSettings
from rserpool.service.pu_session import PeTLSOptions, SessionClient
from rserpool.wire import PoolElement

__all__ = ["EchoSession"]

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
