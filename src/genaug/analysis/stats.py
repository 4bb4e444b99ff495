"""Statistics over a condition's runs: arrays are (seeds, test images), every row on the same images.

Conditions share the test images and their masks, so comparisons are paired by image; seeds are
independent trainings and are resampled independently for each condition.
"""

from __future__ import annotations

import numpy as np


def seed_summary(per_image: np.ndarray) -> dict:
    """(S, N) per-image errors -> mean and std across seeds of the per-seed test mean."""
    per_seed = per_image.mean(axis=1)
    return {
        "mean": float(per_seed.mean()),
        "std": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0,
        "n_seeds": int(len(per_seed)),
    }


def compare(candidate: np.ndarray, reference: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """Relative change of mean error, candidate vs reference, each (S, N) on the same N images.

    ci95: hierarchical bootstrap (images resampled jointly, seeds resampled per condition), percentile.
    p_value: two-sided Wilcoxon signed-rank on per-image errors averaged over seeds.
    effect_size_dz: mean per-image difference / its standard deviation (Cohen's d_z).
    """
    from scipy import stats

    rng = np.random.default_rng(seed)
    n_images = candidate.shape[1]
    images = rng.integers(0, n_images, (n_boot, n_images))
    seeds_c = rng.integers(0, len(candidate), (n_boot, len(candidate)))
    seeds_r = rng.integers(0, len(reference), (n_boot, len(reference)))
    # Mean over resampled seeds first (cheap: (B, N)), then over resampled images.
    cand = candidate[seeds_c].mean(axis=1)
    ref = reference[seeds_r].mean(axis=1)
    cand_mean = np.take_along_axis(cand, images, axis=1).mean(axis=1)
    ref_mean = np.take_along_axis(ref, images, axis=1).mean(axis=1)
    boot = cand_mean / ref_mean - 1
    paired_c, paired_r = candidate.mean(axis=0), reference.mean(axis=0)
    difference = paired_c - paired_r
    p_value = float(stats.wilcoxon(paired_c, paired_r).pvalue) if np.any(difference != 0) else 1.0
    spread = difference.std(ddof=1) if n_images > 1 else 0.0
    return {
        "rel_change_vs_real": float(candidate.mean() / reference.mean() - 1),
        "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "p_value": p_value,
        "effect_size_dz": float(difference.mean() / spread) if spread > 0 else 0.0,
    }
