"""Statistics over a condition's runs: arrays are (seeds, test images), every row on the same images.

The replicate is the training seed. All conditions are scored on the same test images with the same
masks, so image-to-image difficulty is shared and cancels in a comparison; what a new study would not
reproduce is the seed-to-seed spread of training. Intervals and p-values therefore treat each seed's
test mean as one observation (Welch's t). A test over images (Wilcoxon) is reported beside it for
reference only: with seed variation present it calls differences significant far too often.
"""

from __future__ import annotations

import math

import numpy as np


def seed_summary(per_image: np.ndarray) -> dict:
    """(S, N) per-image errors -> mean and std across seeds of the per-seed test mean (std None for S=1)."""
    per_seed = per_image.mean(axis=1)
    return {
        "mean": float(per_seed.mean()),
        "std": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else None,
        "n_seeds": int(len(per_seed)),
    }


def compare(candidate: np.ndarray, reference: np.ndarray) -> dict:
    """Candidate vs reference condition, each (S, N) on the same N test images.

    rel_change_vs_real: mean error ratio - 1.
    ci95: 95 % Welch interval of the difference of per-seed means, relative to the reference mean
        (None with fewer than 2 seeds on a side: one training run says nothing about the next).
    p_value: two-sided Welch t-test on per-seed means (None likewise).
    wilcoxon_p_images: signed-rank test on per-image errors averaged over seeds; ignores seed spread.
    effect_size_dz: mean per-image difference / its standard deviation (Cohen's d_z).
    """
    from scipy import stats

    seeds_c, seeds_r = candidate.mean(axis=1), reference.mean(axis=1)
    reference_mean = float(seeds_r.mean())
    out: dict = {"rel_change_vs_real": float(seeds_c.mean() / reference_mean - 1), "ci95": None, "p_value": None}
    if len(seeds_c) > 1 and len(seeds_r) > 1:
        test = stats.ttest_ind(seeds_c, seeds_r, equal_var=False)
        low, high = test.confidence_interval(0.95)
        if math.isfinite(test.pvalue):
            out["p_value"] = float(test.pvalue)
            out["ci95"] = [float(low / reference_mean), float(high / reference_mean)]
    per_image = candidate.mean(axis=0) - reference.mean(axis=0)
    out["wilcoxon_p_images"] = (float(stats.wilcoxon(candidate.mean(axis=0), reference.mean(axis=0)).pvalue)
                                if np.any(per_image != 0) else 1.0)
    spread = per_image.std(ddof=1) if len(per_image) > 1 else 0.0
    out["effect_size_dz"] = float(per_image.mean() / spread) if spread > 0 else 0.0
    return out
