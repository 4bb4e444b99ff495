"""summary.json from stored stage outputs: Holm across the whole study, verdicts, day/night, the floor.

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

    rgb: real+noise is a clear harm; real+gen:ddpm has one seed (no verdict, but its p is in the family).
    thermal: real+classic a clear improvement, much larger on the night images than by day; real-x2 a
    clear harm whose mean is above the mean-predictor floor; real+real a moderate improvement whose raw p
    is below 0.05 and whose interval excludes 0, but which Holm over the study's 5 comparisons (and only
    over all 5: within thermal alone it would pass) takes to 0.05 or above.
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
            "real+noise": seeds(rgb_images, [1.6, 1.7, 1.65]),
            "real+gen:ddpm": seeds(rgb_images, [1.01]),
        },
        "thermal": {
            "mean-predictor": np.full((1, N_IMAGES), 0.02),
            "real": seeds(thermal_images, [1.0, 1.02, 0.98]),
            "real+classic": seeds(thermal_images * classic, [1.0, 1.01, 0.99]),
            "real-x2": seeds(thermal_images, [3.0, 3.1, 3.05]),
            "real+real": seeds(thermal_images, [0.92, 0.93, 0.94]),
        },
    }
    return {m: {c: _written(v) for c, v in block.items()} for m, block in out.items()}


def fake_run(root, errors: dict, night: list) -> None:
    """A run directory with the plan and stage outputs `report.collect`/`summarize` read (no generators)."""
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
                    (folder / "log.jsonl").write_text(json.dumps({"step": 40, "loss": 0.5}) + "\n")
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
                                         f"{-10 * math.log10(v):.6g}"])
                manifest = {"modality": modality, "n_images": N_IMAGES}
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
    (root / "config.toml").write_text("# fake run for tests/analysis/test_report.py\n")


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


def test_p_holm_is_holm_over_every_comparison_of_the_study(built):
    """Every comparison of every modality is one Holm family (README: "Holm-corrected across every
    comparison of the study"); `real` is compared with nothing and gets no p_holm."""
    _, summary = built
    entries = {(m, c): e for m, block in summary["modalities"].items() for c, e in block["conditions"].items()
               if c != "real"}
    assert len(entries) == 5
    for block in summary["modalities"].values():
        assert "p_holm" not in block["conditions"]["real"] and "verdict" not in block["conditions"]["real"]
    expected = holm_by_hand({key: e["p_value"] for key, e in entries.items()})
    for key, e in entries.items():
        assert e["p_holm"] == pytest.approx(expected[key], rel=1e-12, abs=1e-300), key
    # The data make the family matter: within thermal alone real+real's adjusted p would differ.
    moderate = summary["modalities"]["thermal"]["conditions"]["real+real"]
    thermal_only = holm_by_hand({c: e["p_value"] for c, e in summary["modalities"]["thermal"]["conditions"].items()
                                 if c != "real"})
    assert thermal_only["real+real"] != pytest.approx(moderate["p_holm"])


def test_verdicts_follow_from_the_holm_p_and_the_interval(built):
    """improvement / harm need the whole interval on one side of 0 and p_holm < 0.05; one seed: no verdict.
    real+real is the case Holm decides: raw p below 0.05, interval excluding 0, Holm p not below 0.05."""
    _, summary = built
    for modality, block in summary["modalities"].items():
        for condition, e in block["conditions"].items():
            if condition == "real":
                continue
            low, high = e["ci95"]
            if not e["ci_covers_seed_variation"]:
                expected = "no verdict: one seed"
            elif e["p_holm"] < 0.05 and high < 0:
                expected = "improvement"
            elif e["p_holm"] < 0.05 and low > 0:
                expected = "harm"
            else:
                expected = "no detectable difference"
            assert e["verdict"] == expected, (modality, condition)
    words = {(m, c): e["verdict"] for m, block in summary["modalities"].items()
             for c, e in block["conditions"].items() if c != "real"}
    assert words == {("rgb", "real+noise"): "harm", ("rgb", "real+gen:ddpm"): "no verdict: one seed",
                     ("thermal", "real+classic"): "improvement", ("thermal", "real-x2"): "harm",
                     ("thermal", "real+real"): "no detectable difference"}
    moderate = summary["modalities"]["thermal"]["conditions"]["real+real"]
    assert moderate["p_value"] < 0.05 <= moderate["p_holm"] and moderate["ci95"][1] < 0


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
                same = compare(mse[:, columns], real[:, columns])  # the same bootstrap on the subset
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
