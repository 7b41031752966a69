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
  detection to the implementation; see docs/tcp-mapping.md);
- the same timer enforces deadlines a slow client cannot stretch by
  trickling bytes: a chunk that has started must be complete within
  ``chunk_timeout``; on the accepting side the TLS handshake must finish
  within ``handshake_timeout`` of the connection and the first message must
  arrive within ``first_message_timeout`` of the handshake (None turns one
  off);
- on the accepting side, at most ``max_events_per_turn`` events of a read
  are handled at once: the rest wait (in order, the connection's reading
  paused) for later reactor turns, so that one client's pipelined flood
  cannot make every other client wait behind it.

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

from collections import deque
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

#: Held output is written once it reaches this size (about one TLS record).
_HELD_LIMIT = 16000


class ChannelSettings:
    """Timing and limits of a channel; one instance is shared by a factory."""

    __slots__ = ("heartbeat_interval", "dead_after", "limits", "max_chunk_size", "decoder",
                 "close_timeout", "chunk_timeout", "handshake_timeout", "first_message_timeout",
                 "max_events_per_turn")

    def __init__(
        self,
        heartbeat_interval: float = 10.0,
        dead_after: float = 30.0,
        limits: Limits = DEFAULT_LIMITS,
        max_chunk_size: int | None = None,
        close_timeout: float = 5.0,
        *,
        chunk_timeout: float | None = 10.0,
        handshake_timeout: float | None = 10.0,
        first_message_timeout: float | None = 10.0,
        max_events_per_turn: int = 8,
    ) -> None:
        if heartbeat_interval <= 0 or dead_after <= heartbeat_interval:
            raise ValueError("need 0 < heartbeat_interval < dead_after")
        if close_timeout <= 0:
            raise ValueError("need 0 < close_timeout")
        for name, value in (("chunk_timeout", chunk_timeout), ("handshake_timeout", handshake_timeout),
                            ("first_message_timeout", first_message_timeout)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None: no deadline)")
        if max_events_per_turn < 1:
            raise ValueError("max_events_per_turn must be at least 1")
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after
        self.close_timeout = close_timeout
        self.chunk_timeout = chunk_timeout
        self.handshake_timeout = handshake_timeout
        self.first_message_timeout = first_message_timeout
        self.max_events_per_turn = max_events_per_turn
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

    # Per-connection state whose start value is the same for every channel is
    # a class attribute, set on the instance only when it changes: a new
    # connection (one per session on the registrar) sets up a handful of
    # attributes rather than two dozen.
    ready = False
    closed = False
    #: True once close() or abort() was called: the end is ours, not the peer's.
    closing = False
    peer: Any = None
    state: Any = None  # the handler's per-channel state
    _timer: IDelayedCall | None = None
    # While dataReceived runs: the chunks to write when it ends (one
    # transport write, hence one TLS record, per read); None otherwise.
    _out: list[bytes] | None = None
    _on_close: "list[Deferred] | tuple[()]" = ()  # a list once closed_deferred is called
    _close_timer: IDelayedCall | None = None
    _got_message = False
    # Deadlines (clock seconds; None: none): the handshake and then the
    # first message (accepting side), the completion of a started chunk.
    _setup_deadline: float | None = None
    _setup_what = ""
    _chunk_deadline: float | None = None
    _timer_at = 0.0
    # Accepting side: events of earlier reads not handled yet (more than
    # max_events_per_turn arrived); reading is paused until they are.
    _backlog: deque | None = None
    _resume_call: IDelayedCall | None = None
    # No input is handled before this time (pause_input: rate limited).
    _paused_until = 0.0
    # While a backlog is worked off: the bytes of its turns, written in
    # TLS-record-sized pieces rather than one small record per turn (a
    # list once there are some).
    _held: "list[bytes] | tuple[()]" = ()
    _held_size = 0

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
        self._last_heard = 0.0
        #: When the last message (a DATA chunk) arrived; heartbeats do not count.
        self.last_message_at = 0.0

    # -- Twisted callbacks ----------------------------------------------------

    def connectionMade(self) -> None:
        if self.peer is None:  # (an accepting factory may have set it from buildProtocol's address)
            self.peer = self.transport.getPeer()
        _no_delay(self.transport)
        now = self._last_heard = self.last_message_at = self.clock.seconds()
        if not self.initiator and self.tls and self.settings.handshake_timeout is not None:
            self._setup_deadline = now + self.settings.handshake_timeout
            self._setup_what = "TLS handshake not finished"
        self._arm_timer(now)
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
            self._setup_deadline = None
            timeout = self.settings.first_message_timeout
            if not self.initiator and timeout is not None and not self._got_message:
                self._setup_deadline = self.clock.seconds() + timeout
                self._setup_what = "no message"
                self._rearm_before(self._setup_deadline)
            self.handler.channel_ready(self)

    def dataReceived(self, data: bytes) -> None:
        if self.closed or self.closing:
            return
        now = self.clock.seconds()
        self._last_heard = now
        mapping = self.mapping
        try:
            events = mapping.receive_data(data, now)
        except TcpMapError as exc:
            _log.warn("closing channel from {peer}: framing error: {error}",
                      peer=address_text(self.peer), error=exc)
            self.abort()
            return
        if mapping.buffered:  # a chunk started and is not complete: it has a deadline
            if self._chunk_deadline is None or events:
                timeout = self.settings.chunk_timeout
                if timeout is not None:
                    self._chunk_deadline = now + timeout
                    self._rearm_before(self._chunk_deadline)
        elif self._chunk_deadline is not None:
            self._chunk_deadline = None
        backlog = self._backlog
        if backlog is None and self._paused_until > now and events:
            self._defer_front(events, now)  # paused: keep it for later, in order
            acks = mapping.data_to_send()
            if acks:
                self._hold(acks)
            return
        if backlog is not None:  # still working off earlier reads: keep the order
            backlog.extend(events)
            acks = mapping.data_to_send()
            if acks:
                self._hold(acks)
            return
        if len(events) > self.settings.max_events_per_turn and not self.initiator:
            self._defer_rest(events)
            events = self._next_turn()
        self._handle(events, now)

    # -- fair service (accepting side) ----------------------------------------------

    def _defer_rest(self, events: list) -> None:
        """Keep ``events`` for later turns; stop reading until they are handled."""
        self._backlog = deque(events)
        self.transport.pauseProducing()

    def _next_turn(self) -> list:
        """At most ``max_events_per_turn`` events off the backlog; when more
        remain, the next batch is handled in a later reactor turn, after the
        other connections' reads."""
        backlog = self._backlog
        assert backlog is not None
        take = min(len(backlog), self.settings.max_events_per_turn)
        events = [backlog.popleft() for _ in range(take)]
        if backlog:
            self._resume_call = self.clock.callLater(0, self._turn)
        elif self._paused_until > self.clock.seconds():
            self._schedule_turn(self.clock.seconds())  # empty, but reading stays paused until then
        else:
            self._backlog = None
            self.transport.resumeProducing()
        return events

    def pause_input(self, until: float) -> None:
        """Handle none of this connection's input before ``until`` (the
        security gate rate limited it): what was read and is not handled yet,
        and what arrives, waits in order, reading paused (accepting side)."""
        if until > self._paused_until and not self.initiator:
            self._paused_until = until

    def _defer_front(self, events: list, now: float) -> None:
        """``events`` wait, before any backlog, until the pause ends."""
        backlog = self._backlog
        if backlog is None:
            self._backlog = deque(events)
            self.transport.pauseProducing()
        else:
            backlog.extendleft(reversed(events))
        self._schedule_turn(now)

    def _schedule_turn(self, now: float) -> None:
        if self._resume_call is not None and self._resume_call.active():
            self._resume_call.cancel()
        self._resume_call = self.clock.callLater(max(0.0, self._paused_until - now), self._turn)

    def _turn(self) -> None:
        self._resume_call = None
        if self.closed or self.closing or self._backlog is None:
            return
        self._handle(self._next_turn(), self.clock.seconds())

    def _handle(self, events: list, now: float) -> None:
        if len(events) == 1 and type(events[0]) is not MessageReceived and not self._held \
                and self._backlog is None:
            # One control chunk (the peer's INIT, an ACK, a HEARTBEAT): at
            # most a HEARTBEAT ACK to send, nothing for the handler.
            pending = self.mapping.data_to_send()
            if pending:
                self.transport.write(pending)
            return
        # self.handler is read for every message: a handler may hand the
        # channel on in the middle of a read (the PE's authenticator gives it
        # back on success, and the answer to the registration sent behind the
        # proof may be in the same read).
        decode = self.settings.decoder.decode
        # Everything sent while handling this read (the handler's answers,
        # then the mandatory ACKs) goes out in one write, in the same order
        # as separate writes would have put it on the stream.
        out: list[bytes] = []
        self._out = out
        try:
            for index, event in enumerate(events):
                if type(event) is MessageReceived:
                    if not self._got_message:
                        self._got_message = True
                        self._setup_deadline = None
                    self.last_message_at = now
                    ppid = event.ppid
                    if ppid == PPID_ASAP or ppid == PPID_ENRP:
                        try:
                            message = decode(event.payload, ppid)
                        except WireError as exc:
                            self.handler.wire_error(self, ppid, exc, now)
                        else:
                            self.handler.message_received(self, message, now)
                    else:
                        self.handler.data_received(self, ppid, event.payload, now)
                    if self.closed or self.closing:  # the handler closed or aborted it
                        self._out = None
                        return
                    if self._paused_until > now:  # the handler paused it: the rest waits
                        self._defer_front(events[index + 1:], now)
                        break
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
            # While a backlog is worked off turn after turn, the answers are
            # held and written in large pieces; a pause (pause_input) ends
            # the batch for a while: what is held goes out now.
            batching = self._backlog is not None and self._paused_until <= now
            if out:
                data = out[0] if len(out) == 1 else b"".join(out)
                if batching:
                    self._hold(data)
                else:
                    if self._held:
                        data = self._take_held() + data
                    self.transport.write(data)
            elif self._held and not batching:
                self.transport.write(self._take_held())
        elif pending:  # the batch was flushed early (close or abort)
            self.transport.write(pending)

    def _hold(self, data: bytes) -> None:
        if not self._held:
            self._held = []
        self._held.append(data)  # type: ignore[union-attr]
        self._held_size += len(data)
        if self._held_size >= _HELD_LIMIT:
            self.transport.write(self._take_held())

    def _take_held(self) -> bytes:
        data = b"".join(self._held)
        self._held = ()
        self._held_size = 0
        return data

    def _flush_batch(self) -> None:
        out = self._out
        if out is not None:
            self._out = None
            if (out or self._held) and not self.closed:
                self.transport.write(self._take_held() + b"".join(out))
        elif self._held and not self.closed:
            self.transport.write(self._take_held())

    def _drop_backlog(self) -> None:
        self._backlog = None
        if self._resume_call is not None and self._resume_call.active():
            self._resume_call.cancel()
        self._resume_call = None

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closed = True
        if self._backlog is not None or self._resume_call is not None:
            self._drop_backlog()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None
        try:
            self.handler.channel_closed(self, reason)
        finally:
            waiting, self._on_close = self._on_close, ()
            for d in waiting:
                d.callback(None)

    def closed_deferred(self) -> Deferred:
        """A Deferred that fires (with None) once the connection is gone."""
        if self.closed:
            return succeed(None)
        d: Deferred = Deferred()
        if not self._on_close:
            self._on_close = []
        self._on_close.append(d)  # type: ignore[union-attr]
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
        elif self._held:  # keep the stream in TSN order
            self.transport.write(self._take_held() + chunk)
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
        elif self._held:  # keep the stream in TSN order
            self.transport.write(self._take_held() + chunk)
        else:
            self.transport.write(chunk)

    def close(self) -> None:
        """Close gracefully: pending writes and the ACKs owed for what was
        received go out, then the TLS close_notify; a peer that does not
        complete the close within ``close_timeout`` seconds is aborted."""
        if self.closed or self.closing or self.transport is None:
            return
        self.closing = True
        self._drop_backlog()  # what was read and not handled yet is dropped
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
        self._drop_backlog()
        self._flush_batch()
        self._abort_transport()

    def _abort_transport(self) -> None:
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self.transport.loseConnection()

    # -- liveness -----------------------------------------------------------------

    def _arm_timer(self, now: float) -> None:
        at = now + self.settings.heartbeat_interval
        for deadline in (self._setup_deadline, self._chunk_deadline):
            if deadline is not None and deadline < at:
                at = deadline
        self._timer_at = at
        self._timer = self.clock.callLater(max(0.0, at - now), self._tick)

    def _rearm_before(self, deadline: float) -> None:
        """Make the timer fire no later than ``deadline``."""
        timer = self._timer
        if timer is not None and deadline < self._timer_at and timer.active():
            self._timer_at = deadline
            timer.reset(max(0.0, deadline - self.clock.seconds()))

    def _tick(self) -> None:
        self._timer = None
        if self.closed or self.closing:
            return
        now = self.clock.seconds()
        for deadline, what in ((self._setup_deadline, self._setup_what),
                               (self._chunk_deadline, "chunk not completed")):
            if deadline is not None and now >= deadline:
                _log.info("closing channel from {peer}: {what} in time",
                          peer=address_text(self.peer), what=what)
                self.abort()
                return
        idle = now - self._last_heard
        if idle >= self.settings.dead_after:
            _log.info("closing channel to {peer}: nothing heard for {idle:.1f} s",
                      peer=address_text(self.peer), idle=idle)
            self.abort()
            return
        if idle >= self.settings.heartbeat_interval:
            self.transport.write(self.mapping.heartbeat(now=now))
        self._arm_timer(now)


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

