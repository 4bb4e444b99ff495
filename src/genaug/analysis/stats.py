"""Statistics over a condition's runs: arrays are (seeds, test images), every row on the same images.

Every MAE is scored on the same held-out test images with the same fixed masks, so a condition and
`real` are paired *by image*. Their seeds are independent trainings, so they are *not* paired by seed
index. Two sources of variation decide whether a difference would replicate: which test images were
drawn (handled by resampling images, the same indices for both conditions) and which training seeds
were drawn (handled by resampling seeds, independently within each condition). `compare` combines both
in one hierarchical paired bootstrap.

With the few seeds a study can afford (3 to 10) a plain percentile bootstrap over seeds is too narrow:
it estimates the seed variance with divisor S instead of S - 1 and uses normal instead of Student-t
tails. In A/A simulations where seed noise dominates, the plain 95 % interval excludes 0 in about 30 %
of studies at 2 seeds, 17 % at 3, 13 % at 5 and 8 % at 10. `compare` therefore corrects it (see
`compare`), which brings that rate to 1-5 % at 2 to 10 seeds (and the coverage of a planted effect to
about 95 %); the plain interval is kept as `ci95_uncorrected`. Where per-image noise dominates instead,
resampling both crossed factors makes every interval conservative (wider than needed), never narrow.

Inference is on the log scale of the ratio, log(mean(condition) / mean(real)): MSE is positive and its
seed-to-seed spread grows with its level, so a harmful condition has a long right tail on the ratio
scale (one bad seed of five can double the ratio) and a normal approximation there understates how
far from 0 the effect is. Percentile intervals do not care about the scale; the stretch and the
p-value do, and on the log scale they are symmetric. `ci95` is reported back on the relative scale.

The Wilcoxon signed-rank test over images (`wilcoxon_p_images`) asks whether *these trained models*
differ on the test images; it does not see seed-to-seed variation, so with seed noise present it calls
A/A differences significant most of the time (65-85 % of null studies at alpha 0.05 in the
simulations). `p_value` is the seed-aware test that agrees with `ci95`: Holm-correct it for verdicts.
"""

from __future__ import annotations

import math

import numpy as np

_Z975 = 1.959963984540054  # standard normal 97.5 % quantile


def seed_summary(per_image: np.ndarray) -> dict:
    """(S, N) per-image errors -> mean and std across seeds of the per-seed test mean (std None for S=1)."""
    per_seed = per_image.mean(axis=1)
    return {
        "mean": float(per_seed.mean()),
        "std": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else None,
        "n_seeds": int(len(per_seed)),
    }


