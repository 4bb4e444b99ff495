"""Every condition a study can train its MAEs under, in one table: what each adds to the real training
images and how its runs are seeded. config.py's allowed names, the plan and the stage that assembles
each MAE's images all read `CONDITIONS`. Importing this module imports nothing heavy.

A condition in a run is `<name>`, `real+gen:<generator>` (one per configured generator) or, in a ratio
sweep, either of those with `@<ratio>` (round(ratio x data.n_train) extra images instead of
study.n_synthetic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ConditionSpec:
    name: str
    adds: str  # what it adds to the real training images, in words ("" = nothing)
    extra: bool  # it adds images: study.n_synthetic of them, or a ratio sweep's count
    seed_offset: int = 0  # added to each MAE seed: real-aa trains with seeds independent of real's
    seeded_extra: bool = False  # its extra images are drawn with the study seed (they enter the MAE key)
    role: Literal["baseline", "question", "control"] = "control"
    known_answer: str = ""  # what a control must show, for a reader checking the method


AA_SEED_OFFSET = 1_000_003  # real-aa seed s trains with s + this: independent of every real seed

CONDITIONS: dict[str, ConditionSpec] = {spec.name: spec for spec in (
    ConditionSpec("real", "", False, role="baseline"),
    ConditionSpec("real+gen", "a generator's synthetic images", True, role="question"),
    ConditionSpec("real-x2", "the real images again, to the same count: more steps on the same data", True,
                  known_answer="tells more steps apart from new data"),
    ConditionSpec("real+classic", "classically augmented copies of the real images (flips, crops, jitter)", True,
                  seeded_extra=True, known_answer="the baseline a generator must beat to be worth it"),
    ConditionSpec("real+real", "held-back real frames (the generator pool's): what more real data would give",
                  True, known_answer="helps: the upper bound"),
    ConditionSpec("real+noise", "Gaussian noise images with the real set's per-channel mean and std", True,
                  seeded_extra=True, known_answer="must not help"),
    ConditionSpec("real-aa", "nothing: the real images again, trained with other seeds (the A/A check)", False,
                  seed_offset=AA_SEED_OFFSET, known_answer="no difference"),
)}

# the names study.conditions accepts (config.py's Literal)
NAMES = tuple(CONDITIONS)


def spec_of(condition: str) -> ConditionSpec:
    """The table's row of a run's condition: real+gen:ddpm@0.5 -> real+gen."""
    return CONDITIONS[condition.split("@")[0].split(":")[0]]
