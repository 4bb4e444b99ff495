"""Representations: do the synthetic images make the MAE's features better, not only its reconstructions?

Every MAE's frozen encoder is probed (study/stages.py `run_probe`, genaug/probe.py): a logistic
regression and a kNN on the real training images' features, scored on the test images. The verdict
statistic is the same paired test as for reconstruction (`stats.compare`) on the per-test-image
log-loss of the linear probe, (seeds, test images) per condition: lower is better, as for the masked
MSE. Balanced accuracy, AUROC and the kNN's balanced accuracy are reported beside it. Floors: the same
probes on a random-init encoder of the same architecture (and the pretrained one, untrained).
Holm runs within the probe family, split like the reconstruction's: primary (real+gen) and secondary.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from genaug.analysis.stats import compare, holm_by_family, no_verdict_reasons, settle
from genaug.study.store import MANIFEST

METRICS = (("balanced_accuracy", "linear", "balanced_accuracy"), ("auroc", "linear", "auroc"),
           ("knn_balanced_accuracy", "knn", "balanced_accuracy"))


def read_per_image(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """task -> column -> (test images,) from a probe step's per_image.csv, in the file's (test) order."""
    out: dict[str, dict[str, list]] = {}
    with open(folder / "per_image.csv", newline="") as f:
        for row in csv.DictReader(f):
            columns = out.setdefault(row.pop("task"), {})
            for key, value in row.items():
                columns.setdefault(key, []).append(value if key == "image_id" else float(value))
    return {task: {k: (v if k == "image_id" else np.array(v)) for k, v in cols.items()} for task, cols in out.items()}


def collect(root: Path, steps: list[dict]) -> tuple[dict, list[dict]]:
    """-> ({modality: {task: {"runs": {condition: {...}}, "floors": {floor: metrics}}}}, result rows)."""
    data: dict[str, dict] = {}
    rows: list[dict] = []
    for step in (s for s in steps if s["stage"] == "probe"):
        p = step["params"]
        folder = root / step["folder"]
        manifest = json.loads((folder / MANIFEST).read_text())
        per_image = read_per_image(folder)
        for task, metrics in manifest["metrics"].items():
            block = data.setdefault(p["modality"], {}).setdefault(task, {"runs": {}, "floors": {}})
            if "seed" not in p:  # a floor
                block["floors"][p["condition"]] = metrics
                continue
            runs = block["runs"].setdefault(p["condition"], {"log_loss": [], "seeds": [], "names": [], "metrics": []})
            runs["log_loss"].append(per_image[task]["linear_log_loss"])
            runs["seeds"].append(p["seed"])
            runs["names"].append(step["name"])
            runs["metrics"].append(metrics)
            for key, kind, metric in METRICS:
                if metrics[kind].get(metric) is not None:
                    rows.append({"modality": p["modality"], "condition": p["condition"], "seed": p["seed"],
                                 "split": "test", "metric": f"probe_{task}_{key}", "value": metrics[kind][metric]})
    for tasks in data.values():
        for block in tasks.values():
            for runs in block["runs"].values():
                runs["log_loss"] = np.stack(runs["log_loss"])
    return data, rows


def _mean_std(values: list) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def summarize(data: dict, min_seeds: int, family) -> dict:
    """modality -> task -> {"conditions": {name: entry}, "floors": {floor: metrics}}, verdicts decided:
    Holm within the probe's primary and secondary families (`family(condition)`), "no verdict" with the
    reason for fewer than `min_seeds` seeds, a side not above the random-init floor's balanced accuracy,
    or compare's own reason."""
    out: dict[str, dict] = {}
    for modality, tasks in data.items():
        for task, block in tasks.items():
            floor = block["floors"].get("random-init", {}).get("linear", {}).get("balanced_accuracy")
            conditions = {}
            for condition, runs in block["runs"].items():
                entry = {"n_seeds": len(runs["seeds"])}
                for key, kind, metric in METRICS:
                    mean, std = _mean_std([m[kind].get(metric) for m in runs["metrics"]])
                    entry[f"{key}_mean"] = mean
                    if key == "balanced_accuracy":
                        entry[f"{key}_std"] = std
                entry["log_loss_mean"] = float(runs["log_loss"].mean())
                entry["beats_random_init"] = (None if floor is None or entry["balanced_accuracy_mean"] is None
                                              else bool(entry["balanced_accuracy_mean"] > floor))
                if condition != "real" and "real" in block["runs"]:
                    result = compare(runs["log_loss"], block["runs"]["real"]["log_loss"])
                    entry.update({k: result[k] for k in ("rel_change_vs_real", "ci95", "p_value", "ci_method",
                                                         "no_verdict_reason")})
                conditions[condition] = entry
            out.setdefault(modality, {})[task] = {"conditions": conditions, "floors": block["floors"],
                                                  "random_init_balanced_accuracy": floor}
    entries = {(m, t, c): e for m, tasks in out.items() for t, b in tasks.items() for c, e in b["conditions"].items()
               if "p_value" in e}
    holm_by_family(entries, lambda key: family(key[2]))
    for (modality, task, condition), e in entries.items():
        real = out[modality][task]["conditions"]["real"]
        settle(e, no_verdict_reasons(condition, e, real, min_seeds, "beats_random_init", "random-init floor"))
    return out


WORDS = {"improvement": "better features: lowers the probe's test log-loss",
         "harm": "worse features: raises the probe's test log-loss",
         "no detectable difference": "no detectable difference in the probe's test log-loss"}


