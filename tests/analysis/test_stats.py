import numpy as np

from genaug.analysis.stats import compare, seed_summary


def runs(rng, per_image, seeds, seed_spread, effect=0.0):
    """(seeds, images): shared image difficulty x (1 + effect) x a per-seed factor, plus a little noise."""
    factor = 1 + effect + rng.normal(0, seed_spread, (seeds, 1))
    return per_image[None] * factor + rng.normal(0, 1e-4, (seeds, len(per_image)))


def test_seed_summary_known_answer():
    per_image = np.array([[1.0, 3.0], [3.0, 5.0], [5.0, 7.0]])  # seed means 2, 4, 6
    assert seed_summary(per_image) == {"mean": 4.0, "std": 2.0, "n_seeds": 3}
    assert seed_summary(per_image[:1])["std"] is None


def test_no_effect_is_called_significant_about_5_percent_of_the_time():
    """A null study with real seed-to-seed spread: the verdict statistics must stay calibrated."""
    rng = np.random.default_rng(0)
    trials, hits_p, hits_ci = 300, 0, 0
    for _ in range(trials):
        images = rng.uniform(0.01, 0.03, 64)
        result = compare(runs(rng, images, 3, 0.03), runs(rng, images, 3, 0.03))
        hits_p += result["p_value"] < 0.05
        low, high = result["ci95"]
        hits_ci += low > 0 or high < 0
    assert hits_p / trials < 0.09 and hits_ci / trials < 0.09


def test_a_real_effect_is_found_with_the_right_sign():
    rng = np.random.default_rng(1)
    images = rng.uniform(0.01, 0.03, 64)
    result = compare(runs(rng, images, 3, 0.01, effect=0.15), runs(rng, images, 3, 0.01))
    assert 0.1 < result["rel_change_vs_real"] < 0.2
    assert 0 < result["ci95"][0] < result["rel_change_vs_real"] < result["ci95"][1]
    assert result["p_value"] < 0.05 and result["effect_size_dz"] > 0


def test_one_seed_gives_no_interval():
    rng = np.random.default_rng(2)
    images = rng.uniform(0.01, 0.03, 16)
    result = compare(runs(rng, images, 1, 0.03), runs(rng, images, 3, 0.03))
    assert result["ci95"] is None and result["p_value"] is None
    assert 0 <= result["wilcoxon_p_images"] <= 1
