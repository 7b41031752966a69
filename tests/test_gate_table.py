"""Every row of docs/gate.md's decision table, run against the gate.

The table is the specification: this module reads it, builds the channel,
the configuration and the history each row names, gives the gate the row's
input and checks the decision, the RFC 5354 cause and the log line.  A word
in the table this interpreter does not know fails the row, so the document
cannot drift from the code.
"""

from __future__ import annotations

import re
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from rserpool.gate import (
    ACTION_OPAQUE, CHANNEL_CLOSED, CLOSING, DOOR_ASAP, IDENTIFYING, OPEN, REPORT_COUNTED, REPORT_PROBE, REPORT_REMOVE, AskAuthorizer,
    ROOM_ADDRESS, ROOM_TOTAL, AttemptDelayed, AttemptRefused, CloseChannel, Gate, GatePolicy, NeedRoom, Opened,
    RemovePoolElements,
)
from rserpool.identity import MECH_CERTIFICATE, MECH_PSK, MECH_SRP, Identity
from rserpool.security.ratelimit import AttemptLimit, RateLimit

DOC = Path(__file__).resolve().parent.parent / "docs" / "gate.md"
ADDRESS = "127.0.0.1"
FINGERPRINT = "ab" * 32
NOW = 100.0
KEEPALIVE_INTERVAL = 5.0


