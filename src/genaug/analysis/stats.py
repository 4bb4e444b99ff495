"""Statistics over a condition's runs: arrays are (seeds, test images), every row on the same images.

Every MAE is scored on the same held-out test images with the same fixed masks, so a condition and
`real` are paired *by image*; their seeds are independent trainings, *not* paired by seed index.

`compare` tests L = log(mean condition / mean real) with one t statistic, so its 95 % interval and its
p-value cannot disagree (p < 0.05 exactly when the interval excludes 0). var(L) has three terms:
each condition's seed-to-seed term (variance of its log per-seed test means / S, which already holds
the per-image-per-seed noise averaged over the images) and the image-sampling term of the paired
difference (variance over images of the two conditions' relative error profiles / N, less that
per-image-per-seed noise so it is not counted twice, floored at 0). Degrees of freedom:
Welch-Satterthwaite over the three. It is analytic: deterministic, no bootstrap seed.

The log scale: MSE is positive and its seed-to-seed spread grows with its level, so a harmful condition
has a long right tail on the ratio scale (one bad seed of five can double the ratio); on the log scale
the test is symmetric and the interval, reported back as a relative change, is asymmetric.

Measured (bench/calibration.py; 300 simulated studies a cell; 3, 5, 10 seeds x 64, 200, 1,000 images;
seed-noise-dominated, image-noise-dominated, and image-by-condition regimes; README "How the statistics
are calibrated"): A/A calls at nominal 5 % in 3.1-5.6 % of comparisons where seed or image noise
dominates (the 5.6 % cell: 4.96 +- 0.36 % over 1,500 studies), 4.1-6.3 % in the image-by-condition
regime (its 10 seeds x 64 images cell: 5.8 +- 0.5 % over 1,200 studies, a slightly liberal t on 64
skewed per-image differences); coverage of the 95 % interval 94-97 %; power at -10 % alone 54-59 % with
3 seeds, 94-96 % with 5, 100 % with 10 where seed noise dominates (the bootstrap before issue 16:
1.7-5 % A/A, 0 % and almost no power where image noise dominates, 43-49 % / 91-92 % power). Without the image term the image-by-condition regime's A/A rate is 17 %.

Where no test is possible `compare` says why (`no_verdict_reason`) and gives no p-value, which keeps
the comparison out of the Holm family: a side with one seed, seeds that are copies of one run, a seed
with mean MSE 0 or a non-finite MSE.

`sensitivity` turns a modality's own variation into the smallest change the study detects with 80 %
power at Holm's strictest level, and the seeds a 5 % change would need.

The Wilcoxon signed-rank test over images (`wilcoxon_p_images`) asks whether *these trained models*
differ on the test images; it does not see seed-to-seed variation, so with seed noise present it calls
A/A differences significant most of the time (tests/analysis/test_stats.py): reference only.
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


_IDENTICAL = 1e-9  # seeds whose log test means spread less than this (relative 1e-9) are copies of one run


def _invalid_reason(name: str, runs: np.ndarray) -> str | None:
    """Why a condition's (S, N) per-image MSE cannot enter a ratio on the log scale, or None."""
    if not np.all(np.isfinite(runs)):
        return f"{name} has non-finite per-image MSE (NaN or inf): a failed evaluation, no comparison"
    if np.any(runs < 0):
        return f"{name} has negative per-image MSE, which no squared error can be"
    zero = np.flatnonzero(runs.mean(axis=1) <= 0)
    if zero.size:
        return (f"{name} seed(s) {zero.tolist()} have mean test MSE exactly 0 (a perfect or broken run): "
                f"the log ratio is undefined")
    return None


