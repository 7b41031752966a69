"""The pool user's Twisted shell: ``PoolUser``, a Deferred API around
``rserpool.asap.pu.PuCore``.

- ``resolve(handle)`` fires with the list of ``PoolElement`` of the pool
  (from the cache when fresh, C1-C4);
- ``select(handle)`` fires with one ``PoolElement`` chosen locally by the
  pool's overall policy (RFC 5356 "Pool User Considerations");
- ``report_unreachable(handle, pe_id)`` sends ASAP_ENDPOINT_UNREACHABLE at
  most once per event and drops the PE from the cache;
- ``invalidate(handle, pe_id=None)`` purges the cache (RFC 5352 6.4);
- ``refresh(handle)`` resolves regardless of the cache (6.3).

Errors arrive as failures carrying ``UnknownPool``, ``ResolutionRefused``,
``ResolutionTimeout``, ``NoUsablePoolElement`` or ``PuBusy`` (all
``PuError``).

The home registrar is found by a server hunt: a ``ServerHunt`` (its TLS
options authenticate the registrar before any ASAP message is sent) or any
callable ``hunt() -> Deferred[Channel]`` returning a ready channel.  The
reactor (connections, ``callLater`` and ``seconds``) is injected.  See
docs/pu-library.md.
"""

from __future__ import annotations

import itertools
import random
from typing import Any, Callable, Iterable, Sequence

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from rserpool.asap.pu import (
    ResolutionFailed, NoUsablePoolElement, PuCore, PuSettings, Resolved, Send, StartHunt,
)
from rserpool.service.channel import Channel, ChannelSettings, address_text
from rserpool.wire import PoolElement, WireError
from rserpool.wire.params import pool_handle_text

__all__ = ["PoolUser", "HuntCallable"]

_log = Logger()

HuntCallable = Callable[[], "defer.Deferred[Channel]"]