def table_rows() -> list[dict[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Decision table", 1)[1]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells)))
    return rows


ROWS = table_rows()


def test_the_table_is_there_and_numbered():
    assert len(ROWS) >= 60
    assert [row["#"] for row in ROWS] == [str(n) for n in range(1, len(ROWS) + 1)]


# -- building a row's world ------------------------------------------------------------------------

_FLAGS = {"allow_insecure_channels", "allow_unauthenticated", "authorize_resolution", "check_pe_addresses",
          "unreachable_requires_identity", "unreachable_removal_needs_failed_probe"}
_RATES = {"registration_rate", "registration_rate_per_address", "resolution_rate", "unreachable_rate",
          "anonymous_resolution_rate",
          "door_request_rate", "refusal_log_per_address", "refusal_log_total"}
_ATTEMPTS = {"attempts_per_identity_and_address", "attempts_per_address"}
_COUNTS = {"max_held_per_channel", "max_pending_per_channel", "max_connections",
           "max_connections_per_address", "max_pools_per_identity"}


def policy_for(configuration: str) -> GatePolicy:
    policy = GatePolicy()
    if configuration == "-":
        return policy
    for item in configuration.split(","):
        name, _, value = item.strip().partition("=")
        if name in _FLAGS:
            policy = replace(policy, **{name: value != "no"})
        elif name in _RATES:  # a burst that does not refill during the row
            policy = replace(policy, **{name: RateLimit(rate=1e-9, burst=float(value))})
        elif name in _ATTEMPTS:
            policy = replace(policy, **{name: AttemptLimit(capacity=int(value), refill_interval=1e9)})
        elif name in _COUNTS:
            policy = replace(policy, **{name: int(value)})
        else:
            raise AssertionError(f"unknown configuration {item!r}")
    return policy


class World:
    def __init__(self, row: dict[str, str]) -> None:
        self.row = row
        self.lines: list[tuple[str, str]] = []
        self.gate = Gate(policy_for(row["configuration"]), log=self.log)
        self.adm = self.gate.open_channel(row["door"], ADDRESS, row["channel"] == "tls", NOW,
                                          fingerprint=FINGERPRINT)
        self.ask: AskAuthorizer | None = None
        self.owner: str | None = None
        # The reported PE (an admitted unreachability report).
        self.reporters = 0
        self.last_keepalive: float | None = None
        self.probing = False
        self.pools_held = 0  # pools the channel's principal has PEs in
        identity = row["identity"]
        if identity != "identifying":
            self.gate.identified(self.adm, self.identity_of(identity), NOW)
            if identity.startswith("srp "):
                assert self.gate.authentication_attempt(self.adm, "pe1", MECH_SRP, NOW) is None
                self.gate.authenticated(self.adm, Identity("pe1", MECH_SRP), NOW)

    def log(self, level: str, fmt: str, **fields) -> None:
        self.lines.append((level, fmt.format(**fields)))

    @staticmethod
    def identity_of(word: str) -> Identity | None:
        if word in ("none", "srp pe1"):
            return None
        kind, name = word.split()
        mechanism = {"cert": MECH_CERTIFICATE, "psk": MECH_PSK}[kind]
        attributes = {"fingerprint_sha256": FINGERPRINT} if kind == "cert" else None
        return Identity.create(name, mechanism, attributes=attributes)

    def request(self, words: str):
        """``register echo``, ``deregister echo``, ``resolve echo``,
        ``unreachable echo``, ``peer``, ``admin``, ``register echo at X``."""
        gate, adm = self.gate, self.adm
        parts = words.split()
        action = parts[0]
        handle = parts[1].encode() if len(parts) > 1 else b""
        if action in ("register", "deregister"):
            addresses = None
            if action == "register":
                address = parts[3] if len(parts) > 3 and parts[2] == "at" else ADDRESS
                addresses = (IPv4Address(address),)
            return gate.admit_change(adm, action, handle, addresses, NOW)
        if action == "resolve":
            return gate.admit_resolution(adm, handle, NOW)
        if action == "opaque":
            return gate.admit_opaque_transport(adm, handle, NOW)
        if action == "unreachable":
            return gate.admit_report(adm, handle, NOW)
        if action in ("peer", "admin"):
            return gate.admit(adm, action, handle, NOW)
        raise AssertionError(f"unknown request {words!r}")

    def default_request(self) -> str:
        return {"peer": "peer", "admin": "admin"}.get(self.row["door"], "register echo")

    def given(self, history: str) -> None:
        for item in [part.strip() for part in history.split(",")] if history != "-" else []:
            self.prepare(item)
        self.lines.clear()

    def prepare(self, item: str) -> None:
        gate, adm = self.gate, self.adm
        request = self.row["input"] if self.row["input"].split()[0] in (
            "register", "deregister", "resolve", "unreachable", "peer", "admin", "opaque") else self.default_request()
        if item in ("cached allow", "cached deny"):
            action, _, handle = request.partition(" ")
            action = "resolve" if self.row["input"].startswith("exchange") else action
            handle = b"echo" if self.row["input"].startswith("exchange") else handle.split(" ")[0].encode()
            adm.allowed[(action, handle)] = item == "cached allow"
        elif item in ("opaque allowed", "opaque denied"):
            adm.allowed[(ACTION_OPAQUE, b"echo")] = item == "opaque allowed"
        elif item == "opaque asked":
            self.ask = gate.admit_opaque_transport(adm, b"echo", NOW)
            assert isinstance(self.ask, AskAuthorizer) and self.ask.action == ACTION_OPAQUE, self.ask
        elif item == "asked":
            self.ask = self.request(self.default_request())
            assert isinstance(self.ask, AskAuthorizer), self.ask
        elif item == "identity changed":
            assert gate.authentication_attempt(adm, adm.identity, MECH_SRP, NOW) is None
            gate.authenticated(adm, Identity(adm.identity, MECH_SRP), NOW)
        elif item == "1 admitted":
            result = self.request(request)
            if isinstance(result, AskAuthorizer):
                assert gate.authorization_answered(result, True, NOW) is None
            else:
                assert result in (None, True), result
        elif item == "1 held":
            assert gate.hold(adm, NOW) == []
        elif item == "1 failed attempt":
            assert gate.authentication_attempt(adm, "pe1", MECH_SRP, NOW) is None
            assert gate.authentication_failed(adm, "pe1", MECH_SRP, "wrong proof", False, NOW) == []
        elif item == "attempt pe1":
            assert gate.authentication_attempt(adm, "pe1", MECH_SRP, NOW) is None
        elif item == "attempt pe2 refused":
            refused = gate.authentication_attempt(adm, "pe2", MECH_SRP, NOW)
            assert isinstance(refused, AttemptRefused) and refused.final
        elif item == "1 refused":
            assert isinstance(self.request(self.row["input"]), int)
        elif item.startswith("owner "):
            self.owner = item.split()[1]
        elif " failures for " in item:
            # "5 failures for pe1 from other addresses [150 s ago]"
            words = item.split()
            count, claimed = int(words[0]), words[3]
            when = NOW - float(words[-3]) if item.endswith(" s ago") else NOW
            for n in range(count):
                other = gate.open_channel(DOOR_ASAP, f"10.0.{n}.1", True, when)
                gate.identified(other, None, when)
                assert not isinstance(gate.authentication_attempt(other, claimed, MECH_SRP, when), AttemptRefused)
                gate.authentication_failed(other, claimed, MECH_SRP, "wrong proof", True, when)
        elif item == "psk attempt pe1":
            assert gate.psk_attempt(adm, "pe1", NOW) is True
        elif item == "1 psk failure":
            other = gate.open_channel(DOOR_ASAP, ADDRESS, True, NOW)
            assert gate.psk_attempt(other, "pe1", NOW) is True
            gate.channel_closed(other, NOW)
        elif item.endswith(" anonymous open"):
            for n in range(int(item.split()[0])):
                other = gate.open_channel(DOOR_ASAP, f"10.1.0.{n}", True, NOW)
                assert gate.identified(other, None, NOW) == [Opened(other)]
        elif item.startswith("1 anonymous resolution from "):
            other = gate.open_channel(DOOR_ASAP, item.split()[-1], True, NOW)
            gate.identified(other, None, NOW)
            assert gate.admit_resolution(other, b"echo", NOW) is None
        elif item.startswith("1 from "):
            assert gate.open_channel(DOOR_ASAP, item.split()[2], True, NOW) is not None
        elif item.startswith("in ") and item.endswith(" pools"):
            self.pools_held = int(item.split()[1])
        elif item.endswith(" reporters"):
            self.reporters = int(item.split()[0])
        elif item.startswith("keep-alive sent ") and item.endswith(" s ago"):
            self.last_keepalive = NOW - float(item.split()[2])
        elif item == "probe outstanding":
            self.probing = True
        elif item == "closing":
            gate.revoke(identity=adm.identity, reason="test", now=NOW)
        else:
            raise AssertionError(f"unknown history {item!r}")

    def run(self, words: str):
        gate, adm = self.gate, self.adm
        if words.startswith("identified "):
            return gate.identified(adm, self.identity_of(words.split(" ", 1)[1]), NOW)
        if words == "revocation refused":
            return gate.identification_refused(adm, "certificate revoked", NOW)
        if words == "input":
            return gate.hold(adm, NOW)
        if words.startswith("connect from "):
            return gate.open_channel(self.row["door"], words.split()[2], True, NOW)
        if words.startswith("answer "):
            answer = {"allow": True, "deny": False, "outage": None}[words.split()[1]]
            return gate.authorization_answered(self.ask, answer, NOW, "backend down" if answer is None else "")
        if words.startswith("bind PE "):
            return gate.check_owner(adm, self.owner, "register", b"echo", int(words.split()[2]), NOW)
        if words.startswith("attempt "):
            return gate.authentication_attempt(adm, words.split()[1], MECH_SRP, NOW)
        if words.startswith("exchange succeeded "):
            return gate.authenticated(adm, Identity(words.split()[2], MECH_SRP), NOW)
        if words in ("exchange failed", "exchange failed final"):
            return gate.authentication_failed(adm, "pe1", MECH_SRP, "wrong proof", words.endswith("final"), NOW)
        if words == "exchange unavailable":
            return gate.authentication_unavailable(adm, "pe1", MECH_SRP, "backend down", NOW)
        if words.startswith("evictable, last message "):
            ago = float(words.split()[3])
            return gate.evictable(adm, NOW - ago, words.endswith("holds PEs"))
        if words.startswith("room for "):
            return gate.room_needed(words.split()[2])
        if words == "no room":
            return gate.no_room(adm, NOW)
        if words.startswith("psk attempt "):
            return gate.psk_attempt(adm, words.split()[2], NOW)
        if words == "channel gone":
            return gate.channel_closed(adm, NOW)
        if words == "handshake finished":
            return gate.handshake_finished(adm, NOW)
        if words.startswith("join pool "):
            return gate.admit_new_pool(adm, words.split()[2].encode(), self.pools_held, NOW)
        if words == "report counted":
            return gate.report_counted(self.reporters, self.last_keepalive, self.probing, KEEPALIVE_INTERVAL, NOW)
        if words == "revoke fingerprint":
            return gate.revoke(fingerprint=FINGERPRINT, reason="CRL reloaded", now=NOW)
        if words.startswith("revoke "):
            return gate.revoke(identity=words.split()[1], reason="CRL reloaded", now=NOW)
        return self.request(words)


# -- checking a row's outcome ------------------------------------------------------------------------


def check_decision(world: World, result, decision: str, cause: str) -> None:
    adm, gate = world.adm, world.gate
    words = [word.strip() for word in decision.split(",")]
    main = words[0]
    if main == "admit":
        assert result is None or result is True, result
    elif main == "refuse":
        assert type(result) is int, result
        assert cause != "-" and result == int(cause, 16), (result, cause)
    elif main == "ask":
        assert isinstance(result, AskAuthorizer), result
        assert (result.identity, result.admission) == (adm.identity, adm)
    elif main == "drop":
        assert type(result) is int and result == int(cause, 16), result
    elif main == "hold":
        assert result == [] and adm.state != CLOSING
    elif main == "open":
        assert result == [Opened(adm)] and adm.state == OPEN
    elif main == "close":
        assert [type(o) for o in result] == [CloseChannel] and adm.state == CLOSING, result
    elif main == "remove and close":
        assert [type(o) for o in result] == [RemovePoolElements, CloseChannel] and adm.state == CLOSING
    elif main == "accept":
        assert result is not None and result in gate.channels
    elif main == "refuse connection":
        assert result is None
    elif main == "nothing":
        assert result == [] and adm.state == OPEN
    elif main == "go":
        assert result is None
    elif main.startswith("go after "):
        assert isinstance(result, AttemptDelayed) and result.delay == float(main.split()[2]), result
        assert adm.state == OPEN
    elif main == "refuse attempt":
        assert isinstance(result, AttemptRefused), result
        assert result.final == ("final" in words)
        assert (adm.state == CLOSING) == result.final
    elif main == "keep":
        assert result == [] and adm.state == OPEN
    elif main == "need room":
        assert result == [NeedRoom(adm)] and adm.state == IDENTIFYING
    elif main == "evictable":
        assert result is not None and result <= NOW, result
    elif main.startswith("evictable in "):
        assert result == NOW + float(main.split()[2]), result
    elif main == "stays":
        assert result is None
    elif main in ("room from the address", "room from anywhere", "no room needed"):
        assert result == {"room from the address": ROOM_ADDRESS, "room from anywhere": ROOM_TOTAL,
                          "no room needed": None}[main]
    elif main in ("try key", "refuse key"):
        assert result is (main == "try key")
        assert adm.attempt == ("pe1" if main == "try key" else None)
    elif main == "count failure":
        assert result is None and adm.attempt is None
        assert gate.attempts.tokens("pe1", ADDRESS, NOW) == gate.policy.attempts_per_identity_and_address.capacity - 1
        assert gate.attempts.score("pe1", NOW) == 1
    elif main == "forget attempt":
        assert result is None and adm.attempt is None and adm.state == IDENTIFYING
    elif main in ("probe PE", "count only", "remove PE"):
        assert result is {"probe PE": REPORT_PROBE, "count only": REPORT_COUNTED,
                          "remove PE": REPORT_REMOVE}[main], result
    elif main.startswith("identity "):
        assert result == [] and adm.identity == main.split()[1] and adm.mechanism == MECH_SRP
    else:
        raise AssertionError(f"unknown decision {decision!r}")
    for extra in words[1:]:
        if extra in ("final",):
            continue
        if extra == "cached":
            ask = world.ask
            assert adm.allowed[(ask.action, ask.pool_handle)] is (result is None)
        elif extra == "not cached":
            assert world.ask is None or (world.ask.action, world.ask.pool_handle) not in adm.allowed
        elif extra == "paused":
            assert adm.paused_until == NOW + gate.policy.rate_limited_pause
        elif extra == "cache empty":
            assert adm.allowed == {}
        elif extra == "identity none":
            assert adm.identity is None and adm.principal == "addr:" + ADDRESS
        elif extra == "tokens returned":
            assert gate.attempts.tokens("pe1", ADDRESS, NOW) == gate.policy.attempts_per_identity_and_address.capacity
            assert gate.attempts.per_source.tokens(ADDRESS, NOW) == gate.policy.attempts_per_address.capacity
        else:
            raise AssertionError(f"unknown decision detail {extra!r}")
    if main in ("refuse", "refuse attempt") or cause not in ("-",):
        if cause != "-" and type(result) is int:
            assert result == int(cause, 16)


def check_log(world: World, expected: str) -> None:
    written = [line for _, line in world.lines]
    if expected == "-":
        assert written == [], written
    else:
        assert written == [expected.strip("`")], written


@pytest.mark.parametrize("row", ROWS, ids=[f"row{row['#']}" for row in ROWS])
def test_row(row: dict[str, str]) -> None:
    world = World(row)
    world.given(row["given"])
    result = world.run(row["input"])
    check_decision(world, result, row["decision"], row["cause"])
    check_log(world, row["log"])


def test_every_refusal_cause_in_the_table_is_counted():
    for row in ROWS:
        world = World(row)
        world.given(row["given"])
        before = dict(world.gate.refused)
        world.run(row["input"])
        logged_or_counted = sum(world.gate.refused.values()) - sum(before.values())
        if row["decision"].startswith(("refuse", "drop", "close", "remove and")) and row["given"] != "attempt pe2 refused":
            assert logged_or_counted == 1, row
        if row["cause"] != "-" and row["decision"].startswith("refuse") and "attempt" not in row["decision"]:
            assert world.gate.refused.get(int(row["cause"], 16)) == before.get(int(row["cause"], 16), 0) + 1
        if row["decision"].startswith("close") and row["given"] != "attempt pe2 refused":
            assert world.gate.refused.get(CHANNEL_CLOSED, 0) == before.get(CHANNEL_CLOSED, 0) + 1
