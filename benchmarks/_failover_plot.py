"""The campaign's timeline as a PNG (matplotlib, an optional extra:
``pip install -e .[plot]``).  Without matplotlib nothing is drawn and
``plot_timeline`` returns None; the campaign says so and runs all the same.
"""

from __future__ import annotations

from typing import Any

__all__ = ["plot_timeline"]

COLOURS = ("tab:blue", "tab:orange", "tab:green")
WIDTHS = (5.0, 3.0, 1.3)  # the three lines lie on top of each other when all agree


def plot_timeline(result: dict, path: str) -> str | None:
    """Top: PEs each registrar returns (gaps: no answer) and the live PEs;
    bottom: PU echo messages per second; faults shaded and labelled."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    timeline: dict[str, Any] = result["timeline"]
    faults = timeline["faults"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    for registrar in range(result.get("registrars", 3)):
        points = [(t, n) for t, r, n in timeline["visible"] if r == registrar]
        xs = [t for t, _ in points]
        ys = [float("nan") if n is None else n for _, n in points]
        top.plot(xs, ys, drawstyle="steps-post", color=COLOURS[registrar % 3], linewidth=WIDTHS[registrar % 3],
                 alpha=0.75, label=f"PEs returned by registrar {'abc'[registrar % 3]} (gap: no answer)")
    live = timeline["live"]
    if live:
        top.plot([t for t, _ in live], [n for _, n in live], drawstyle="steps-post", color="black",
                 linestyle=":", linewidth=1.2, label="live PEs")
    rate = timeline["echo_rate"]
    bottom.bar([t for t, _ in rate], [n for _, n in rate], width=1.0, color="tab:purple", align="edge")
    bottom.set_ylabel("PU echoes / s")
    top.set_ylabel("PEs")
    bottom.set_xlabel("seconds since the campaign started")
    for number, (start, end, label) in enumerate(faults, 1):
        for axis in (top, bottom):
            axis.axvspan(start, max(end, start + 0.3), color="red", alpha=0.15)
        top.annotate(str(number), (start, 1.01), xycoords=("data", "axes fraction"), fontsize=8,
                     va="bottom", ha="left", color="darkred")
    top.legend(loc="lower left", fontsize=8)
    listing = [f"{number}: {label}" for number, (_, _, label) in enumerate(faults, 1)]
    columns = 3
    rows = -(-len(listing) // columns) if listing else 0
    for column in range(columns):
        text = "\n".join(listing[column * rows:(column + 1) * rows])
        fig.text(0.01 + column * 0.33, 0.01, text, fontsize=7, va="bottom", ha="left", family="monospace")
    top.set_ylim(bottom=0)
    violations = result.get("violations") or {}
    echo = result.get("echo", {})
    fig.suptitle(f"failure campaign: {result.get('pes')} PEs, 3 registrars, {echo.get('sessions')} PU sessions; "
                 f"violations: {sum(violations.values()) if violations else 0}; lost {echo.get('lost')}, "
                 f"duplicated {echo.get('duplicated')}; stale PE max {result.get('stale_pe_max_s')} s",
                 fontsize=9, y=0.995)
    fig.tight_layout(rect=(0, 0.02 + 0.018 * rows, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