def _side(runs: np.ndarray) -> dict:
    """What the variance model needs from one condition's (S, N) per-image MSE (all seed means > 0).

    seed_var: variance (ddof 1) over seeds of the log per-seed test mean; it holds both the seed offset
        and the per-image-per-seed noise averaged over the N images (None with one seed, or when the
        seeds are copies of one run: then nothing about seed-to-seed variation is known).
    profile: (N,) each image's error relative to its seed's mean, averaged over seeds. Dividing by the
        seed's own mean takes the seed offset out, so what differs between two conditions' profiles is
        which images each finds hard, plus the per-image-per-seed noise.
    noise: that per-image-per-seed noise of one run's profile: the within-image, between-seed mean
        square of the relative profiles ((S-1)(N-1) df; 0 when seed_var is None).
    """
    s, n = runs.shape
    seed_means = runs.mean(axis=1)
    log_means = np.log(seed_means)
    relative = runs / seed_means[:, None]
    profile = relative.mean(axis=0)
    varies = s >= 2 and float(log_means.std(ddof=1)) > _IDENTICAL
    noise = 0.0
    if varies and n >= 2:
        noise = float(((relative - profile) ** 2).sum() / ((s - 1) * (n - 1)))
    return {"s": s, "seed_var": float(log_means.var(ddof=1)) if varies else None, "profile": profile,
            "noise": noise, "identical": s >= 2 and not varies}


def _image_term(condition: dict, real: dict) -> float | None:
    """Image-sampling variance of the log ratio: var over images (ddof 1) of the paired profile
    difference, less the per-image-per-seed noise it holds (noise / S per side, already counted in the
    seed terms), floored at 0, over N. None with fewer than 2 images."""
    n = len(real["profile"])
    if n < 2:
        return None
    raw = float(np.var(condition["profile"] - real["profile"], ddof=1))
    excess = raw - condition["noise"] / condition["s"] - real["noise"] / real["s"]
    return excess / n if excess > _IDENTICAL**2 else 0.0  # rounding noise of equal profiles counts as 0


def _variance(condition: dict, real: dict) -> tuple[float, float | None, dict]:
    """Var of log(mean condition / mean real) from the two sides of `_side`, its Satterthwaite df and
    the terms. Sides without seed_var contribute no seed term (their run is treated as fixed)."""
    n = len(real["profile"])
    terms = {"seed_condition": (None if condition["seed_var"] is None else condition["seed_var"] / condition["s"],
                                condition["s"] - 1),
             "seed_real": (None if real["seed_var"] is None else real["seed_var"] / real["s"], real["s"] - 1),
             "image": (_image_term(condition, real), n - 1)}
    present = [(v, k) for v, k in terms.values() if v is not None]
    total = sum(v for v, _ in present)
    df = total**2 / sum(v**2 / k for v, k in present if v > 0) if total > 0 else None
    return total, df, {name: v for name, (v, _) in terms.items()}


