"""summary.json from stored stage outputs: Holm within each family, verdicts, no-verdict rules, run
health, sensitivity, day/night, the floor.

No study is trained here: `fake_run` writes the files the report reads (plan.json, each stage folder's
manifest.json, the MAEs' log.jsonl, the evaluations' per_image.csv), laid out as `genaug run` lays them
out, with per-image errors chosen so that every claim has something to bite on. The report's own
`collect` and `summarize` read them back, so the path from the files to summary.json is the real one.
"""

import csv
import json
import math

import numpy as np
import pytest

from genaug.analysis import report
from genaug.analysis.stats import compare

N_IMAGES = 24
NIGHT = [i % 3 == 0 for i in range(N_IMAGES)]  # 8 night images, not contiguous: wrong columns show
SEEDS = (0, 1, 2)


def _written(values: np.ndarray) -> np.ndarray:
    """The values as per_image.csv stores them (8 significant digits), so expectations use the same numbers."""
    return np.array([float(f"{v:.8g}") for v in np.ravel(values)]).reshape(np.shape(values))


def design() -> dict:
    """modality -> condition -> (seeds, images) masked MSE, plus each modality's mean-predictor errors.

    Primary family (each real+gen:<generator> against real): rgb real+gen:ddpm a moderate improvement
    that Holm over its family of 2 keeps but Holm over all 6 comparisons would not decide the same way;
    thermal real+gen:cyclegan a clear improvement; thermal real+gen:ddpm>cyclegan one seed (no p, not
    in the family, no verdict).
    Secondary family (controls): rgb real+noise a clear harm; thermal real+classic a clear improvement,
    much larger on the night images than by day; real-x2 a clear harm whose mean is above the
    mean-predictor floor (no verdict); real+real no detectable difference.
    """
    rng = np.random.default_rng(11)
    night = np.array(NIGHT)

    def seeds(level, factors, image_noise=0.03):
        factors = np.asarray(factors, dtype=np.float64)[:, None]
        return level[None] * factors * (1 + rng.normal(0, image_noise, (len(factors), N_IMAGES)))

    rgb_images = rng.uniform(0.01, 0.03, N_IMAGES)
    thermal_images = rng.uniform(0.004, 0.012, N_IMAGES)
    classic = np.where(night, 0.5, 0.8)  # night images gain far more than day ones
    out = {
        "rgb": {
            "mean-predictor": np.full((1, N_IMAGES), 0.05),
            "real": seeds(rgb_images, [1.0, 1.03, 0.97]),
            "real+gen:ddpm": seeds(rgb_images, [0.92, 0.93, 0.94]),
            "real+noise": seeds(rgb_images, [1.6, 1.7, 1.65]),
        },
        "thermal": {
            "mean-predictor": np.full((1, N_IMAGES), 0.02),
            "real": seeds(thermal_images, [1.0, 1.02, 0.98]),
            "real+gen:cyclegan": seeds(thermal_images, [0.7, 0.71, 0.69]),
            "real+gen:ddpm>cyclegan": seeds(thermal_images, [1.01]),
            "real+classic": seeds(thermal_images * classic, [1.0, 1.01, 0.99]),
            "real-x2": seeds(thermal_images, [3.0, 3.1, 3.05]),
            "real+real": seeds(thermal_images, [0.97, 1.0, 0.99]),
        },
    }
    return {m: {c: _written(v) for c, v in block.items()} for m, block in out.items()}


def healthy_log(n=12):
    return [{"step": 10 * (i + 1), "loss": 0.3 + 0.7 * math.exp(-i / 2.5)} for i in range(n)]


