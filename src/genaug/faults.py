"""Deliberate crashes at named points, for the tests that prove a killed study resumes correctly.

`GENAUG_KILL_AT="<point>:<n>"` makes the process SIGKILL itself the n-th time it reaches `point`
(counted from 1 in this process). Points: "step" (after a training step), "checkpoint" (a checkpoint's
tensors written, not yet renamed into place), "stage" (a stage folder complete, before the next
stage), "report" (summary.json written, the report files not yet). Unset, `point` costs one lookup.
"""

from __future__ import annotations

import os
import signal

_target = os.environ.get("GENAUG_KILL_AT", "")
_point, _, _count = _target.partition(":")
_seen = 0


def point(name: str) -> None:
    global _seen
    if name != _point:
        return
    _seen += 1
    if _seen == int(_count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