def _resample_counts(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """(n_boot, n) counts of how often each of n items is drawn in n draws with replacement, per replicate."""
    draws = rng.integers(0, n, size=(n_boot, n))
    draws += (n * np.arange(n_boot))[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n)


def _bootstrap_ratio(condition: np.ndarray, real: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_boot,) replicates of mean(condition) / mean(real) - 1 from the hierarchical paired bootstrap,
    plain and with seed deviations inflated; both from the same draws.

    Each replicate draws N test images with replacement (the same draw for both conditions) and,
    independently for each condition with at least 2 seeds, S seeds with replacement; the statistic is
    the ratio of the two resampled grand means minus 1. Vectorised: the image draws are a (B, N) weight
    matrix M and the seed draws (B, S) weights W, so a replicate's grand mean is sum_s W[b,s] (M X^T)[b,s].
    Inflated: the drawn mean's log deviation from the seed-averaged mean is scaled by sqrt(S/(S-1)), so
    that resampling seeds reproduces the unbiased (S - 1 divisor) seed variance rather than the plug-in
    one (on the log scale the inference uses; it keeps every replicate positive). It is applied to the
    (B, S) per-seed means, not the (S, N) data.
    """
    rng = np.random.default_rng(seed)
    n_images = real.shape[1]
    image_weights = _resample_counts(rng, n_boot, n_images) / n_images  # (B, N), rows sum to 1
    plain, inflated = [], []
    for runs in (condition, real):
        s = runs.shape[0]
        per_seed = image_weights @ runs.T  # (B, S): each seed's mean over the resampled images
        if s == 1:
            plain.append(per_seed[:, 0])
            inflated.append(per_seed[:, 0])
            continue
        seed_weights = _resample_counts(rng, n_boot, s) / s  # (B, S), rows sum to 1
        centre = per_seed.mean(axis=1)  # = the resampled images' mean of the seed-averaged errors
        drawn = np.einsum("bs,bs->b", seed_weights, per_seed)
        plain.append(drawn)
        inflated.append(centre * (drawn / centre) ** math.sqrt(s / (s - 1)))
    return plain[0] / plain[1] - 1, inflated[0] / inflated[1] - 1


def _welch_df(condition: np.ndarray, real: np.ndarray) -> float:
    """Welch-Satterthwaite degrees of freedom of the difference of log per-seed test means, over the
    sides with at least 2 seeds (inf when no side has 2 seeds or the seed means do not vary)."""
    terms = []
    for runs in (condition, real):
        s = runs.shape[0]
        if s >= 2:
            terms.append((np.log(runs.mean(axis=1)).var(ddof=1) / s, s - 1))
    total = sum(v for v, _ in terms)
    if not terms or total <= 0:
        return math.inf
    return total**2 / sum(v**2 / df for v, df in terms if v > 0)


def compare(condition_mse: np.ndarray, real_mse: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """A condition vs `real`, each (S, N) per-image masked MSE on the same N test images in the same order.

    Seeds of the two conditions are independent trainings (not paired by index; S may differ).

    rel_change_vs_real: mean(condition) / mean(real) - 1 over all seeds and images.
    ci95: 95 % interval of rel_change_vs_real from a hierarchical paired bootstrap (`n_boot` replicates,
        RNG `np.random.default_rng(seed)`): each replicate resamples test images with replacement, the
        same indices for both conditions, and resamples seeds with replacement independently within each
        condition; the statistic is the ratio of the resampled grand means minus 1. Small-seed correction:
        (a) each resampled seed mean's log deviation from its condition's seed average is scaled by
        sqrt(S/(S-1)) (unbiased seed variance); (b) on the log scale, each side of the 2.5-97.5 %
        percentile interval is stretched away from the estimate by t_{0.975, df} / z_{0.975}, df the
        Welch-Satterthwaite df of the log per-seed means (Student-t instead of normal tails). A condition with one seed is not
        resampled over seeds and gets no correction; with one seed on both sides the interval comes from
        image resampling only and ignores seed-to-seed variation (`ci_method`, `ci_covers_seed_variation`).
    ci95_uncorrected: the plain 2.5-97.5 % percentile interval of the same bootstrap without (a) and (b);
        for reference only: too narrow with few seeds.
    p_value: two-sided p for "no change" consistent with ci95: log(1 + rel) / SD of the log corrected
        bootstrap replicates against Student t with `df` degrees of freedom (normal when df is inf). Seed-aware:
        this is the p that is Holm-corrected and decides the verdict.
    p_bootstrap: the same number as p_value.
    wilcoxon_p_images: two-sided Wilcoxon signed-rank test, condition vs real, on per-image MSE averaged
        over seeds, paired by image (1.0 when every difference is 0). It does not see seed-to-seed
        variation, so with seed noise it calls A/A differences significant most of the time
        (tests/analysis/test_stats.py): shown for reference, never used for a verdict.
    effect_size_dz: Cohen's d_z: mean / std (ddof 1) of the per-image differences of seed-averaged MSE
        (condition - real); 0.0 when they do not vary.
    Also: ci_method, ci_covers_seed_variation (both conditions have >= 2 seeds), df, n_boot,
    bootstrap_seed, n_seeds_condition, n_seeds_real, n_images.
    """
    from scipy import stats

    condition_mse = np.asarray(condition_mse, dtype=np.float64)
    real_mse = np.asarray(real_mse, dtype=np.float64)
    if condition_mse.ndim != 2 or real_mse.ndim != 2 or condition_mse.shape[1] != real_mse.shape[1]:
        raise ValueError(f"compare needs two (seeds, images) arrays on the same images; got shapes "
                         f"{condition_mse.shape} and {real_mse.shape}")
    if n_boot < 100:
        raise ValueError(f"n_boot={n_boot} is too few replicates for a 95 % interval; use at least 100 (default 2000)")
    s_c, s_r = condition_mse.shape[0], real_mse.shape[0]
    rel = float(condition_mse.mean() / real_mse.mean() - 1)

    plain, corrected = _bootstrap_ratio(condition_mse, real_mse, n_boot, seed)
    if not (np.all(corrected > -1) and rel > -1 and math.isfinite(rel)):
        raise ValueError("compare needs positive errors: a condition's or real's mean MSE is 0 or not finite")
    log_rel, log_corrected = math.log1p(rel), np.log1p(corrected)
    df = _welch_df(condition_mse, real_mse)
    stretch = float(stats.t.ppf(0.975, df) / _Z975) if math.isfinite(df) else 1.0
    low, high = np.percentile(log_corrected, [2.5, 97.5])
    ci95 = np.expm1([log_rel - stretch * (log_rel - low), log_rel + stretch * (high - log_rel)])
    spread = float(log_corrected.std(ddof=1))
    if spread > 0:
        p_bootstrap = float(2 * (stats.t.sf(abs(log_rel) / spread, df) if math.isfinite(df)
                                 else stats.norm.sf(abs(log_rel) / spread)))
    else:
        p_bootstrap = 1.0 if rel == 0 else 0.0

    resampled = [name for name, s in (("condition", s_c), ("real", s_r)) if s >= 2]
    if len(resampled) == 2:
        ci_method = ("hierarchical paired bootstrap: test images resampled (paired), seeds resampled within "
                     "each condition; small-seed corrected (seed deviations x sqrt(S/(S-1)), tails x t/z)")
    elif resampled:
        ci_method = (f"hierarchical paired bootstrap: test images resampled (paired), seeds resampled for "
                     f"{resampled[0]} only (the other condition has one seed, its seed variation is not "
                     f"covered); small-seed corrected")
    else:
        ci_method = ("image bootstrap only: one seed per condition, seeds not resampled; the interval ignores "
                     "seed-to-seed variation")

    mean_c, mean_r = condition_mse.mean(axis=0), real_mse.mean(axis=0)
    diff = mean_c - mean_r
    p_wilcoxon = float(stats.wilcoxon(mean_c, mean_r).pvalue) if np.any(diff != 0) else 1.0
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    # "do not vary" up to rounding: equal differences (a constant shift) leave an sd of ~1e-18, not 0
    varies = sd > 1e-9 * float(np.abs(diff).max())
    return {
        "rel_change_vs_real": rel,
        "ci95": [float(ci95[0]), float(ci95[1])],
        "ci95_uncorrected": [float(v) for v in np.percentile(plain, [2.5, 97.5])],
        "ci_method": ci_method,
        "ci_covers_seed_variation": len(resampled) == 2,
        "p_value": p_bootstrap,
        "p_bootstrap": p_bootstrap,
        "wilcoxon_p_images": p_wilcoxon,
        "df": float(df) if math.isfinite(df) else None,
        "effect_size_dz": float(diff.mean() / sd) if varies else 0.0,
        "n_boot": int(n_boot),
        "bootstrap_seed": int(seed),
        "n_seeds_condition": int(s_c),
        "n_seeds_real": int(s_r),
        "n_images": int(real_mse.shape[1]),
    }


def holm(p_values: dict[str, float | None]) -> dict[str, float | None]:
    """Holm-Bonferroni adjusted p-values over one family (all comparisons in the study).

    Sorted ascending p_(1) <= ... <= p_(m), the adjusted p_(i) = max_{j<=i} min(1, (m - j + 1) p_(j)):
    monotone in the raw p and capped at 1. None or NaN entries are left out of the family and returned
    as None.
    """
    valid = {k: float(p) for k, p in p_values.items() if p is not None and not math.isnan(p)}
    m = len(valid)
    adjusted: dict[str, float | None] = {k: None for k in p_values}
    running = 0.0
    for rank, (name, p) in enumerate(sorted(valid.items(), key=lambda kv: kv[1])):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[name] = running
    return adjusted


def verdict(rel: float, ci95: list[float] | None, p_holm: float | None, alpha: float = 0.05) -> str:
    """"improvement" (lower error: CI entirely below 0 and p_holm < alpha), "harm" (CI entirely above 0
    and p_holm < alpha), else "no detectable difference" (also when ci95 or p_holm is missing).
    `rel` is the point estimate; it is not needed for the decision and only checked to be finite."""
    if ci95 is None or p_holm is None or not math.isfinite(rel) or not p_holm < alpha:
        return "no detectable difference"
    low, high = ci95
    if high < 0:
        return "improvement"
    if low > 0:
        return "harm"
    return "no detectable difference"


def paper_statistic(epoch_losses: list[list[float]], epoch: int, ddof: int = 0) -> dict:
    """The seed paper's own statistic (NOT genaug's verdict statistic), with one cut for every run.

    What the paper computed (reference/seed-findings.md, "reported numbers"): for one training run, the
    mean and the standard deviation *across epochs* of the per-epoch mean training loss, after dropping
    the first 1, 2 or 3 epochs (a different cut for each run in the paper; here the same `epoch` for all).
    Its "std" is therefore epoch-to-epoch fluctuation of one run, not seed-to-seed spread; and its loss is
    a training loss (augmented runs' include the synthetic images), not a held-out error.

    epoch_losses: one list per run (seed) of per-epoch mean training losses, epoch 1 first.
    epoch: the cut: the first `epoch` epochs are dropped, epochs epoch+1 .. last are used.
    ddof: for the across-epoch std; 0 is numpy's default (the paper's choice is not recorded; at ~48
        epochs ddof=1 would be about 1 % larger).
    Returns per-run `run_means`, `run_stds` (each run's paper statistic: a single run reproduces the
    paper's two numbers), `mean` (average of run_means) and `std` (average of run_stds: the paper's std),
    and `std_across_runs` (std, ddof 1, of run_means; None for one run), with `epochs_dropped`,
    `n_epochs_used` and `n_runs`.
    """
    if epoch < 0:
        raise ValueError(f"epoch cut must be >= 0 (epochs dropped from the start), got {epoch}")
    if not epoch_losses:
        raise ValueError("paper_statistic needs at least one run's per-epoch losses")
    kept = [np.asarray(run, dtype=np.float64)[epoch:] for run in epoch_losses]
    short = [i for i, k in enumerate(kept) if k.size <= ddof]
    if short:
        raise ValueError(f"runs {short} have too few epochs after dropping the first {epoch}")
    run_means = [float(k.mean()) for k in kept]
    run_stds = [float(k.std(ddof=ddof)) for k in kept]
    return {
        "statistic": (f"paper: mean and std across epochs of the per-epoch mean training loss, first {epoch} "
                      f"epochs dropped (same cut for every run)"),
        "epochs_dropped": int(epoch),
        "n_epochs_used": [int(k.size) for k in kept],
        "n_runs": len(kept),
        "run_means": run_means,
        "run_stds": run_stds,
        "mean": float(np.mean(run_means)),
        "std": float(np.mean(run_stds)),
        "std_across_runs": float(np.std(run_means, ddof=1)) if len(kept) > 1 else None,
    }