def compare(condition_mse: np.ndarray, real_mse: np.ndarray) -> dict:
    """A condition vs `real`, each (S, N) per-image masked MSE on the same N test images in the same order.

    Seeds of the two conditions are independent trainings (not paired by index; S may differ).

    rel_change_vs_real: mean(condition) / mean(real) - 1 over all seeds and images (None when not finite).
    ci95, p_value: from one computation, so p_value < 0.05 exactly when ci95 excludes 0. On the log
        scale L = log(mean condition / mean real), var(L) = V_c + V_r + V_img:
        V_c, V_r: each condition's variance (ddof 1) of its log per-seed test means over its S seeds;
        V_img: the image-sampling term of the paired difference: var over images of the difference of
            the two conditions' seed-averaged relative error profiles (each seed's per-image MSE over
            its own mean), less the per-image-per-seed noise it holds (already inside V_c and V_r),
            floored at 0, over N.
        df: Welch-Satterthwaite over the three terms (S_c - 1, S_r - 1, N - 1). ci95 = exp(L +- t_{0.975,
        df} sqrt(var)) - 1; p_value: two-sided Student t of L / sqrt(var) with df.
    p_value is None (no_verdict_reason says why) when a side has one seed, when a side's seeds are
        copies of one run (log test means spread < 1e-9), or when an MSE is non-finite, negative or a
        seed's mean MSE is 0. In the first two cases ci95 is still given without that side's seed term
        (image-only when neither side has one; `ci_method` says which) and ci_covers_seed_variation is
        False; in the last, ci95 is None. `holm` leaves None out of the family.
    wilcoxon_p_images: two-sided Wilcoxon signed-rank test, condition vs real, on per-image MSE averaged
        over seeds, paired by image (1.0 when every difference is 0). It does not see seed-to-seed
        variation, so with seed noise it calls A/A differences significant most of the time
        (tests/analysis/test_stats.py): shown for reference, never used for a verdict.
    effect_size_dz: Cohen's d_z: mean / std (ddof 1) of the per-image differences of seed-averaged MSE
        (condition - real); 0.0 when they do not vary.
    Also: ci_method, ci_covers_seed_variation, df (None when var is 0), variance_terms (V_c, V_r, V_img;
    None where absent), no_verdict_reason (None for a normal result), n_seeds_condition, n_seeds_real,
    n_images.
    """
    from scipy import stats

    condition_mse = np.asarray(condition_mse, dtype=np.float64)
    real_mse = np.asarray(real_mse, dtype=np.float64)
    if condition_mse.ndim != 2 or real_mse.ndim != 2 or condition_mse.shape[1] != real_mse.shape[1]:
        raise ValueError(f"compare needs two (seeds, images) arrays on the same images; got shapes "
                         f"{condition_mse.shape} and {real_mse.shape}")
    if min(condition_mse.shape + real_mse.shape) < 1:
        raise ValueError(f"compare needs at least one seed and one image; got shapes {condition_mse.shape} "
                         f"and {real_mse.shape}")
    s_c, s_r, n = condition_mse.shape[0], real_mse.shape[0], real_mse.shape[1]
    out = {"rel_change_vs_real": None, "ci95": None, "p_value": None, "ci_method": "none",
           "ci_covers_seed_variation": False, "df": None, "variance_terms": None, "no_verdict_reason": None,
           "wilcoxon_p_images": None, "effect_size_dz": None,
           "n_seeds_condition": int(s_c), "n_seeds_real": int(s_r), "n_images": int(n)}
    with np.errstate(all="ignore"):
        rel = float(condition_mse.mean() / real_mse.mean() - 1)
    if math.isfinite(rel):
        out["rel_change_vs_real"] = rel
    if np.all(np.isfinite(condition_mse)) and np.all(np.isfinite(real_mse)):
        mean_c, mean_r = condition_mse.mean(axis=0), real_mse.mean(axis=0)
        diff = mean_c - mean_r
        out["wilcoxon_p_images"] = float(stats.wilcoxon(mean_c, mean_r).pvalue) if np.any(diff != 0) else 1.0
        sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
        # "do not vary" up to rounding: equal differences (a constant shift) leave an sd of ~1e-18, not 0
        varies = sd > 1e-9 * float(np.abs(diff).max())
        out["effect_size_dz"] = float(diff.mean() / sd) if varies else 0.0

    out.update(_log_ratio_test(condition_mse, real_mse, rel))
    return out


