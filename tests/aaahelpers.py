"""Test helpers shared by the RADIUS and LDAP integration tests.

- ``BackendProcess``: the process management of the private FreeRADIUS
  (``tests/radius_fixture.py``) and slapd (``tests/ldap_fixture.py``):
  start with the output appended to a log file and a bounded readiness
  poll, stop (SIGTERM, then SIGKILL), pause/resume (SIGSTOP/SIGCONT).
- ``BackendRegistrarMixin``: for trial TestCases of a registrar whose
  authorizer asks such a server, the steps and checks of the "backend
  stopped / paused / restarted" tests (``tests/test_service_radius.py``,
  ``tests/test_service_ldap.py``).
"""

from __future__ import annotations

import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, NamedTuple, Self

from twisted.internet import defer, task
from twisted.logger import formatEvent, globalLogPublisher

from rserpool.security import pki as pkimod
from rserpool.wire import AsapHandleResolution, AsapRegistration
from tests.asaphelpers import RegistrarClientsMixin, make_pe
from tests.tlshelpers import CertFiles

MEDIAN_BOUND = 0.020  # seconds, a handle resolution during an outage


# -- the backend servers' processes ---------------------------------------------------------


def free_port(kind: int) -> int:
    """A port of 127.0.0.1 free at the moment (``kind``: socket.SOCK_STREAM or SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BackendProcess:
    """One private server process.  A subclass sets ``name`` (in error
    messages) and ``stop_timeout`` and writes ``configure()`` (idempotent),
    ``command()`` and ``_wait_ready()`` (bounded; raising
    ``self._not_ready()`` when it gives up)."""

    name = "server"
    stop_timeout = 5.0  # seconds after SIGTERM before SIGKILL

    def __init__(self, base_dir: Path, executable: str, log_name: str) -> None:
        self.base = Path(base_dir)
        self.executable = executable
        self.log_path = self.base / log_name
        self.process: subprocess.Popen[bytes] | None = None
        self._configured = False

    def configure(self) -> None:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def _wait_ready(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self.configure()
        if self.process is not None:
            raise RuntimeError("already running")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _check_running(self) -> None:
        """For ``_wait_ready``: raise with the log's tail if the process exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n"
                               + self.log_tail())

    def _not_ready(self) -> RuntimeError:
        return RuntimeError(f"{self.name} did not answer in time:\n" + self.log_tail())

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused server cannot exit
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- a registrar against a backend that goes away --------------------------------------------


def client_cert(test_pki: Any, name: str) -> CertFiles:
    """A client certificate for ``name`` from the test PKI's CA, written next to its files."""
    issued = pkimod.create_client_certificate(test_pki.ca.issued, name, test_pki.now)
    cert, key = test_pki.directory / f"{name}.pem", test_pki.directory / f"{name}.key"
    pkimod.write_certificate(cert, issued.certificate, *issued.chain)
    pkimod.write_private_key(key, issued.private_key)
    return CertFiles(cert, key, issued)


