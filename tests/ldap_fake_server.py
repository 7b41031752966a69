"""A scripted LDAP server on loopback for attack tests.

Requests are read with a small BER reader (pyasn1 cannot decode ldap3's
recursive filter CHOICE); answers are built with ldap3's own ASN.1 classes.

:class:`FakeLdapServer` listens on 127.0.0.1 (an ephemeral port), answers
every simple bind with success and every search with what ``on_search``
returns, and records every connection and bind (DN and password) it sees.
A second instance, never named in any configuration, shows whether a client
went somewhere it was only *told* about (a referral).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ldap3.protocol import rfc4511 as asn
from pyasn1.codec.ber import encoder
from twisted.internet import endpoints, protocol

#: What a search gets: (referral URIs of a SearchResultReference, or None;
#: the SearchResultDone result code; its referral URIs).
SearchAnswer = tuple[list[str] | None, str, list[str]]


def _message_size(data: bytes) -> int | None:
    """The size of the BER element at the start of ``data`` (None: not known yet)."""
    if len(data) < 2:
        return None
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if len(data) < 2 + count:
        return None
    return 2 + count + int.from_bytes(data[2:2 + count], "big")


def _elements(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, contents) of each BER element in ``data``."""
    out = []
    while data:
        size = _message_size(data)
        assert size is not None and size <= len(data), "truncated BER"
        header = 2 + (data[1] & 0x7F if data[1] >= 0x80 else 0)
        out.append((data[0], data[header:size]))
        data = data[size:]
    return out


def _result(kind: type, code: str, referrals: list[str] = ()) -> Any:
    result = kind()
    result["resultCode"] = code
    result["matchedDN"] = ""
    result["diagnosticMessage"] = ""
    if referrals:
        referral = result["referral"]
        for n, uri in enumerate(referrals):
            referral.setComponentByPosition(n, asn.URI(uri))
    return result


def _message(message_id: int, name: str, op: Any) -> bytes:
    message = asn.LDAPMessage()
    message["messageID"] = message_id
    message["protocolOp"].setComponentByName(name, op)
    return encoder.encode(message)


@dataclass
class FakeLdapServer:
    on_search: Callable[[str], SearchAnswer] = lambda _filter: (None, "success", [])
    connections: int = 0
    binds: list[tuple[str, str]] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    port: Any = None

    def listen(self, reactor: Any) -> Any:
        server = self

        class Handler(protocol.Protocol):
            buffer = b""

            def connectionMade(self) -> None:  # noqa: N802 (Twisted)
                server.connections += 1

            def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted)
                self.buffer += data
                while True:
                    size = _message_size(self.buffer)
                    if size is None or len(self.buffer) < size:
                        return
                    chunk, self.buffer = self.buffer[:size], self.buffer[size:]
                    self.transport.write(server.answer(chunk))

        factory = protocol.Factory.forProtocol(Handler)
        d = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        return d.addCallback(self._listening)

    def _listening(self, port: Any) -> "FakeLdapServer":
        self.port = port
        return self

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port.getHost().port}"

    def answer(self, chunk: bytes) -> bytes:
        (_, body), = _elements(chunk)  # LDAPMessage SEQUENCE
        (_, raw_id), (tag, op) = _elements(body)[:2]
        message_id = int.from_bytes(raw_id, "big")
        if tag == 0x60:  # BindRequest: version, name, simple [0] password
            _version, (_, name), (_, password) = _elements(op)[:3]
            self.binds.append((name.decode(), password.decode("utf-8", "replace")))
            return _message(message_id, "bindResponse", _result(asn.BindResponse, "success"))
        if tag == 0x63:  # SearchRequest: the filter is kept as raw text
            text = op.decode("latin-1")
            self.searches.append(text)
            reference, code, referrals = self.on_search(text)
            out = b""
            if reference is not None:
                ref = asn.SearchResultReference()
                for n, uri in enumerate(reference):
                    ref.setComponentByPosition(n, asn.URI(uri))
                out += _message(message_id, "searchResRef", ref)
            return out + _message(message_id, "searchResDone",
                                  _result(asn.SearchResultDone, code, referrals))
        return b""  # unbind and anything else: no answer