def _log_ratio_test(condition_mse: np.ndarray, real_mse: np.ndarray, rel: float) -> dict:
    """`compare`'s interval, p-value and why-not on (S, N) float arrays with rel their point estimate;
    separate so that bench/calibration.py can run it without the reference statistics."""
    from scipy import stats

    out: dict = {"ci95": None, "p_value": None, "ci_method": "none", "ci_covers_seed_variation": False,
                 "df": None, "variance_terms": None, "no_verdict_reason": None}
    invalid = [r for r in (_invalid_reason("condition", condition_mse), _invalid_reason("real", real_mse)) if r]
    if invalid:
        out["no_verdict_reason"] = "; ".join(invalid)
        out["ci_method"] = "none: " + out["no_verdict_reason"]
        return out

    condition, real = _side(condition_mse), _side(real_mse)
    var, df, terms = _variance(condition, real)
    log_rel = math.log1p(rel)
    uncovered = []
    for name, side in (("condition", condition), ("real", real)):
        if side["s"] < 2:
            uncovered.append(f"{name} has 1 seed: its seed-to-seed variation cannot be estimated")
        elif side["identical"]:
            uncovered.append(f"{name}'s {side['s']} seeds give the same test mean (log spread < {_IDENTICAL:g}): "
                             f"copies of one run, not independent trainings; seed-to-seed variation cannot be "
                             f"estimated")
    out.update(df=None if df is None else float(df), variance_terms=terms)
    if df is None:
        # no variation anywhere: an interval is only meaningful as "no image-to-image spread at all"
        out["ci95"] = [rel, rel] if terms["image"] is not None else None
    else:
        half = float(stats.t.ppf(0.975, df)) * math.sqrt(var)
        out["ci95"] = [math.expm1(log_rel - half), math.expm1(log_rel + half)]
    if uncovered:
        out["no_verdict_reason"] = "; ".join(uncovered)
        kind = ("image-only t interval (neither side's seed-to-seed variation is covered)"
                if terms["seed_condition"] is None and terms["seed_real"] is None else
                "t interval on the log ratio without the seed term of "
                + " and ".join(nm for nm, s in (("condition", condition), ("real", real)) if s["seed_var"] is None))
        out["ci_method"] = f"{kind}: {out['no_verdict_reason']}; no p-value, no verdict"
        return out
    out["p_value"] = float(2 * stats.t.sf(abs(log_rel) / math.sqrt(var), df))
    out["ci_covers_seed_variation"] = True
    out["ci_method"] = ("t interval on log(mean condition / mean real): each condition's variance of its log "
                        "seed means / S, plus the paired image-sampling variance net of per-image-per-seed "
                        "noise; Welch-Satterthwaite df; p-value from the same t")
    return out


_POWER_DRAWS = 20_000  # simulated studies per power evaluation in `sensitivity` (common random numbers)


def _power_curve(s: int, seed_var: float, image: float, noise: float, n: int, alpha: float):
    """delta -> power of `compare`'s test at level alpha for a true log ratio delta, S seeds per side,
    N images.

    Not the noncentral t of one fixed df: the test's variance and df are re-estimated in every study (the
    seed terms with S - 1 df each, the image term from N - 1 df less the noise and floored at 0), and
    with few seeds that costs power the fixed-df formula does not see (80 % planned gave 67-80 %
    measured). So the test itself is simulated from those sampling distributions, with a fixed RNG and
    the same draws for every delta (monotone in delta, deterministic).
    seed_var: variance of one condition's log seed means; image: the true image term of var(L) at N
    images (image_var / N); noise: per-image-per-seed mean square of the relative profiles.
    """
    from scipy import stats

    rng = np.random.default_rng(16)
    seed_term = seed_var / s
    v_c = seed_term * rng.chisquare(s - 1, _POWER_DRAWS) / (s - 1)
    v_r = seed_term * rng.chisquare(s - 1, _POWER_DRAWS) / (s - 1)
    spread = math.sqrt(2 * seed_term + image) * rng.standard_normal(_POWER_DRAWS)
    var_hat, denominator = v_c + v_r, (v_c**2 + v_r**2) / (s - 1)
    if n > 1:
        e = 2 * noise / (s * n)  # what the image estimate holds of the per-image-per-seed noise
        raw = (image + e) * rng.chisquare(n - 1, _POWER_DRAWS) / (n - 1)
        v_img = np.maximum(raw - e, 0.0)
        var_hat, denominator = var_hat + v_img, denominator + v_img**2 / (n - 1)
    threshold = stats.t.ppf(1 - alpha / 2, var_hat**2 / denominator) * np.sqrt(var_hat)
    return lambda delta: float(np.mean(np.abs(delta + spread) > threshold))


