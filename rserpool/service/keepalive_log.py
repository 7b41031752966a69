"""What a pool element logs about the keep-alives it does not answer
(RFC 5355 2.14: a registrar, or someone in its place, flooding a PE with
ASAP_ENDPOINT_KEEP_ALIVE must not make it flood back, nor flood its log).

Per registrar channel: one warning for the first drop, then at most one
summary line per ``interval`` seconds while drops go on (none while quiet),
and one when the channel closes with drops not yet logged.  The clock is
the injected reactor's.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from rserpool.service.channel import address_text

__all__ = ["KeepAliveDropLog"]

_log = Logger()


class _ChannelLog:
    """What the log said about one channel's dropped keep-alives."""

    __slots__ = ("total", "unlogged", "call")

    def __init__(self) -> None:
        self.total = 0  # dropped on this channel
        self.unlogged = 0  # dropped since the last line
        self.call: IDelayedCall | None = None  # the next summary


class KeepAliveDropLog:
    """The drop log of one pool element.

    ``pe_id()`` names the PE in each line; ``dropped_in_all()`` is the
    PE's count of drops over its life (printed in the summaries).
    """

    def __init__(self, clock: IReactorTime, interval: float, *, pe_id: Callable[[], int],
                 dropped_in_all: Callable[[], int]) -> None:
        if not interval > 0:
            raise ValueError("keepalive_log_interval must be positive")
        self.clock = clock
        self.interval = interval
        self._pe_id = pe_id
        self._dropped_in_all = dropped_in_all
        self.channels: dict[Any, _ChannelLog] = {}

    def dropped(self, channel: Any, rate: float, burst: float) -> None:
        """One keep-alive from ``channel`` was not answered (the PE's limit
        is ``rate`` per second with ``burst``)."""
        log = self.channels.get(channel)
        if log is None:
            log = self.channels[channel] = _ChannelLog()
            log.total = 1
            _log.warn("PE {pe_id:08x}: registrar {peer} sends keep-alives faster than "
                      "{rate:g}/s (burst {burst:g}); not answering the excess (RFC 5355 2.14); "
                      "further drops are summarized every {interval:g} s",
                      pe_id=self._pe_id(), peer=address_text(channel.peer), rate=rate, burst=burst,
                      interval=self.interval)
        else:
            log.total += 1
            log.unlogged += 1
        if log.call is None:
            log.call = self.clock.callLater(self.interval, self._summarize, channel)

    def channel_closed(self, channel: Any) -> None:
        """Forget ``channel``, logging the drops not logged yet."""
        log = self.channels.pop(channel, None)
        if log is None:
            return
        if log.call is not None and log.call.active():
            log.call.cancel()
        log.call = None
        if log.unlogged:
            self._log(channel, log, "before the channel closed")

    def close_all(self) -> None:
        for channel in list(self.channels):
            self.channel_closed(channel)

    def _summarize(self, channel: Any) -> None:
        log = self.channels.get(channel)
        if log is None:
            return
        log.call = None
        if not log.unlogged:
            return  # quiet for an interval: the next drop starts a new one
        self._log(channel, log, f"in the last {self.interval:g} s")
        log.call = self.clock.callLater(self.interval, self._summarize, channel)

    def _log(self, channel: Any, log: _ChannelLog, when: str) -> None:
        _log.warn("PE {pe_id:08x}: dropped {count} more keep-alive(s) from registrar {peer} "
                  "{when} ({total} on this channel, {all} in all)", pe_id=self._pe_id(),
                  count=log.unlogged, peer=address_text(channel.peer), when=when,
                  total=log.total, all=self._dropped_in_all())
        log.unlogged = 0
