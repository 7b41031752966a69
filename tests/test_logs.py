"""rserpool.logs: levels, Twisted's connection bookkeeping demoted to debug,
the twistd root service (observer component, children stopped in order)."""

from __future__ import annotations

import io

import pytest
from twisted.application.service import Application, IServiceCollection, Service
from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import ILogObserver, LogLevel, LogPublisher, Logger
from twisted.python import log as legacy_log

from rserpool.logs import LoggingRoot, QuietPredicate, parse_level, quiet_observer


def test_parse_level():
    assert parse_level("debug") is LogLevel.debug
    assert parse_level(" WARNING ") is LogLevel.warn
    with pytest.raises(ValueError, match="one of debug, info, warn, error, critical"):
        parse_level("verbose")


def collect(level: LogLevel) -> tuple[LogPublisher, list]:
    publisher = LogPublisher()
    seen: list = []
    publisher.addObserver(quiet_observer(seen.append, level))
    return publisher, seen


def twisted_noise(publisher: LogPublisher) -> None:
    """What Twisted logs at info for every connection: a factory's start and
    stop (new-style events), a port's start and close (legacy log.msg)."""
    from twisted.logger import globalLogPublisher

    globalLogPublisher.addObserver(publisher)
    try:
        factory = Factory()
        factory.doStart()
        factory.doStop()
        legacy_log.msg("_RegistrarFactory (TLS) starting on 3864")
        legacy_log.msg("(TCP Port 3864 Closed)")
    finally:
        globalLogPublisher.removeObserver(publisher)


def test_info_hides_factory_and_port_bookkeeping_but_not_the_rest():
    publisher, seen = collect(LogLevel.info)
    log = Logger(observer=publisher)
    twisted_noise(publisher)
    log.debug("a debug line")
    log.info("PE {pe_id:08x} registered", pe_id=1)
    log.warn("a warning")
    assert [e["log_format"] for e in seen] == ["PE {pe_id:08x} registered", "a warning"]


def test_debug_shows_everything():
    publisher, seen = collect(LogLevel.debug)
    twisted_noise(publisher)
    Logger(observer=publisher).debug("a debug line")
    assert len(seen) == 5


def test_warn_level():
    publisher, seen = collect(LogLevel.warn)
    log = Logger(observer=publisher)
    log.info("no")
    log.warn("yes")
    log.critical("yes too")
    assert [e["log_format"] for e in seen] == ["yes", "yes too"]


def test_noise_is_recognised_by_what_it_is_not_by_level_alone():
    predicate = QuietPredicate(LogLevel.info)
    ours = {"log_format": "{log_text}", "log_text": "registrar starting on the port 3864 now",
            "log_namespace": "rserpool.service", "log_level": LogLevel.info}
    assert predicate(ours).name == "yes"


def test_root_gives_twistd_a_filtered_observer():
    application = Application("test")
    root = LoggingRoot(LogLevel.warn, {"logfile": "-", "nodaemon": True})
    root.setServiceParent(application)
    observer = application.getComponent(ILogObserver)
    assert observer is not None
    assert root in list(IServiceCollection(application))


def test_root_keeps_an_observer_already_set():
    application = Application("test")
    mine = io.StringIO()
    application.setComponent(ILogObserver, mine.write)
    LoggingRoot(LogLevel.info).setServiceParent(application)
    assert application.getComponent(ILogObserver) == mine.write


def test_root_stops_children_one_by_one_last_first():
    order: list[str] = []
    gates = {}

    class Child(Service):
        def __init__(self, name):
            self.name = name

        def stopService(self):
            super().stopService()
            order.append(f"stop {self.name}")
            gates[self.name] = defer.Deferred()
            gates[self.name].addCallback(lambda _: order.append(f"stopped {self.name}"))
            return gates[self.name]

    root = LoggingRoot(LogLevel.info)
    for name in ("registrar", "demo"):
        Child(name).setServiceParent(root)
    root.startService()
    done = root.stopService()
    assert order == ["stop demo"]  # the registrar waits for the demo
    gates["demo"].callback(None)
    assert order == ["stop demo", "stopped demo", "stop registrar"]
    gates["registrar"].callback(None)
    assert done.called


def test_root_ends_twistd_when_a_child_cannot_listen(capfd):
    from twisted.internet.error import CannotListenError

    from rserpool.errors import StartupError

    class Refused(Service):
        def startService(self):
            super().startService()
            return defer.fail(CannotListenError("127.0.0.1", 3864, OSError(98, "in use")))

    root = LoggingRoot(LogLevel.info, {"nodaemon": True})
    Refused().setServiceParent(root)
    with pytest.raises(SystemExit) as exit:
        root.startService()
    assert exit.value.code == 1
    assert capfd.readouterr().err == ("twistd rserpool-registrar: cannot listen on 127.0.0.1:3864: "
                                       "address already in use (another process listens there)\n")
    daemon = LoggingRoot(LogLevel.info, {"nodaemon": False})
    Refused().setServiceParent(daemon)
    with pytest.raises(StartupError):  # twistd's daemon parent reports it through its status pipe
        daemon.startService()
