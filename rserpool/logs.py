"""Log levels and quiet logs, for the registrar under twistd and the tools.

The default level is info.  ``twistd -n rserpool-registrar --log-level
debug`` (or ``warn``, ``error``, ``critical``) changes it; the tools take the
same ``--log-level`` (they log nothing without it: their own output is one
line per result or failure).  See docs/configuration.md, "Logs".

Twisted reports the bookkeeping of every connection at info level:
"Starting factory <... object at 0x...>", "Stopping factory ...", "Foo (TLS)
starting on 3864", "(TCP Port 3864 Closed)".  ``QuietPredicate`` counts those
as debug, so they show only at ``--log-level debug``; everything else keeps
its level.

The library itself never installs observers: an application that embeds
the PE or PU library can use ``quiet_observer(observer, level)`` around its
own observer to get the same behaviour.
"""

from __future__ import annotations

import re
import sys
from contextlib import contextmanager
from typing import Any, Iterator, TextIO

from twisted.application.service import MultiService, Service
from twisted.logger import (
    FilteringLogObserver, ILogFilterPredicate, ILogObserver, LogLevel, Logger, PredicateResult,
    textFileLogObserver,
)
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["LEVELS", "DEFAULT_LEVEL", "parse_level", "QuietPredicate", "quiet_observer",
           "LoggingRoot", "start_tool_logging", "muted", "MUTED"]

_log = Logger()

#: Level names, lowest first (twisted.logger's names).
LEVELS = ("debug", "info", "warn", "error", "critical")
DEFAULT_LEVEL = "info"
_ORDER = {LogLevel.debug: 0, LogLevel.info: 1, LogLevel.warn: 2, LogLevel.error: 3,
          LogLevel.critical: 4}

# Twisted's connection bookkeeping, logged at info level.
_NOISY_FORMATS = frozenset({
    "Starting factory {factory!r}", "Stopping factory {factory!r}",
    "Starting protocol {protocol!r}", "Stopping protocol {protocol!r}",
})
_NOISY_LEGACY = re.compile(r"^(?:\S.* starting on \d+|\(\S+ Port \d+ Closed\)"
                           r"|(?:Starting|Stopping) (?:factory|protocol) .*)$")


#: Marks events logged inside ``muted()``: no observer of ours shows them.
MUTED = "rserpool_muted"


@contextmanager
def muted() -> Iterator[None]:
    """Log events emitted inside are marked and dropped by ``QuietPredicate``
    (the registrar built only to be checked, ``rserpool.startup``, must not
    log as if it were running).  The mark is set when the event is emitted,
    so events Twisted buffers until logging starts are dropped too."""
    from twisted.logger import globalLogPublisher

    def mark(event: dict[str, Any]) -> None:
        event[MUTED] = True

    globalLogPublisher.addObserver(mark)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(mark)


def parse_level(text: str) -> LogLevel:
    """The LogLevel named ``text`` ("warning" is accepted for "warn");
    ValueError with the valid names otherwise."""
    name = text.strip().lower()
    if name == "warning":
        name = "warn"
    if name not in LEVELS:
        raise ValueError(f"unknown log level {text!r} (one of {', '.join(LEVELS)})")
    return LogLevel.levelWithName(name)


def is_noise(event: dict[str, Any]) -> bool:
    """Twisted's start/stop lines for factories, protocols and ports."""
    fmt = event.get("log_format")
    if fmt in _NOISY_FORMATS:
        return True
    if fmt == "{log_text}" and event.get("log_namespace") == "log_legacy":
        return bool(_NOISY_LEGACY.match(str(event.get("log_text", ""))))
    return False


@implementer(ILogFilterPredicate)
class QuietPredicate:
    """Lets through events at ``level`` or above, counting Twisted's
    connection bookkeeping (``is_noise``) as debug."""

    def __init__(self, level: LogLevel = LogLevel.info) -> None:
        self.level = level
        self._minimum = _ORDER[level]

    def __call__(self, event: dict[str, Any]) -> PredicateResult:
        if event.get(MUTED):
            return PredicateResult.no
        level = event.get("log_level", LogLevel.info)
        rank = _ORDER.get(level, 1)
        if rank == 1 and is_noise(event):
            rank = 0
        return PredicateResult.yes if rank >= self._minimum else PredicateResult.no


def quiet_observer(observer: ILogObserver, level: LogLevel = LogLevel.info) -> ILogObserver:
    """``observer`` behind a ``QuietPredicate(level)``."""
    return FilteringLogObserver(observer, [QuietPredicate(level)])


