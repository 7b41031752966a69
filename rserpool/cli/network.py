"""What the tools that talk to registrars share (``rserpool resolve``,
``rserpool echo``): arguments checked before any connection, one readable
line per failure, a deadline that holds, and an early exit when every
registrar has failed.

- ``check_registrars`` and ``check_tls_files`` return the problems with the
  command line (a registrar that is not ``HOST:PORT``, a file that is
  missing, not PEM, a key instead of a certificate, a key that does not
  match its certificate), each as one line naming the option.
- ``Attempt`` races an operation (a Deferred) against the deadline and
  against the server hunt: when every registrar of a round has failed
  (refused, certificate refused, name mismatch, DNS), it fails at once with
  one line per registrar instead of waiting for the next round.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from twisted.internet import defer
from twisted.python.failure import Failure

__all__ = ["Attempt", "ToolFailure", "check_registrars", "check_tls_files", "report"]


class ToolFailure(Exception):
    """A failure to report: ``lines`` are printed one per line."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = list(lines)


def report(prog: str, lines: Iterable[str], err: Any) -> None:
    for line in lines:
        err.write(f"{prog}: {line}\n")
    err.flush()


def check_registrars(values: Iterable[str]) -> list[str]:
    """``--registrar`` values that are not ``HOST[:PORT] [server-name]``
    (the port defaults to 3864)."""
    from rserpool.asap.hunt import StaticEntry

    problems = []
    for value in values:
        try:
            StaticEntry.parse(value)
        except ValueError as exc:
            problems.append(f"--registrar {value}: {exc} (expected HOST:PORT, e.g. 127.0.0.1:3864)")
    return problems


def check_tls_files(ca: Iterable[str], cert: str | None, key: str | None) -> list[str]:
    """The trust roots and the client certificate and key, loaded now:
    what is wrong with them, one line each."""
    from rserpool.security import pki

    problems = []
    for path in ca:
        try:
            pki.load_certificates(path)
        except ValueError as exc:  # PkiFileError
            problems.append(f"--ca {exc}")
    if (cert is None) != (key is None):
        problems.append("--cert and --key go together")
        return problems
    if cert is not None and key is not None:
        loaded: list[Any] = []
        for option, path, load in (("--cert", cert, pki.load_certificate),
                                   ("--key", key, pki.load_private_key)):
            try:
                loaded.append(load(path))
            except ValueError as exc:
                problems.append(f"{option} {exc}")
        if len(loaded) == 2:
            try:
                pki.check_key_pair(loaded[0], loaded[1], cert, key)
            except ValueError as exc:
                problems.append(f"--key {exc}")
    return problems


def _hunt_failure_lines(pu: Any, failures: list[tuple[Any, str]]) -> list[str]:
    host = lambda c: f"[{c.host}]" if ":" in c.host else c.host  # noqa: E731
    lines = [f"cannot reach registrar {host(c)}:{c.port}: {why}" for c, why in failures]
    source = getattr(getattr(pu, "hunt", None), "source", None)
    lines += [f"cannot reach registrar {text}" for text in getattr(source, "lookup_failures", ())]
    return lines or ["no registrar to try"]


class Attempt:
    """Runs one operation of a tool against a deadline and the hunt.

    ``run(operation)`` fires with the operation's result or fails with
    ``ToolFailure``: after ``timeout`` seconds ("no answer within ..."), as
    soon as every registrar of the pool user's hunt round has failed, or
    when ``fail(lines)`` is called (a failure the tool knows is final).
    """

    def __init__(self, reactor: Any, timeout: float, pu: Any, what: str,
                 last_error: Callable[[], str] | None = None) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.pu = pu
        self.what = what
        self.last_error = last_error  # why the operation's last try failed, for the deadline
        self._finish: Callable[[Any], None] | None = None

    def fail(self, lines: Sequence[str]) -> None:
        if self._finish is not None:
            self._finish(Failure(ToolFailure(lines)))

    def run(self, operation: Callable[[], defer.Deferred]) -> defer.Deferred:
        result: defer.Deferred = defer.Deferred()
        hunt = getattr(self.pu, "hunt", None)
        observers = getattr(hunt, "exhausted_observers", None)
        done: list[bool] = []
        running: list[defer.Deferred] = []

        def finish(outcome: Any) -> None:
            if done:
                return  # e.g. the operation's own errback when it is cancelled below
            done.append(True)
            self._finish = None
            if timer.active():
                timer.cancel()
            if observers is not None and exhausted in observers:
                observers.remove(exhausted)
            for d in running:
                if not d.called:
                    d.cancel()
                    d.addErrback(lambda _: None)
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)

        def exhausted(failures: list[tuple[Any, str]]) -> None:
            finish(Failure(ToolFailure(_hunt_failure_lines(self.pu, failures))))

        def deadline() -> None:
            finish(Failure(ToolFailure([f"no {self.what} within {self.timeout:g} s{self._where()}"])))

        self._finish = finish
        timer = self.reactor.callLater(self.timeout, deadline)
        if observers is not None:
            observers.append(exhausted)
        d = defer.maybeDeferred(operation)
        running.append(d)
        d.addBoth(finish)
        return result

    def _where(self) -> str:
        last = self.last_error() if self.last_error is not None else ""
        if last:
            return f" (last: {last})"
        if getattr(self.pu, "home", None) is None:
            return " (no registrar answered the TLS handshake yet)"
        return ""