class StallTicker:
    """A ``LoopingCall`` every ``interval`` seconds that records the gaps
    between its ticks: a reactor that never stalled shows many ticks, none
    far apart.  ``start`` and ``stop`` may be called once each."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.gaps: list[float] = []
        self._last = time.monotonic()
        self._call = task.LoopingCall(self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        self.gaps.append(now - self._last)
        self._last = now

    def start(self) -> None:
        self._last = time.monotonic()
        self._call.start(self.interval)

    def stop(self) -> None:
        if self._call.running:
            self._call.stop()


class Refusal(NamedTuple):
    """A registration refused while the backend did not answer."""

    channel: Any  # the PE's RawClient
    elapsed: float  # seconds from the request to the refusal
    latencies: list[float]  # of the handle resolutions made meanwhile
    gaps: list[float] | None  # between the 10 ms ticks meanwhile (paused backend only)


class BackendRegistrarMixin(RegistrarClientsMixin):
    """The shared parts of the tests of a registrar whose authorizer asks a
    real backend server that the tests stop or pause.

    The TestCase provides ``start_registrar()`` (a Deferred; it calls
    ``serve``), ``backend`` (the ``BackendProcess``), ``backend_queries()``
    (requests the authorizer sent so far), ``backend_outage_line(start,
    identity)`` (the authorizer logged the backend as unavailable since event
    ``start``), and the class attributes ``outage_failure`` (the exception the
    registrar logs then), ``outage_bound`` (the seconds after which the
    authorizer gives up) and ``outage_slack`` (how much later a refusal may
    come)."""

    backend: BackendProcess
    outage_failure: type[Exception]
    outage_bound: float
    outage_slack: float

    def watch_log(self) -> None:
        """For setUp: log events into ``self.events``; no clients yet."""
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.clients: list[Any] = []

    def backend_queries(self) -> int:
        raise NotImplementedError

    def backend_outage_line(self, start: int, identity: str) -> bool:
        raise NotImplementedError

    @defer.inlineCallbacks
    def serve(self, registrar):
        """Start ``registrar`` as ``self.registrar``; at cleanup, close the
        clients and stop it (``_stop``)."""
        yield registrar.startService()
        self.addCleanup(self._stop, registrar)
        self.registrar = registrar
        return registrar

    @defer.inlineCallbacks
    def _stop(self, registrar):
        yield self.close_clients()
        yield registrar.stopService()
        self.assertFalse(registrar.authorizer.running)

    def outage_logged(self, start: int, identity: str) -> bool:
        """Since event ``start``: the backend's unavailability, and the gate's
        refusal for ``identity`` because of it, logged as an outage (error
        level, "authorization unavailable"), not as a "no"."""
        from twisted.logger import LogLevel

        backend = self.backend_outage_line(start, identity)
        registrar = any(
            event.get("log_level") == LogLevel.error
            and event.get("who") == identity
            and event.get("reason", "").startswith("authorization unavailable")
            and formatEvent(event).startswith("refused ")
            for event in self.events[start:])
        return backend and registrar

    @defer.inlineCallbacks
    def start_with_pe1_and_pu(self):
        """Start the registrar, register pe1 (by its certificate) in echo as
        PE 0x100 and connect a PU; the PU."""
        yield self.start_registrar()
        pe1 = yield self.connect(self.pki.pe1)
        self.assert_accepted((yield pe1.request(AsapRegistration(b"echo", make_pe(0x100)))))
        pu = yield self.connect()
        return pu

    @defer.inlineCallbacks
    def idle_latencies(self, pu, count: int = 20):
        """``count`` resolutions of echo one after another; their latencies."""
        latencies = []
        for _ in range(count):
            started = time.monotonic()
            yield pu.request(AsapHandleResolution(b"echo"))
            latencies.append(time.monotonic() - started)
        return latencies

    @defer.inlineCallbacks
    def refusal_during_outage(self, cert: CertFiles, pe_id: int, pu):
        """On a new channel with ``cert``, register ``pe_id`` in echo while the
        backend does not answer, resolving echo (PE 0x100) on ``pu`` back to
        back until the answer: refused with 0xa.  A ``Refusal`` (no gaps)."""
        pe = yield self.connect(cert)
        started = time.monotonic()
        pending = pe.request(AsapRegistration(b"echo", make_pe(pe_id)))
        latencies = yield self.resolve_while(pu, pending, 0x100)
        reply = yield pending
        elapsed = time.monotonic() - started
        self.assert_refused(reply)
        return Refusal(pe, elapsed, latencies, None)

    @defer.inlineCallbacks
    def refusal_while_paused(self, cert: CertFiles, pe_id: int, pu):
        """``refusal_during_outage`` with the backend paused (SIGSTOP, SIGCONT
        after) and a 10 ms ticker running: the reactor never stalled (more
        than 10 ticks, none more than 0.2 s apart).  A ``Refusal`` with gaps."""
        ticker = StallTicker()
        self.backend.pause()
        try:
            ticker.start()
            refusal = yield self.refusal_during_outage(cert, pe_id, pu)
            ticker.stop()
        finally:
            self.backend.resume()
        self.assertGreater(len(ticker.gaps), 10)
        self.assertLess(max(ticker.gaps), 0.2)
        return refusal._replace(gaps=ticker.gaps)

    def assert_resolutions_kept(self, latencies: list[float]) -> None:
        """Resolutions went on during the outage (10 at least), at their latency."""
        self.assertGreaterEqual(len(latencies), 10)
        self.assertLess(statistics.median(latencies), MEDIAN_BOUND, latencies)

    def assert_outage_refusal(self, mark: int, identity: str, refusal: Refusal) -> None:
        """``refusal`` came when the authorizer gave up on the backend, was
        logged as an outage since event ``mark``, and resolutions kept their
        latency meanwhile."""
        self.assertGreaterEqual(refusal.elapsed, self.outage_bound * 0.9)
        self.assertLess(refusal.elapsed, self.outage_bound + self.outage_slack)
        self.assertTrue(self.outage_logged(mark, identity), self.log_lines(mark))
        self.assert_resolutions_kept(refusal.latencies)

    @defer.inlineCallbacks
    def assert_cached_identity_registers(self, pe_id: int):
        """During an outage, pe1 (authorized before it) registers ``pe_id`` in
        discard on a new session, without a request to the backend."""
        queries = self.backend_queries()
        pe1_again = yield self.connect(self.pki.pe1)
        self.assert_accepted((yield pe1_again.request(AsapRegistration(b"discard", make_pe(pe_id)))))
        self.assertEqual(self.backend_queries(), queries)


def latency_report(idle: list[float], during: list[float]) -> str:
    """Resolution latencies before and during an outage, for the test's output."""
    return (f"resolution latency idle median {statistics.median(idle) * 1e3:.2f} ms, "
            f"during the outage median {statistics.median(during) * 1e3:.2f} ms "
            f"max {max(during) * 1e3:.2f} ms over {len(during)} resolutions")
