"""One ASAP/ENRP channel over TCP (+TLS): the thin Twisted shell around the
TCP-mapping connection (``rserpool.wire.tcpmap``) and the message codec.

A ``Channel`` is a Twisted ``Protocol``.  It only moves bytes and time:

- incoming bytes go into ``TcpMapConnection.receive_data``; each delivered
  DATA chunk with PPID 11 (ASAP) or 12 (ENRP) is decoded and handed to the
  handler (an :class:`~rserpool.interfaces.IChannelHandler`); other PPIDs (the application's data on a PU-PE session,
  RFC 5355 section 2.16) are handed over as bytes;
- ``send(message)`` encodes and frames a message, ``send_encoded(ppid, bytes)``
  frames an encoded message or application data;
- a heartbeat timer on the injected clock sends a HEARTBEAT when the channel
  has been idle for ``heartbeat_interval`` and closes the channel when
  nothing at all arrived for ``dead_after`` seconds (the draft leaves failure
  detection to the implementation; see docs/tcp-mapping.md).

``close()`` ends a channel cleanly: what was received is acknowledged first
(the draft makes an ACK mandatory for every delivered DATA chunk, so the
peer's last message is never left unacknowledged), then TLS sends its
close_notify and waits for the peer's; a peer that does not answer within
``close_timeout`` seconds is aborted.  ``abort()`` resets at once (protocol
violations, dead peers).

Framing errors are fatal for that one connection only: the channel is
aborted and the handler told why.  Once the channel is closing (``close``,
``abort``, also from inside a handler's callback) nothing more that was read
is handled.  A message that does not decode is given
to the handler (``wire_error``), which answers it as RFC 5354 says; the
channel stays up.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall, IHandshakeListener, IReactorTime, IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rserpool.interfaces import IChannelHandler
from rserpool.wire import DEFAULT_LIMITS, DecodeCache, Limits, WireError
from rserpool.wire.codes import PPID_ASAP, PPID_ENRP
from rserpool.wire.tcpmap import (
    HeartbeatAckReceived,
    MessageReceived,
    TcpMapConnection,
    TcpMapError,
)

__all__ = ["Channel", "ChannelSettings", "address_text", "tls_client_endpoint"]

_log = Logger()


class ChannelSettings:
    """Timing and limits of a channel; one instance is shared by a factory."""

    __slots__ = ("heartbeat_interval", "dead_after", "limits", "max_chunk_size", "decoder",
                 "close_timeout")

    def __init__(
        self,
        heartbeat_interval: float = 10.0,
        dead_after: float = 30.0,
        limits: Limits = DEFAULT_LIMITS,
        max_chunk_size: int | None = None,
        close_timeout: float = 5.0,
    ) -> None:
        if heartbeat_interval <= 0 or dead_after <= heartbeat_interval:
            raise ValueError("need 0 < heartbeat_interval < dead_after")
        if close_timeout <= 0:
            raise ValueError("need 0 < close_timeout")
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after
        self.close_timeout = close_timeout
        self.limits = limits
        # A DATA chunk holds one message: its header is at most 16 bytes.
        self.max_chunk_size = max_chunk_size or min(0xFFFF, limits.max_message_size + 16)
        # Shared by every channel of the factory: a re-registration or a
        # resolution request repeats the bytes of the previous one.
        self.decoder = DecodeCache(limits)


def address_text(address: Any) -> str:
    """An address in a log line: ``host:port`` (``[host]:port`` for IPv6),
    not the address object's repr."""
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is None or port is None:
        return str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _no_delay(transport: Any) -> None:
    """Turn Nagle's algorithm off on the TCP connection under ``transport``
    (through a TLS wrapper): every message is a request or an answer that
    must leave at once, and an answer written after an asynchronous step
    (an authorization by RADIUS or LDAP) would otherwise wait for the
    peer's delayed ACK, about 40 ms."""
    for _ in range(4):
        if transport is None:
            return
        set_no_delay = getattr(type(transport), "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                transport.setTcpNoDelay(True)
            except OSError:
                pass
            return
        transport = getattr(transport, "transport", None)


@implementer(IHandshakeListener)
class Channel(Protocol):
    """A TCP-mapping channel carrying ASAP/ENRP messages (and session data)."""

    def __init__(
        self,
        handler: IChannelHandler,
        clock: IReactorTime,
        settings: ChannelSettings,
        *,
        tls: bool = True,
        initiator: bool = False,
    ) -> None:
        self.handler = handler
        self.clock = clock
        self.settings = settings
        self.tls = tls
        self.initiator = initiator
        self.mapping = TcpMapConnection(max_chunk_size=settings.max_chunk_size)
        self.ready = False
        self.closed = False
        # True once close() or abort() was called: the end is ours, not the peer's.
        self.closing = False
        self.peer: Any = None
        self.session: Any = None  # the handler's per-channel state
        self._timer: IDelayedCall | None = None
        # While dataReceived runs: the chunks to write when it ends (one
        # transport write, hence one TLS record, per read); None otherwise.
        self._out: list[bytes] | None = None
        self._last_heard = 0.0
        self._on_close: list[Deferred] = []
        self._close_timer: IDelayedCall | None = None

    # -- Twisted callbacks ----------------------------------------------------

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()
        _no_delay(self.transport)
        self._last_heard = self.clock.seconds()
        self._arm_timer()
        if self.initiator:
            self.transport.write(self.mapping.initiate())
        if not self.tls:
            self._become_ready()

    def handshakeCompleted(self) -> None:
        if self.tls and not self.closed:
            self._become_ready()

    def _become_ready(self) -> None:
        if not self.ready:
            self.ready = True
            self.handler.channel_ready(self)

    def dataReceived(self, data: bytes) -> None:
        if self.closed or self.closing:
            return
        now = self.clock.seconds()
        self._last_heard = now
        try:
            events = self.mapping.receive_data(data, now)
        except TcpMapError as exc:
            _log.warn("closing channel from {peer}: framing error: {error}",
                      peer=address_text(self.peer), error=exc)
            self.abort()
            return
        handler = self.handler
        decode = self.settings.decoder.decode
        # Everything sent while handling this read (the handler's answers,
        # then the mandatory ACKs) goes out in one write, in the same order
        # as separate writes would have put it on the stream.
        out: list[bytes] = []
        self._out = out
        try:
            for event in events:
                if type(event) is MessageReceived:
                    ppid = event.ppid
                    if ppid == PPID_ASAP or ppid == PPID_ENRP:
                        try:
                            message = decode(event.payload, ppid)
                        except WireError as exc:
                            handler.wire_error(self, ppid, exc, now)
                        else:
                            handler.message_received(self, message, now)
                    else:
                        handler.data_received(self, ppid, event.payload, now)
                    if self.closed or self.closing:  # the handler closed or aborted it
                        self._out = None
                        return
                elif type(event) is HeartbeatAckReceived:
                    pass  # any data counts as a sign of life
        except BaseException:
            self._flush_batch()
            raise
        pending = self.mapping.data_to_send()
        if self._out is out:
            self._out = None
            if pending:
                out.append(pending)
            if out:
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        elif pending:  # the batch was flushed early (close or abort)
            self.transport.write(pending)

    def _flush_batch(self) -> None:
        out = self._out
        if out is not None:
            self._out = None
            if out and not self.closed:
                self.transport.write(b"".join(out))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None
        try:
            self.handler.channel_closed(self, reason)
        finally:
            waiting, self._on_close = self._on_close, []
            for d in waiting:
                d.callback(None)

    def closed_deferred(self) -> Deferred:
        """A Deferred that fires (with None) once the connection is gone."""
        if self.closed:
            return succeed(None)
        d: Deferred = Deferred()
        self._on_close.append(d)
        return d

    # -- sending ----------------------------------------------------------------

    def send(self, message: Any) -> None:
        """Encode and send one ASAP or ENRP message."""
        if self.closed or self.closing:
            return
        chunk = self.mapping.send_message(message.PPID, message.encode())
        out = self._out
        if out is not None:
            out.append(chunk)
        else:
            self.transport.write(chunk)

    def send_encoded(self, ppid: int, payload: bytes) -> None:
        """Send an already encoded message (or application data) with ``ppid``."""
        if self.closed or self.closing:
            return
        chunk = self.mapping.send_message(ppid, payload)
        out = self._out
        if out is not None:
            out.append(chunk)
        else:
            self.transport.write(chunk)

    def close(self) -> None:
        """Close gracefully: pending writes and the ACKs owed for what was
        received go out, then the TLS close_notify; a peer that does not
        complete the close within ``close_timeout`` seconds is aborted."""
        if self.closed or self.closing or self.transport is None:
            return
        self.closing = True
        self._flush_batch()
        owed = self.mapping.data_to_send() if not self.mapping.failed else b""
        if owed:
            self.transport.write(owed)
        self.transport.loseConnection()
        self._close_timer = self.clock.callLater(self.settings.close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_timer = None
        if not self.closed:
            _log.info("aborting channel to {peer}: the close did not complete in {timeout:g} s",
                      peer=address_text(self.peer), timeout=self.settings.close_timeout)
            self._abort_transport()

    def abort(self) -> None:
        """Drop the connection at once."""
        if self.closed or self.transport is None:
            return
        self.closing = True
        self._flush_batch()
        self._abort_transport()

    def _abort_transport(self) -> None:
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self.transport.loseConnection()

    # -- liveness -----------------------------------------------------------------

    def _arm_timer(self) -> None:
        self._timer = self.clock.callLater(self.settings.heartbeat_interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.closed or self.closing:
            return
        now = self.clock.seconds()
        idle = now - self._last_heard
        if idle >= self.settings.dead_after:
            _log.info("closing channel to {peer}: nothing heard for {idle:.1f} s",
                      peer=address_text(self.peer), idle=idle)
            self.abort()
            return
        if idle >= self.settings.heartbeat_interval:
            self.transport.write(self.mapping.heartbeat(now=now))
        self._arm_timer()


@implementer(IStreamClientEndpoint)
class _TLSClientEndpoint:
    def __init__(self, creator: Any, endpoint: IStreamClientEndpoint, clock: IReactorTime) -> None:
        self.creator = creator
        self.endpoint = endpoint
        self.clock = clock

    def connect(self, factory: Any) -> Deferred:
        tls_factory = TLSMemoryBIOFactory(self.creator, True, factory, self.clock)
        return self.endpoint.connect(tls_factory).addCallback(lambda tls: tls.wrappedProtocol)


def tls_client_endpoint(creator: Any, endpoint: IStreamClientEndpoint,
                        clock: IReactorTime) -> IStreamClientEndpoint:
    """``endpoint`` with TLS started at once (``creator`` from
    ``rserpool.security.tls.client_options``), like Twisted's
    ``wrapClientTLS``, but with the TLS layer's write batching on ``clock``,
    the injected reactor, rather than on the global one."""
    return _TLSClientEndpoint(creator, endpoint, clock)

