"""Conformance against Wireshark's ASAP and ENRP dissectors.

Every message of ``all_samples()`` (all 14 ASAP and 10 ENRP types, every
parameter, transport, address family, cause and policy) is encoded, wrapped
by ``text2pcap -S`` into one SCTP DATA chunk per packet (ASAP: ports 3863,
PPID 11; ENRP: ports 9901, PPID 12) and dissected by ``tshark -T json``.
The test fails on a malformed packet or expert error, a message type the
dissector does not name, a parameter/policy/cause it decodes as unknown,
or any difference between the (type, length) sequence of parameters and
causes Wireshark read and the one we wrote.

Documented exceptions, where Wireshark 4.0 is behind the RFC (docs/wire.md):
- Opaque Transport (RFC 5354 3.16, type 0x0010) is unknown to the dissector,
  which shows its value raw (``parameter_value``).
- The opaque (private) policy sample is shown raw
  (``pool_member_selection_policy_value``), as our codec keeps it.
- The Unrecognized Parameter cause (0x1) of the ASAP_ERROR sample carries an
  unknown TLV on purpose; Wireshark shows that TLV's value raw.
- The PE Identity parameter (0xbf01, rserpool's ENRP extension, docs/enrp.md)
  is unknown to the dissector, which shows its value raw; its type bits 10
  make every RFC receiver skip it.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from rserpool.wire import PPID_ASAP, codes, decode_message
from rserpool.wire.transports import TRANSPORT_TYPES
from rserpool.wire.samples import all_samples
from tests.conftest import require_tool

pytestmark = pytest.mark.integration

TRANSPORT = {"asap": "3863,3863,11", "enrp": "9901,9901,12"}
PI_ERROR = 0x00800000
WS_KNOWN_PARAMS = set(range(0x1, 0x10)) | {0x803F}
#: Parameters Wireshark shows raw for a documented reason (see the docstring).
DOCUMENTED_RAW = {0x10, 0xBF01}
NESTED_PREFIX = {0x3: 8, 0x4: 4, 0x5: 4, 0x6: 4, 0x7: 4, 0xA: 12, 0xB: 4}
FIELDS = ["message_type", "message_flags", "message_length", "parameter_type",
          "parameter_length", "parameter_value", "cause_code", "cause_length", "cause_info",
          "pool_member_selection_policy_type", "pool_member_selection_policy_value",
          "pool_element_pe_identifier", "pool_handle_pool_handle", "parameter_padding",
          "cause_padding"]


class Expected:
    """What we wrote, walked independently of the codec (pre-order like Wireshark)."""

    def __init__(self, proto: str = "asap", quotes_are_opaque: bool = False) -> None:
        # Error replies quote what a peer sent: inside any cause's
        # information an unknown TLV is shown raw by right.
        self.proto = proto
        self.quotes_are_opaque = quotes_are_opaque
        self.raw_policies: list[str] = []  # policy values Wireshark shows raw
        self.message_types: list[int] = []
        self.params: list[tuple[int, int]] = []
        self.causes: list[tuple[int, int]] = []
        self.policies: list[int] = []
        self.raw_values: list[tuple[str, bool]] = []  # (value hex, allowed exception)
        self.pe_ids: list[int] = []
        self.handles: list[str] = []
        self.broken: list[str] = []  # TLVs our own walk could not follow

    def message(self, data: bytes, fixed: int, quoted: bool = False) -> None:
        self.message_types.append(data[0])
        length = int.from_bytes(data[2:4], "big")
        self.walk(data, 4 + fixed, length, in_cause1=quoted)

    def walk(self, data: bytes, pos: int, end: int, in_cause1: bool) -> None:
        end = min(end, len(data))
        while pos + 4 <= end:
            ptype = int.from_bytes(data[pos:pos + 2], "big")
            plen = int.from_bytes(data[pos + 2:pos + 4], "big")
            if plen < 4:
                self.broken.append(f"parameter 0x{ptype:04x} of length {plen}")
                return
            value = data[pos + 4:pos + plen]
            self.params.append((ptype, plen))
            if ptype in NESTED_PREFIX:
                if ptype == 0xA:
                    self.pe_ids.append(int.from_bytes(value[:4], "big"))
                self.walk(data, pos + 4 + NESTED_PREFIX[ptype], pos + plen, in_cause1)
            elif ptype == 0x8:
                self.policies.append(int.from_bytes(value[:4], "big"))
                if int.from_bytes(value[:4], "big") not in codes.POLICY_NAMES and plen > 8:
                    # Wireshark shows the value of a policy it does not know
                    # raw, padding included.
                    self.raw_policies.append(data[pos + 8:pos + ((plen + 3) & ~3)].hex())
            elif ptype == 0x9:
                self.handles.append(value.hex())
            elif ptype == 0xC:
                self.walk_causes(data, pos + 4, pos + plen)
            elif ptype not in WS_KNOWN_PARAMS and value:
                self.raw_values.append((value.hex(), ptype in DOCUMENTED_RAW or in_cause1))
            pos += (plen + 3) & ~3

    def walk_causes(self, data: bytes, pos: int, end: int) -> None:
        while pos + 4 <= end:
            code = int.from_bytes(data[pos:pos + 2], "big")
            clen = int.from_bytes(data[pos + 2:pos + 4], "big")
            if clen < 4:
                self.broken.append(f"cause 0x{code:04x} of length {clen}")
                return
            self.causes.append((code, clen))
            if code in (1, 3, 5, 7):  # the info is a TLV
                self.walk(data, pos + 4, pos + clen, in_cause1=code == 1 or self.quotes_are_opaque)
            elif code == 2 and self.proto == "asap":
                # The info is a message of a type nobody knows: Wireshark's
                # ASAP dissector reads its body as parameters.
                self.message(data[pos + 4:pos + clen], 0, self.quotes_are_opaque)
            elif code == 2:  # the ENRP dissector names its type only
                self.message_types.append(data[pos + 4])
            pos += (clen + 3) & ~3


def fixed_size(msg) -> int:
    """Bytes of fixed fields after the message header (RFC 5352 2.2, RFC 5353 2)."""
    if msg.PPID == PPID_ASAP:
        return 4 if msg.name in ("ASAP_ENDPOINT_KEEP_ALIVE", "ASAP_SERVER_ANNOUNCE") else 0
    if msg.name in ("ENRP_HANDLE_UPDATE", "ENRP_INIT_TAKEOVER", "ENRP_INIT_TAKEOVER_ACK",
                    "ENRP_TAKEOVER_SERVER"):
        return 12
    return 8


def hexdump(messages: list[bytes]) -> str:
    lines = []
    for data in messages:
        for off in range(0, len(data), 16):
            lines.append("%06x %s" % (off, " ".join("%02x" % b for b in data[off:off + 16])))
        lines.append("")
    return "\n".join(lines) + "\n"


def dissect(proto: str, messages: list[bytes], tmp: str) -> list[dict]:
    text = os.path.join(tmp, proto + ".txt")
    pcap = os.path.join(tmp, proto + ".pcap")
    with open(text, "w") as f:
        f.write(hexdump(messages))
    subprocess.run([require_tool("text2pcap"), "-q", "-S", TRANSPORT[proto], text, pcap],
                   check=True, capture_output=True, timeout=120)
    cmd = [require_tool("tshark"), "-n", "-r", pcap, "-T", "json"]
    for fld in ["frame.number", "frame.protocols", "_ws.col.Info", "_ws.malformed",
                "_ws.expert.message", "_ws.expert.severity"] + [f"{proto}.{f}" for f in FIELDS]:
        cmd += ["-e", fld]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, WIRESHARK_CONFIG_DIR=tmp))
    assert res.returncode == 0, res.stderr
    frames = {}
    for pkt in json.loads(res.stdout or "[]"):
        layers = pkt["_source"]["layers"]
        frames[int(layers["frame.number"][0])] = layers
    return [frames.get(i + 1, {}) for i in range(len(messages))]


def ints(values: list[str]) -> list[int]:
    return [int(v, 0) for v in values]


def problems_of(proto: str, msg, data: bytes, layers: dict, quotes_are_opaque: bool = False) -> list[str]:
    problems = []
    if proto not in layers.get("frame.protocols", [""])[0].split(":"):
        return [f"no {proto} layer"]
    for text, sev in zip(layers.get("_ws.expert.message", []), layers.get("_ws.expert.severity", [])):
        if int(sev) >= PI_ERROR:
            problems.append(f"expert error: {text}")
    if "_ws.malformed" in layers:
        problems.append(f"malformed: {layers['_ws.malformed']}")
    info = layers.get("_ws.col.Info", [""])[0]
    if not info.upper().startswith(proto.upper()) or "UNKNOWN" in info.upper():
        problems.append(f"message not recognised: {info!r}")
    f = {k[len(proto) + 1:]: v for k, v in layers.items() if k.startswith(proto + ".")}
    exp = Expected(proto, quotes_are_opaque)
    exp.message(data, fixed_size(msg))
    problems += [f"bad TLV in the bytes sent: {b}" for b in exp.broken]
    checks = [
        ("message_type", ints(f.get("message_type", [])), exp.message_types),
        ("message_length", ints(f.get("message_length", []))[:1],
         [int.from_bytes(data[2:4], "big")]),
        ("message_flags", ints(f.get("message_flags", []))[:1], [data[1]]),
        ("parameters", list(zip(ints(f.get("parameter_type", [])),
                                ints(f.get("parameter_length", [])))), exp.params),
        ("causes", list(zip(ints(f.get("cause_code", [])), ints(f.get("cause_length", [])))),
         exp.causes),
        ("policy types", ints(f.get("pool_member_selection_policy_type", [])), exp.policies),
        ("PE ids", ints(f.get("pool_element_pe_identifier", [])), exp.pe_ids),
        ("pool handles", [h.replace(":", "").replace("<MISSING>", "")
                          for h in f.get("pool_handle_pool_handle", [])], exp.handles),
    ]
    mlen = int.from_bytes(data[2:4], "big")
    if mlen < 4 or (mlen + 3) & ~3 != len(data):
        problems.append(f"message length {mlen} does not match the {len(data)} bytes sent")
    for what, got, want in checks:
        if got != want:
            problems.append(f"{what}: wireshark {got} != ours {want}")
    raw = [v.replace(":", "") for v in f.get("parameter_value", [])]
    if raw != [v for v, _ in exp.raw_values]:
        problems.append(f"unknown parameters {raw} != expected {exp.raw_values}")
    problems += [f"parameter shown raw without a documented reason: {v}"
                 for v, allowed in exp.raw_values if not allowed]
    got = [v.replace(":", "") for v in f.get("pool_member_selection_policy_value", [])]
    if got != exp.raw_policies:
        problems.append(f"policies shown raw {got} != the unknown policy types we wrote {exp.raw_policies}")
    if quotes_are_opaque:
        # Quoted bytes may hold anything (an Operation Error TLV a peer
        # filled with garbage): check the reply's own causes on our bytes.
        problems += own_cause_problems(msg, data)
        return problems
    if f.get("cause_info"):
        problems.append(f"unknown cause shown raw: {f['cause_info']}")
    for pad in f.get("parameter_padding", []) + f.get("cause_padding", []):
        if pad.replace(":", "").strip("0"):
            problems.append(f"non-zero padding {pad}")
    return problems


def own_cause_problems(msg, data: bytes) -> list[str]:
    """The top-level Operation Error of a reply: known cause codes, zero padding."""
    problems = []
    error = msg.error.encode()
    at = data.find(error)
    if at < 0:
        return ["the Operation Error is not in the bytes sent"]
    pos, end = at + 4, at + int.from_bytes(error[2:4], "big")
    while pos < end:
        code, clen = int.from_bytes(data[pos:pos + 2], "big"), int.from_bytes(data[pos + 2:pos + 4], "big")
        if code not in codes.CAUSE_NAMES:
            problems.append(f"cause 0x{code:04x} is not an RFC 5354 cause")
        padding = data[pos + clen:pos + ((clen + 3) & ~3)]
        if padding.strip(b"\0"):
            problems.append(f"non-zero padding {padding.hex()} after cause 0x{code:04x}")
        pos += (clen + 3) & ~3
    return problems


def test_samples_cover_everything():
    from rserpool.wire import codes
    exp = Expected()
    types = {"asap": set(), "enrp": set()}
    for ppid, msg in all_samples():
        data = msg.encode()
        proto = "asap" if ppid == PPID_ASAP else "enrp"
        types[proto].add(msg.TYPE)
        exp.proto = proto
        exp.message(data, fixed_size(msg))
    assert exp.broken == []
    assert types["asap"] == set(range(1, 15)) and types["enrp"] == set(range(1, 11))
    assert {t for t, _ in exp.params} >= set(range(1, 0x11))
    assert {c for c, _ in exp.causes} >= set(range(0, 0xB))
    assert set(exp.policies) >= set(codes.POLICY_NAMES) | {0xB0001003}


def test_wireshark_dissects_every_sample(tmp_path):
    samples = all_samples()
    failures = []
    for proto, ppid in (("asap", 11), ("enrp", 12)):
        msgs = [m for p, m in samples if p == ppid]
        datas = [m.encode() for m in msgs]
        for msg, data, layers in zip(msgs, datas, dissect(proto, datas, str(tmp_path))):
            for problem in problems_of(proto, msg, data, layers):
                failures.append(f"{msg.name}: {problem}")
    assert not failures, "\n".join(failures)


def test_conformance_check_catches_broken_messages(tmp_path):
    """The checker itself must fail on bad bytes (no test that cannot fail)."""
    msg = dict((m.name, m) for _, m in all_samples())["ASAP_REGISTRATION"]
    good = msg.encode()
    lie = bytearray(good)
    lie[2:4] = (int.from_bytes(good[2:4], "big") + 8).to_bytes(2, "big")  # length too long
    unknown = bytearray(good)
    at = good.index(bytes.fromhex("0005 0010"))
    unknown[at:at + 2] = bytes.fromhex("0011")  # the TCP transport becomes an unknown type
    short = bytearray(good)
    short[at + 2:at + 4] = bytes.fromhex("000c")  # TCP transport claims 12, holds 16 bytes
    datas = [good, bytes(lie), bytes(unknown), bytes(short)]
    results = [problems_of("asap", msg, d, layers)
               for d, layers in zip(datas, dissect("asap", datas, str(tmp_path)))]
    assert results[0] == []
    assert all(results[1:]), results


# -- error replies ---------------------------------------------------------------------

def cause_info_problems(code: int, info: bytes) -> list[str]:
    """What RFC 5354 3.12 says a cause carries, checked on our bytes alone."""
    def declared(at: int) -> int:
        return int.from_bytes(info[at:at + 2], "big") if len(info) >= at + 2 else -1

    if code in (codes.CAUSE_UNRECOGNIZED_PARAMETER, codes.CAUSE_INVALID_VALUES):
        # 3.12.2 "the complete, unrecognized parameter TLV"; 3.12.4 "the
        # offending TLV that contains the invalid value(s)".
        if len(info) < 4 or declared(2) != len(info):
            return [f"cause 0x{code:x} carries {info.hex()!r}, not one whole TLV"]
    elif code == codes.CAUSE_UNRECOGNIZED_MESSAGE:
        # 3.12.3: "the unrecognized message".
        if len(info) < 4 or declared(2) != len(info):
            return [f"cause 0x2 carries {info.hex()!r}, not one whole message"]
    elif code == codes.CAUSE_INCONSISTENT_POLICY:
        # 3.12.6: a Pool Member Selection Policy TLV.
        if declared(0) != codes.PARAM_POLICY or declared(2) != len(info):
            return [f"cause 0x5 carries {info.hex()!r}, not a policy TLV"]
    elif code == codes.CAUSE_INCONSISTENT_TRANSPORT:
        # 3.12.8: a Transport TLV.
        if declared(0) not in TRANSPORT_TYPES or declared(2) != len(info):
            return [f"cause 0x7 carries {info.hex()!r}, not a transport TLV"]
    elif info:
        # 3.12.1, 3.12.5, 3.12.7, 3.12.9-3.12.11: no cause-specific information.
        return [f"cause 0x{code:x} carries {info.hex()!r}, but has no cause-specific information"]
    return []


def error_reply_corpus():
    """{"asap"/"enrp": [(what, message, bytes)]}: every codec and registrar error reply."""
    from tests.wirecorpus import codec_error_replies, registrar_error_replies

    corpus = {"asap": [], "enrp": []}
    for ppid, data, what, _ in codec_error_replies():
        corpus["asap" if ppid == PPID_ASAP else "enrp"].append((what, decode_message(data, ppid), data))
    for what, msg in registrar_error_replies():
        corpus["asap"].append((f"registrar: {what}", msg, msg.encode()))
    return corpus


def test_every_error_cause_carries_what_rfc5354_says():
    corpus = error_reply_corpus()
    failures = []
    seen = set()
    for proto, items in corpus.items():
        for what, msg, _ in items:
            for cause in msg.error.causes:
                seen.add(cause.code)
                failures += [f"{proto} {what}: {p}" for p in cause_info_problems(cause.code, cause.info)]
    assert not failures, "\n".join(failures[:50])
    # Every cause the registrar and the codec send, except 0x4 (the registrar
    # answers a PE identifier bound to another identity with 0xa).
    assert seen >= set(range(0, 0xB)) - {codes.CAUSE_NON_UNIQUE_PE_ID}


def test_cause_information_check_catches_wrong_information():
    """The RFC check itself must fail on bad information."""
    assert cause_info_problems(codes.CAUSE_INVALID_VALUES, bytes.fromhex("05000010 0000"))  # whole message
    assert cause_info_problems(codes.CAUSE_INVALID_VALUES, b"")
    assert cause_info_problems(codes.CAUSE_UNSPECIFIED, b"\x00")
    assert cause_info_problems(codes.CAUSE_INCONSISTENT_POLICY, bytes.fromhex("00050008 00000000"))
    assert not cause_info_problems(codes.CAUSE_INVALID_VALUES, bytes.fromhex("0009 0008 6563686f"))


def quote_alone(proto: str, code: int, info: bytes) -> bytes | None:
    """What a reply quotes, as a packet of its own: the unrecognized message
    itself, or a quoted TLV alone in a message (ASAP HANDLE_RESOLUTION or ENRP
    PRESENCE: Wireshark reads their parameters like any others)."""
    if code == codes.CAUSE_UNRECOGNIZED_MESSAGE:
        return info
    if code in (1, 3, 5, 7) and info:
        fixed = b"" if proto == "asap" else bytes(8)
        n = 4 + len(fixed) + len(info)
        mtype = 0x05 if proto == "asap" else 0x01
        return bytes([mtype, 0]) + n.to_bytes(2, "big") + fixed + info + bytes(-len(info) % 4)
    return None


def test_wireshark_dissects_every_error_reply(tmp_path):
    """Every error reply of the codec and the registrar, dissected by
    Wireshark: no malformed packet, every parameter and cause where we put it.

    What a reply quotes is the peer's bytes (RFC 5354 3.12.2-3.12.4); our
    decoder has checked their framing as deep as it reads them, but
    Wireshark reads deeper: the body of a message of an unknown type as
    parameters, the information of causes inside a quoted Operation Error as
    TLVs.  Where those bytes are not what Wireshark expects, it flags the
    reply.  Such a reply passes only if Wireshark flags the quoted bytes on
    their own as well (the fault is the peer's, not the framing we added),
    the RFC check of our causes passes, and Wireshark reads the first cause
    where we put it.
    """
    corpus = error_reply_corpus()
    failures, excused = [], []
    (tmp_path / "alone").mkdir()
    for proto, items in corpus.items():
        datas = [data for _, _, data in items]
        flagged = []
        for (what, msg, data), layers in zip(items, dissect(proto, datas, str(tmp_path))):
            problems = problems_of(proto, msg, data, layers, quotes_are_opaque=True)
            if problems:
                flagged.append((what, msg, data, layers, problems))
        quotes = [[quote_alone(proto, c.code, c.info) for c in msg.error.causes]
                  for _, msg, _, _, _ in flagged]
        alone = [q for qs in quotes for q in qs if q is not None]
        verdicts = dict(zip(alone, dissect(proto, alone, str(tmp_path / "alone")))) if alone else {}
        for (what, msg, data, layers, problems), qs in zip(flagged, quotes):
            peer_fault = any(q is not None and "_ws.malformed" in verdicts[q] for q in qs)
            f = {k[len(proto) + 1:]: v for k, v in layers.items() if k.startswith(proto + ".")}
            first = list(zip(ints(f.get("cause_code", [])), ints(f.get("cause_length", []))))[:1]
            ours = [(msg.error.causes[0].code, 4 + len(msg.error.causes[0].info))]
            if peer_fault and first == ours and not own_cause_problems(msg, data):
                excused.append(what)
                continue
            failures += [f"{proto} {what}: {msg.name}: {p}" for p in problems]
    assert not failures, f"{len(failures)} problems:\n" + "\n".join(failures[:60])
    total = sum(len(items) for items in corpus.values())
    # The faults are the peers' (an unknown message whose body is not made of
    # parameters, garbage inside a quoted Operation Error): few, and named.
    assert len(excused) <= total // 20, excused
