"""Where a study's wall time went: each step's span on the wall clock, the time per stage, a timeline.

Every stage output's manifest records when the attempt that completed it started and finished
(`started`, `finished`: Unix seconds) and the CPU threads it had (`threads`). Steps built side by side
(the launcher's jobs) overlap in time; each is drawn in the first lane free at its start, so the number
of lanes is the most steps that ran at once. A study built over several invocations (stopped, resumed
later) has idle gaps with nothing running: gaps longer than `GAP_S` are cut out of the time axis (and
marked), so the figure and the wall time show the study's work, not the pause.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

GAP_S = 30.0  # idle longer than this (nothing building) is a pause between invocations, not the study's time


@dataclass(frozen=True)
class Span:
    stage: str
    name: str
    start: float  # seconds on the study's axis (0 = the first step's start, long idle gaps cut out)
    end: float
    lane: int  # 0 for the first step; a step overlapping a running one goes to the next free lane
    threads: int | None


def spans(manifests: list[dict]) -> tuple[list[Span], list[float]]:
    """Manifests of complete stage outputs -> (spans in start order, the axis positions of cut gaps).

    Manifests written before genaug recorded `started`/`finished` are left out."""
    timed = sorted((m for m in manifests if "started" in m and "finished" in m), key=lambda m: m["started"])
    out: list[Span] = []
    cuts: list[float] = []
    lane_free_at: list[float] = []  # per lane, the axis time its last step ended
    shift, latest_end = 0.0, None  # seconds cut out so far; the latest wall-clock end seen
    for m in timed:
        start, end = float(m["started"]), float(max(m["finished"], m["started"]))
        if latest_end is not None and start - latest_end > GAP_S:
            cuts.append(latest_end - shift)
            shift += start - latest_end
        latest_end = end if latest_end is None else max(latest_end, end)
        a, b = start - shift, end - shift
        lane = next((i for i, free in enumerate(lane_free_at) if free <= a), len(lane_free_at))
        if lane == len(lane_free_at):
            lane_free_at.append(b)
        lane_free_at[lane] = b
        out.append(Span(m["stage"], m["name"], a, b, lane, m.get("threads")))
    if out:
        origin = out[0].start
        out = [Span(s.stage, s.name, s.start - origin, s.end - origin, s.lane, s.threads) for s in out]
        cuts = [c - origin for c in cuts]
    return out, cuts


def covered(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals: the wall time during which at least one ran."""
    total, reach = 0.0, None
    for a, b in sorted(intervals):
        if reach is None or a > reach:
            total += b - a
            reach = b
        elif b > reach:
            total += b - reach
            reach = b
    return total


def stage_times(all_spans: list[Span]) -> list[dict]:
    """One row per stage, in order of first start: steps, wall seconds while any of its steps ran
    (overlaps counted once), summed step seconds (more than the wall time when steps ran side by side),
    and the share of the study's wall time (the union of every step)."""
    wall = covered([(s.start, s.end) for s in all_spans]) or 1.0
    rows = []
    for stage in dict.fromkeys(s.stage for s in all_spans):
        mine = [s for s in all_spans if s.stage == stage]
        stage_wall = covered([(s.start, s.end) for s in mine])
        rows.append({"stage": stage, "steps": len(mine), "wall_s": stage_wall,
                     "step_s": sum(s.end - s.start for s in mine), "share": stage_wall / wall})
    return rows


def figure(all_spans: list[Span], cuts: list[float], path: Path, save) -> Path:
    """One bar per step over the study's time axis, one row per lane, coloured by stage. `save(fig, path)`
    writes the figure (the report's atomic writer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(s.stage for s in all_spans))
    colour = {stage: f"C{i % 10}" for i, stage in enumerate(stages)}
    lanes = max(s.lane for s in all_spans) + 1
    fig, ax = plt.subplots(figsize=(10, 1.4 + 0.35 * max(lanes, len(stages) / 3)))
    for stage in stages:
        mine = [s for s in all_spans if s.stage == stage]
        for lane in sorted({s.lane for s in mine}):
            ax.broken_barh([(s.start, max(s.end - s.start, 1e-3)) for s in mine if s.lane == lane], (lane - 0.4, 0.8),
                           facecolors=colour[stage], edgecolors="white", linewidth=0.5,
                           label=stage if lane == min(s.lane for s in mine) else None)
    for x in cuts:
        ax.axvline(x, color="black", ls=":", lw=1)
    ax.set(xlabel="seconds of study time" + (" (dotted: a pause between runs, cut out)" if cuts else ""),
           yticks=range(lanes), yticklabels=[f"lane {i + 1}" for i in range(lanes)], ylim=(lanes - 0.5, -0.5))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)
    return path


def table(all_spans: list[Span]) -> tuple[list[str], list[list[str]]]:
    rows = stage_times(all_spans)
    header = ["stage", "steps", "wall time", "share", "summed step time"]
    body = [[r["stage"], str(r["steps"]), f"{r['wall_s']:.1f} s", f"{r['share']:.0%}", f"{r['step_s']:.1f} s"] for r in rows]
    wall = covered([(s.start, s.end) for s in all_spans])
    body.append(["all", str(len(all_spans)), f"{wall:.1f} s", "100%", f"{sum(r['step_s'] for r in rows):.1f} s"])
    return header, body
