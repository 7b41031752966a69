"""Handlespace benchmark (issue 3 item 5).

For one pool of 1,000, 100,000 and 1,000,000 PEs (``--quick``: up to
100,000) and for Round Robin, Weighted Random and Least Used:

* registrations/s: building the pool through ``Handlespace.register``;
* updates/s: re-registrations of random PEs with a new load (LU), a new
  weight (WRAND) or the same settings (RR), each also moving the expiry;
* selections/s: handle resolutions of 3 PEs (``resolve(handle, 3)``);
* memory per PE: the growth of the resident set (RSS) of a fresh process
  while it builds the largest pool, divided by the PEs; every PE's payload
  is a distinct 64-byte ``bytes`` object (about the size of an encoded Pool
  Element parameter) and is counted.

Times are CPU time of the benchmark process (``time.process_time``), and
updates and selections keep the best of several chunks, so that other work
on the machine disturbs the figures little.  Pin it to one core: ``taskset -c 1 .venv/bin/python benchmarks/bench_handlespace.py --json``.
The last line with ``--json`` is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import subprocess
import sys
import time
from typing import Any, Callable

from rserpool.handlespace import (
    LEAST_USED,
    ROUND_ROBIN,
    TRANSPORT_TCP,
    USE_DATA_ONLY,
    WEIGHTED_RANDOM,
    Handlespace,
    HandlespaceLimits,
    PolicySettings,
)

# CPU time of this process: the cost on one core, not disturbed by other
# processes sharing the core (they still disturb the caches a little).
clock = time.process_time

HANDLE = b"bench-pool"
OWNER = 0x0A0B0C0D
LIFE = 30
POLICIES: dict[str, Callable[[random.Random], PolicySettings]] = {
    "RoundRobin": lambda rnd: PolicySettings(ROUND_ROBIN),
    "WeightedRandom": lambda rnd: PolicySettings(WEIGHTED_RANDOM, weight=rnd.randrange(1, 1000)),
    "LeastUsed": lambda rnd: PolicySettings(LEAST_USED, load=rnd.getrandbits(32)),
}


def payload_for(i: int) -> bytes:
    """A distinct 64-byte object standing for the encoded Pool Element."""
    return i.to_bytes(4, "big") * 16


def build(policy: str, size: int, rnd: random.Random) -> tuple[Handlespace, list[int], float]:
    """A handlespace with one pool of ``size`` PEs; returns it, the PE ids and
    the seconds the registrations took."""
    limits = HandlespaceLimits(max_pes_per_pool=size, max_pes=size, max_pes_per_identity=size)
    hs = Handlespace(limits, random.Random(rnd.getrandbits(64)))
    make_settings = POLICIES[policy]
    pe_ids = rnd.sample(range(1, 1 << 32), size)
    settings = [make_settings(rnd) for _ in range(size)]
    payloads = [payload_for(i) for i in range(size)]
    register = hs.register
    start = clock()
    for i in range(size):
        register(
            i * 1e-6,
            pool_handle=HANDLE,
            pe_id=pe_ids[i],
            settings=settings[i],
            transport_type=TRANSPORT_TCP,
            transport_use=USE_DATA_ONLY,
            registration_life=LIFE,
            home_server_id=OWNER,
            identity=None,
            payload=payloads[i],
        )
    elapsed = clock() - start
    assert len(hs) == size
    return hs, pe_ids, elapsed


def time_updates(
    hs: Handlespace, policy: str, pe_ids: list[int], count: int, repeats: int, rnd: random.Random
) -> float:
    """Best rate of ``repeats`` chunks of ``count`` re-registrations each
    (the best chunk is the least disturbed by other work on the machine)."""
    make_settings = POLICIES[policy]
    register = hs.register
    best = 0.0
    now = 1.0
    for _ in range(repeats):
        chosen = [pe_ids[rnd.randrange(len(pe_ids))] for _ in range(count)]
        settings = [make_settings(rnd) for _ in range(count)]
        payloads = [payload_for(i) for i in range(count)]
        gc.collect()
        start = clock()
        for i in range(count):
            register(
                now,
                pool_handle=HANDLE,
                pe_id=chosen[i],
                settings=settings[i],
                transport_type=TRANSPORT_TCP,
                transport_use=USE_DATA_ONLY,
                registration_life=LIFE,
                home_server_id=OWNER,
                identity=None,
                payload=payloads[i],
            )
        best = max(best, count / (clock() - start))
        now += 1.0
    return best


def time_selections(hs: Handlespace, count: int, repeats: int) -> float:
    """Best rate of ``repeats`` chunks of ``count`` resolutions of 3 PEs."""
    resolve = hs.resolve
    best = 0.0
    gc.collect()
    for _ in range(repeats):
        start = clock()
        for _ in range(count):
            resolve(HANDLE, 3)
        best = max(best, count / (clock() - start))
    return best


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(policy: str, size: int, seed: int) -> float:
    """RSS growth per PE while building one pool of ``size`` PEs in this
    (fresh) process: the store, the policy's structures, the expiry heap,
    each PE's PolicySettings, its id and its 64-byte payload."""
    rnd = random.Random(seed)
    make_settings = POLICIES[policy]
    limits = HandlespaceLimits(max_pes_per_pool=size, max_pes=size)
    gc.collect()
    base = _rss_bytes()
    hs = Handlespace(limits, random.Random(1))
    for i in range(size):
        hs.register(
            0.0,
            pool_handle=HANDLE,
            pe_id=(i * 2654435761 + 12345) & 0xFFFFFFFF,  # a bijection: distinct ids
            settings=make_settings(rnd),
            transport_type=TRANSPORT_TCP,
            transport_use=USE_DATA_ONLY,
            registration_life=LIFE,
            home_server_id=OWNER,
            identity=None,
            payload=payload_for(i),
        )
    gc.collect()
    assert len(hs) == size
    return (_rss_bytes() - base) / size


