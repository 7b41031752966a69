"""A lossless, readable JSON form of messages (plain dicts and lists).

``message_from_json(message_to_json(m)) == m`` for every message, and the
``unrecognized`` causes of a decoded message are kept too.  Byte strings
are ``{"text": ...}`` when printable ASCII, else ``{"hex": ...}``;
addresses are strings; transports and policies carry a ``"type"`` tag.
"""

from __future__ import annotations

import dataclasses
from ipaddress import ip_address
from typing import Any

import rserpool.wire.codes as codes
from rserpool.wire.errors import ErrorCause
from rserpool.wire.messages import REGISTRY, Message
from rserpool.wire.params import OperationError, PoolElement, ServerInformation
from rserpool.wire.policy import OpaquePolicy, POLICY_CLASSES
from rserpool.wire.enrp import PoolEntry
from rserpool.wire.transports import (
    DccpTransport, OpaqueTransport, SctpTransport, TcpTransport, UdpLiteTransport, UdpTransport,
)

__all__ = ["message_to_json", "message_from_json", "bytes_to_json", "bytes_from_json"]

_TRANSPORTS: dict[str, type] = {c.NAME: c for c in (
    SctpTransport, TcpTransport, UdpTransport, UdpLiteTransport, DccpTransport)}
_TRANSPORTS["opaque"] = OpaqueTransport
_TRANSPORT_NAMES = {c: n for n, c in _TRANSPORTS.items()}
_POLICIES = {codes.POLICY_NAMES[t]: c for t, c in POLICY_CLASSES.items()}
_POLICY_NAMES = {c: n for n, c in _POLICIES.items()}
_BY_NAME = {cls.name: cls for cls in REGISTRY.values()}

_BYTES_FIELDS = {"pool_handle", "cookie", "data", "info",
                 # the authentication extension (rserpool.wire.auth)
                 "salt", "server_public", "client_public", "client_proof", "server_proof",
                 "nonce", "response"}


def bytes_to_json(value: bytes) -> dict[str, str]:
    if value and all(32 <= b < 127 for b in value):
        return {"text": value.decode("ascii")}
    return {"hex": value.hex()}


def bytes_from_json(value: Any) -> bytes:
    if isinstance(value, dict):
        if "text" in value:
            return str(value["text"]).encode("utf-8")
        if "hex" in value:
            return bytes.fromhex(value["hex"])
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ValueError(f"not a byte string in JSON form: {value!r}")


def _to(value: Any, name: str = "") -> Any:
    if isinstance(value, bytes):
        return bytes_to_json(value)
    if isinstance(value, tuple):
        return [_to(v, name) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "version") and hasattr(value, "packed"):
        return str(value)
    cls = type(value)
    out: dict[str, Any] = {}
    if cls in _TRANSPORT_NAMES:
        out["type"] = _TRANSPORT_NAMES[cls]
    elif cls in _POLICY_NAMES:
        out["type"] = _POLICY_NAMES[cls]
    elif cls is OpaquePolicy:
        out["type"] = "opaque"
    for f in dataclasses.fields(value):
        out[f.name] = _to(getattr(value, f.name), f.name)
    if cls is ErrorCause:
        out["name"] = value.name
    return out


def message_to_json(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": msg.protocol, "type": msg.name, "flags": msg.flags}
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if f.name == "unrecognized" and not value:
            continue
        out[f.name] = _to(value, f.name)
    return out


def _transport(d: dict) -> Any:
    cls = _TRANSPORTS[d["type"]]
    kw = {k: v for k, v in d.items() if k != "type"}
    if "addresses" in kw:
        kw["addresses"] = tuple(ip_address(a) for a in kw["addresses"])
    if "address" in kw:
        kw["address"] = ip_address(kw["address"])
    if "data" in kw:
        kw["data"] = bytes_from_json(kw["data"])
    return cls(**kw)


def _policy(d: dict) -> Any:
    if d["type"] == "opaque":
        return OpaquePolicy(d["policy_type"], bytes_from_json(d.get("data", {"hex": ""})))
    return _POLICIES[d["type"]](**{k: v for k, v in d.items() if k != "type"})


def _cause(d: dict) -> ErrorCause:
    return ErrorCause(d["code"], bytes_from_json(d.get("info", {"hex": ""})))


def _error(d: dict) -> OperationError:
    return OperationError(tuple(_cause(c) for c in d["causes"]))


def _pe(d: dict) -> PoolElement:
    asap = d.get("asap_transport")
    return PoolElement(d["pe_id"], d["home_server_id"], d["registration_life"],
                       _transport(d["user_transport"]), _policy(d["policy"]),
                       None if asap is None else _transport(asap))


def _server(d: dict) -> ServerInformation:
    return ServerInformation(d["server_id"], _transport(d["transport"]))


def _entry(d: dict) -> PoolEntry:
    return PoolEntry(bytes_from_json(d["pool_handle"]), tuple(_pe(p) for p in d["pool_elements"]),
                     tuple(d.get("identities", ())))


_FIELD = {
    "pool_element": _pe,
    "pool_elements": lambda v: tuple(_pe(p) for p in v),
    "policy": _policy,
    "error": _error,
    "server_info": _server,
    "servers": lambda v: tuple(_server(s) for s in v),
    "transports": lambda v: tuple(_transport(t) for t in v),
    "entries": lambda v: tuple(_entry(e) for e in v),
    "unrecognized": lambda v: tuple(_cause(c) for c in v),
}


def message_from_json(obj: dict[str, Any]) -> Message:
    """The message of a JSON form; raises only ValueError if it is invalid."""
    try:
        return _message_from_json(obj)
    except ValueError:
        raise
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"invalid message in JSON form: {exc!r}") from None


def _message_from_json(obj: dict[str, Any]) -> Message:
    if not isinstance(obj, dict):
        raise ValueError("a message in JSON form must be an object")
    cls = _BY_NAME.get(obj.get("type"))
    if cls is None:  # registered after this module was imported (rserpool.wire.auth)
        cls = next((c for c in REGISTRY.values() if c.name == obj.get("type")), None)
    if cls is None:
        raise ValueError(f"unknown message type {obj.get('type')!r}")
    proto = obj.get("protocol")
    if proto is not None and proto != ("asap" if cls.PPID == codes.PPID_ASAP else "enrp"):
        raise ValueError(f"{cls.name} is not a {proto} message")
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in obj:
            continue
        value = obj[f.name]
        if value is None:
            kw[f.name] = None
        elif f.name in _FIELD:
            kw[f.name] = _FIELD[f.name](value)
        elif f.name in _BYTES_FIELDS:
            kw[f.name] = bytes_from_json(value)
        else:
            kw[f.name] = value
    return cls(**kw)

