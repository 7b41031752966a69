"""Errors shared across rserpool's security layers and backends.

The one distinction that matters everywhere: a *refusal* (bad credentials,
unknown identity, "no" from a policy) is not a *failure to decide* (a
backend that is down, slow, misconfigured or returned garbage).  Refusals
are :class:`twisted.cred.error.UnauthorizedLogin` or a plain ``False``;
failures to decide are :class:`BackendUnavailable`.  Both end in the same
place on the wire (fail closed, RFC 5354 cause 0xa), but they are logged
differently and only a refusal may count as a failed attempt of the peer.
"""

from __future__ import annotations

__all__ = ["BackendUnavailable", "PluginError", "PluginNotFound", "UnsafePluginDirectory", "StartupError",
           "describe_listen_error"]


class BackendUnavailable(Exception):
    """A backend (file store, RADIUS, LDAP, ...) could not answer.

    This is never a "no": callers fail closed and log it as an outage, and
    must not report it to the peer, or count it, as a wrong secret.  Backends
    raise it (or a subclass) and checkers convert unexpected backend
    exceptions into it.
    """


class PluginError(Exception):
    """A plugin could not be found, loaded or built."""


class PluginNotFound(PluginError, LookupError):
    """No plugin of that kind has that name; the message lists the names."""

    def __init__(self, kind: str, name: str, available: tuple[str, ...]) -> None:
        self.kind = kind
        self.name = name
        self.available = available
        names = ", ".join(available) if available else "none"
        super().__init__(f"unknown {kind} plugin {name!r} (available: {names})")


class UnsafePluginDirectory(PluginError):
    """A site plugin directory (or a file in it) could be changed by others."""


class StartupError(Exception):
    """The registrar cannot start; ``lines`` say why, one problem each
    (rserpool.startup, rserpool.logs.LoggingRoot)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


def describe_listen_error(error: BaseException) -> str:
    """Why an endpoint could not listen, in one line."""
    import errno as errnos

    from twisted.internet.error import CannotListenError

    if isinstance(error, CannotListenError):
        socket_error = error.socketError
        code = getattr(socket_error, "errno", None)
        reasons = {errnos.EADDRINUSE: "address already in use (another process listens there)",
                   errnos.EADDRNOTAVAIL: f"this host has no address {error.interface}",
                   errnos.EACCES: "permission denied (ports below 1024 need privileges)"}
        reason = reasons.get(code, getattr(socket_error, "strerror", None) or str(socket_error))
        where = f"{error.interface}:{error.port}" if error.interface else f"port {error.port}"
        return f"cannot listen on {where}: {reason}"
    return f"cannot listen: {error}"
