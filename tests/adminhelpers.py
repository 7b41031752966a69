"""Test helpers for the admin endpoint: a registrar with its admin door on
loopback ports, and a raw HTTPS client (one request per connection, or
bytes written as slowly as an attacker likes)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, endpoints, protocol
from twisted.python.failure import Failure

from rserpool.admin import AdminAccess, AdminService, AdminSettings
from rserpool.admin.access import admin_gate, certificate_identity_of
from rserpool.security import pki, tls
from rserpool.security.authz import RulesAuthorizer, parse_rules
from tests.asaphelpers import RegistrarClientsMixin, make_pe, start_registrar
from tests.tlshelpers import CertFiles

#: pe1 registers in echo; "admin" reads the admin endpoint; pu1 resolves.
RULES = """
admin   admin                 *
pe1     register,deregister   echo
*       resolve               *
"""

TOKEN = "prometheus-scrape-token-0123456789"


def admin_cert(test_pki: Any) -> CertFiles:
    """A client certificate named "admin" from the test CA (made once per PKI)."""
    cert_path = Path(test_pki.directory) / "admin.pem"
    key_path = Path(test_pki.directory) / "admin.key"
    issued = test_pki.extra.get("admin")
    if issued is None:
        issued = pki.create_client_certificate(test_pki.ca.issued, "admin", test_pki.now, role="admin")
        pki.write_certificate(cert_path, issued.certificate)
        pki.write_private_key(key_path, issued.private_key)
        test_pki.extra["admin"] = issued
    return CertFiles(cert_path, key_path, issued)


def write_token(directory: Path, token: str = TOKEN, mode: int = 0o600) -> Path:
    path = Path(directory) / "admin.token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, mode)
    return path


@dataclass
class HttpAnswer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    raw: bytes = b""
    reason: Failure | None = None

    def json(self) -> Any:
        return json.loads(self.body)


class _RawHttp(protocol.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.done.callback(_parse(self.data, reason))


def _parse(raw: bytes, reason: Failure | None) -> HttpAnswer:
    answer = HttpAnswer(raw=raw, reason=reason)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if lines and lines[0].startswith(b"HTTP/1."):
        answer.status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            answer.headers[name.strip().lower().decode()] = value.strip().decode("latin-1")
        answer.body = body
    return answer


class AdminHarness(RegistrarClientsMixin):
    """Mixin for trial TestCases: ``self.registrar`` with ``self.admin`` on
    127.0.0.1:0, the test PKI in ``self.pki``."""

    token: str | None = None
    token_scope = "metrics"
    settings = AdminSettings(request_timeout=2.0, idle_timeout=5.0, refresh=1)

    @defer.inlineCallbacks
    def start_admin(self, test_pki: Any, rules: str = RULES, authorizer: Any = None, registrar: Any = None,
                    **registrar_kwargs: Any):
        """Starts a registrar (or uses ``registrar``, started) and its admin endpoint."""
        from twisted.internet import reactor

        self.pki = test_pki
        self.clients = []
        if registrar is not None:
            authorizer = registrar.authorizer
            self.registrar = registrar
        else:
            authorizer = authorizer or RulesAuthorizer(parse_rules(rules))
            self.registrar = yield start_registrar(reactor, test_pki, authorizer=authorizer, **registrar_kwargs)
        token = None
        if self.token is not None:
            from rserpool.admin import load_token

            token = load_token(str(write_token(test_pki.directory, self.token)))
        options = tls.server_options(test_pki.server.cert, test_pki.server.key, [test_pki.ca.cert],
                                     require_client_cert=token is None)
        access = AdminAccess(authorizer=authorizer, identity_of=certificate_identity_of(self.registrar),
                             gate=admin_gate(self.registrar), clock=reactor, token=token,
                             token_scope=self.token_scope,
                             on_outage=lambda: self.registrar.events.outage("admin-authorizer"))
        self.admin = AdminService(self.registrar, reactor=reactor, listen=["tcp:0:interface=127.0.0.1"],
                                  tls_options=options, access=access, settings=self.settings)
        yield defer.maybeDeferred(self.admin.startService)
        return self.admin

    @defer.inlineCallbacks
    def stop_admin(self):
        yield self.close_clients()
        yield defer.maybeDeferred(self.admin.stopService)
        yield defer.maybeDeferred(self.registrar.stopService)

    @property
    def admin_port(self) -> int:
        return self.admin.addresses[0].port

    def creator(self, cert: CertFiles | None = None) -> Any:
        return tls.client_options("localhost", [self.pki.ca.cert],
                                  client_cert=cert.pair if cert is not None else None)

    @defer.inlineCallbacks
    def open_raw(self, cert: CertFiles | None = None, tls_on: bool = True):
        """A connected raw protocol (``.transport``, ``.done`` fires with an HttpAnswer)."""
        from twisted.internet import reactor

        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.admin_port)
        if tls_on:
            endpoint = endpoints.wrapClientTLS(self.creator(cert), endpoint)
        raw = yield endpoint.connect(protocol.Factory.forProtocol(_RawHttp))
        return raw

    @defer.inlineCallbacks
    def get(self, path: str, cert: CertFiles | None = None, headers: dict[str, str] | None = None,
            method: str = "GET", extra: bytes = b""):
        """One request with ``Connection: close``; fires with an HttpAnswer."""
        raw = yield self.open_raw(cert)
        lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        raw.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + extra)
        from twisted.internet import reactor

        answer = yield raw.done.addTimeout(10, reactor)
        return answer

    @defer.inlineCallbacks
    def register_pe(self, pe_id: int, cert: CertFiles | None = None, handle: bytes = b"echo"):
        """Registers a PE through a real ASAP channel; fires with the client."""
        from rserpool.wire import AsapRegistration

        client = yield self.connect(cert or self.pki.pe1)
        reply = yield client.request(AsapRegistration(handle, make_pe(pe_id)))
        self.assert_accepted(reply)
        return client