class PoolUser:
    """An ASAP pool user (RFC 5352): handle resolution with a cache, local
    selection and unreachability reports, over one home registrar channel.

    ``hunt``: a ``rserpool.service.hunt.ServerHunt`` (its ``find(avoid=...)``
    is used, avoiding the registrar that just failed) or a callable
    returning a ``Deferred`` that fires with a ready ``Channel``.  The PU
    becomes that channel's handler.
    """

    def __init__(
        self,
        reactor: Any,
        hunt: Any,
        *,
        settings: PuSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.reactor = reactor
        self.hunt = hunt
        self.core = PuCore(settings, rng=rng or random.Random())
        self.home: Channel | None = None
        self._tokens = itertools.count(1)
        self._waiters: dict[int, defer.Deferred] = {}
        self._hunting: defer.Deferred | None = None
        self._timer: IDelayedCall | None = None
        self._timer_at: float | None = None
        self._stopped = False
        self._connect_waiters: list[defer.Deferred] = []

    @classmethod
    def connecting_to(
        cls,
        reactor: Any,
        registrars: Iterable[str],
        trust_roots: Sequence[Any],
        *,
        client_cert: tuple[Any, Any] | None = None,
        server_name: str | None = None,
        settings: PuSettings | None = None,
        channel_settings: ChannelSettings | None = None,
        t5_initial: float = 10.0,
        attempt_timeout: float | None = 7.5,
        rng: random.Random | None = None,
    ) -> "PoolUser":
        """A PU hunting among static registrars (``"host:port"``, IP or DNS
        name) and authenticating each by TLS: chain to ``trust_roots`` and
        the name ``server_name`` (default: the host of each entry).  A
        client certificate (``(cert_path, key_path)``) is optional."""
        from rserpool.security import tls
        from rserpool.service.candidates import RegistrarCandidates
        from rserpool.service.hunt import ServerHunt, make_channel_factory

        entries = [f"{r} {server_name}" if server_name else r for r in registrars]
        if not entries:
            raise ValueError("at least one registrar is needed")
        source = RegistrarCandidates(static=entries)
        holder: list[PoolUser] = []

        def tls_options(name: str) -> Any:
            return tls.client_options(name, list(trust_roots), client_cert=client_cert)

        factory = make_channel_factory(lambda candidate: holder[0], reactor, channel_settings)
        hunt = ServerHunt(reactor, source, tls_options, factory, t5_initial=t5_initial,
                          attempt_timeout=attempt_timeout)
        pu = cls(reactor, hunt, settings=settings, rng=rng)
        holder.append(pu)
        return pu

    # -- public API --------------------------------------------------------------------

    @property
    def settings(self) -> PuSettings:
        return self.core.settings

    def resolve(self, pool_handle: bytes) -> "defer.Deferred[list[PoolElement]]":
        """The PEs of ``pool_handle``: cached if fresh, else from the registrar."""
        return self._request(pool_handle, force=False)

    def refresh(self, pool_handle: bytes) -> "defer.Deferred[list[PoolElement]]":
        """Resolve ``pool_handle`` at the registrar whatever the cache says."""
        return self._request(pool_handle, force=True)

    def select(self, pool_handle: bytes) -> "defer.Deferred[PoolElement]":
        """One PE of the pool, chosen locally by the pool's overall policy."""

        def choose(_: Any) -> PoolElement:
            try:
                return self.core.select(pool_handle)
            except KeyError:  # evicted meanwhile (a tiny max_pools)
                raise NoUsablePoolElement(pool_handle) from None

        return self.resolve(pool_handle).addCallback(choose)

    def report_unreachable(self, pool_handle: bytes, pe_id: int) -> bool:
        """Report a failed PE (RFC 5352 3.5) and drop it from the cache.
        False when it was already reported since it was last resolved."""
        if self._stopped:
            return False
        sent, outputs = self.core.report_unreachable(pool_handle, pe_id, self.reactor.seconds())
        if sent:
            _log.info("pool user: reporting PE {pe_id:08x} of pool {handle} unreachable", pe_id=pe_id,
                      handle=pool_handle_text(pool_handle))
        self._carry_out(outputs)
        return sent

    def invalidate(self, pool_handle: bytes, pe_id: int | None = None) -> bool:
        """Purge the cached pool, or one PE of it (no message is sent)."""
        return self.core.invalidate(pool_handle, pe_id)

    def cached(self, pool_handle: bytes) -> tuple[PoolElement, ...] | None:
        """The cached PEs of ``pool_handle`` (possibly stale), or None."""
        entry = self.core.cached(pool_handle)
        return None if entry is None else entry.pool_elements

    def connect(self) -> "defer.Deferred[Channel]":
        """Hunt for a home registrar now (otherwise the first request does).
        Fires with the home channel, or fails if the hunt fails."""
        if self.home is not None and not self.home.closed:
            return defer.succeed(self.home)
        if self._stopped:
            return defer.fail(defer.CancelledError("pool user stopped"))
        done: defer.Deferred = defer.Deferred()
        self._connect_waiters.append(done)
        self._start_hunt("connect requested")
        return done

    def stop(self) -> "defer.Deferred[None]":
        """Cancel the hunt and every waiting request, close the channel."""
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._hunting is not None:
            hunting, self._hunting = self._hunting, None
            hunting.cancel()
        waiters = list(self._waiters.values()) + self._connect_waiters
        self._waiters, self._connect_waiters = {}, []
        for d in waiters:
            if not d.called:
                d.errback(defer.CancelledError("pool user stopped"))
        home, self.home = self.home, None
        if home is not None and not home.closed:
            closed = home.closed_deferred()
            home.close()
            return closed
        return defer.succeed(None)

    # -- requests ------------------------------------------------------------------------

    def _request(self, pool_handle: bytes, force: bool) -> defer.Deferred:
        if self._stopped:
            return defer.fail(defer.CancelledError("pool user stopped"))
        token = next(self._tokens)

        def cancel(_: defer.Deferred) -> None:
            self._waiters.pop(token, None)
            self.core.cancel(token)

        d: defer.Deferred = defer.Deferred(cancel)
        self._waiters[token] = d
        try:
            outputs = self.core.resolve(pool_handle, token, self.reactor.seconds(), force=force)
        except ValueError as exc:
            self._waiters.pop(token, None)
            return defer.fail(exc)
        self._carry_out(outputs)
        return d

    def _carry_out(self, outputs: list) -> None:
        for output in outputs:
            kind = type(output)
            if kind is Send:
                if self.home is not None and not self.home.closed:
                    self.home.send(output.message)
            elif kind is Resolved:
                pes = list(output.pool_elements)
                for token in output.tokens:
                    d = self._waiters.pop(token, None)
                    if d is not None:
                        d.callback(list(pes))
            elif kind is ResolutionFailed:
                for token in output.tokens:
                    d = self._waiters.pop(token, None)
                    if d is not None:
                        d.errback(Failure(output.error))
            elif kind is StartHunt:
                self._start_hunt(output.reason)
        self._arm_timer()

    # -- home registrar --------------------------------------------------------------------

    def _start_hunt(self, reason: str) -> None:
        if self._hunting is not None or self._stopped:
            return
        _log.info("pool user: server hunt ({reason})", reason=reason)
        find = getattr(self.hunt, "find", None)
        try:
            if find is not None:
                if getattr(self.hunt, "hunting", False):
                    # Somebody else's hunt on a shared object: try again at the next T1.
                    _log.warn("pool user: the server hunt object is busy elsewhere")
                    self.core.hunt_over()
                    return
                last = getattr(self.hunt, "home", None)
                hunting = find(avoid=[last] if last is not None else [])
            else:
                hunting = self.hunt()
        except Exception:
            _log.failure("pool user: cannot start a server hunt")
            self._hunt_failed(Failure())
            return
        self._hunting = hunting
        hunting.addCallbacks(self._hunted, self._hunt_failed)

    def _hunted(self, channel: Channel) -> Channel:
        self._hunting = None
        if self._stopped:
            channel.close()
            return channel
        channel.handler = self
        old, self.home = self.home, channel
        if old is not None and old is not channel:
            old.close()  # its channel_closed is ignored: no longer the home
        _log.info("pool user: home registrar {peer}", peer=address_text(getattr(channel, "peer", None)))
        waiting, self._connect_waiters = self._connect_waiters, []
        for d in waiting:
            d.callback(channel)
        self._carry_out(self.core.home_up(self.reactor.seconds()))
        return channel

    def _hunt_failed(self, failure: Failure) -> None:
        self._hunting = None
        self.core.hunt_over()
        if not failure.check(defer.CancelledError):
            _log.warn("pool user: server hunt failed: {error}", error=failure.getErrorMessage())
        waiting, self._connect_waiters = self._connect_waiters, []
        for d in waiting:
            d.errback(failure)

    # -- ChannelHandler ----------------------------------------------------------------------

    def channel_ready(self, channel: Channel) -> None:
        pass  # adopted when the hunt's Deferred fires

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        if channel is not self.home:
            return
        self._carry_out(self.core.message_received(message, now))

    def wire_error(self, channel: Channel, ppid: int, error: WireError, now: float) -> None:
        _log.info("pool user: undecodable message from the registrar: {error}", error=error)

    def data_received(self, channel: Channel, ppid: int, payload: bytes, now: float) -> None:
        _log.info("pool user: ignoring data with PPID {ppid} from the registrar", ppid=ppid)

    def channel_closed(self, channel: Channel, reason: Failure) -> None:
        if channel is not self.home:
            return
        self.home = None
        if self._stopped:
            return
        _log.info("pool user: home registrar channel closed: {reason}",
                  reason=reason.getErrorMessage() if reason is not None else "")
        self._carry_out(self.core.home_lost(self.reactor.seconds()))

    # -- T1 ------------------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        if self._stopped:
            return
        deadline = self.core.next_deadline()
        if deadline is None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            return
        if self._timer is not None and self._timer.active():
            if self._timer_at is not None and self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.reactor.callLater(max(0.0, deadline - self.reactor.seconds()),
                                             self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._carry_out(self.core.on_timer(self.reactor.seconds()))
