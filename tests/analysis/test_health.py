"""The run health rules on hand-made curves and seed values: each rule fires on its failure, and not on
the healthy runs beside it."""

import numpy as np
import pytest

from genaug.analysis import health


def rows(values, every=10):
    return [{"step": every * (i + 1), "loss": float(v)} for i, v in enumerate(values)]


def healthy(end=0.26, n=12, seed=0):
    """A falling curve with the wobble of a logged mean over 10 steps."""
    rng = np.random.default_rng(seed)
    return end + (1.0 - end) * np.exp(-np.arange(n) / 2.5) + rng.normal(0, 0.01, n)


def test_a_loss_that_climbs_back_after_its_best_is_diverged():
    # the fifth case: 0.36 at step 50, back to 0.45 by step 120
    curve = [0.95, 0.7, 0.5, 0.4, 0.36, 0.38, 0.41, 0.43, 0.44, 0.45, 0.45, 0.45]
    (found,) = health.diverged("mae", "thermal-real-aa-seed1", rows(curve))
    assert found["kind"] == "diverged" and found["run"] == "thermal-real-aa-seed1" and found["stage"] == "mae"
    assert "0.36 at step 50" in found["evidence"] and "1.25x" in found["evidence"]
    assert health.diverged("mae", "ok", rows(healthy())) == []


def test_the_end_of_a_curve_is_its_last_tenth_so_one_noisy_row_does_not_flag():
    curve = list(healthy(n=30))
    curve[-1] = curve[-1] * 1.3  # one bad row among the last three is diluted below the 1.25x rise
    assert health.diverged("mae", "ok", rows(curve)) == []
    curve[-3:] = [v * 1.5 for v in curve[-3:]]
    assert [f["kind"] for f in health.diverged("mae", "bad", rows(curve))] == ["diverged"]


def test_too_short_a_log_says_nothing():
    assert health.diverged("mae", "short", rows([0.3, 0.9, 0.9])) == []


def test_a_gan_is_watched_on_its_reconstruction_loss_not_its_adversarial_terms():
    n = 12
    log = [{"step": 10 * (i + 1), "G_A": 0.3 + 0.05 * i, "D_A": 0.1 + 0.02 * i, "cycle": float(c)}
           for i, c in enumerate(healthy(end=0.55, n=n) * 4)]
    assert health.diverged("cyclegan", "cyclegan", log) == []  # G_A and D_A rise by design
    for row, bad in zip(log, [4, 3, 2.5, 2.3, 2.4, 2.8, 3.2, 3.6, 3.9, 4.1, 4.2, 4.3]):
        row["cycle"] = bad
    assert [f["kind"] for f in health.diverged("cyclegan", "cyclegan", log)] == ["diverged"]
    assert health.WATCHED["pix2pix"] == "G_L1"


def test_a_seed_that_stalls_far_above_its_siblings_is_stalled():
    # the four cases: 0.45-0.49 where the siblings reached 0.25-0.27
    logs = {f"seed{i}": rows(healthy(end, seed=i)) for i, end in enumerate([0.25, 0.27, 0.26])}
    logs["seed3"] = rows(healthy(0.47, seed=3))
    flags = health.group_flags("mae", logs, {})
    assert [(f["run"], f["kind"]) for f in flags] == [("seed3", "stalled")]
    assert "3 sibling seeds" in flags[0]["evidence"]
    # with one sibling there is no "the others" to compare with
    assert health.stalled("mae", {"a": 0.26, "b": 0.47}) == []


def test_a_held_out_error_far_above_its_seeds_median_is_an_outlier_and_only_then():
    flags = health.outliers({"s0": 0.0072, "s1": 0.0075, "s2": 0.0126})
    assert [(f["run"], f["stage"], f["kind"]) for f in flags] == [("s2", "eval", "outlier")]
    assert "1.68x the median" in flags[0]["evidence"]
    # healthy spread: the robust z would exceed 3.5 (tight MAD) but the ratio is 1.1x, not 1.25x
    assert health.outliers({"s0": 0.0072, "s1": 0.0073, "s2": 0.0080}) == []
    # a seed much better than its siblings is not a failed run
    assert health.outliers({"s0": 0.0072, "s1": 0.0075, "s2": 0.0030}) == []
    # two seeds cannot say which one is odd
    assert health.outliers({"s0": 0.0072, "s1": 0.0126}) == []
    # widely spread seeds: 1.3x the median but under 3.5 robust SDs
    assert health.outliers({"s0": 0.006, "s1": 0.0075, "s2": 0.009, "s3": 0.0098}) == []


@pytest.mark.parametrize("value, flagged", [(0.026, True), (0.0205, True), (0.019, False), (0.0072, False)])
def test_an_error_near_the_floor_is_flagged(value, flagged):
    flags = health.no_better_than_floor({"s0": value}, floor=0.0256)
    assert bool(flags) == flagged
    assert health.no_better_than_floor({"s0": 0.03}, floor=None) == []