def sensitivity(runs: dict[str, np.ndarray], m: int, alpha: float = 0.05, power: float = 0.8,
                target: float = 0.05, max_seeds: int = 1000) -> dict:
    """How small a change one modality's study can detect, from its own variation.

    runs: condition name -> (S, N) per-image MSE on the same N test images, including "real".
    m: the number of comparisons in the Holm family (the whole study, every modality). The test is
        planned at alpha / m, Holm's first and strictest step: a comparison that passes it passes Holm
        whatever the other p-values are, so mde_rel is what is detectable for sure, not on average.

    Variance model: `compare`'s, at S seeds per side: var(L) = 2 seed_var / S + image_var / N.
    seed_var is pooled over every condition with >= 2 varying seeds, robustly: each condition's
    variance of log seed means is scaled to be median-unbiased (divided by the median of chi2_k / k,
    k = S - 1) and the median over conditions is taken, so one failed seed moves one condition's
    estimate, not the pool. image_var (N x V_img, per image) and the per-image-per-seed noise are the
    medians over the non-real conditions of their terms against real. Power is that of `compare`'s
    test, variance and df re-estimated per study (`_power_curve`).

    mde_rel: the smallest rise exp(delta) - 1 detected with `power`, delta the log-scale effect (a fall
        of 1 - exp(-delta), slightly smaller, is detected as often); S = n_seeds, the fewest seeds of
        any condition (the weakest comparison).
    seeds_for_target: the fewest seeds per condition (both sides) that detect a rise of `target` with
        `power`; None when even `max_seeds` do not (seeds_for_target_reason says whether the image term
        alone is too large, in which case only more test images help).
    Other keys: mde_log, mde_rel_decrease, n_seeds, n_images, m_comparisons, alpha, alpha_adjusted,
    alpha_note, power, target_effect, se_log (of L at n_seeds), seed_var_log, image_var, noise_var,
    seed_var_by_condition, image_var_by_condition, pooling, reason (why mde_rel is None, else None).
    """
    from scipy import stats
    from scipy.optimize import brentq

    if "real" not in runs:
        raise ValueError("sensitivity needs the 'real' condition's runs")
    if m < 1:
        raise ValueError(f"m (comparisons in the Holm family) must be >= 1, got {m}")
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in runs.items()}
    n = arrays["real"].shape[1]
    if any(a.ndim != 2 or a.shape[1] != n for a in arrays.values()):
        raise ValueError("sensitivity needs (seeds, images) arrays on the same images for every condition")
    sides = {k: _side(a) for k, a in arrays.items() if _invalid_reason(k, a) is None}
    seed_var_by = {k: s["seed_var"] for k, s in sides.items() if s["seed_var"] is not None}
    scaled = [v * (sides[k]["s"] - 1) / stats.chi2.ppf(0.5, sides[k]["s"] - 1) for k, v in seed_var_by.items()]
    image_by = {}
    if "real" in sides:
        for k, s in sides.items():
            term = None if k == "real" else _image_term(s, sides["real"])
            if term is not None:
                image_by[k] = term * n
    noises = [s["noise"] for k, s in sides.items() if s["seed_var"] is not None]
    s_used = min(a.shape[0] for a in arrays.values())
    adjusted = alpha / m
    out = {"mde_rel": None, "mde_rel_decrease": None, "mde_log": None, "seeds_for_target": None,
           "seeds_for_target_reason": None, "reason": None, "n_seeds": int(s_used), "n_images": int(n),
           "m_comparisons": int(m), "alpha": alpha, "alpha_adjusted": adjusted,
           "alpha_note": f"alpha / m = {alpha:g} / {m}: Holm's first (strictest) step",
           "power": power, "target_effect": target, "se_log": None,
           "seed_var_log": float(np.median(scaled)) if scaled else None,
           "image_var": float(np.median(list(image_by.values()))) if image_by else 0.0,
           "noise_var": float(np.median(noises)) if noises else 0.0,
           "seed_var_by_condition": seed_var_by, "image_var_by_condition": image_by,
           "pooling": ("seed_var_log: median over conditions of each one's variance of log seed means, scaled "
                       "median-unbiased (/ median of chi2_k / k); image_var, noise_var: medians over conditions")}
    if out["seed_var_log"] is None or s_used < 2:
        out["reason"] = "no condition has 2 or more independent seeds: seed-to-seed variation is unknown"
        return out
    seed_var, image_var, noise = out["seed_var_log"], out["image_var"], out["noise_var"]

    def power_at(delta: float, s: int) -> float:
        return _power_curve(s, seed_var, image_var / n, noise, n, adjusted)(delta)

    se = math.sqrt(2 * seed_var / s_used + image_var / n)
    out["se_log"] = se
    curve = _power_curve(s_used, seed_var, image_var / n, noise, n, adjusted)
    delta = brentq(lambda d: curve(d) - power, 0.0, 60 * se, xtol=1e-6 * se)
    out.update(mde_log=delta, mde_rel=math.expm1(delta), mde_rel_decrease=-math.expm1(-delta))
    goal = math.log1p(target)
    if power_at(goal, max_seeds) < power:
        # with seeds without limit only the image term is left: var(L) = image_var / N, df N - 1
        limit = (float(stats.norm.sf(stats.t.ppf(1 - adjusted / 2, n - 1) - goal / math.sqrt(image_var / n)))
                 if image_var > 0 and n > 1 else 1.0)
        out["seeds_for_target_reason"] = (
            f"the image-sampling term alone (image_var {image_var:.3g} over {n} images) leaves power about "
            f"{limit:.2f} < {power} at any seed count: more test images are needed, not more seeds"
            if limit < power else f"more than {max_seeds} seeds per condition would be needed")
        return out
    low, high = 1, max_seeds  # power(low) < power <= power(high): bisect on seeds
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if mid >= 2 and power_at(goal, mid) >= power else (mid, high)
    out["seeds_for_target"] = int(high)
    return out


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