def fake_run(root, errors: dict, night: list, logs: dict | None = None, config: str = "") -> None:
    """A run directory with the plan and stage outputs `report.collect`/`summarize` read (no generators).
    `logs`: MAE name -> its log rows (default a healthy falling curve); `config`: config.toml's text."""
    steps = [{"stage": "split", "name": "split", "key": "k0", "folder": "split/split-k0", "params": {}}]
    for modality, block in errors.items():
        for condition, values in block.items():
            for seed, row in zip(SEEDS, values):
                name = f"{modality}-{condition.replace(':', '-')}"
                name += "" if condition == "mean-predictor" else f"-seed{seed}"
                params = {"modality": modality, "condition": condition}
                if condition != "mean-predictor":
                    params["seed"] = seed
                    mae = {"stage": "mae", "name": name, "key": "km", "folder": f"mae/{name}-km",
                           "params": {**params, "steps": 40, "n_extra": 0}}
                    steps.append(mae)
                    folder = root / mae["folder"]
                    folder.mkdir(parents=True)
                    rows = (logs or {}).get(name, healthy_log())
                    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
                    (folder / "manifest.json").write_text(json.dumps(
                        {"modality": modality, "condition": condition, "seed": seed, "steps": 40,
                         "n_images": 48 + (48 if condition != "real" else 0), "n_real": 48, "budget": "steps"}))
                step = {"stage": "eval", "name": name, "key": "ke", "folder": f"eval/{name}-ke", "params": params}
                steps.append(step)
                folder = root / step["folder"]
                folder.mkdir(parents=True)
                with open(folder / "per_image.csv", "w", newline="") as f:
                    writer = csv.writer(f)
                    writer.writerow(["image_id", "night", "masked_mse", "psnr"])
                    for i, (n, v) in enumerate(zip(night, row)):
                        writer.writerow([f"frame{i:03d}", "" if n is None else int(n), f"{v:.8g}",
                                         f"{-10 * math.log10(max(v, 1e-10)):.6g}"])
                manifest = {"modality": modality, "n_images": N_IMAGES, "masked_mse": float(np.mean(row))}
                if condition == "mean-predictor":
                    manifest["floor"] = "training-set mean"
                (folder / "manifest.json").write_text(json.dumps(manifest))
    split = root / "split/split-k0"
    split.mkdir(parents=True)
    (split / "manifest.json").write_text(json.dumps({
        "counts": {"test": N_IMAGES, "train": 48, "pool": 48}, "available": {"frames": 200},
        "modalities": list(errors), "skipped_missing_partner": 0, "leakage_check": "passed", "notes": [],
        "resize": "stretch", "image_size": 32}))
    (root / "plan.json").write_text(json.dumps({"steps": steps}))
    (root / "config.toml").write_text("# fake run for tests/analysis/test_report.py\n" + config)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    errors = design()
    root = tmp_path_factory.mktemp("run")
    fake_run(root, errors, NIGHT)
    run = report.RunData(root)
    data, _ = report.collect(run)
    return errors, report.summarize(data, run)


def holm_by_hand(p: dict) -> dict:
    """Holm step-down written out: the i-th smallest p times (m - i + 1), made monotone, capped at 1."""
    order = sorted(p, key=p.get)
    m, out, running = len(order), {}, 0.0
    for i, key in enumerate(order, start=1):
        running = max(running, (m - i + 1) * p[key])
        out[key] = min(1.0, running)
    return out


def comparisons(summary):
    return {(m, c): e for m, block in summary["modalities"].items() for c, e in block["conditions"].items()
            if c != "real"}


def test_p_holm_is_holm_within_the_primary_family_and_within_the_secondary_one(built):
    """The primary questions (real+gen:<generator> vs real, every modality) form one Holm family, the
    controls another; a comparison without a p (one seed) is in neither; `real` gets no p_holm."""
    _, summary = built
    entries = comparisons(summary)
    assert len(entries) == 7
    for block in summary["modalities"].values():
        assert "p_holm" not in block["conditions"]["real"] and "verdict" not in block["conditions"]["real"]
    one_seed = entries.pop(("thermal", "real+gen:ddpm>cyclegan"))
    assert one_seed["p_value"] is None and one_seed["p_holm"] is None
    families = {"primary": {("rgb", "real+gen:ddpm"), ("thermal", "real+gen:cyclegan")},
                "secondary": {("rgb", "real+noise"), ("thermal", "real+classic"), ("thermal", "real-x2"),
                              ("thermal", "real+real")}}
    for name, members in families.items():
        expected = holm_by_hand({key: entries[key]["p_value"] for key in members})
        for key in members:
            e = entries[key]
            assert (e["family"], e["family_size"]) == (name, len(members)), key
            assert e["p_holm"] == pytest.approx(expected[key], rel=1e-12, abs=1e-300), key
    # The family decides: over all six comparisons rgb real+gen:ddpm's adjusted p would pass 0.05.
    everything = holm_by_hand({key: e["p_value"] for key, e in entries.items()})
    assert entries[("rgb", "real+gen:ddpm")]["p_holm"] < 0.05 <= everything[("rgb", "real+gen:ddpm")]
    method = report.method_text(summary)
    assert "rgb real+gen:ddpm, thermal real+gen:cyclegan, thermal real+gen:ddpm>cyclegan" in method
    assert "rgb real+noise, thermal real+classic, thermal real-x2, thermal real+real" in method


