"""Is ``bench_registrar.py``'s echo baseline a fair one?

Runs the baseline echo server (``_echo_server.py``) in two styles, one
after the other and repeatedly, with the same C generator, connections and
message sizes as ``bench_registrar.py``'s resolution phase:

- ``rserpool``: the baseline as ``bench_registrar.py`` runs it (the
  registrar's TLS settings: client certificates required; TCP_NODELAY);
- ``twisted-default``: Twisted's default ``PrivateCertificate.options()``
  (no client certificate requested) and Nagle's algorithm left on, as the
  echo server of ``/work/shared/notes/performance-anchors.md`` was.

If the first is not slower than the last, the baseline is not handicapped
by rserpool's TLS settings.  Prints server CPU microseconds per request
(and rates) per run and the medians per style.

    .venv/bin/python benchmarks/bench_echo_styles.py [--repetitions N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_registrar as br  # noqa: E402

STYLES = {
    "rserpool": {},
    "twisted-default": {"style": "twisted-default"},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--measure", type=float, default=2.5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    conns = 50
    results: dict[str, list[dict[str, float]]] = {style: [] for style in STYLES}
    with tempfile.TemporaryDirectory(prefix="rserpool-echo-styles-") as tmp:
        directory = Path(tmp)
        bench_pki = br.make_pki(directory, conns)
        loadgen = br.build_loadgen(directory)
        responses = {str(k): v.hex() for k, v in br.echo_responses().items()}
        for rep in range(args.repetitions):
            for style, extra in STYLES.items():
                spec = directory / f"{style}.json"
                spec.write_text(json.dumps({"cert": str(bench_pki.server_cert), "key": str(bench_pki.server_key),
                                            "ca": str(bench_pki.ca), "responses": responses, **extra}))
                script = directory / f"{style}{rep}.lg"
                br.write_script(script, bench_pki, [br.resolution_phase(conns, 0.5, args.measure, f"#{rep + 1}")])
                server = br.Server([sys.executable, str(HERE / "_echo_server.py"), str(spec)],
                                   directory / f"{style}{rep}.log")
                try:
                    _, (result,) = br.run_generator(loadgen, script, server, bench_pki.ca)
                finally:
                    server.stop()
                run = br.figures(result)
                results[style].append({"rate_per_s": run["rate_per_s"], "us_per_request": run["server_us_per_request"],
                                       "errors": run["errors"]})
                br.say(f"  {style:16s} #{rep + 1}: {run['rate_per_s']:8.0f}/s  server "
                       f"{run['server_us_per_request']:5.1f} us/req, errors {run['errors']}")
    summary = {style: {"median_us_per_request": round(statistics.median(r["us_per_request"] for r in runs), 2),
                       "median_rate_per_s": round(statistics.median(r["rate_per_s"] for r in runs)),
                       "runs": runs}
               for style, runs in results.items()}
    for style, figures in summary.items():
        br.say(f"{style:16s} median {figures['median_us_per_request']:6.1f} us/req, "
               f"{figures['median_rate_per_s']:8d}/s")
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
