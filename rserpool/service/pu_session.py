"""The pool user's end of the PU-PE session layer over TLS (the Twisted
shell around ``rserpool.asap.pu_session``; the PE's end is
``rserpool.service.pe_session``).

One TLS connection per session carries both channels (RFC 5355 2.16), framed
by the TCP mapping: ASAP control messages (ASAP_COOKIE, ASAP_COOKIE_ECHO,
ASAP_BUSINESS_CARD) with PPID 11, the application's data with the session's
data PPID (default 0, configurable, never 11 or 12).

- :class:`SessionClient` is the pool user's end.  It asks a *selector*
  (``select(pool_handle) -> Deferred[PoolElement]``, e.g.
  ``PoolUser.select``) for a PE, connects to the PE's TCP user transport
  with TLS, the PE authenticated by its certificate (:func:`pe_tls_options`),
  and moves data.  When the connection dies (TCP reset, TLS error, or the
  channel's heartbeat finds the peer dead) it reports the PE with
  ``report_unreachable(pool_handle, pe_id)`` (once per PE and failover),
  picks the next PE (the last business card's order first, then the
  selector), reconnects with bounded, backed-off attempts, echoes the latest
  cookie as the first message, and runs the application's failover callback
  ``callback(old_pe, new_pe, cookie_echoed) -> Deferred | None``; queued data
  is sent only after that Deferred fires (RFC 5355 2.9).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from rserpool.asap.pu_session import (
    Connect, Established, GiveUp, PuSession, PuSessionSettings, PuState, ReportUnreachable,
    RunFailoverCallback, Select, SendControl, SendData,
)
from rserpool.asap.session import DEFAULT_DATA_PPID, Ignored, SessionClosedError, check_data_ppid
from rserpool.security import tls
from rserpool.security.tlserrors import connection_error_text
from rserpool.service.channel import Channel, ChannelSettings, tls_client_endpoint
from rserpool.wire import PoolElement, TcpTransport, WireError
from rserpool.wire.params import pool_handle_text

__all__ = [
    "FailoverCallback",
    "PeTLSOptions",
    "SessionClient",
    "pe_tls_options",
]

_log = Logger()

Selector = Callable[[bytes], Any]                      # -> Deferred[PoolElement] or PoolElement
Reporter = Callable[[bytes, int], Any]                 # (pool_handle, pe_id) -> anything
FailoverCallback = Callable[[PoolElement, PoolElement, bool], Any]  # -> Deferred | None
PeTLSOptions = Callable[[PoolElement], Any]            # -> IOpenSSLClientConnectionCreator


def pe_tls_options(
    trust_roots: tls.TrustRoots,
    *,
    client_cert: tuple[tls.PathLike, tls.PathLike] | None = None,
    pe_name: str | None = None,
    crls: tls.CRLs = (),
) -> PeTLSOptions:
    """How a PU authenticates the PE it connects to.

    By default the PE's certificate must chain to ``trust_roots`` and carry
    the IP address of the PE's registered user transport as an IP SAN
    (``pki.create_server_certificate(ca, ["192.0.2.7"], ...)``).  With
    ``pe_name`` every PE of the pool must instead carry that DNS name (for
    example ``echo.pool.example``), which suits PEs behind changing
    addresses.  ``client_cert`` lets the PE authenticate the PU in turn.
    """
    roots = tls.load_trust_roots(trust_roots)
    crl_list = tls.load_crls(crls)
    cache: dict[str, tls.ClientTLSOptions] = {}

    def for_pe(pe: PoolElement) -> tls.ClientTLSOptions:
        name = pe_name if pe_name is not None else _address_of(pe)[0]
        options = cache.get(name)
        if options is None:
            if len(cache) >= 64:
                cache.clear()
            options = cache[name] = tls.client_options(
                name, roots, client_cert=client_cert, crls=crl_list)
        return options

    return for_pe


def _address_of(pe: PoolElement) -> tuple[str, int]:
    transport = pe.user_transport
    if type(transport) is not TcpTransport:
        raise ValueError(f"PE 0x{pe.pe_id:08x} offers no TCP user transport ({transport})")
    return str(transport.address), transport.port


class _ClientConnection:
    """ChannelHandler of one connection attempt of a :class:`SessionClient`."""

    def __init__(self, client: SessionClient, pe: PoolElement) -> None:
        self.client = client
        self.pe = pe
        self.channel: Channel | None = None
        self.ready = False
        self.lost = False
        self.connecting: defer.Deferred[Any] | None = None

    def channel_ready(self, channel: Channel) -> None:
        self.channel = channel
        self.ready = True
        self.client._connection_ready(self)

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        self.client._control_received(self, message, now)

    def wire_error(self, channel: Channel, ppid: int, error: WireError, now: float) -> None:
        _log.warn("undecodable control message from PE {pe_id:08x}: {error}",
                  pe_id=self.pe.pe_id, error=error)

    def data_received(self, channel: Channel, ppid: int, payload: bytes, now: float) -> None:
        self.client._data_received(self, ppid, payload)

    def channel_closed(self, channel: Channel, reason: Failure) -> None:
        self.client._connection_lost(self, reason)


class SessionClient:
    """A pool user's session with one pool, with failover.

    ``on_data(payload)`` receives the PE's data.  ``failover_callback(old_pe,
    new_pe, cookie_echoed)`` runs after each failover, once the cookie was
    echoed; until the Deferred it returns fires, ordinary data is queued
    (bounded: :class:`~rserpool.asap.session.SessionBusyError`), while
    ``send(..., during_failover=True)`` reaches the new PE at once (for a
    re-keying exchange).  If the Deferred fails the new PE is dropped and the
    next one tried; it times out after ``failover_timeout`` seconds.
    """

    def __init__(
        self,
        pool_handle: bytes,
        *,
        reactor: Any,
        selector: Selector,
        report_unreachable: Reporter,
        tls_options_for: PeTLSOptions,
        on_data: Callable[[bytes], Any],
        failover_callback: FailoverCallback | None = None,
        ppid: int = DEFAULT_DATA_PPID,
        settings: PuSessionSettings | None = None,
        channel_settings: ChannelSettings | None = None,
        connect_timeout: float = 10.0,
        failover_timeout: float = 30.0,
    ) -> None:
        self.pool_handle = pool_handle
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.selector = selector
        self.report_unreachable = report_unreachable
        self.tls_options_for = tls_options_for
        self.on_data = on_data
        self.failover_callback = failover_callback
        self.ppid = check_data_ppid(ppid)
        self.core = PuSession(pool_handle, settings)
        self.channel_settings = channel_settings or ChannelSettings()
        self.connect_timeout = connect_timeout
        self.failover_timeout = failover_timeout
        self._conn: _ClientConnection | None = None
        self._pending: IDelayedCall | None = None
        self._handshake_timer: IDelayedCall | None = None
        self._started: defer.Deferred[PoolElement] | None = None
        self._closing: list[defer.Deferred[None]] = []
        self._generation = 0
        self._callback_running: defer.Deferred[Any] | None = None
        self.ended: defer.Deferred[None] = defer.Deferred()

    # -- public API -----------------------------------------------------------

    @property
    def state(self) -> PuState:
        return self.core.state

    @property
    def current_pe(self) -> PoolElement | None:
        return self.core.current

    @property
    def failovers(self) -> int:
        return self.core.failovers

    def start(self) -> defer.Deferred[PoolElement]:
        """Connect; fires with the PE once data can flow, fails with
        :class:`SessionClosedError` if no PE could be reached."""
        self._started = defer.Deferred()
        self._carry_out(self.core.start(self.clock.seconds()))
        return self._started

    def send(self, payload: bytes, *, during_failover: bool = False) -> None:
        """Send application data (see :meth:`PuSession.send` for queuing)."""
        self._carry_out(self.core.send(payload, during_failover=during_failover))

    def send_business_card(self, pool_handle: bytes, pool_elements: Iterable[PoolElement]) -> None:
        """A PU/PE combination's own business card for its PE."""
        self._carry_out(self.core.send_business_card(pool_handle, tuple(pool_elements)))

    def close(self) -> defer.Deferred[None]:
        """End the session (no failover); fires once the connection is gone."""
        self.core.close()
        self._generation += 1
        self._cancel_timers()
        conn, self._conn = self._conn, None
        running, self._callback_running = self._callback_running, None
        if running is not None and not running.called:
            running.cancel()  # its timeout must not outlive the session
        done: defer.Deferred[None] = defer.succeed(None)
        if conn is not None and not conn.lost:
            done = defer.Deferred()
            self._closing.append(done)
            channel = conn.channel
            if channel is not None and channel.transport is not None:
                channel.close()
            elif conn.connecting is not None:
                conn.connecting.cancel()
        self._end(None)
        return done

    # -- carrying out the core's actions ------------------------------------------

    def _carry_out(self, actions: list[Any]) -> None:
        for action in actions:
            kind = type(action)
            if kind is SendData:
                self._channel().send_encoded(self.ppid, action.payload)
            elif kind is SendControl:
                self._channel().send(action.message)
            elif kind is Select:
                self._later(action.delay, self._select)
            elif kind is Connect:
                self._later(action.delay, self._connect, action.pe)
            elif kind is ReportUnreachable:
                self._report(action)
            elif kind is RunFailoverCallback:
                self._run_failover_callback(action)
            elif kind is Established:
                _log.info("session with pool {pool} established with PE {pe_id:08x}{how}",
                          pool=pool_handle_text(self.pool_handle), pe_id=action.pe.pe_id,
                          how=" after failover" if action.failover else "")
                started, self._started = self._started, None
                if started is not None:
                    started.callback(action.pe)
            elif kind is GiveUp:
                _log.error("session with pool {pool} gave up: {reason} ({dropped} queued "
                           "messages dropped)", pool=pool_handle_text(self.pool_handle), reason=action.reason,
                           dropped=action.dropped)
                self._end(SessionClosedError(action.reason))
            elif kind is Ignored:
                _log.info("session with pool {pool} ignored {what}: {why}",
                          pool=pool_handle_text(self.pool_handle), what=action.what, why=action.why)

    def _channel(self) -> Channel:
        conn = self._conn
        assert conn is not None and conn.channel is not None, "no connection to send on"
        return conn.channel

    def _later(self, delay: float, func: Callable[..., None], *args: Any) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = self.clock.callLater(delay, func, *args)

    def _cancel_timers(self) -> None:
        for timer in (self._pending, self._handshake_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._pending = self._handshake_timer = None

    def _end(self, error: Exception | None) -> None:
        started, self._started = self._started, None
        if started is not None:
            started.errback(error or SessionClosedError("closed before it was established"))
        if not self.ended.called:
            if error is None:
                self.ended.callback(None)
            else:
                self.ended.errback(error)
                self.ended.addErrback(lambda _: None)  # nobody has to listen

    # -- selection and connection ----------------------------------------------------

    def _select(self) -> None:
        self._pending = None
        generation = self._generation
        d = defer.maybeDeferred(self.selector, self.pool_handle)

        def chosen(pe: PoolElement) -> None:
            if generation == self._generation:
                self._carry_out(self.core.pe_selected(pe, self.clock.seconds()))

        def failed(failure: Failure) -> None:
            if generation == self._generation:
                why = failure.getErrorMessage() or failure.type.__name__
                self._carry_out(self.core.selection_failed(why, self.clock.seconds()))

        d.addCallbacks(chosen, failed)

    def _connect(self, pe: PoolElement) -> None:
        self._pending = None
        self._generation += 1
        conn = self._conn = _ClientConnection(self, pe)
        try:
            host, port = _address_of(pe)
            creator = self.tls_options_for(pe)
        except Exception as exc:  # unusable PE: counts as a failed attempt
            _log.warn("cannot connect to PE {pe_id:08x}: {error}", pe_id=pe.pe_id, error=exc)
            self._connection_lost(conn, Failure(exc))
            return
        if ipaddress.ip_address(host).version == 6:
            tcp = endpoints.TCP6ClientEndpoint(self.reactor, host, port, timeout=self.connect_timeout)
        else:
            tcp = endpoints.TCP4ClientEndpoint(self.reactor, host, port, timeout=self.connect_timeout)
        endpoint = tls_client_endpoint(creator, tcp, self.clock)
        channel = Channel(conn, self.clock, self.channel_settings, tls=True, initiator=True)
        conn.channel = channel
        _log.info("connecting to PE {pe_id:08x} at {host}:{port}", pe_id=pe.pe_id, host=host, port=port)
        d = conn.connecting = endpoints.connectProtocol(endpoint, channel)
        d.addErrback(lambda failure: self._connection_lost(conn, failure))
        self._handshake_timer = self.clock.callLater(self.connect_timeout, self._handshake_timeout, conn)

    def _handshake_timeout(self, conn: _ClientConnection) -> None:
        self._handshake_timer = None
        if conn is self._conn and not conn.ready and conn.channel is not None:
            _log.warn("TLS handshake with PE {pe_id:08x} timed out", pe_id=conn.pe.pe_id)
            conn.channel.abort()

    def _connection_ready(self, conn: _ClientConnection) -> None:
        if conn is not self._conn:
            return
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None
        self._carry_out(self.core.connected(self.clock.seconds()))

    def _connection_lost(self, conn: _ClientConnection, reason: Failure) -> None:
        if conn.lost:
            return
        conn.lost = True
        waiting, self._closing = self._closing, []
        for d in waiting:
            d.callback(None)
        if conn is not self._conn:
            return
        self._conn = None
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None
        running, self._callback_running = self._callback_running, None
        if running is not None and not running.called:
            running.cancel()  # re-keying with a dead PE is moot
        why = connection_error_text(reason)
        _log.info("connection to PE {pe_id:08x} lost: {reason}", pe_id=conn.pe.pe_id, reason=why)
        self._carry_out(self.core.connection_lost(self.clock.seconds(), why))

    # -- traffic -------------------------------------------------------------------------

    def _control_received(self, conn: _ClientConnection, message: Any, now: float) -> None:
        if conn is self._conn:
            self._carry_out(self.core.control_received(message, now))

    def _data_received(self, conn: _ClientConnection, ppid: int, payload: bytes) -> None:
        if conn is not self._conn:
            return
        if ppid != self.ppid:
            _log.warn("dropped {size} bytes with unexpected PPID {ppid} from PE {pe_id:08x}",
                      size=len(payload), ppid=ppid, pe_id=conn.pe.pe_id)
            return
        self.on_data(payload)

    def _report(self, action: ReportUnreachable) -> None:
        _log.info("reporting PE {pe_id:08x} of pool {pool} unreachable",
                  pe_id=action.pe_id, pool=pool_handle_text(action.pool_handle))
        d = defer.maybeDeferred(self.report_unreachable, action.pool_handle, action.pe_id)
        d.addErrback(lambda f: _log.failure("ENDPOINT_UNREACHABLE report failed", f))

    def _run_failover_callback(self, action: RunFailoverCallback) -> None:
        conn = self._conn
        _log.info("failover from PE {old:08x} to PE {new:08x} (cookie echoed: {echoed})",
                  old=action.old_pe.pe_id, new=action.new_pe.pe_id, echoed=action.cookie_echoed)
        if self.failover_callback is None:
            self._carry_out(self.core.failover_complete(self.clock.seconds()))
            return
        d = defer.maybeDeferred(self.failover_callback, action.old_pe, action.new_pe,
                                action.cookie_echoed)
        if conn is not self._conn:  # closed or lost from inside the callback
            d.cancel()
            d.addErrback(lambda _: None)
            return
        d.addTimeout(self.failover_timeout, self.clock)
        self._callback_running = d

        def done(_: Any) -> None:
            self._callback_running = None
            if conn is self._conn:
                self._carry_out(self.core.failover_complete(self.clock.seconds()))

        def refused(failure: Failure) -> None:
            self._callback_running = None
            if conn is not self._conn or conn is None:
                return
            self._conn = None  # its close is no longer a failure to report
            if conn.channel is not None:
                conn.channel.abort()
            self._carry_out(self.core.failover_refused(failure.getErrorMessage(), self.clock.seconds()))

        d.addCallbacks(done, refused)