def verdict_lines(probe: dict) -> list[str]:
    lines = []
    for modality, tasks in probe.items():
        for task, block in tasks.items():
            for condition, c in block["conditions"].items():
                if "p_value" not in c:
                    continue
                ci = "" if c["ci95"] is None else f" [{c['ci95'][0]:+.1%}, {c['ci95'][1]:+.1%}]"
                p = "" if c["p_value"] is None else f", p = {c['p_value']:.3g} (Holm {c['p_holm']:.3g})"
                rel = "—" if c["rel_change_vs_real"] is None else f"{c['rel_change_vs_real']:+.1%}"
                head = f"probe {modality} {task}, {condition}: "
                body = f"{rel}{ci}{p}, balanced accuracy {_pct(c['balanced_accuracy_mean'])} vs real " \
                       f"{_pct(block['conditions']['real']['balanced_accuracy_mean'])}"
                if c["verdict"] == "no verdict":
                    lines.append(f"{head}no verdict ({c['no_verdict_reason']}): {body}.")
                else:
                    lines.append(f"{head}{WORDS[c['verdict']]}: {body}.")
            real = block["conditions"].get("real", {})
            if real.get("beats_random_init"):  # the probe's known answer, stated when it holds
                lines.append(f"probe {modality} {task}: real's features beat a random-init encoder's (balanced "
                             f"accuracy {_pct(real['balanced_accuracy_mean'])} vs "
                             f"{_pct(block['random_init_balanced_accuracy'])})")
            for condition, c in block["conditions"].items():
                if c["beats_random_init"] is False:
                    lines.append(f"WARNING probe {modality} {task}: {condition}'s features are no better than a "
                                 f"random-init encoder's (balanced accuracy {_pct(c['balanced_accuracy_mean'])} vs "
                                 f"{_pct(block['random_init_balanced_accuracy'])})")
    return lines


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def table(probe: dict) -> tuple[list[str], list[list[str]]]:
    header = ["modality", "task", "condition", "seeds", "balanced acc. (mean ± std)", "AUROC", "kNN balanced acc.",
              "log-loss vs real", "95% CI", "p (Holm)", "verdict"]
    rows = []
    for modality, tasks in probe.items():
        for task, block in tasks.items():
            for condition, c in block["conditions"].items():
                std = "" if c["balanced_accuracy_std"] is None else f" ± {c['balanced_accuracy_std']:.1%}"
                rel, ci = c.get("rel_change_vs_real"), c.get("ci95")
                rows.append([modality, task, condition, str(c["n_seeds"]), _pct(c["balanced_accuracy_mean"]) + std,
                             "—" if c["auroc_mean"] is None else f"{c['auroc_mean']:.3f}",
                             _pct(c["knn_balanced_accuracy_mean"]), "—" if rel is None else f"{rel:+.1%}",
                             "—" if ci is None else f"[{ci[0]:+.1%}, {ci[1]:+.1%}]",
                             "—" if c.get("p_holm") is None else f"{c['p_holm']:.3g}", c.get("verdict", "—")])
            for floor, metrics in block["floors"].items():
                auroc = metrics["linear"].get("auroc")
                rows.append([modality, task, f"floor: {floor} encoder", "1", _pct(metrics["linear"].get("balanced_accuracy")),
                             "—" if auroc is None else f"{auroc:.3f}", _pct(metrics["knn"].get("balanced_accuracy")),
                             "—", "—", "—", "—"])
    return header, rows


def figure_scatter(probe: dict, data: dict, root: Path, steps: list[dict], out: Path, save_figure) -> list[tuple[Path, str]]:
    """Every MAE run: its held-out reconstruction MSE against its linear probe's balanced accuracy, one
    panel per modality and task, with Spearman's rank correlation: does the paper's metric track the
    features?"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import spearmanr

    mse = {s["name"]: json.loads((root / s["folder"] / MANIFEST).read_text())["masked_mse"]
           for s in steps if s["stage"] == "eval" and "seed" in s["params"]}
    panels = [(m, t, b) for m, tasks in probe.items() for t, b in tasks.items()]
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    captions = []
    for ax, (modality, task, block) in zip(axes[0], panels):
        xs, ys = [], []
        for i, (condition, c) in enumerate(block["conditions"].items()):
            runs = data[modality][task]["runs"][condition]
            pairs = [(mse[name], m["linear"].get("balanced_accuracy")) for name, m in zip(runs["names"], runs["metrics"])]
            pairs = [(a, b) for a, b in pairs if b is not None]  # a probe without two training classes has none
            x, y = [a for a, _ in pairs], [b for _, b in pairs]
            ax.scatter(x, y, color=f"C{i % 10}", label=condition, s=18)
            xs += x
            ys += y
        rho = spearmanr(xs, ys).statistic if len(xs) > 2 and len(set(xs)) > 1 and len(set(ys)) > 1 else None
        block["spearman_mse_vs_balanced_accuracy"] = None if rho is None or np.isnan(rho) else float(rho)
        title = f"{modality}, {task}" + ("" if block["spearman_mse_vs_balanced_accuracy"] is None
                                          else f": Spearman ρ = {rho:+.2f}")
        ax.set(title=title, xlabel="held-out masked MSE (lower better)", ylabel="linear probe balanced accuracy")
        ax.legend(fontsize=7)
        captions.append(title)
    fig.tight_layout()
    path = save_figure(fig, out / "probe_vs_reconstruction.png")
    plt.close(fig)
    return [(path, "Every MAE run: reconstruction error against its linear probe's balanced accuracy ("
             + "; ".join(captions) + "). A negative ρ: runs that reconstruct better also have better features")]
