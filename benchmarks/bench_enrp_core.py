"""ENRP's costs in one process: the sans-IO cores, the codec and the TCP
mapping's framing, without sockets, TLS or a reactor (issue 13 item 9, the
in-process side of ``bench_enrp.py``).

Figures, each the thread CPU time (``time.thread_time``) of one side,
summed over a run and divided by the PEs or updates, then the median and
the least over the repetitions:

* ``register_us_per_pe``: ``Handlespace.register`` of the PEs
  ``bench_enrp.py`` puts in its mentor (one Least-Used pool, one identity):
  the reference of ``enrp_join_ratio``;
* join (a W=0 download of a mentor holding ``--pes`` PEs, RFC 5353 3.2.3):
  ``join_mentor_us_per_pe`` (the mentor: requests in, pages built, framed;
  the first download, so each PE parameter is encoded once),
  ``join_decode_us_per_pe`` (the joiner: de-framing and decoding the pages),
  ``join_apply_us_per_pe`` (the joiner's core applying them),
  ``join_joiner_us_per_pe`` (the two together), and two models of the
  benchmark's ratio: ``join_ratio_model_sequential`` (register over mentor
  plus joiner: the two take turns) and ``join_ratio_model_pipelined``
  (register over the larger of the two: the joiner asks for the next page
  before it applies one);
* ``resync_us_per_pe``: the joiner's side of a W=1 re-synchronization
  (RFC 5353 3.6.3) with the same mentor, nothing changed meanwhile;
* updates (RFC 5353 3.3): ``update_home_us`` (a registrar with two peers,
  per change of one of its PEs: the core's fan-out and the framing for both
  peers; the change itself, ``Handlespace.register``, not counted) and
  ``update_peer_us`` (one peer: de-framing, decoding and applying it; the
  bytes repeat, as the channels' ``DecodeCache`` sees them in
  ``bench_enrp.py``'s load, so ``update_peer_uncached_us`` decodes each
  afresh).

These bound what ``bench_enrp.py`` can show: its join also pays TLS, the
reactor and the round trips, and its registrars share two cores.

    .venv/bin/python benchmarks/bench_enrp_core.py [--quick] [--json] [--pes N] [--repetitions N]

Pin it to one core (``taskset -c 1``) on a quiet machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rserpool.enrp as enrp_module  # noqa: E402
from rserpool.asap.registrar import policy_settings  # noqa: E402
from rserpool.enrp import EnrpCore, EnrpSettings, PeerLimits, Send  # noqa: E402
from rserpool.handlespace import Handlespace, HandlespaceLimits  # noqa: E402
from rserpool.security.ratelimit import RateLimit  # noqa: E402
from rserpool.wire import (  # noqa: E402
    DecodeCache, EnrpHandleTableResponse, EnrpPresence, LeastUsedPolicy, PoolElement, TcpTransport,
    decode_message,
)
from rserpool.wire.tcpmap import MessageReceived, TcpMapConnection  # noqa: E402

clock = time.thread_time
MENTOR, JOINER, OTHER = 0x1000, 0x2000, 0x3000
POOL = b"big-pool"
IDENTITY = "bench-pe0"
HS_LIMITS = HandlespaceLimits(max_pes_per_pool=1_000_000, max_pes_per_identity=1_000_000)
PEER_LIMITS = PeerLimits(max_pes=1_000_000, update_rate=RateLimit(rate=1e9, burst=1e9))
#: The shell's output asking for a received page to be applied on a later
#: reactor turn (pipelined table downloads), where the core has it.
APPLY_PAGE = getattr(enrp_module, "ApplyPage", None)


def _link(send: Send) -> object:
    """The PeerLink a Send goes to: ``channel`` of rserpool.outputs.Send, the
    one Send (``link`` of the ENRP core's own Send in earlier revisions)."""
    return getattr(send, "link", None) or send.channel


def pool_elements(home: int, count: int) -> list[PoolElement]:
    """The PEs of ``bench_enrp.py``'s mentor."""
    address = IPv4Address("127.0.0.1")
    return [PoolElement(0x20000000 + i, home, 3600, TcpTransport(10000 + i % 50000, address), LeastUsedPolicy(i))
            for i in range(count)]


def populate(hs: Handlespace, home: int, pes: list[PoolElement]) -> float:
    """Register ``pes`` at their home as ``bench_enrp.py`` does; CPU seconds."""
    settings = [policy_settings(pe.policy) for pe in pes]
    register = hs.register
    started = clock()
    for pe, policy in zip(pes, settings):
        register(0.0, pool_handle=POOL, pe_id=pe.pe_id, settings=policy, transport_type=5, transport_use=0,
                 registration_life=3600, home_server_id=home, identity=IDENTITY, payload=pe)
    return clock() - started


class Side:
    """One registrar's core and, per peer, its end of a TCP mapping."""

    def __init__(self, server_id: int, page_pes: int | None, populated: list[PoolElement] | None = None) -> None:
        self.handlespace = Handlespace(HS_LIMITS, rng=random.Random(server_id))
        self.register_s = populate(self.handlespace, server_id, populated) if populated else 0.0
        extra = {} if page_pes is None else {"page_pes": page_pes}
        self.core = EnrpCore(EnrpSettings(server_id, peer_limits=PEER_LIMITS, **extra), self.handlespace,
                             rng=random.Random(server_id))
        self.links: dict[int, Any] = {}  # peer server ID -> PeerLink
        self.mappings: dict[int, TcpMapConnection] = {}
        self.cpu: dict[str, float] = {}

    def charge(self, what: str, seconds: float) -> None:
        self.cpu[what] = self.cpu.get(what, 0.0) + seconds


class Net:
    """Cores joined by in-memory channels; every message is encoded, framed
    as a DATA chunk, de-framed and decoded, each side's CPU charged to it."""

    def __init__(self) -> None:
        self.queue: list[tuple[Side, int, bytes]] = []  # (receiver, sender ID, chunk bytes)
        self.sides: dict[int, Side] = {}
        self.now = 1000.0

    def add(self, side: Side) -> Side:
        self.sides[side.core.server_id] = side
        return side

    def link(self, a: Side, b: Side) -> None:
        for one, other, initiator in ((a, b, True), (b, a, False)):
            mapping = one.mappings[other.core.server_id] = TcpMapConnection()
            mapping.initiate()
            link, outputs = one.core.link_up(other.core.server_id, f"registrar-{other.core.server_id:x}",
                                             "127.0.0.1", initiator, self.now)
            one.links[other.core.server_id] = link
            self.carry(one, outputs, "setup")
        for one, other in ((a, b), (b, a)):  # each side has seen the other's INIT
            other.mappings[one.core.server_id].receive_data(b"\x01\x00\x00\x04")

    def carry(self, side: Side, outputs: list, what: str) -> None:
        """Frame ``outputs``' messages (charged to ``side`` as ``what``)."""
        started = clock()
        for output in outputs:
            if type(output) is Send:
                data = output.data if output.data is not None else output.message.encode()
                peer = _link(output).channel
                chunk = side.mappings[peer].send_message(output.message.PPID, data)
                self.queue.append((self.sides[peer], side.core.server_id, chunk))
        side.charge(what, clock() - started)
        if APPLY_PAGE is not None:
            for output in outputs:
                if type(output) is APPLY_PAGE:  # the shell runs it on a later reactor turn
                    started = clock()
                    later = side.core.apply_page(output.link, self.now)
                    side.charge("apply", clock() - started)
                    self.carry(side, later, "apply")

    def deliver(self, limit: int = 10_000_000) -> None:
        while self.queue and limit:
            limit -= 1
            side, sender, chunk = self.queue.pop(0)
            started = clock()
            events = side.mappings[sender].receive_data(chunk)
            side.mappings[sender].data_to_send()  # the ACKs, which nobody needs here
            payload = next(e for e in events if type(e) is MessageReceived).payload
            message = decode_message(payload, 12)
            decoded = clock()
            kind = "page" if type(message) is EnrpHandleTableResponse else "message"
            side.charge("decode_" + kind, decoded - started)
            outputs = side.core.message_received(side.links[sender], message, self.now)
            side.charge("apply" if kind == "page" else "handle", clock() - decoded)
            self.carry(side, outputs, "apply" if kind == "page" else "handle")


def join_run(pes: int, page_pes: int | None) -> dict[str, float]:
    """One W=0 download of ``pes`` PEs and one W=1 re-synchronization."""
    net = Net()
    mentor = net.add(Side(MENTOR, page_pes, pool_elements(MENTOR, pes)))
    joiner = net.add(Side(JOINER, page_pes))
    mentor.core.start(net.now, expect_peers=False)
    joiner.core.start(net.now, expect_peers=True)
    gc.collect()
    net.link(joiner, mentor)
    net.deliver()
    held = joiner.handlespace
    if not joiner.core.initialized or len(held) != pes or held.checksum(MENTOR) != mentor.handlespace.checksum(MENTOR):
        raise RuntimeError(f"the joiner holds {len(held)} PEs, checksum {held.checksum(MENTOR):04x}")
    pages = joiner.core.stats["pages_received"]
    figures = {
        "register_us_per_pe": mentor.register_s / pes * 1e6,
        "join_mentor_us_per_pe": sum(mentor.cpu.values()) / pes * 1e6,
        "join_decode_us_per_pe": joiner.cpu.get("decode_page", 0.0) / pes * 1e6,
        "join_apply_us_per_pe": joiner.cpu.get("apply", 0.0) / pes * 1e6,
        "join_pages": pages,
    }
    figures["join_joiner_us_per_pe"] = figures["join_decode_us_per_pe"] + figures["join_apply_us_per_pe"]
    # A PRESENCE whose checksum differs starts the W=1 re-synchronization.
    joiner.cpu.clear()
    wrong = EnrpPresence(MENTOR, JOINER, mentor.handlespace.checksum(MENTOR) ^ 1, None)
    net.queue.append((joiner, MENTOR, mentor.mappings[JOINER].send_message(12, wrong.encode())))
    net.deliver()
    if joiner.core.stats["resyncs"] != 1 or len(held) != pes:
        raise RuntimeError("the re-synchronization did not run as expected")
    figures["resync_us_per_pe"] = (joiner.cpu.get("decode_page", 0.0) + joiner.cpu.get("apply", 0.0)
                                   + joiner.cpu.get("handle", 0.0)) / pes * 1e6
    return figures


def update_run(updates: int, pool_size: int, cached: bool) -> dict[str, float]:
    """A home with two peers; ``updates`` changes of its PEs' loads.

    A ``thread_time`` call costs about a microsecond here, as much as the
    work it would time, so whole loops are timed: the home's loop of
    registrations with and without the fan-out (the difference is the
    fan-out), then one peer's loop over every update it received."""
    net = Net()
    home = net.add(Side(MENTOR, None, pool_elements(MENTOR, pool_size)))
    twin = Side(MENTOR, None, pool_elements(MENTOR, pool_size))  # the same registrations, no peers
    peers = [net.add(Side(JOINER, None)), net.add(Side(OTHER, None))]
    home.core.start(net.now, expect_peers=False)
    for peer in peers:
        peer.core.start(net.now, expect_peers=True)
        net.link(peer, home)
        net.deliver()
    net.link(peers[0], peers[1])
    net.deliver()
    if not all(peer.core.initialized and len(peer.handlespace) == pool_size for peer in peers):
        raise RuntimeError("the peers did not join")
    address = IPv4Address("127.0.0.1")
    changes = []
    for i in range(updates):
        index = i % pool_size
        pe = PoolElement(0x20000000 + index, MENTOR, 3600, TcpTransport(10000 + index, address),
                         LeastUsedPolicy(index + 1 + (i // pool_size) % 2))
        changes.append((pe.pe_id, policy_settings(pe.policy), pe))
    timings = {}
    for side in (twin, home):
        register = side.handlespace.register
        pe_added = side.core.pe_added if side is home else None
        mappings = side.mappings
        chunks: list[tuple[int, bytes]] = []
        gc.collect()
        started = clock()
        for pe_id, policy, pe in changes:
            entry = register(net.now, pool_handle=POOL, pe_id=pe_id, settings=policy, transport_type=5,
                             transport_use=0, registration_life=3600, home_server_id=MENTOR, identity=IDENTITY,
                             payload=pe).entry
            if pe_added is not None:
                for output in pe_added(entry):
                    if type(output) is Send:
                        peer = _link(output).channel
                        chunks.append((peer, mappings[peer].send_message(12, output.data)))
        timings["home" if side is home else "twin"] = clock() - started
    first = peers[0]
    mapping = first.mappings[MENTOR]
    link = first.links[MENTOR]
    message_received = first.core.message_received
    decode = DecodeCache().decode if cached else (lambda data, ppid: decode_message(data, ppid))
    mine = [chunk for peer, chunk in chunks if peer == JOINER]
    gc.collect()
    started = clock()
    for chunk in mine:
        for event in mapping.receive_data(chunk):
            message_received(link, decode(event.payload, 12), net.now)
        mapping.data_to_send()
    peer_s = clock() - started
    if len(mine) != updates or first.handlespace.get(POOL, changes[-1][0]).payload != changes[-1][2]:
        raise RuntimeError("an update did not arrive")
    return {"update_home_us": max(0.0, timings["home"] - timings["twin"]) / updates * 1e6,
            "update_peer_us": peer_s / updates * 1e6}


def summarize(runs: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in runs[0]:
        values = [run[key] for run in runs]
        out[key] = round(statistics.median(values), 3)
        out[key + "_min"] = round(min(values), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 PEs, 3 repetitions")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    parser.add_argument("--pes", type=int, default=None, help="PEs of the join (default 100000; 20000 with --quick)")
    parser.add_argument("--repetitions", type=int, default=None, help="default 5 (3 with --quick)")
    parser.add_argument("--page-pes", type=int, default=None, help="PEs per page (default: EnrpSettings')")
    parser.add_argument("--updates", type=int, default=None, help="default 50000 (10000 with --quick)")
    args = parser.parse_args(argv)
    pes = args.pes or (20_000 if args.quick else 100_000)
    reps = args.repetitions or (3 if args.quick else 5)
    updates = args.updates or (10_000 if args.quick else 50_000)
    started = time.monotonic()
    joins, resyncs = [], []
    for rep in range(reps):
        joins.append(join_run(pes, args.page_pes))
        run = joins[-1]
        print(f"join #{rep + 1}: register {run['register_us_per_pe']:.2f} us/PE; mentor "
              f"{run['join_mentor_us_per_pe']:.2f}, joiner decode {run['join_decode_us_per_pe']:.2f} + apply "
              f"{run['join_apply_us_per_pe']:.2f} us/PE ({run['join_pages']} pages); re-sync "
              f"{run['resync_us_per_pe']:.2f} us/PE", file=sys.stderr, flush=True)
    for rep in range(reps):
        run = update_run(updates, 1000, cached=True)
        run.update({"update_peer_uncached_us": update_run(updates, 1000, cached=False)["update_peer_us"]})
        resyncs.append(run)
        print(f"updates #{rep + 1}: home {run['update_home_us']:.2f} us per change (two peers), peer "
              f"{run['update_peer_us']:.2f} us per update ({run['update_peer_uncached_us']:.2f} decoding afresh)",
              file=sys.stderr, flush=True)
    summary = summarize(joins)
    summary.update(summarize(resyncs))
    for suffix in ("", "_min"):
        register = summary["register_us_per_pe" + suffix]
        mentor, joiner = summary["join_mentor_us_per_pe" + suffix], summary["join_joiner_us_per_pe" + suffix]
        summary["join_ratio_model_sequential" + suffix] = round(register / (mentor + joiner), 3)
        summary["join_ratio_model_pipelined" + suffix] = round(register / max(mentor, joiner), 3)
    summary.update({"pes": pes, "repetitions": reps, "updates": updates, "quick": args.quick,
                    "pipelined": APPLY_PAGE is not None, "duration_s": round(time.monotonic() - started, 1)})
    print(f"register {summary['register_us_per_pe']:.2f} us/PE; join: mentor {summary['join_mentor_us_per_pe']:.2f}, "
          f"joiner {summary['join_joiner_us_per_pe']:.2f} us/PE (ratio models: sequential "
          f"{summary['join_ratio_model_sequential']}, pipelined {summary['join_ratio_model_pipelined']}); re-sync "
          f"{summary['resync_us_per_pe']:.2f} us/PE; update: home {summary['update_home_us']:.2f} us, peer "
          f"{summary['update_peer_us']:.2f} us (medians)", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
