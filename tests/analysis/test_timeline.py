"""Where the time went: spans, lanes and per-stage wall time from stage manifests, against hand-made cases."""

import pytest

from genaug.analysis import timeline


def manifest(stage, name, started, finished, threads=2):
    return {"stage": stage, "name": name, "started": started, "finished": finished, "threads": threads}


def test_a_serial_study_is_one_lane_starting_at_zero():
    spans, cuts = timeline.spans([manifest("mae", "b", 1010.0, 1030.0), manifest("split", "a", 1000.0, 1010.0)])
    assert [(s.stage, s.start, s.end, s.lane) for s in spans] == [("split", 0.0, 10.0, 0), ("mae", 10.0, 30.0, 0)]
    assert cuts == []


def test_overlapping_steps_take_the_first_free_lane():
    # a: 0-10, b: 2-5 (a busy: lane 1), c: 6-8 (lane 1 free again), d: 9-12 (a and c? a busy, lane 1 free)
    spans, _ = timeline.spans([manifest("ddpm", "a", 0, 10), manifest("mae", "b", 2, 5),
                               manifest("mae", "c", 6, 8), manifest("eval", "d", 9, 12), manifest("mae", "e", 9.5, 11)])
    assert {s.name: s.lane for s in spans} == {"a": 0, "b": 1, "c": 1, "d": 1, "e": 2}


def test_a_pause_between_runs_is_cut_out_and_marked():
    # 0-10, then nothing for an hour, then 3610-3620: 20 s of study time, one cut at 10 s
    spans, cuts = timeline.spans([manifest("split", "a", 0, 10), manifest("mae", "b", 3610, 3620)])
    assert [(s.start, s.end) for s in spans] == [(0, 10), (10, 20)]
    assert cuts == [10]
    # a short idle (under GAP_S) is the study's own time and stays
    spans, cuts = timeline.spans([manifest("split", "a", 0, 10), manifest("mae", "b", 15, 20)])
    assert [(s.start, s.end) for s in spans] == [(0, 10), (15, 20)] and cuts == []


def test_manifests_from_before_timings_were_recorded_are_left_out():
    spans, _ = timeline.spans([{"stage": "split", "name": "old", "seconds": 3.0}, manifest("mae", "new", 5, 7)])
    assert [s.name for s in spans] == ["new"] and spans[0].start == 0


def test_covered_counts_overlaps_once():
    assert timeline.covered([(0, 10), (2, 5), (8, 12), (20, 21)]) == 13
    assert timeline.covered([]) == 0


def test_stage_times_separate_wall_time_from_summed_step_time():
    # two MAEs side by side for 10 s, then an evaluation of 5 s: the MAE stage took 10 s of wall time,
    # 20 s of step time, two thirds of the study's 15 s
    spans, _ = timeline.spans([manifest("mae", "s0", 0, 10), manifest("mae", "s1", 0, 10), manifest("eval", "e", 10, 15)])
    rows = {r["stage"]: r for r in timeline.stage_times(spans)}
    assert rows["mae"]["steps"] == 2 and rows["mae"]["wall_s"] == 10 and rows["mae"]["step_s"] == 20
    assert rows["mae"]["share"] == pytest.approx(10 / 15) and rows["eval"]["share"] == pytest.approx(5 / 15)
    header, body = timeline.table(spans)
    assert body[-1][:3] == ["all", "3", "15.0 s"] and body[-1][4] == "25.0 s"


def test_figure_is_written_through_the_given_saver(tmp_path):
    spans, cuts = timeline.spans([manifest("split", "a", 0, 10), manifest("mae", "b", 3610, 3620),
                                  manifest("mae", "c", 3611, 3615)])
    saved = []

    def save(fig, path):
        saved.append(len(fig.axes[0].collections))  # one bar collection per (stage, lane)
        fig.savefig(path)

    path = timeline.figure(spans, cuts, tmp_path / "timeline.png", save)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and saved == [3]
