"""A/B comparison of the registrar at two git revisions, alternating.

On a shared VM the registrar's CPU per request moves by tens of per cent
from one run to the next, far more than most changes are worth, so two
builds measured minutes apart cannot be compared.  This runs the
``bench_registrar.py`` registrar of revision A and of revision B in turn
(A, B, A, B, ... or, with ``--reverse``, B first), each against the same C
generator, PKI and messages, and prints server CPU microseconds per
resolution and per re-registration for every run and the medians.  Run it
in both orders before believing a difference.

    .venv/bin/python benchmarks/ab_registrar.py REV_A REV_B [--repetitions N] [--reverse] [--json]

Each revision is checked out with ``git worktree`` into a temporary
directory and imported from there (``PYTHONPATH``); the revisions must
have ``bench_registrar.py --serve-registrar`` (every revision since
2026-11-27 does).  The generator and messages come from this checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_registrar as br  # noqa: E402

KINDS = ("resolve", "reregister")


def checkout(rev: str, directory: Path) -> Path:
    target = directory / f"rev-{rev.replace('/', '_')}"
    subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--detach", "-f", str(target), rev],
                   check=True, capture_output=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev_a")
    parser.add_argument("rev_b")
    parser.add_argument("--repetitions", type=int, default=8)
    parser.add_argument("--measure", type=float, default=2.5)
    parser.add_argument("--reverse", action="store_true", help="run B before A in each repetition")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    conns, per_conn = 50, 20
    results: dict[str, dict[str, list[float]]] = {rev: {k: [] for k in KINDS} for rev in (args.rev_a, args.rev_b)}
    with tempfile.TemporaryDirectory(prefix="rserpool-ab-") as tmp:
        directory = Path(tmp)
        trees = {rev: checkout(rev, directory) for rev in (args.rev_a, args.rev_b)}
        try:
            bench_pki = br.make_pki(directory, conns)
            loadgen = br.build_loadgen(directory)
            ini = br.registrar_ini(directory, bench_pki)
            order = [args.rev_b, args.rev_a] if args.reverse else [args.rev_a, args.rev_b]
            for rep in range(args.repetitions):
                for index, rev in enumerate(order):
                    tree = trees[rev]
                    script = directory / f"r{rep}-{index}.lg"
                    br.write_script(script, bench_pki, [
                        br.registration_phase(conns, per_conn),
                        br.resolution_phase(conns, 0.5, args.measure, f"#{rep + 1}"),
                        br.reregistration_phase(conns, per_conn, 0.5, args.measure, f"#{rep + 1}"),
                    ])
                    stats = directory / f"r{rep}-{index}.stats"
                    env_before = os.environ.get("PYTHONPATH")
                    os.environ["PYTHONPATH"] = str(tree)
                    try:
                        server = br.Server([sys.executable, str(tree / "benchmarks" / "bench_registrar.py"),
                                            "--serve-registrar", str(ini), "--stats", str(stats)],
                                           directory / f"r{rep}-{index}.log")
                    finally:
                        if env_before is None:
                            os.environ.pop("PYTHONPATH", None)
                        else:
                            os.environ["PYTHONPATH"] = env_before
                    try:
                        _, phases = br.run_generator(loadgen, script, server, bench_pki.ca, signal_windows=True)
                    finally:
                        server.stop()
                    for kind, result in zip(KINDS, phases[1:]):
                        results[rev][kind].append(br.figures(result)["server_us_per_request"])
                    br.say(f"  {rev:>12s} #{rep + 1}: " + ", ".join(
                        f"{kind} {results[rev][kind][-1]:6.1f} us" for kind in KINDS))
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
    summary = {rev: {kind: {"median_us": round(statistics.median(values), 2), "runs_us": values}
                     for kind, values in per_rev.items()} for rev, per_rev in results.items()}
    for rev, per_rev in summary.items():
        br.say(f"{rev:>12s} medians: " + ", ".join(f"{kind} {figures['median_us']:6.1f} us"
                                                    for kind, figures in per_rev.items()))
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
