"""Choosing the study's three disjoint sets from a source, with every check that needs no pixels.

    test   held-out real frames every MAE is scored on (from the source's own test set if it has one)
    train  the real frames each MAE trains on
    pool   the generators' training frames

Draw order is test, train, pool from one seeded permutation, so the test and train sets do not change
when only n_pool does. Run by `genaug validate` and by the split stage, before anything trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genaug.config import Config
from genaug.data.frames import FrameRef, check_unique
from genaug.errors import UserError

SETS = ("test", "train", "pool")


@dataclass
class Selection:
    sets: dict[str, list[FrameRef]]  # test / train / pool, each sorted by id
    modalities: tuple[str, ...]
    available: dict[str, int]  # candidate counts the sets were drawn from
    skipped_missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "counts": {name: len(refs) for name, refs in self.sets.items()},
            "available": self.available,
            "modalities": list(self.modalities),
            "skipped_missing_partner": len(self.skipped_missing),
            "skipped_examples": self.skipped_missing[:5],
            "leakage_check": "passed: no test frame is in train or pool",
            "notes": self.notes,
        }


def select(cfg: Config, source) -> Selection:
    data, study = cfg.data, cfg.study
    scan = source.scan()
    check_unique(scan.frames, f"data source '{data.source}'")
    absent = [m for m in study.modalities if m not in scan.modalities]
    if absent:
        raise UserError(f"study.modalities lists {absent[0]}, but the {data.source} source has only "
                        f"{', '.join(scan.modalities)} images; remove it or point the source at {absent[0]} images")
    if "real+gen" in study.conditions and "thermal" in study.modalities and "rgb" not in scan.modalities:
        raise UserError(f"study.generators.thermal = {study.generators.thermal} translate RGB pool frames, "
                        "but the source has no RGB images; add data.folder.rgb or drop real+gen")
    needed = {"test": data.n_test, "train": data.n_train, "pool": data.n_pool}
    if scan.test_frames is None:
        available = {"frames": len(scan.frames)}
        if sum(needed.values()) > len(scan.frames):
            raise UserError(
                f"data.n_test + data.n_train + data.n_pool = {sum(needed.values())}, but the {data.source} "
                f"source holds {len(scan.frames)} frames after selection; lower them or select more frames"
            )
        order = [scan.frames[i] for i in np.random.default_rng(cfg.seed).permutation(len(scan.frames))]
        drawn = _take(order, needed, SETS)
    else:
        check_unique(scan.test_frames, f"data source '{data.source}' test set")
        shared = sorted({f.id for f in scan.frames} & {f.id for f in scan.test_frames})
        if shared:
            raise UserError(f"leakage: {len(shared)} frames are both test and training candidates, e.g. "
                            f"{shared[0]}; choose a test split disjoint from the training selection")
        available = {"test frames": len(scan.test_frames), "training frames": len(scan.frames)}
        if data.n_test > len(scan.test_frames) or data.n_train + data.n_pool > len(scan.frames):
            raise UserError(
                f"data.n_test = {data.n_test} of {len(scan.test_frames)} test frames, data.n_train + "
                f"data.n_pool = {data.n_train + data.n_pool} of {len(scan.frames)} training frames: "
                "lower the counts or select more frames"
            )
        test_order = np.random.default_rng([cfg.seed, 1]).permutation(len(scan.test_frames))
        drawn = _take([scan.test_frames[i] for i in test_order], needed, ("test",))
        order = [scan.frames[i] for i in np.random.default_rng(cfg.seed).permutation(len(scan.frames))]
        drawn |= _take(order, needed, ("train", "pool"))
    sets = {name: sorted(drawn[name], key=lambda f: f.id) for name in SETS}
    check_disjoint({name: [f.id for f in refs] for name, refs in sets.items()})
    return Selection(sets, scan.modalities, available, scan.skipped_missing, scan.notes)


def _take(order: list[FrameRef], needed: dict[str, int], names: tuple[str, ...]) -> dict[str, list[FrameRef]]:
    out, start = {}, 0
    for name in names:
        out[name] = order[start : start + needed[name]]
        start += needed[name]
    return out


def check_disjoint(sets: dict[str, list[str]]) -> None:
    """Leakage guard: no frame id in two sets. A failure here is a bug, never the user's doing."""
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = set(sets[a]) & set(sets[b])
            if shared:
                raise AssertionError(f"split sets {a} and {b} share {len(shared)} frames, e.g. {sorted(shared)[0]}")