def expected_verdict(e: dict, real: dict) -> str:
    """The rules written out: no verdict for too few seeds, a side below the floor or compare's own
    reason; else improvement / harm need the whole interval on one side of 0 and p_holm < 0.05."""
    if (min(e["n_seeds"], real["n_seeds"]) < 3 or not (e["beats_mean_predictor"] and real["beats_mean_predictor"])
            or e["p_value"] is None):
        return "no verdict"
    low, high = e["ci95"]
    if e["p_holm"] < 0.05 and high < 0:
        return "improvement"
    if e["p_holm"] < 0.05 and low > 0:
        return "harm"
    return "no detectable difference"


def test_verdicts_follow_from_the_holm_p_the_interval_and_the_no_verdict_rules(built):
    _, summary = built
    for (modality, condition), e in comparisons(summary).items():
        assert e["verdict"] == expected_verdict(e, summary["modalities"][modality]["conditions"]["real"]), condition
        assert (e["no_verdict_reason"] is None) == (e["verdict"] != "no verdict")
    words = {key: e["verdict"] for key, e in comparisons(summary).items()}
    assert words == {("rgb", "real+gen:ddpm"): "improvement", ("rgb", "real+noise"): "harm",
                     ("thermal", "real+gen:cyclegan"): "improvement",
                     ("thermal", "real+gen:ddpm>cyclegan"): "no verdict",
                     ("thermal", "real+classic"): "improvement", ("thermal", "real-x2"): "no verdict",
                     ("thermal", "real+real"): "no detectable difference"}
    thermal = summary["modalities"]["thermal"]["conditions"]
    assert "fewer than 3 seeds (real+gen:ddpm>cyclegan has 1)" in thermal["real+gen:ddpm>cyclegan"]["no_verdict_reason"]
    assert thermal["real-x2"]["no_verdict_reason"] == "real-x2 did not beat the floor (training-set mean)"
    lines = report.verdicts(summary)
    x2 = next(line for line in lines if line.startswith("thermal, real-x2:"))
    # the figures are still shown beside the reason
    assert x2.startswith("thermal, real-x2: no verdict (real-x2 did not beat the floor") and "+" in x2 and "[" in x2


def test_no_detectable_difference_states_the_sensitivity(tmp_path):
    """summary.json gets each modality's sensitivity, and every "no detectable difference" says what the
    study could have detected."""
    errors = design()
    errors["rgb"]["real+gen:ddpm"] = errors["rgb"]["real"][[1, 2, 0]] * 1.001  # no effect to speak of
    fake_run(tmp_path, errors, NIGHT, config="[study]\ntarget_effect = 0.1\n")
    run = report.RunData(tmp_path)
    summary = report.summarize(report.collect(run)[0], run)
    rgb = summary["modalities"]["rgb"]
    assert rgb["conditions"]["real+gen:ddpm"]["verdict"] == "no detectable difference"
    sensitivity = rgb["sensitivity"]
    assert 0 < sensitivity["mde_rel"] < 1 and sensitivity["target_effect"] == 0.1
    assert sensitivity["m_comparisons"] == 2  # the primary family
    line = next(line for line in report.verdicts(summary) if line.startswith("rgb, real+gen:ddpm:"))
    assert f"this study could have detected ±{sensitivity['mde_rel']:.1%}" in line
    assert any(line.startswith("rgb: with 3 seeds") for line in report.sensitivity_lines(summary))