def measure_memory(policy: str, size: int, seed: int) -> float:
    """``memory_child`` in a fresh interpreter (inherits the CPU pinning)."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-child", policy, str(size), str(seed)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="largest pool 100,000 PEs, fewer operations (< 30 s)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--memory-child", nargs=3, metavar=("POLICY", "SIZE", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        policy, size, seed = args.memory_child
        print(memory_child(policy, int(size), int(seed)))
        return 0

    sizes = [1_000, 100_000] if args.quick else [1_000, 100_000, 1_000_000]
    ops = 10_000 if args.quick else 20_000
    repeats = 3 if args.quick else 7
    rnd = random.Random(args.seed)
    results: dict[str, Any] = {"sizes": {}}
    started = clock()
    for size in sizes:
        per_policy: dict[str, Any] = {}
        for policy in POLICIES:
            hs, pe_ids, build_s = build(policy, size, rnd)
            updates = time_updates(hs, policy, pe_ids, ops, repeats, rnd)
            selections = time_selections(hs, ops, repeats)
            per_policy[policy] = {
                "registrations_per_s": round(size / build_s),
                "updates_per_s": round(updates),
                "selections_per_s": round(selections),
                "select_cost_us": round(1e6 / selections, 3),
            }
            del hs, pe_ids
            gc.collect()
            if not args.json:
                print(f"{size:>9} PEs {policy:<15} " + "  ".join(f"{k}={v}" for k, v in per_policy[policy].items()))
        results["sizes"][str(size)] = per_policy

    largest = sizes[-1]
    memory = {policy: round(measure_memory(policy, largest, args.seed), 1) for policy in POLICIES}
    if not args.json:
        print(f"memory per PE at {largest} PEs (64-byte payload counted): {memory}")

    small = results["sizes"]["1000"]
    big = results["sizes"][str(largest)]
    ratio = max(big[p]["select_cost_us"] / small[p]["select_cost_us"] for p in POLICIES)
    results.update(
        {
            "largest_size": largest,
            "select_cost_ratio_largest_vs_1k": round(ratio, 3),
            "selections_per_s_1k": min(small[p]["selections_per_s"] for p in POLICIES),
            "updates_per_s": min(v["updates_per_s"] for s in results["sizes"].values() for v in s.values()),
            "registrations_per_s": min(
                v["registrations_per_s"] for s in results["sizes"].values() for v in s.values()
            ),
            "bytes_per_pe": max(memory.values()),
            "bytes_per_pe_by_policy": memory,
            "payload": "distinct 64-byte bytes object per PE, counted",
            "quick": args.quick,
            "python": platform.python_version(),
            "cpu_seconds": round(clock() - started, 1),
        }
    )
    if not args.json:
        print(
            f"worst: selections/s at 1k {results['selections_per_s_1k']}, cost ratio {largest} vs 1k "
            f"{results['select_cost_ratio_largest_vs_1k']}, updates/s {results['updates_per_s']}, "
            f"bytes/PE {results['bytes_per_pe']}"
        )
    print(json.dumps(results, sort_keys=True) if args.json else "", end="\n" if args.json else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
