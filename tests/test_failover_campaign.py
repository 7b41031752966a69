"""The failure campaign, short version (issue 14; docs/takeover.md): real
processes on loopback, three registrars (twistd), PE processes, PU echo
sessions, and every fault of the campaign under load.

It runs ``benchmarks/failover.py --quick`` as a user would and reads its
JSON.  The invariants are checked inside the run, at every view (see
``benchmarks/_failover_watch.py``); here we check that none was violated,
that every fault healed, that the echo accounting is exact and that the
faults really happened (failovers, takeovers, expiries).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_the_quick_campaign_loses_nothing(tmp_path):
    out = tmp_path / "campaign.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "failover.py"), "--quick", "--json", str(out),
                          "--dir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=420, cwd=ROOT)
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    context = json.dumps({k: result.get(k) for k in ("violations", "first_violations", "faults", "echo")},
                         indent=1)[-6000:]
    assert result["ok"] and run.returncode == 0, context
    assert result["violations"] == {}, context
    labels = [fault["label"] for fault in result["faults"]]
    for wanted in ("SIGKILL registrar", "restart registrar", "SIGSTOP registrar", "rolling restart: registrar a",
                   "rolling restart: registrar b", "rolling restart: registrar c", "SIGKILL PE process",
                   "serving PE", "together"):
        assert any(wanted in label for label in labels), (wanted, labels)
    assert all(fault["healed_after_s"] is not None for fault in result["faults"]), context
    echo = result["echo"]
    assert echo["sent"] > 500 and echo["echoed"] == echo["sent"]
    assert echo["lost"] == echo["duplicated"] == echo["out_of_order"] == echo["errors"] == 0
    assert result["pes_lost"] == 0
    # Every session failed over (its serving PE was killed), each time with
    # its cookie echoed and the callback run; no PE refused a cookie.
    assert echo["failovers"] >= echo["sessions"] and echo["sessions_without_failover"] == 0
    assert echo["failovers_without_cookie"] == 0 and echo["cookies_refused_by_pes"] == 0
    # Dead PEs went: those whose registrar died with them only after the
    # takeover and their registration life, within the stated bound.
    assert 0 < result["stale_pe_max_s"] <= result["bounds"]["stale"]
    assert result["checksums_agree_at_end"] and len(result["checksums_at_end"]) == 3
    # The run directory holds the registrars' logs: the takeovers and the
    # restart in place happened for real.
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "run").glob("registrar-*.log"))
    assert re.search(r"took ENRP peer \w+ over: now the home of its [1-9]\d* PEs", logs)  # adopted, then expired
    assert "restarting in place" in logs