def diverged_log():
    return [{"step": 10 * (i + 1), "loss": v} for i, v in
            enumerate([0.95, 0.7, 0.5, 0.4, 0.36, 0.38, 0.41, 0.43, 0.44, 0.45, 0.45, 0.45])]


@pytest.mark.parametrize("on_unhealthy", ["flag", "stop"])
def test_a_flagged_run_is_named_and_on_unhealthy_decides_the_verdicts(tmp_path, on_unhealthy):
    errors = design()
    fake_run(tmp_path, errors, NIGHT, logs={"thermal-real-seed2": diverged_log()},
             config=f'[study]\non_unhealthy = "{on_unhealthy}"\n')
    run = report.RunData(tmp_path)
    summary = report.summarize(report.collect(run)[0], run)
    x2 = [f"thermal-real-x2-seed{s}" for s in SEEDS]  # planted above the floor
    assert sorted((f["stage"], f["run"], f["kind"]) for f in summary["health"]) == sorted(
        [("mae", "thermal-real-seed2", "diverged"), ("mae", "thermal-real-seed2", "stalled"),
         *(("eval", run, "near floor") for run in x2)])
    for (modality, condition), e in comparisons(summary).items():
        # every thermal comparison rests on thermal real's seeds; no rgb one does
        expected = (["thermal-real-seed2"] + (x2 if condition == "real-x2" else [])) if modality == "thermal" else []
        assert e["flagged_runs"] == sorted(expected), condition
        if on_unhealthy == "stop":
            assert e["verdict"] == "no verdict" and "on_unhealthy = 'stop'" in e["no_verdict_reason"]
        else:
            assert e["verdict"] == expected_verdict(e, summary["modalities"][modality]["conditions"]["real"])
    assert summary["modalities"]["rgb"]["conditions"]["real+noise"]["verdict"] == (
        "no verdict" if on_unhealthy == "stop" else "harm")


def test_comparisons_are_condition_against_real_on_the_stored_errors(built):
    """Point estimates from the per-image files by hand: mean over seeds and images, condition over real."""
    errors, summary = built
    for modality, block in summary["modalities"].items():
        real = errors[modality]["real"]
        for condition, e in block["conditions"].items():
            mse = errors[modality][condition]
            assert e["test_mse_mean"] == pytest.approx(mse.mean(), rel=1e-12)
            assert e["n_seeds"] == len(mse)
            if condition != "real":
                assert e["rel_change_vs_real"] == pytest.approx(mse.mean() / real.mean() - 1, rel=1e-9)
                assert e["n_images"] == N_IMAGES


def test_by_time_splits_the_comparison_on_the_right_images(built):
    """by_time for every condition but real: rel change on the day and on the night columns by hand,
    n_images 16 and 8; real+classic gains about 20 % by day and 50 % at night, as planted."""
    errors, summary = built
    night = np.array(NIGHT)
    for modality, block in summary["modalities"].items():
        real = errors[modality]["real"]
        assert "by_time" not in block["conditions"]["real"]
        for condition, e in block["conditions"].items():
            if condition == "real":
                continue
            mse = errors[modality][condition]
            for name, columns in (("day", ~night), ("night", night)):
                part = e["by_time"][name]
                assert part["n_images"] == int(columns.sum())
                assert part["rel_change_vs_real"] == pytest.approx(
                    mse[:, columns].mean() / real[:, columns].mean() - 1, rel=1e-9)
                same = compare(mse[:, columns], real[:, columns])  # the same computation on the subset
                assert part["rel_change_vs_real"] == pytest.approx(same["rel_change_vs_real"])
                if same["p_value"] is None:  # one seed
                    assert part["p_value"] is None
                else:
                    assert part["ci95"] == pytest.approx(same["ci95"]) and part["p_value"] == pytest.approx(same["p_value"])
    classic = summary["modalities"]["thermal"]["conditions"]["real+classic"]["by_time"]
    assert classic["day"]["rel_change_vs_real"] == pytest.approx(-0.2, abs=0.03)
    assert classic["night"]["rel_change_vs_real"] == pytest.approx(-0.5, abs=0.03)
    assert (classic["day"]["n_images"], classic["night"]["n_images"]) == (16, 8)


