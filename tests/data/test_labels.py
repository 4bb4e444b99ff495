"""Probe labels from every source: scenes content, KAIST bbGt annotation files, a folder's CSV; stored by
the split stage, read back by load_split, cached with the decoded frames."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from genaug.cli import app
from genaug.config import DataConfig, ProbeConfig, load_config
from genaug.data import kaist as K
from genaug.data import scenes
from genaug.data.cache import load_cached
from genaug.data.folder import FolderSource
from genaug.data.labels import LabelReader, labels_slice, resolve_tasks
from genaug.data.sources import ScenesSource
from genaug.errors import UserError

from .test_kaist import build_tree

runner = CliRunner()


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ------------------------------------------------------------------------------------------ tasks


def test_default_tasks_and_unknown_names():
    scenes_data, kaist_data, folder_data = DataConfig(), DataConfig(source="kaist"), DataConfig(source="folder")
    assert resolve_tasks(scenes_data, ProbeConfig()) == ["person"]
    assert resolve_tasks(kaist_data, ProbeConfig()) == ["person"]
    assert resolve_tasks(folder_data, ProbeConfig()) == []  # a folder without a CSV: no task, no error
    assert resolve_tasks(folder_data, ProbeConfig(labels="x.csv")) == ["label"]
    assert resolve_tasks(scenes_data, ProbeConfig(tasks=["night", "default", "person", "cars"])) == ["night", "person",
                                                                                                     "cars"]
    assert resolve_tasks(kaist_data, ProbeConfig(tasks=[])) == []
    with pytest.raises(UserError) as e:
        resolve_tasks(kaist_data, ProbeConfig(tasks=["cars"]))
    assert "probe.tasks" in one_line(e) and "'cars'" in str(e.value) and "person" in str(e.value)
    with pytest.raises(UserError) as e:
        resolve_tasks(folder_data, ProbeConfig(tasks=["label"]))
    assert "probe.labels is empty" in one_line(e)


# ------------------------------------------------------------------------------------------ scenes


def scenes_data(**kw) -> DataConfig:
    return DataConfig(scenes={"n_frames": 80, "width": 64, "height": 48}, image_size=kw.pop("image_size", 16), **kw)


def test_scene_labels_are_the_rendered_content_and_deterministic():
    data = scenes_data()
    source = ScenesSource(data, seed=3)
    refs = source.scan().frames
    reader = LabelReader(source, data, ProbeConfig(tasks=["person", "cars", "night"]))
    values, names = reader.read(refs)
    assert names == {"person": ["no person", "person"], "cars": ["0", "1", "2", "3"], "night": ["day", "night"]}
    assert values == reader.read(refs)[0]  # deterministic
    other = scenes_data(image_size=32, resize="pad")  # the fitted size and policy change no label
    assert LabelReader(ScenesSource(other, 3), other, reader.probe).read(refs)[0] == values
    assert LabelReader(ScenesSource(data, 4), data, reader.probe).read(refs)[0] != values  # another seed, other scenes
    seen_person = []
    for i, ref in enumerate(refs):
        scene = scenes.sample_scene(3, i, 64, 48, data.scenes.night_fraction)
        pixels = scenes.render_labels(scene)
        assert values["night"][i] == scene.night and values["cars"][i] == len(scene.cars)
        assert values["person"][i] == (len(scene.pedestrians) > 0)
        if not values["person"][i]:
            assert not (pixels == scenes.PEDESTRIAN).any(), ref.id  # "no person": not one pedestrian pixel
        else:
            seen_person.append((pixels == scenes.PEDESTRIAN).any())
        if not values["cars"][i]:
            assert not (pixels == scenes.CAR).any(), ref.id
    assert np.mean(seen_person) > 0.95  # a pedestrian may hide behind a car, rarely
    assert 0 < sum(values["person"]) < len(refs) and 0 < sum(values["night"]) < len(refs)
    # the rendered frames' own tags agree
    _, _, tags = scenes.render_frames(3, range(5), 64, 48, data.scenes.night_fraction)
    assert [int(t["n_people"] > 0) for t in tags] == values["person"][:5]


# ------------------------------------------------------------------------------------------ KAIST

HEADER = "% bbGt version=3"
BOXES = {  # frame -> box lines (CRLF-joined on disk); the person task at min height 50
    "set00/V000/I00000": ["person 100 120 30 60 0 0 0 0 0 0 0"],  # person
    "set00/V000/I00001": ["person? 10 20 30 80 0 0 0 0 0 0 0", "people 50 60 40 90 1 0 0 0 0 0 0",
                          "cyclist 5 5 30 70 0 0 0 0 0 0 0"],  # none of these is a person
    "set00/V000/I00002": ["person 5 5 12 49 0 0 0 0 0 0 0", "person 5 5 10 20 2 0 0 0 0 0 0"],  # under the cut
    "set00/V000/I00003": [],  # only the header
    "set00/V001/I00000": ["person 1 1 20 50 0 0 0 0 0 0 0"],  # exactly the cut
    "set00/V001/I00001": ["", "  person   300 200 40 120 1 300 200 40 60 0 0  ", ""],  # spaces, blank lines
    "set00/V001/I00002": ["person? 1 1 20 200 0 0 0 0 0 0 0", "person 9 9 20 55.5 0 0 0 0 0 0"],  # older version
}
EXPECTED = {"set00/V000/I00000": 1, "set00/V000/I00001": 0, "set00/V000/I00002": 0, "set00/V000/I00003": 0,
            "set00/V001/I00000": 1, "set00/V001/I00001": 1, "set00/V001/I00002": 1}


def write_annotations(root: Path) -> Path:
    """annotations/setXX/VYYY/I#####.txt for every frame of the tree: BOXES where given, else only the header."""
    for ref in K.scan_tree(root)[0]:
        path = K.annotation_path(root, ref.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes("\r\n".join([HEADER, *BOXES.get(ref.id, [])]).encode() + b"\r\n")
    return root


@pytest.fixture(scope="module")
def annotated(tmp_path_factory) -> Path:
    return write_annotations(build_tree(tmp_path_factory.mktemp("kaist")))


@pytest.fixture
def own_annotated(tmp_path) -> Path:
    return write_annotations(build_tree(tmp_path / "kaist"))


def kaist_data(root: Path, **kaist) -> DataConfig:
    return DataConfig(source="kaist", kaist={"root": str(root), **kaist}, image_size=16)


def kaist_labels(root: Path, probe: ProbeConfig = ProbeConfig(), **kaist):
    data = kaist_data(root, **kaist)
    source = K.KaistSource(data, 0)
    refs = source.scan().frames
    values, names = LabelReader(source, data, probe).read(refs)
    return {ref.id: v for ref, v in zip(refs, values["person"])}, names


def test_bbgt_parsing_crlf_header_blank_lines_and_labels():
    text = "% bbGt version=3\r\nperson 1 2 3 4 0 0 0 0 0 0 0\r\n\r\nperson? 1 2 3 80 0 0 0 0 0 0 0\r\n"
    boxes = K.parse_bbgt(text, "f.txt")
    assert [(b.label, b.h) for b in boxes] == [("person", 4.0), ("person?", 80.0)]
    assert K.parse_bbgt("% bbGt version=3\r\n") == []
    assert not K.shows_person(boxes, 50) and K.shows_person(boxes, 4)
    assert not K.shows_person([K.Box("people", 0, 0, 9, 99), K.Box("cyclist", 0, 0, 9, 99)], 50)


def test_kaist_person_labels_follow_the_reasonable_rule(annotated):
    labels, names = kaist_labels(annotated, videos=["set00/V000", "set00/V001"])
    assert names == {"person": ["no person", "person"]}
    assert labels == EXPECTED
    lower, _ = kaist_labels(annotated, ProbeConfig(kaist_min_height=40), videos=["set00/V000"])
    assert lower["set00/V000/I00002"] == 1  # the 49-pixel person counts under a lower cut
    assert lower["set00/V000/I00001"] == 0  # person?, people and cyclist never count


def test_a_missing_annotation_file_is_one_line_naming_it(own_annotated):
    missing = K.annotation_path(own_annotated, "set03/V000/I00001")
    missing.unlink()
    labels, _ = kaist_labels(own_annotated, sets=["set00"])  # a frame not selected needs no annotation
    assert labels == {**EXPECTED, "set00/V001/I00002": 1}
    with pytest.raises(UserError) as e:
        kaist_labels(own_annotated)
    assert str(missing) in one_line(e) and "probe.tasks = []" in str(e.value)
    data = kaist_data(own_annotated)
    source = K.KaistSource(data, 0)
    assert LabelReader(source, data, ProbeConfig(tasks=[])).read(source.scan().frames) == ({}, {})


def test_a_missing_annotations_folder_is_one_line_and_no_probe_needs_none(own_annotated):
    import shutil

    shutil.rmtree(own_annotated / "annotations")
    with pytest.raises(UserError) as e:
        kaist_labels(own_annotated)
    assert str(own_annotated / "annotations") in one_line(e) and "probe.tasks = []" in str(e.value)
    data = kaist_data(own_annotated)
    source = K.KaistSource(data, 0)
    reader = LabelReader(source, data, ProbeConfig(tasks=[]))
    refs = source.scan().frames[:2]
    reader.check(refs)
    frames, _ = load_cached(source, refs, data, 0, ("rgb", "thermal"), labels=reader)
    assert frames.labels == {} and frames.label_names == {}


@pytest.mark.parametrize("line", ["person 1 2 3", "person 1 2 wide 50 0 0 0 0 0 0 0", "person 1 2 3 -4",
                                  "person 1 2 3 4 0 0 0 0 0 0 0 0 0"])
def test_a_malformed_line_names_the_file_and_line(own_annotated, line):
    path = K.annotation_path(own_annotated, "set00/V000/I00003")
    path.write_bytes(f"{HEADER}\r\nperson 1 1 10 60 0 0 0 0 0 0 0\r\n{line}\r\n".encode())
    with pytest.raises(UserError) as e:
        kaist_labels(own_annotated)
    assert f"{path} line 3" in one_line(e)


def test_kaist_labels_are_cached_with_the_frames_and_keyed_by_the_cut(own_annotated, tmp_path, monkeypatch):
    monkeypatch.setenv("GENAUG_CACHE", str(tmp_path / "cache"))
    data = kaist_data(own_annotated, videos=["set00/V000"])
    source = K.KaistSource(data, 0)
    refs = source.scan().frames
    read = []
    original = K.KaistSource.labels
    monkeypatch.setattr(K.KaistSource, "labels", lambda self, *a: read.append(1) or original(self, *a))
    first, hit = load_cached(source, refs, data, 0, ("rgb", "thermal"), labels=LabelReader(source, data, ProbeConfig()))
    assert not hit and read == [1] and first.labels == {"person": [1, 0, 0, 0]}
    again, hit = load_cached(source, refs, data, 0, ("rgb", "thermal"), labels=LabelReader(source, data, ProbeConfig()))
    assert hit and read == [1] and again.labels == first.labels and again.label_names == first.label_names
    lower = LabelReader(source, data, ProbeConfig(kaist_min_height=40))
    cut, hit = load_cached(source, refs, data, 0, ("rgb", "thermal"), labels=lower)
    assert hit and read == [1, 1] and cut.labels == {"person": [1, 0, 1, 0]}  # pixels cached, labels re-read
    # an edited annotation file is read again
    K.annotation_path(own_annotated, "set00/V000/I00003").write_bytes(
        f"{HEADER}\r\nperson 1 1 10 100 0 0 0 0 0 0 0\r\n".encode())
    edited, _ = load_cached(source, refs, data, 0, ("rgb", "thermal"), labels=LabelReader(source, data, ProbeConfig()))
    assert edited.labels == {"person": [1, 0, 0, 1]}


def test_inspect_reports_the_label_balance(annotated):
    report = K.inspect(annotated, headers="sample", sample=4)["labels"]
    assert report["person"] == {"no person": 8, "person": 4} and report["min_height"] == 50
    assert report["missing"]["count"] == 0 and report["box_labels"]["person"] == 6
    result = runner.invoke(app, ["data", "inspect", "kaist", str(annotated), "--min-height", "40"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["labels"]["person"] == {"no person": 7, "person": 5}


def test_inspect_without_annotations_says_so(tmp_path):
    report = K.inspect(build_tree(tmp_path / "kaist"), sample=2)["labels"]
    assert report["annotations"] is None and "probe.tasks = []" in report["note"]


# ------------------------------------------------------------------------------------------ folder


@pytest.fixture
def image_folder(tmp_path) -> Path:
    folder = tmp_path / "rgb"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(folder / f"img{i}.png")
    return folder


def folder_labels(folder: Path, csv_text: str | None, tasks=("default",), name="labels.csv"):
    probe = ProbeConfig(tasks=list(tasks), labels="")
    if csv_text is not None:
        (folder.parent / name).write_text(csv_text)
        probe = ProbeConfig(tasks=list(tasks), labels=str(folder.parent / name))
    data = DataConfig(source="folder", folder={"rgb": str(folder)}, image_size=16)
    source = FolderSource(data, 0)
    reader = LabelReader(source, data, probe)
    return reader, reader.read(source.scan().frames)


CSV = "image,label\r\nimg0,cat\r\nimg1,dog\r\nimg2,bird\r\nimg3,cat\r\nimg4,dog\r\nimg5,cat\r\nghost,fish\r\n"


def test_folder_csv_labels_any_number_of_classes(image_folder):
    reader, (values, names) = folder_labels(image_folder, CSV)
    assert names == {"label": ["bird", "cat", "dog"]}  # sorted; 'fish' names no image of the folder
    assert values == {"label": [1, 2, 0, 1, 2, 1]}
    assert any("1 row(s) name no image" in note and "'ghost'" in note for note in reader.notes())
    # extra columns, another order, a BOM
    _, (again, _) = folder_labels(image_folder, "\ufeffnote,label,image\n" + "".join(
        f"x,{label},img{i}\n" for i, label in enumerate(["cat", "dog", "bird", "cat", "dog", "cat"])))
    assert again == values


def test_folder_without_a_csv_has_no_labels(image_folder):
    reader, read = folder_labels(image_folder, None)
    assert reader.tasks == [] and read == ({}, {})


@pytest.mark.parametrize("text, needle", [
    ("image,label\nimg0,cat\nimg1,dog\n", "no row for image 'img2'"),
    ("image,label\n" + "".join(f"img{i},cat\n" for i in range(6)), "at least two classes"),
    ("file,class\nimg0,cat\n", "image,label"),
    ("image,label\nimg0,cat\nimg0,dog\n", "line 3"),
    ("image,label\nimg0,\n", "line 2"),
])
def test_folder_csv_errors_are_one_line(image_folder, text, needle):
    with pytest.raises(UserError) as e:
        folder_labels(image_folder, text)
    assert needle in one_line(e) and "labels.csv" in str(e.value)


def test_a_missing_csv_is_one_line(image_folder):
    data = DataConfig(source="folder", folder={"rgb": str(image_folder)})
    with pytest.raises(UserError) as e:
        labels_slice(data, ProbeConfig(labels=str(image_folder.parent / "nope.csv")))
    assert "probe.labels" in one_line(e) and "nope.csv" in str(e.value)


def test_folder_inspect_reports_the_csv_balance(image_folder):
    (image_folder.parent / "labels.csv").write_text(CSV)
    result = runner.invoke(app, ["data", "inspect", "folder", "--rgb", str(image_folder),
                                 "--labels", str(image_folder.parent / "labels.csv")])
    assert result.exit_code == 0, result.output
    labels = json.loads(result.output)["labels"]
    assert labels["classes"] == {"bird": 1, "cat": 3, "dog": 2} and labels["unknown_rows"]["count"] == 1


# ------------------------------------------------------------------------------------------ the split stage

TINY = ["data.image_size=16", "data.n_pool=10", "data.n_train=8", "data.n_test=6", "data.scenes.n_frames=30",
        "data.scenes.width=48", "data.scenes.height=40", "study.n_synthetic=2"]


def split(tmp_path: Path, *overrides: str):
    from genaug.study.outputs import load_split
    from genaug.study.stages import run_split

    cfg = load_config(None, [*TINY, *overrides])
    out = tmp_path / "split"
    out.mkdir(parents=True)
    manifest: dict = {}
    run_split(SimpleNamespace(cfg=cfg, out=out, manifest=manifest, advance=lambda n: None))
    return cfg, load_split(out), json.loads((out / "split.json").read_text()), manifest


def test_labels_survive_the_split_stage_and_come_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENAUG_CACHE", str(tmp_path / "cache"))
    cfg, sets, stored, manifest = split(tmp_path / "a", 'probe.tasks=["default", "cars"]')
    assert stored["label_names"] == {"person": ["no person", "person"], "cars": ["0", "1", "2", "3"]}
    assert set(stored["labels"]) == {"test", "train", "pool"}
    for name, frames in sets.items():
        assert frames.label_names == stored["label_names"]
        assert frames.labels == stored["labels"][name]
        truth = [scenes.frame_content(cfg.seed, int(i.rsplit("_", 1)[1]), 48, 40, cfg.data.scenes.night_fraction)
                 for i in frames.ids]
        assert frames.labels["person"] == [int(t["n_people"] > 0) for t in truth]
        assert frames.labels["cars"] == [t["n_cars"] for t in truth]
    facts = manifest["labels"]
    assert facts["tasks"] == ["person", "cars"]
    assert facts["balance"]["person"]["train"] == {
        "no person": sets["train"].labels["person"].count(0), "person": sets["train"].labels["person"].count(1)}
    assert sum(facts["balance"]["cars"]["pool"].values()) == 10

    # the same split again: pixels and labels from the cache, nothing read from the source
    monkeypatch.setattr(ScenesSource, "labels", lambda *a: pytest.fail("labels read again"))
    monkeypatch.setattr(ScenesSource, "load", lambda *a: pytest.fail("frames rendered again"))
    _, again, _, manifest = split(tmp_path / "b", 'probe.tasks=["default", "cars"]')
    assert manifest["decoded_from_cache"] == ["test", "train", "pool"]
    assert {n: f.labels for n, f in again.items()} == {n: f.labels for n, f in sets.items()}


def test_no_tasks_stores_no_labels_and_old_splits_load(tmp_path):
    _, sets, stored, manifest = split(tmp_path, "probe.tasks=[]")
    assert stored["labels"] == {"test": {}, "train": {}, "pool": {}} and stored["label_names"] == {}
    assert all(f.labels == {} and f.label_names == {} for f in sets.values())
    assert manifest["labels"]["tasks"] == [] and manifest["labels"]["balance"] == {}
    from genaug.study.outputs import load_split

    folder = tmp_path / "split"  # a split written before labels: no keys
    meta = json.loads((folder / "split.json").read_text())
    (folder / "split.json").write_text(json.dumps({"ids": meta["ids"], "night": meta["night"]}))
    assert all(f.labels == {} and f.label_names == {} for f in load_split(folder).values())


def test_a_kaist_split_checks_every_annotation_before_decoding(own_annotated, tmp_path, monkeypatch):
    monkeypatch.setattr(K.KaistSource, "load", lambda *a: pytest.fail("decoded before the annotation check"))
    missing = K.annotation_path(own_annotated, "set03/V000/I00002")
    missing.unlink()
    with pytest.raises(UserError) as e:
        split(tmp_path, "data.source=kaist", f"data.kaist.root={json.dumps(str(own_annotated))}",
              "data.n_pool=2", "data.n_train=3", "data.n_test=5")
    assert str(missing) in one_line(e)


def test_probe_settings_key_the_split_but_not_the_maes(image_folder):
    from genaug.study.plan import make_plan

    def keys(*overrides):
        return {step.folder.split("/")[0] + "/" + step.name: step.key
                for step in make_plan(load_config(None, [*TINY, *overrides]))}

    base = keys()
    for other in (keys("probe.tasks=[]"), keys('probe.tasks=["night"]')):
        assert other["split/split"] != base["split/split"]
        kept = ("mae/", "eval/", "ddpm/", "cyclegan/")  # a probe setting retrains no generator and no MAE
        assert {k: v for k, v in other.items() if k.startswith(kept)} == \
            {k: v for k, v in base.items() if k.startswith(kept)}
    assert keys("probe.kaist_min_height=30")["split/split"] == base["split/split"]  # not a scenes setting
    assert keys("probe.knn_k=5")["split/split"] == base["split/split"]
    # a folder CSV enters by its content
    csv = image_folder.parent / "labels.csv"
    folder = ["data.source=folder", f"data.folder.rgb={json.dumps(str(image_folder))}", 'study.modalities=["rgb"]',
              "data.n_pool=2", "data.n_train=2", "data.n_test=2", f"probe.labels={json.dumps(str(csv))}"]
    csv.write_text(CSV)
    first = keys(*folder)["split/split"]
    csv.write_text(CSV.replace("img5,cat", "img5,dog"))
    assert keys(*folder)["split/split"] != first