def holm_by_family(entries: dict, family_of) -> None:
    """Holm within each family: `entries` key -> a `compare` result, `family_of(key)` -> its family's
    name. Adds family, family_size (the comparisons with a p) and p_holm to every entry."""
    families: dict[str, list] = {}
    for key in entries:
        families.setdefault(family_of(key), []).append(key)
    for name, keys in families.items():
        adjusted = holm({key: entries[key]["p_value"] for key in keys})
        size = sum(p is not None for p in adjusted.values())
        for key in keys:
            entries[key].update(family=name, family_size=size, p_holm=adjusted[key])


def no_verdict_reasons(condition: str, entry: dict, real: dict, min_seeds: int, beats_floor: str, floor: str) -> list[str]:
    """Why the evidence cannot carry a verdict on `entry` (a Holm-corrected `compare` result of `condition`
    against `real`): compare's own reason, fewer than `min_seeds` seeds on a side, a side whose
    `beats_floor` key is False (it did not beat `floor`). [] when nothing stands in the way."""
    reasons = [entry["no_verdict_reason"]] if entry.get("no_verdict_reason") else []
    sides = ((condition, entry), ("real", real))
    few = [f"{name} has {side['n_seeds']}" for name, side in sides if side["n_seeds"] < min_seeds]
    if few:
        reasons.append(f"fewer than {min_seeds} seeds ({', '.join(few)})")
    below = [name for name, side in sides if side[beats_floor] is False]
    if below:
        reasons.append(f"{' and '.join(below)} did not beat the {floor}")
    return reasons


def settle(entry: dict, reasons: list[str]) -> None:
    """The entry's verdict: "no verdict" with `reasons` joined, else `verdict` from its interval and p_holm."""
    entry["no_verdict_reason"] = "; ".join(reasons) or None
    entry["verdict"] = "no verdict" if reasons else verdict(entry["rel_change_vs_real"], entry["ci95"], entry["p_holm"])


def verdict(rel: float | None, ci95: list[float] | None, p_holm: float | None, alpha: float = 0.05) -> str:
    """"improvement" (lower error: CI entirely below 0 and p_holm < alpha), "harm" (CI entirely above 0
    and p_holm < alpha), else "no detectable difference" (also when rel, ci95 or p_holm is missing, as
    `compare` leaves them for a comparison it cannot test). `compare`'s p < 0.05 exactly when its ci95
    excludes 0, so at alpha 0.05 the CI only gives the direction; `rel` is only checked to be finite."""
    if ci95 is None or p_holm is None or rel is None or not math.isfinite(rel) or not p_holm < alpha:
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