def _twistd_observer(twistd_options: Any) -> ILogObserver:
    """The observer twistd would make from its own options (--logfile,
    --syslog, --nodaemon): its platform's AppLogger decides."""
    try:
        from twisted.scripts._twistd_unix import UnixAppLogger as AppLogger
    except ImportError:  # not a POSIX platform
        from twisted.application.app import AppLogger
    try:
        return AppLogger(twistd_options)._getLogObserver()
    except (AttributeError, KeyError, TypeError):
        return textFileLogObserver(sys.stdout)


class LoggingRoot(MultiService):
    """The service twistd runs: it gives twistd's application a filtered log
    observer (twistd asks the application for an ``ILogObserver`` component
    before it starts logging; only ``twistd --logger`` overrides it).
    Events logged while the service was built are buffered by Twisted and
    go through the same filter.

    Its children stop one after the other, the last added first (the demo's
    PEs deregister and close before the registrar they use goes away),
    where a plain MultiService stops them all at once.
    """

    def __init__(self, level: LogLevel, twistd_options: Any = None) -> None:
        super().__init__()
        self.level = level
        self.twistd_options = twistd_options if twistd_options is not None else {}

    def startService(self) -> None:
        """Start the children; a child whose start has already failed (a
        listening port that cannot be opened) ends twistd with one line:
        exit status 1, the line on standard error in the foreground, and
        through twistd's status pipe to the parent when daemonized."""
        from twisted.internet import defer

        Service.startService(self)
        for child in self:
            started = child.startService()
            if not isinstance(started, defer.Deferred):
                continue
            outcome: list[Any] = []

            def seen(result: Any, outcome: list[Any] = outcome) -> Any:
                outcome.append(result)
                return result

            started.addBoth(seen)
            if not outcome:
                started.addErrback(self._late_start_failure, child)
            elif isinstance(outcome[0], Failure):
                started.addErrback(lambda _: None)  # reported here
                self._start_failed(child, outcome[0])

    def _start_failed(self, child: Any, failure: Failure) -> None:
        from rserpool.errors import StartupError, describe_listen_error

        if not failure.check(Exception):  # Ctrl-C before the reactor ran: not a start failure
            failure.raiseException()

        line = describe_listen_error(failure.value)
        _log.critical("{service} cannot start: {why}", service=type(child).__name__, why=line)
        if self.twistd_options.get("nodaemon"):
            # twistd has redirected sys.stderr into the log by now.
            stderr = sys.__stderr__ or sys.stderr
            stderr.write(f"twistd rserpool-registrar: {line}\n")
            stderr.flush()
            raise SystemExit(1)
        raise StartupError([line])

    def _late_start_failure(self, failure: Failure, child: Any) -> None:
        """A start that fails once the reactor runs: log it and stop with
        exit status 1 rather than run without serving."""
        import os

        from twisted.internet import reactor

        from rserpool.errors import describe_listen_error

        _log.critical("{service} cannot start: {why}; stopping", service=type(child).__name__,
                      why=describe_listen_error(failure.value))

        def exit_failed() -> None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)

        reactor.addSystemEventTrigger("after", "shutdown", exit_failed)
        reactor.stop()

    def stopService(self) -> Any:
        from twisted.internet import defer

        Service.stopService(self)
        children = list(self)

        @defer.inlineCallbacks
        def stop_in_reverse() -> Any:
            for child in reversed(children):
                if child.running:
                    try:
                        yield defer.maybeDeferred(child.stopService)
                    except Exception:
                        _log.failure("stopping {service!r} failed", service=child)

        return stop_in_reverse()

    def setServiceParent(self, parent: Any) -> None:
        set_component = getattr(parent, "setComponent", None)
        if set_component is not None and getattr(parent, "getComponent", None) is not None:
            if parent.getComponent(ILogObserver, None) is None:
                set_component(ILogObserver, quiet_observer(_twistd_observer(self.twistd_options),
                                                           self.level))
        super().setServiceParent(parent)


def start_tool_logging(level: str | None, stream: TextIO | None = None) -> None:
    """For a command-line tool: log at ``level`` to ``stream`` (standard
    error), or not at all when ``level`` is None."""
    if level is None:
        return
    from twisted.logger import globalLogBeginner

    observer = quiet_observer(textFileLogObserver(stream or sys.stderr), parse_level(level))
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
