import json

import pytest

from genaug.data.selection import check_disjoint
from genaug.study.store import MANIFEST, Store
from genaug.errors import UserError


def test_stage_folder_appears_only_complete(tmp_path):
    store = Store(tmp_path / "run")
    with store.building("mae", "rgb-real-seed0", "abc", {"split": "split-1"}) as (tmp, manifest):
        (tmp / "weights").write_text("w")
        manifest["extra"] = 1
        assert not store.is_complete(store.path("mae", "rgb-real-seed0", "abc"))
    final = store.path("mae", "rgb-real-seed0", "abc")
    assert (final / "weights").read_text() == "w"
    written = json.loads((final / MANIFEST).read_text())
    assert written["extra"] == 1 and written["inputs"] == {"split": "split-1"} and "seconds" in written


def test_failed_stage_leaves_nothing_and_keeps_earlier_outputs(tmp_path):
    store = Store(tmp_path / "run")
    with store.building("split", "split", "k1", {}) as (tmp, _):
        (tmp / "a").write_text("kept")
    with pytest.raises(RuntimeError):
        with store.building("mae", "x", "k2", {}) as (tmp, _):
            (tmp / "partial").write_text("p")
            raise RuntimeError("killed")
    assert not store.path("mae", "x", "k2").exists()
    assert not list((tmp_path / "run" / "mae").iterdir())
    assert (store.path("split", "split", "k1") / "a").read_text() == "kept"


def test_incomplete_folder_is_rebuilt(tmp_path):
    store = Store(tmp_path / "run")
    stale = store.path("ddpm", "ddpm", "k")
    stale.mkdir(parents=True)
    (stale / "half-written").write_text("x")
    assert not store.is_complete(stale)
    with store.building("ddpm", "ddpm", "k", {}) as (tmp, _):
        (tmp / "new").write_text("y")
    assert sorted(p.name for p in stale.iterdir()) == [MANIFEST, "new"]


def test_run_dir_that_is_a_file(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        Store(path)


def test_check_disjoint_names_the_overlap():
    check_disjoint({"train": ["a", "b"], "test": ["c"]})
    with pytest.raises(AssertionError, match="train and test share 1 frames, e.g. b"):
        check_disjoint({"train": ["a", "b"], "test": ["b", "c"]})


def test_taking_the_lock_clears_what_killed_runs_left_half_built(tmp_path):
    """A killed attempt leaves its temporary stage folder (and a killed multi-process run its scratch);
    the next run to take the lock deletes them, so that under a live lock a temporary folder means the
    step is building now (what `genaug status` reports as running). Outputs and checkpoints stay."""
    store = Store(tmp_path / "run")
    with store.building("split", "split", "k1", {}) as (tmp, _):
        (tmp / "a").write_text("kept")
    half = store.temporary("mae", "x", "k2")
    half.mkdir(parents=True)
    checkpoint = store.checkpoints("mae", "x", "k2") / "checkpoint-5"
    checkpoint.mkdir(parents=True)
    scratch = tmp_path / "run" / ".scratch-rank1" / "mae"
    scratch.mkdir(parents=True)
    assert not store.building_now()
    with store.locked():
        assert store.building_now()
        assert not half.exists() and not scratch.parent.exists()
        assert checkpoint.is_dir() and (store.path("split", "split", "k1") / "a").read_text() == "kept"
    assert not store.building_now()