@pytest.mark.parametrize("night", [
    [None] * 6,  # the source does not say
    [True, False, None, True, False, True],  # said for some images only
    [False] * 6,  # all day
    [True] * 6,  # all night
])
def test_by_time_is_absent_unless_both_day_and_night_are_known(night):
    rng = np.random.default_rng(0)
    condition, real = rng.uniform(0.01, 0.02, (3, 6)), rng.uniform(0.01, 0.02, (3, 6))
    assert report.by_time_of_day(condition, real, night) == {}


def test_no_by_time_in_the_summary_when_night_is_unknown(tmp_path):
    errors = {"rgb": {c: v for c, v in design()["rgb"].items() if c in ("mean-predictor", "real", "real+noise")}}
    fake_run(tmp_path, errors, [None] * N_IMAGES)
    run = report.RunData(tmp_path)
    summary = report.summarize(report.collect(run)[0], run)
    noise = summary["modalities"]["rgb"]["conditions"]["real+noise"]
    assert "by_time" not in noise and noise["verdict"] == "harm"


def test_the_mean_predictor_floor(built):
    """beats_mean_predictor: the condition's mean test MSE is below its modality's mean-predictor MSE.
    thermal real-x2 (about 0.024 against a floor of 0.02) does not; the report's verdict list warns about
    it by name, and only in thermal."""
    errors, summary = built
    for modality, block in summary["modalities"].items():
        floor = errors[modality]["mean-predictor"].mean()
        assert block["baseline_mean_predictor_mse"] == pytest.approx(floor)
        for condition, e in block["conditions"].items():
            assert e["beats_mean_predictor"] is bool(errors[modality][condition].mean() < floor), (modality, condition)
    assert [c for c, e in summary["modalities"]["thermal"]["conditions"].items() if not e["beats_mean_predictor"]] \
        == ["real-x2"]
    assert all(e["beats_mean_predictor"] for e in summary["modalities"]["rgb"]["conditions"].values())
    warnings = [line for line in report.verdicts(summary) if line.startswith("WARNING")]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING thermal: real-x2 did not beat the floor")
    rows = {(r[0], r[1]): r[-1] for r in report.results_rows(summary)[1]}
    assert rows[("thermal", "real-x2")] == "NO" and rows[("thermal", "real")] == "yes"


def test_a_degenerate_comparison_gives_no_verdict_and_still_renders(tmp_path):
    """A seed whose every error is 0 (or identical seeds) leaves compare without a variance: no p, no
    interval, "no verdict" with compare's reason, out of the Holm family; the verdict lines, the table
    and the effects chart still render."""
    errors = design()
    errors["thermal"]["real+real"][1] = 0.0
    errors["rgb"]["real+noise"] = np.repeat(errors["rgb"]["real+noise"][:1], 3, axis=0)  # three copies of one run
    fake_run(tmp_path, errors, NIGHT)
    run = report.RunData(tmp_path)
    summary = report.summarize(report.collect(run)[0], run)
    for modality, condition in (("thermal", "real+real"), ("rgb", "real+noise")):
        e = summary["modalities"][modality]["conditions"][condition]
        assert e["p_value"] is None and e["p_holm"] is None and e["verdict"] == "no verdict", condition
        assert e["no_verdict_reason"], condition
    assert summary["modalities"]["thermal"]["conditions"]["real+real"]["ci95"] is None
    assert summary["modalities"]["rgb"]["conditions"]["real+gen:ddpm"]["family_size"] == 2
    lines = report.verdicts(summary)
    assert any(line.startswith("thermal, real+real: no verdict (") for line in lines)
    report.results_rows(summary)
    (tmp_path / "figures").mkdir()
    assert report.figure_effects(summary, tmp_path / "figures")


@pytest.mark.parametrize("condition, family", [
    ("real+gen:ddpm", "primary"), ("real+gen:ddpm>cyclegan", "primary"), ("real+gen:ddpm@2", "secondary"),
    ("real+classic", "secondary"), ("real-aa", "secondary"), ("real+real@0.5", "secondary")])
def test_the_primary_family_is_the_generators_at_their_configured_count(condition, family):
    """The study's questions are its generators at study.n_synthetic; sweep points shape the answer."""
    assert report.family(condition) == family
