"""How well `analysis/stats.py` is calibrated: a simulation study of `compare` + `holm` + `verdict`.

    python bench/calibration.py            # full size: 300 studies a cell, about 6-8 minutes on 2 cores
    python bench/calibration.py --quick    # 60 studies a cell, for a look (about 1.5 minutes)
    python bench/calibration.py --studies 500 --old-studies 0    # more studies, without the old method

Each simulated study has N held-out test images with a per-image difficulty (lognormal, sigma 0.5, mean
0.02) that every model shares, a `real` condition and 11 others, S seeds each: A/A conditions (same
distribution as real: aa1..aa9) and two with a planted change of -5 % and -10 %. A run's per-image MSE
is difficulty x (1 + change) x its condition's per-image profile x its seed's offset x per-image-per-seed
noise, all lognormal factors of mean 1, independent between conditions and seeds. Regimes:

    seed:        seed offsets sigma 0.04, per-image-per-seed noise sigma 0.05, no profile (seed noise dominates)
    image:       seed offsets sigma 0.002, noise sigma 0.5, no profile (per-image noise dominates)
    interaction: seed offsets sigma 0.02, noise sigma 0.1, each condition's own per-image profile sigma
                 0.15 (conditions find different images hard: only a fresh draw of test images shows it)

Per cell (regime x seeds x images) it prints, per comparison: the A/A call rate (aa1..aa9: verdict
not "no detectable difference" alone, i.e. p < 0.05; ± its standard error over studies, as the
comparisons of one study share its real runs; old: aa1, aa2), the coverage of the 95 % interval (all 11
comparisons; the truth is the planted change, population ratio), the power at -5 % and -10 % alone
("1"), within a Holm family of 3 (with aa1, aa2) and of 10 (with aa1..aa9), and the median mde_rel of
`sensitivity` (m = 3, from real and aa1..aa3) over the cell's first 20 studies. "old" is the method before issue 16 (the hierarchical paired
bootstrap with small-seed correction, 1000 replicates, bootstrap seed 0 as report.py used it), run on
aa1, aa2 and the planted conditions of fewer studies and only where it is affordable (--old-images).
Figures go to the README section "How the statistics are calibrated".
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from genaug.analysis import stats  # noqa: E402

REGIMES = {"seed": (0.04, 0.05, 0.0), "image": (0.002, 0.5, 0.0), "interaction": (0.02, 0.1, 0.15)}
CHANGES = {"-5%": -0.05, "-10%": -0.10}
N_AA = 9


def lognormal(rng: np.random.Generator, sigma: float, shape) -> np.ndarray:
    """Factors of mean 1 (exactly 1 when sigma is 0)."""
    return rng.lognormal(-sigma**2 / 2, sigma, shape) if sigma > 0 else np.ones(shape)


def study(rng: np.random.Generator, regime: str, seeds: int, images: int) -> dict[str, np.ndarray]:
    """condition -> (seeds, images) per-image MSE of one simulated study."""
    seed_sigma, noise_sigma, profile_sigma = REGIMES[regime]
    difficulty = rng.lognormal(math.log(0.02) - 0.125, 0.5, images)
    changes = {"real": 0.0, **{f"aa{k + 1}": 0.0 for k in range(N_AA)}, **CHANGES}
    return {name: difficulty * (1 + change) * lognormal(rng, profile_sigma, images)
            * lognormal(rng, seed_sigma, (seeds, 1)) * lognormal(rng, noise_sigma, (seeds, images))
            for name, change in changes.items()}


# ---- the method before issue 16, copied from analysis/stats.py at that commit, for contrast ------------

def _old_counts(rng, n_boot, n):
    draws = rng.integers(0, n, size=(n_boot, n))
    draws += (n * np.arange(n_boot))[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n)


def old_compare(condition: np.ndarray, real: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """rel, ci95 and p of the old hierarchical paired bootstrap (percentile interval on the log scale,
    seed deviations x sqrt(S/(S-1)), tails x t/z with Welch df of the log seed means)."""
    rng = np.random.default_rng(seed)
    n_images = real.shape[1]
    image_weights = _old_counts(rng, n_boot, n_images) / n_images
    inflated = []
    for runs in (condition, real):
        s = runs.shape[0]
        per_seed = image_weights @ runs.T
        seed_weights = _old_counts(rng, n_boot, s) / s
        centre = per_seed.mean(axis=1)
        drawn = np.einsum("bs,bs->b", seed_weights, per_seed)
        inflated.append(centre * (drawn / centre) ** math.sqrt(s / (s - 1)))
    corrected = inflated[0] / inflated[1] - 1
    rel = float(condition.mean() / real.mean() - 1)
    terms = [(np.log(r.mean(axis=1)).var(ddof=1) / r.shape[0], r.shape[0] - 1) for r in (condition, real)]
    total = sum(v for v, _ in terms)
    df = total**2 / sum(v**2 / k for v, k in terms if v > 0)
    stretch = float(scipy_stats.t.ppf(0.975, df) / 1.959963984540054)
    log_rel, log_corrected = math.log1p(rel), np.log1p(corrected)
    low, high = np.percentile(log_corrected, [2.5, 97.5])
    ci = np.expm1([log_rel - stretch * (log_rel - low), log_rel + stretch * (high - log_rel)])
    p = float(2 * scipy_stats.t.sf(abs(log_rel) / log_corrected.std(ddof=1), df))
    return {"rel_change_vs_real": rel, "ci95": [float(ci[0]), float(ci[1])], "p_value": p}


def new_compare(condition: np.ndarray, real: np.ndarray) -> dict:
    """`compare`'s interval and p (its `_log_ratio_test`, without the Wilcoxon reference test, which
    costs twice as much and decides nothing)."""
    rel = float(condition.mean() / real.mean() - 1)
    return {"rel_change_vs_real": rel, **stats._log_ratio_test(condition, real, rel)}


# ---- one cell ----------------------------------------------------------------------------------------

def called(result: dict, p_holm: float | None) -> bool:
    return stats.verdict(result["rel_change_vs_real"], result["ci95"], p_holm) != "no detectable difference"


def cell(regime: str, seeds: int, images: int, n_studies: int, method, rng, with_mde: bool,
         family10: bool = True) -> dict:
    names = ["aa1", "aa2", *CHANGES] + ([f"aa{k + 1}" for k in range(2, N_AA)] if family10 else [])
    aa_calls = aa_n = covered = cov_n = 0
    aa_per_study = []
    power = {(c, f): 0 for c in CHANGES for f in (1, 3, 10)}
    mdes = []
    for _ in range(n_studies):
        runs = study(rng, regime, seeds, images)
        results = {k: method(runs[k], runs["real"]) for k in names}
        truth = {k: CHANGES.get(k, 0.0) for k in names}
        for k, r in results.items():
            cov_n += 1
            covered += r["ci95"][0] <= truth[k] <= r["ci95"][1]
            if k.startswith("aa"):
                aa_n += 1
                aa_calls += called(r, r["p_value"])
        aa_per_study.append(np.mean([called(r, r["p_value"]) for k, r in results.items() if k.startswith("aa")]))
        for c in CHANGES:
            power[c, 1] += called(results[c], results[c]["p_value"]) and results[c]["ci95"][1] < 0
            for f, others in ((3, ["aa1", "aa2"]), (10, [f"aa{k + 1}" for k in range(N_AA)])):
                if f == 10 and not family10:
                    continue
                p_holm = stats.holm({k: results[k]["p_value"] for k in [c, *others]})[c]
                power[c, f] += called(results[c], p_holm) and results[c]["ci95"][1] < 0
        if with_mde and len(mdes) < 20:  # about 0.5 s each (its power is simulated): 20 studies a cell
            mdes.append(stats.sensitivity({k: runs[k] for k in ("real", "aa1", "aa2", "aa3")}, m=3)["mde_rel"])
    # the A/A comparisons of one study share its real runs: the standard error counts studies, not comparisons
    out = {"aa": aa_calls / aa_n, "aa_se": float(np.std(aa_per_study, ddof=1) / math.sqrt(n_studies)), "coverage": covered / cov_n,
           **{f"{c} {f}": (power[c, f] / n_studies if (f != 10 or family10) else None) for c, f in power}}
    out["mde"] = float(np.median(mdes)) if mdes else None
    return out


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 studies a cell (old: 30)")
    parser.add_argument("--studies", type=int, default=300, help="studies per cell, new method")
    parser.add_argument("--old-studies", type=int, default=150, help="studies per cell, old method (0: skip it)")
    parser.add_argument("--old-images", type=int, nargs="*", default=[64, 200], help="image counts run for the old method")
    parser.add_argument("--old-regimes", nargs="*", default=["seed", "image"], help="regimes run for the old method")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    if args.quick:
        args.studies, args.old_studies = 60, min(args.old_studies, 30)
    rng = np.random.default_rng(args.seed)
    header = ("| regime | seeds | images | method | studies | A/A calls % ± s.e. | coverage % | −5 %: 1 / Holm 3 / Holm 10 | "
              "−10 %: 1 / Holm 3 / Holm 10 | median MDE (m = 3) |")
    print(header)
    print("| --- " * 10 + "|")
    started = time.perf_counter()
    for regime in REGIMES:
        for seeds in (3, 5, 10):
            for images in (64, 200, 1000):
                rows = [("new", new_compare, args.studies, True, True)]
                if args.old_studies and images in args.old_images and regime in args.old_regimes:
                    rows.append(("old", old_compare, args.old_studies, False, False))
                for label, method, n, with_mde, family10 in rows:
                    r = cell(regime, seeds, images, n, method, rng, with_mde, family10)
                    powers = [" / ".join(pct(r[f"{c} {f}"]) for f in (1, 3, 10)) for c in CHANGES]
                    mde = "—" if r["mde"] is None else f"±{100 * r['mde']:.1f} %"
                    print(f"| {regime} | {seeds} | {images} | {label} | {n} | {pct(r['aa'])} ± {pct(r['aa_se'])} | {pct(r['coverage'])} | "
                          f"{powers[0]} | {powers[1]} | {mde} |", flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
