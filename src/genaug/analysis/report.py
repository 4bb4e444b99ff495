"""The report, rebuilt from stored stage outputs alone (`genaug report RUN_DIR` runs just this).

Writes at the top of the run directory: results.csv (long format), summary.json, report.md (figures
beside it in figures/) and report.html (the same content, figures embedded, one self-contained file).
"""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path

import numpy as np

from genaug import faults
from genaug.analysis import health, probes
from genaug.analysis.stats import compare, holm_by_family, no_verdict_reasons, seed_summary, settle
from genaug.errors import UserError
from genaug.study.store import MANIFEST, PLAN_FILE, PROVENANCE_FILE, load_plan, write_json_atomic, write_text_atomic


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunData:
    """Everything the report needs, read from the run directory through plan.json."""

    def __init__(self, run_dir: Path):
        self.root = run_dir
        if not (run_dir / PLAN_FILE).is_file():
            raise UserError(f"{run_dir}: no {PLAN_FILE} here; give a directory written by `genaug run`")
        self.steps = load_plan(run_dir)
        missing = [s["folder"] for s in self.steps if not (run_dir / s["folder"] / MANIFEST).is_file()]
        if missing:
            raise UserError(f"{run_dir / missing[0]}: stage output incomplete ({len(missing)} missing); "
                            "run `genaug run` with the same config to finish the study")
        self.config_text = (run_dir / "config.toml").read_text()

    def of(self, stage: str) -> list[dict]:
        return [s for s in self.steps if s["stage"] == stage]

    def generators(self) -> list[dict]:
        """Every step that made a synthetic set: trained generators and chains."""
        from genaug.generators.registry import SYNTHETIC_STAGES

        return [s for s in self.steps if s["stage"] in SYNTHETIC_STAGES]

    def path(self, step: dict) -> Path:
        return self.root / step["folder"]


def collect(run: RunData) -> tuple[dict, list[dict]]:
    """-> (per-modality arrays, long-format result rows)."""
    from genaug.study.outputs import read_per_image

    data: dict[str, dict] = {}
    rows: list[dict] = []
    train_loss = {s["name"]: _read_jsonl(run.path(s) / "log.jsonl") for s in run.of("mae")}
    for step in run.of("eval"):
        p = step["params"]
        table = read_per_image(run.path(step))
        block = data.setdefault(p["modality"], {"conditions": {}, "ids": table["image_id"], "night": table["night"]})
        if not np.array_equal(block["ids"], table["image_id"]):
            raise AssertionError(f"{step['folder']}: evaluated on different test images than its modality")
        if p["condition"] == "mean-predictor":
            block["baseline"] = table["masked_mse"].mean()
            block["floor"] = json.loads((run.path(step) / MANIFEST).read_text()).get("floor", "training-set mean")
            continue
        runs = block["conditions"].setdefault(p["condition"], {"mse": [], "psnr": [], "seeds": [], "eval": []})
        runs["mse"].append(table["masked_mse"])
        runs["psnr"].append(table["psnr"])
        runs["seeds"].append(p["seed"])
        runs["eval"].append(run.path(step))
        common = {"modality": p["modality"], "condition": p["condition"], "seed": p["seed"]}
        rows.append({**common, "split": "test", "metric": "masked_mse", "value": table["masked_mse"].mean()})
        rows.append({**common, "split": "test", "metric": "psnr", "value": table["psnr"].mean()})
        rows.append({**common, "split": "train", "metric": "final_loss", "value": train_loss[step["name"]][-1]["loss"]})
    for block in data.values():
        for runs in block["conditions"].values():
            runs["mse"], runs["psnr"] = np.stack(runs["mse"]), np.stack(runs["psnr"])
    return data, rows


def by_time_of_day(condition_mse: np.ndarray, real_mse: np.ndarray, night: list) -> dict:
    """The same comparison on the day and on the night test images, when the source says which is which
    (KAIST's sets, the scenes' tags) and both occur. Descriptive: not in the Holm family, no verdict."""
    if any(n is None for n in night) or all(night) or not any(night):
        return {}
    out = {}
    for name, wanted in (("day", False), ("night", True)):
        columns = np.array([n == wanted for n in night])
        result = compare(condition_mse[:, columns], real_mse[:, columns])
        out[name] = {k: result[k] for k in ("rel_change_vs_real", "ci95", "p_value")}
        out[name]["n_images"] = int(columns.sum())
    return {"by_time": out}


def summarize(data: dict, run: RunData) -> dict:
    split = json.loads((run.path(run.of("split")[0]) / MANIFEST).read_text())
    mae_runs = [json.loads((run.path(s) / MANIFEST).read_text()) for s in run.of("mae")]
    summary: dict = {"modalities": {}, "synthetic": {},
                     "budget": mae_runs[0].get("budget", "steps") if mae_runs else "steps",
                     "data": {k: split[k] for k in ("counts", "available", "modalities", "skipped_missing_partner",
                                                    "leakage_check", "notes", "resize", "image_size")}}
    steps = {(m["modality"], m["condition"]): m["steps"] for m in mae_runs}
    n_extra = {(m["modality"], m["condition"]): m["n_images"] - m["n_real"] for m in mae_runs}
    for modality, block in data.items():
        conditions = {}
        for condition, runs in block["conditions"].items():
            mse, psnr = seed_summary(runs["mse"]), seed_summary(runs["psnr"])
            entry = {"test_mse_mean": mse["mean"], "test_mse_std": mse["std"], "n_seeds": mse["n_seeds"],
                     "train_steps": steps.get((modality, condition)), "n_extra": n_extra.get((modality, condition)),
                     "test_psnr_mean": psnr["mean"], "test_psnr_std": psnr["std"],
                     "beats_mean_predictor": bool(mse["mean"] < block["baseline"])}
            if condition != "real" and "real" in block["conditions"]:
                real = block["conditions"]["real"]["mse"]
                entry.update(compare(runs["mse"], real))
                entry.update(by_time_of_day(runs["mse"], real, block["night"]))
            conditions[condition] = entry
        summary["modalities"][modality] = {
            "baseline_mean_predictor_mse": float(block["baseline"]),
            "floor": block.get("floor", "training-set mean"),
            "n_test_images": int(len(block["ids"])),
            "conditions": conditions,
        }
    settings = study_settings(run)
    summary["health"] = health.study_flags(run.root, run.steps)
    decide(summary, flagged_by_condition(summary["health"], run.steps), settings["on_unhealthy"])
    for modality, block in summary["modalities"].items():
        block["sensitivity"] = modality_sensitivity(data[modality], summary, settings["target_effect"])
    for step in run.generators():
        manifest = json.loads((run.path(step) / MANIFEST).read_text())
        quality = {"fidelity": manifest["fidelity"], "fidelity_real_train": manifest["fidelity_real_train"]}
        if "paired_quality" in manifest:
            quality["paired"] = manifest["paired_quality"]
        facts = {k: manifest[k] for k in ("sampler", "sample_steps", "weights", "sampled_at", "resized_to",
                                          "resize", "init", "translator") if k in manifest}
        summary["synthetic"].setdefault(manifest["modality"], {})[manifest["generator"]] = {
            "folder": step["folder"], "n_images": len(manifest["images"]),
            "seconds": manifest["seconds"],  # training and sampling
            "quality": quality, **facts,
        }
    return summary


def study_settings(run: RunData) -> dict:
    """The study settings the verdicts follow, from the run's config.toml (defaults for older runs)."""
    import tomllib

    study = tomllib.loads(run.config_text).get("study", {})
    return {"on_unhealthy": study.get("on_unhealthy", "flag"), "target_effect": study.get("target_effect", 0.05)}


def family(condition: str) -> str:
    """primary: the study's questions, each `real+gen:<generator>` against real; secondary: the controls
    and the ratio-sweep points, which check the method and shape the answer but are not the question."""
    return "primary" if condition.startswith("real+gen:") and "@" not in condition else "secondary"


def flagged_by_condition(flags: list[dict], steps: list[dict]) -> dict[tuple[str, str], list[str]]:
    """(modality, condition) -> the flagged runs its comparison rests on: its own seeds', and for a
    `real+gen` condition the generators its images came from (a chain's parts too), by the steps' inputs."""
    by_folder = {s["folder"]: s for s in steps}

    def upstream(step: dict) -> set[str]:
        names = {step["name"]}
        for folder in step.get("inputs", {}).values():
            if folder in by_folder and by_folder[folder]["stage"] != "split":
                names |= upstream(by_folder[folder])
        return names

    flagged = {f["run"] for f in flags}
    out: dict[tuple[str, str], list[str]] = {}
    for s in steps:
        if s["stage"] == "mae":
            runs = sorted(upstream(s) & flagged)
            if runs:
                out.setdefault((s["params"]["modality"], s["params"]["condition"]), []).extend(runs)
    return {k: sorted(set(v)) for k, v in out.items()}


MIN_SEEDS = 3  # fewer give an interval too unstable to decide on (and no seed variance at 1)


def decide(summary: dict, flagged: dict[tuple[str, str], list[str]], on_unhealthy: str) -> None:
    """Holm within each family (primary, secondary) of comparisons that have a p-value, then each
    comparison's verdict, or "no verdict" with the reason when the evidence cannot carry one: a condition
    (or real) that does not beat the floor, fewer than MIN_SEEDS seeds on a side, a degenerate input
    (`compare`'s own reason), or a flagged run when `study.on_unhealthy = "stop"`."""
    entries = {(m, c): e for m, block in summary["modalities"].items() for c, e in block["conditions"].items()
               if "p_value" in e}
    holm_by_family(entries, lambda key: family(key[1]))
    stop = bool(summary.get("health")) and on_unhealthy == "stop"
    for (modality, condition), e in entries.items():
        block = summary["modalities"][modality]
        reasons = no_verdict_reasons(condition, e, block["conditions"]["real"], MIN_SEEDS, "beats_mean_predictor",
                                     f"floor ({block['floor']})")
        e["flagged_runs"] = sorted(set(flagged.get((modality, condition), []) + flagged.get((modality, "real"), [])))
        if stop:
            reasons.append(f"{len(summary['health'])} run health flag(s) and study.on_unhealthy = 'stop'")
        settle(e, reasons)


def modality_sensitivity(block: dict, summary: dict, target: float) -> dict | None:
    """How small a change this modality's study could detect (80 % power, alpha 0.05 Holm-adjusted over
    the primary family, or the secondary one when the study has no primary question)."""
    from genaug.analysis.stats import sensitivity

    runs = {c: r["mse"] for c, r in block["conditions"].items()}
    if "real" not in runs:
        return None
    sizes = {e.get("family"): e.get("family_size", 0) for b in summary["modalities"].values()
             for e in b["conditions"].values() if e.get("family")}
    m = sizes.get("primary") or sizes.get("secondary") or 1
    return sensitivity(runs, m, target=target)


# ---------------------------------------------------------------------------------------------- figures


def _replace_when_written(path: Path, write) -> Path:
    """write(temporary path) then rename into place: a killed report leaves no half-written figure."""
    import os

    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    write(tmp)
    os.replace(tmp, path)
    return path


def _save_png(path: Path, picture: np.ndarray, scale: int) -> Path:
    from PIL import Image

    image = Image.fromarray(picture)
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return _replace_when_written(path, image.save)


def save_figure(fig, path: Path) -> Path:
    return _replace_when_written(path, lambda tmp: fig.savefig(tmp, dpi=110))


def figure_losses(run: RunData, out: Path) -> list[tuple[Path, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    maes = run.of("mae")
    modalities = sorted({s["params"]["modality"] for s in maes})
    fig, axes = plt.subplots(1, len(modalities), figsize=(5.5 * len(modalities), 3.6), squeeze=False)
    for ax, modality in zip(axes[0], modalities):
        curves: dict[str, list[list[dict]]] = {}  # condition -> one log per seed
        for step in (s for s in maes if s["params"]["modality"] == modality):
            curves.setdefault(step["params"]["condition"], []).append(_read_jsonl(run.path(step) / "log.jsonl"))
        for i, (condition, logs) in enumerate(curves.items()):
            length = min(len(log) for log in logs)
            x = [r["step"] for r in logs[0][:length]]
            y = np.array([[r["loss"] for r in log[:length]] for log in logs])
            ax.plot(x, y.mean(axis=0), color=f"C{i % 10}", label=f"{condition} (×{len(logs)})")
            ax.fill_between(x, y.min(axis=0), y.max(axis=0), color=f"C{i % 10}", alpha=0.2, lw=0)
        ax.set(title=f"MAE training loss, {modality}", xlabel="optimiser step", ylabel="masked MSE (normalised)",
               yscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "mae_training_loss.png")
    plt.close(fig)
    figures.append((out / "mae_training_loss.png", "MAE training loss: mean over seeds, band from the lowest to "
                    "the highest seed. Not comparable across conditions: a condition's loss includes its extra "
                    "images; compare the held-out table"))

    from genaug.generators.registry import TRAINED

    generators = [s for s in run.generators() if s["stage"] in TRAINED]  # a chain or a folder trains nothing
    if generators:
        fig, axes = plt.subplots(1, len(generators), figsize=(5.5 * len(generators), 3.6), squeeze=False)
        for ax, step in zip(axes[0], generators):
            log = _read_jsonl(run.path(step) / "log.jsonl")
            for name in (k for k in log[0] if k != "step"):
                ax.plot([r["step"] for r in log], [r[name] for r in log], label=name)
            ax.set(title=f"{step['params']['modality']} {step['params']['generator']} training loss",
                   xlabel="optimiser step")
            ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, out / "generator_training_loss.png")
        plt.close(fig)
        figures.append((out / "generator_training_loss.png", "Generator training losses"))
    return figures


def figure_effects(summary: dict, out: Path, name: str = "effects.png",
                   measure: str = "held-out MSE") -> list[tuple[Path, str]]:
    """One bar per condition: relative change in held-out MSE vs real with its 95 % interval, coloured
    by the verdict (green improvement, red harm, grey no detectable difference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = {m: {c: e for c, e in b["conditions"].items() if e.get("ci95") is not None}
              for m, b in summary["modalities"].items()}
    blocks = {m: b for m, b in blocks.items() if b}
    if not blocks:
        return []
    colours = {"improvement": "tab:green", "harm": "tab:red"}
    height = max(2.5, 0.45 * max(len(b) for b in blocks.values()) + 1.2)
    fig, axes = plt.subplots(1, len(blocks), figsize=(5.5 * len(blocks), height), squeeze=False)
    for ax, (modality, block) in zip(axes[0], blocks.items()):
        names = list(block)
        rel = [100 * block[n]["rel_change_vs_real"] for n in names]
        err = [[100 * (block[n]["rel_change_vs_real"] - block[n]["ci95"][0]) for n in names],
               [100 * (block[n]["ci95"][1] - block[n]["rel_change_vs_real"]) for n in names]]
        ax.barh(names, rel, xerr=err, capsize=3, color=[colours.get(block[n].get("verdict"), "tab:gray")
                                                        for n in names])
        ax.axvline(0, color="black", lw=0.8)
        ax.invert_yaxis()
        ax.set(title=f"{modality}: {measure} vs real", xlabel="% change, 95 % CI (left of 0 = better)")
    fig.tight_layout()
    save_figure(fig, out / name)
    plt.close(fig)
    return [(out / name, f"Relative change in {measure} against real, with 95 % intervals "
             "(one t on the log ratio, seeds and test images); green: improvement, red: harm, grey: no detectable "
             "difference or no verdict")]


def figure_sweep(summary: dict, out: Path) -> list[tuple[Path, str]]:
    """Relative change vs real (95 % interval) against the extra:real ratio, one line per condition that
    adds images, when the study swept ratios (conditions named <condition>@<ratio>)."""
    swept = {m: block for m, block in summary["modalities"].items() if any("@" in c for c in block["conditions"])}
    if not swept:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_train = summary["data"]["counts"]["train"]
    fig, axes = plt.subplots(1, len(swept), figsize=(5.5 * len(swept), 3.8), squeeze=False)
    for ax, (modality, block) in zip(axes[0], swept.items()):
        lines: dict[str, list[tuple[float, float, list | None]]] = {}
        for condition, c in block["conditions"].items():
            base = condition.split("@")[0]
            if c.get("n_extra") and c.get("rel_change_vs_real") is not None:
                lines.setdefault(base, []).append((c["n_extra"] / n_train, c["rel_change_vs_real"], c.get("ci95")))
        for i, (base, points) in enumerate(sorted(lines.items())):
            points = sorted([(0.0, 0.0, None), *points])
            x, y = [p[0] for p in points], [100 * p[1] for p in points]
            low = [0 if p[2] is None else 100 * (p[1] - p[2][0]) for p in points]
            high = [0 if p[2] is None else 100 * (p[2][1] - p[1]) for p in points]
            ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, color=f"C{i}", label=base)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(title=f"{modality}: change in held-out MSE vs real", xlabel="extra images : real images",
               ylabel="% change (95 % CI); below 0 = better")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "ratio_sweep.png")
    plt.close(fig)
    return [(out / "ratio_sweep.png", "Ratio sweep: each condition that adds images, trained with more or fewer of "
             "them (0 = real itself); points are relative changes in held-out masked MSE with 95 % intervals")]


def figure_samples(run: RunData, out: Path, n: int = 16) -> list[tuple[Path, str]]:
    from genaug.data.images import grid
    from genaug.study.plan import slug
    from genaug.study.outputs import load_split, load_synthetic

    split = load_split(run.path(run.of("split")[0]))
    figures = []
    for step in run.generators():
        modality = step["params"]["modality"]
        real = split["train"].modality(modality)[:n]
        fake = load_synthetic(run.path(step))[:n]
        rows = np.concatenate([grid(real, n), grid(fake, n)], axis=0)
        generator = step["params"]["generator"]
        path = _save_png(out / f"samples_{modality}_{slug(generator)}.png", rows, 3)
        figures.append((path, f"{modality}: real training frames (top) vs {generator} synthetic images (bottom)"))
    return figures


def figure_reconstructions(run: RunData, data: dict, out: Path) -> list[tuple[Path, str]]:
    from safetensors.torch import load_file

    from genaug.data.images import grid

    figures = []
    for modality, block in data.items():
        rows, labels = [], []
        for condition, runs in block["conditions"].items():
            first = int(np.argmin(runs["seeds"]))
            examples = load_file(runs["eval"][first] / "examples.safetensors")
            if not rows:
                rows += [grid(examples["original"], len(examples["original"])),
                         grid(examples["masked"], len(examples["masked"]))]
                labels += ["original", "masked (same mask for every model)"]
            rows.append(grid(examples["reconstruction"], len(examples["reconstruction"])))
            labels.append(f"{condition}, seed {runs['seeds'][first]}")
        path = _save_png(out / f"reconstructions_{modality}.png", np.concatenate(rows, axis=0), 3)
        figures.append((path, f"{modality} test images, rows top to bottom: " + "; ".join(labels)))
    return figures


# ----------------------------------------------------------------------------------------------- writers


def write_results_csv(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["modality", "condition", "seed", "split", "metric", "value"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "value": f"{row['value']:.8g}"})
    tmp.replace(path)


def mean_std(mean: float, std: float | None, digits: int) -> str:
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def results_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    header = ["modality", "condition", "seeds", "test MSE (mean ± std)", "PSNR dB", "vs real", "95% CI",
              "p", "p (Holm)", "verdict", "p (Wilcoxon, images; reference)", "beats floor"]
    rows = []
    for modality, block in summary["modalities"].items():
        for condition, c in block["conditions"].items():
            rel, ci = c.get("rel_change_vs_real"), c.get("ci95")
            fmt = lambda key: "—" if c.get(key) is None else f"{c[key]:.3g}"
            rows.append([
                modality, condition, str(c["n_seeds"]), mean_std(c["test_mse_mean"], c["test_mse_std"], 5),
                mean_std(c["test_psnr_mean"], c["test_psnr_std"], 2),
                "—" if rel is None else f"{rel:+.1%}", "—" if ci is None else f"[{ci[0]:+.1%}, {ci[1]:+.1%}]",
                fmt("p_value"), fmt("p_holm"), c.get("verdict", "—"), fmt("wilcoxon_p_images"),
                "yes" if c["beats_mean_predictor"] else "NO",
            ])
        rows.append([modality, f"floor: {block['floor']}", "—", f"{block['baseline_mean_predictor_mse']:.5f}",
                     *["—"] * 8])
    return header, rows


def verdicts(summary: dict) -> list[str]:
    """One line per comparison with real: the verdict with its interval, or "no verdict" with the reason
    (the figures still shown); each "no detectable difference" with what the study could have detected."""
    words = {"improvement": "lowers the held-out error (an improvement)",
             "harm": "raises the held-out error (harm)",
             "no detectable difference": "no detectable difference in the held-out error"}
    lines = []
    for modality, block in summary["modalities"].items():
        mde = (block.get("sensitivity") or {}).get("mde_rel")
        for condition, c in block["conditions"].items():
            if condition == "real" or "p_value" not in c:
                continue
            shape = f"{c['n_seeds']} seeds × {block['n_test_images']} test images"
            ci = "" if c["ci95"] is None else f" [{c['ci95'][0]:+.1%}, {c['ci95'][1]:+.1%}]"
            p = "" if c["p_value"] is None else f", p = {c['p_value']:.3g} (Holm {c['p_holm']:.3g} of {c['family_size']})"
            rel = "—" if c["rel_change_vs_real"] is None else f"{c['rel_change_vs_real']:+.1%}"
            figures = f"{rel}{ci}{p}, {shape}"
            if c["verdict"] == "no verdict":
                line = f"{modality}, {condition}: no verdict ({c['no_verdict_reason']}): {figures}."
            else:
                line = f"{modality}, {condition}: {words[c['verdict']]}: {figures}"
                if c["verdict"] == "no detectable difference" and mde is not None:
                    line += f"; this study could have detected ±{mde:.1%}"
                line += "."
            if c["family"] == "secondary":
                line += " (Secondary: a control or sweep point, corrected within its own family.)"
            if c.get("flagged_runs"):
                line += f" Rests on flagged runs: {', '.join(c['flagged_runs'])} (see Run health)."
            lines.append(line)
        failed = [k for k, c in block["conditions"].items() if not c["beats_mean_predictor"]]
        if failed:
            lines.append(f"WARNING {modality}: {', '.join(failed)} did not beat the floor ({block['floor']}); "
                         "the MAEs have not learned enough for a comparison (train longer).")
    return lines


def sensitivity_lines(summary: dict) -> list[str]:
    lines = []
    for modality, block in summary["modalities"].items():
        s = block.get("sensitivity")
        if not s or s.get("mde_rel") is None:
            continue
        more = (f"{s['seeds_for_target']} seeds per condition would detect ±{s['target_effect']:.0%}"
                if s.get("seeds_for_target") is not None else
                f"no number of seeds detects ±{s['target_effect']:.0%} with these {block['n_test_images']} test "
                "images: add test images")
        lines.append(f"{modality}: with {s['n_seeds']} seeds per condition this study detects a change of "
                     f"±{s['mde_rel']:.1%} in the held-out error with 80 % power at alpha {s['alpha_adjusted']:.3g} "
                     f"(0.05 Holm-adjusted, strictest step); {more}.")
    return lines


def health_blocks(summary: dict, run: RunData, out: Path) -> list[tuple]:
    """The "Run health" section: the rules, every flag, and each flagged run's loss beside its siblings'."""
    flags = summary["health"]
    rules = ("ul", health.RULES)
    if not flags:
        return [("h2", "Run health"), ("p", "No run was flagged by the rules below."), rules]
    rows = [[f["stage"], f["run"], f["kind"], f["evidence"]] for f in flags]
    return [("h2", "Run health"),
            ("p", f"{len(flags)} flag(s). A flagged run is kept in every number of this report; the verdicts "
                  "name the comparisons that rest on it, and study.on_unhealthy = 'stop' withholds them."),
            ("table", ["stage", "run", "kind", "evidence"], rows), rules,
            *(("img", path, caption) for path, caption in figure_health(flags, run, out))]


def figure_health(flags: list[dict], run: RunData, out: Path) -> list[tuple[Path, str]]:
    """One panel per flagged run: its watched training loss (red) over its sibling seeds' (grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_name = {s["name"]: s for s in run.steps if s["stage"] in health.WATCHED}  # the trained runs
    runs = list(dict.fromkeys(f["run"] for f in flags if f["run"] in by_name))
    if not runs:
        return []
    fig, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.2), squeeze=False)
    for ax, name in zip(axes[0], runs):
        step = by_name[name]
        stage, p = step["stage"], step["params"]
        siblings = [s for s in run.steps if s["stage"] == stage and s["name"] != name
                    and s["params"].get("modality") == p.get("modality")
                    and s["params"].get("condition") == p.get("condition")]
        for s in siblings:
            rows = health.read_log(run.path(s) / "log.jsonl")
            ax.plot([r["step"] for r in rows], health.curve(stage, rows), color="grey", lw=0.8, alpha=0.7)
        rows = health.read_log(run.path(step) / "log.jsonl")
        ax.plot([r["step"] for r in rows], health.curve(stage, rows), color="tab:red", lw=1.6, label=name)
        ax.set(title=f"{stage} {name}"[:60], xlabel="optimiser step", ylabel=health.WATCHED[stage], yscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = save_figure(fig, out / "run_health.png")
    plt.close(fig)
    return [(path, "Each flagged run's training loss (red) beside the other seeds of its condition (grey)")]


def provenance_blocks(run: RunData) -> list[tuple]:
    path = run.root / PROVENANCE_FILE
    if not path.is_file():
        return []
    facts = json.loads(path.read_text())
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items())
    return [("h2", "How this was produced"),
            ("ul", [f"Command: {facts['command']} (the last run that completed the study; its config.toml is below)",
                    f"Versions: {versions}; Python {facts['python']}",
                    f"Machine: {facts['device']}; {facts['platform']}; finished {facts['finished']}",
                    *thread_lines(facts)])]


def thread_lines(facts: dict) -> list[str]:
    """How many CPU threads the steps ran with: results repeat bit for bit on the CPU only with the same."""
    per_step = facts.get("threads_per_step")
    if not per_step:
        return []
    counts: dict[int, int] = {}
    for threads in per_step.values():
        counts[threads] = counts.get(threads, 0) + 1
    spread = ", ".join(f"{threads} thread{'s' * (threads != 1)} for {n} step{'s' * (n != 1)}"
                       for threads, n in sorted(counts.items()))
    return [f"CPU threads: {spread} (provenance.json lists each step's)"]


def timeline_blocks(run: RunData, out: Path) -> list[tuple]:
    """Where the study's time went: a table per stage and a timeline of every step (parallel lanes)."""
    from genaug.analysis import timeline

    manifests = [json.loads((run.path(s) / MANIFEST).read_text()) for s in run.steps]
    spans, cuts = timeline.spans(manifests)
    if not spans:
        return []
    path = timeline.figure(spans, cuts, out / "timeline.png", save_figure)
    lanes = max(s.lane for s in spans) + 1
    left_out = len(manifests) - len(spans)
    return [("h2", "Where the time went"),
            ("p", f"Wall time of each stage while any of its steps was building ({len(spans)} steps"
                  + (f"; {left_out} built before genaug recorded step times are left out" if left_out else "")
                  + f"; at most {lanes} at once). The summed step time exceeds the wall time when steps ran "
                  "side by side. The report itself is not included."),
            ("table", *timeline.table(spans)),
            ("img", path, "Every step of the study on the wall clock, coloured by stage; one row per lane of "
                          "steps that ran at the same time")]


def time_of_day_blocks(summary: dict) -> list[tuple]:
    rows = []
    for modality, block in summary["modalities"].items():
        for condition, c in block["conditions"].items():
            if "by_time" in c:
                rows.append([modality, condition, *(
                    ("—" if t["ci95"] is None else
                     f"{t['rel_change_vs_real']:+.1%} [{t['ci95'][0]:+.1%}, {t['ci95'][1]:+.1%}]") + f" (n {t['n_images']})"
                    for t in (c["by_time"]["day"], c["by_time"]["night"]))])
    if not rows:
        return []
    return [("h2", "Day and night"),
            ("p", "The comparison with real on the day and on the night test images separately (same test). "
                  "Descriptive: these subsets are not in the Holm family and carry no verdict of their own."),
            ("table", ["modality", "condition", "day: vs real [95% CI]", "night: vs real [95% CI]"], rows)]


def paper_table(run: RunData, summary: dict) -> list[tuple]:
    """The seed paper's own statistic for every condition, in its own clearly labelled table (the numbers
    also go into summary["paper_statistic"])."""
    import tomllib

    from genaug.analysis.stats import paper_statistic

    cut = tomllib.loads(run.config_text)["eval"]["paper_epochs_dropped"]
    runs: dict[tuple[str, str], list[list[float]]] = {}
    for step in run.of("mae"):
        p = step["params"]
        path = run.path(step) / "epoch_loss.json"
        if not path.is_file():  # a run directory from before this table existed
            continue
        losses = json.loads(path.read_text())["epoch_mean_loss"]
        runs.setdefault((p["modality"], p["condition"]), []).append(losses)
    rows, entries = [], {}
    for (modality, condition), epoch_losses in runs.items():
        if min(len(losses) for losses in epoch_losses) <= cut:
            rows.append([modality, condition, "—", f"fewer than {cut + 1} complete epochs"])
            continue
        stat = paper_statistic(epoch_losses, cut)
        entries.setdefault(modality, {})[condition] = stat
        rows.append([modality, condition, str(stat["n_runs"]), f"{stat['mean']:.4f} ± {stat['std']:.4f}"])
    summary["paper_statistic"] = entries
    if not rows:
        return []
    return [("h2", "The seed paper's statistic (for comparison with it; not a verdict)"),
            ("p", f"What the paper reported: the mean ± std across epochs of each run's per-epoch mean "
                  f"TRAINING loss, the first {cut} epoch(s) dropped (one cut for every run, where the paper "
                  "chose a cut per run), averaged over seeds here. It is a training loss: a condition with "
                  "extra images is scored on those images too, and nothing is held out; its std is "
                  "epoch-to-epoch wobble, not seed-to-seed spread. Use the held-out results above."),
            ("table", ["modality", "condition", "runs", "training loss, mean ± std over epochs"], rows)]


def quality_blocks(summary: dict) -> list[tuple]:
    """FD/KID of every synthetic set (and of real training frames: the floor), then translator scores."""
    fidelity_rows, paired_rows, spaces = [], [], set()
    for modality, generators in summary["synthetic"].items():
        reference = None
        for name, entry in generators.items():
            q = entry["quality"]
            f = q["fidelity"]
            spaces.add(f["feature_space"])
            fidelity_rows.append([modality, name, str(f["n_generated"]), f"{f['fd']:.2f}",
                                  f"{f['kid_mean'] * 1e3:.2f} ± {f['kid_std'] * 1e3:.2f}"])
            reference = q["fidelity_real_train"]
            if "paired" in q:
                for label, scores in ((name, q["paired"]["translated"]),
                                      ("grayscale of the RGB input", q["paired"]["grayscale_baseline"])):
                    paired_rows.append([modality, label, f"{scores['l1']:.4f}", f"{scores['psnr']:.2f}",
                                        f"{scores['ssim']:.3f}"])
        if reference is not None:
            fidelity_rows.append([modality, "real training frames (floor)", str(reference["n_generated"]),
                                  f"{reference['fd']:.2f}",
                                  f"{reference['kid_mean'] * 1e3:.2f} ± {reference['kid_std'] * 1e3:.2f}"])
    if not fidelity_rows:
        return []
    blocks = [("h2", "Synthetic image quality"),
              ("p", "Fréchet distance (FD) and kernel distance (KID × 1000, mean ± std over subsets) of each "
                    f"synthetic set against the held-out real test images, in the feature space: "
                    f"{'; '.join(sorted(spaces))}. Lower is closer. The last row of each modality scores "
                    "real training frames the same way: the value a perfect generator would reach. Numbers "
                    "from different feature spaces or set sizes are not comparable."),
              ("table", ["modality", "images", "n", "FD", "KID × 1000"], fidelity_rows)]
    if paired_rows:
        blocks += [("p", "Translated thermal vs the real thermal frame on the held-out test pairs (no generator "
                         "saw them), beside the grey of the RGB input, which a useful translator must beat."),
                   ("table", ["modality", "images", "L1 (lower better)", "PSNR dB", "SSIM"], paired_rows)]
    return blocks


def data_lines(data: dict) -> list[str]:
    counts = data["counts"]
    return [
        f"Test {counts['test']}, MAE training {counts['train']}, generator pool {counts['pool']} frames "
        f"(drawn from {', '.join(f'{v} {k}' for k, v in data['available'].items())}); "
        f"{data['image_size']}² pixels, resize policy '{data['resize']}'.",
        f"Leakage check {data['leakage_check']}.",
        f"Frames skipped for a missing partner image: {data['skipped_missing_partner']}.",
        *data["notes"],
    ]


BUDGET_TEXT = {
    "steps": "Conditions train for the same number of optimiser steps, so a condition with extra images sees "
             "more distinct images, not more updates.",
    "epochs": "CONFOUNDED BUDGET: conditions train for the same number of epochs (the seed paper's protocol), "
              "so a condition with extra images also takes more optimiser steps; a difference may come from the "
              "extra steps rather than from the images (real-x2, the same images repeated, measures that).",
}


def method_text(summary: dict) -> str:
    """How the intervals and verdicts were computed, naming exactly which comparisons share a Holm family."""
    members: dict[str, list[str]] = {"primary": [], "secondary": []}
    methods = []
    for modality, block in summary["modalities"].items():
        for condition, c in block["conditions"].items():
            if "family" in c:
                members[c["family"]].append(f"{modality} {condition}")
                methods.append(c["ci_method"])
    if not methods:
        return "No condition is compared with real in this study."
    listed = {k: ", ".join(v) if v else "none" for k, v in members.items()}
    return (f"Each relative change vs real has a 95 % interval and a p-value from one computation: "
            f"{max(set(methods), key=methods.count)}. Holm correction runs within two families: the primary "
            f"questions, each real+gen:<generator> against real ({listed['primary']}), and, separately, the "
            f"secondary analyses, the controls and ratio-sweep points ({listed['secondary']}); day/night "
            "splits are descriptive. A verdict of improvement or harm needs the whole interval on one side "
            f"of zero and a Holm p below 0.05, at least {MIN_SEEDS} seeds on both sides, both beating the floor, "
            "and, with study.on_unhealthy = 'stop', no flagged run. The Wilcoxon test over test images ignores "
            "seed-to-seed variation and is shown for reference only.")


def probe_summary(summary: dict) -> dict:
    """modality -> task -> the probe's block, for the modalities that were probed."""
    return {m: block["probe"] for m, block in summary["modalities"].items() if block.get("probe")}


def representation_blocks(summary: dict, probe_data: dict, run: RunData, out: Path) -> list[tuple]:
    """The "Representations" section: the probe verdicts, the table with its floors, an effects chart and
    reconstruction error against probe accuracy for every run."""
    probe = probe_summary(summary)
    if not probe:
        return []
    pseudo = {"modalities": {f"{m} {task}": {"conditions": b["conditions"]} for m, tasks in probe.items()
                             for task, b in tasks.items()}}
    pictures = [*figure_effects(pseudo, out, "probe_effects.png", "linear-probe log-loss"),
                *probes.figure_scatter(probe, probe_data, run.root, run.steps, out, save_figure)]
    return [("h2", "Representations"),
            ("p", "Does the condition make the encoder's features better? Each MAE's frozen encoder (no masking, "
                  "patch tokens mean-pooled) is probed on the source's labels: a logistic regression on "
                  "standardised features and a kNN (cosine, probe.knn_k neighbours), trained on the real "
                  "training images and scored on the test images. The verdict is the same paired test as for "
                  "reconstruction on each test image's log-loss under the linear probe (lower is better), Holm-"
                  "corrected within the probe's own primary and secondary families. Floors: the same probes on "
                  "a random-init encoder of the same architecture (and the pretrained one, untrained)."),
            ("ul", probes.verdict_lines(probe)),
            ("table", *probes.table(probe)),
            *(("img", path, caption) for path, caption in pictures)]


def sections(summary: dict, figures: dict[str, list[tuple[Path, str]]], run: RunData, timing: list[tuple],
             run_health: list[tuple], representations: list[tuple]) -> list[tuple]:
    header, rows = results_rows(summary)
    return [
        ("h1", "genaug study report"),
        ("p", "Every MAE is evaluated on the same held-out real test images with the same fixed mask per "
              "image (derived from the image id and the evaluation seed). Errors are the mean squared "
              "error over masked pixels in [0, 1] pixel space; PSNR is the same error in decibels over "
              "the full reconstruction (visible pixels as given, masked ones predicted). "
              + BUDGET_TEXT[summary["budget"]] + " " + method_text(summary)),
        ("h2", "Verdict"),
        ("ul", verdicts(summary)),
        ("h2", "Sensitivity"),
        ("ul", sensitivity_lines(summary) or ["Not computed: no modality has a real condition with seeds."]),
        *run_health,
        ("h2", "Data"),
        ("ul", data_lines(summary["data"])),
        ("h2", "Results"),
        ("table", header, rows),
        *representations,
        *time_of_day_blocks(summary),
        *paper_table(run, summary),
        *quality_blocks(summary),
        *[block for title, group in figures.items() if group for block in
          [("h2", title), *(("img", path, caption) for path, caption in group)]],
        *timing,
        *provenance_blocks(run),
        ("h2", "Configuration"),
        ("pre", run.config_text),
    ]


def render_md(blocks: list[tuple], base: Path) -> str:
    out = []
    for kind, *args in blocks:
        if kind == "h1":
            out.append(f"# {args[0]}\n")
        elif kind == "h2":
            out.append(f"## {args[0]}\n")
        elif kind == "p":
            out.append(args[0] + "\n")
        elif kind == "ul":
            out.append("\n".join(f"- {line}" for line in args[0]) + "\n")
        elif kind == "table":
            header, rows = args
            out.append("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
            out.extend("| " + " | ".join(row) + " |" for row in rows)
            out.append("")
        elif kind == "img":
            out.append(f"![{args[1]}]({args[0].relative_to(base)})\n\n*{args[1]}*\n")
        elif kind == "pre":
            out.append("```toml\n" + args[0].rstrip() + "\n```\n")
    return "\n".join(out)


def render_html(blocks: list[tuple]) -> str:
    body = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{html.escape(args[0])}</{kind}>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in args[0]) + "</ul>")
        elif kind == "table":
            header, rows = args
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(args[0].read_bytes()).decode()
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(args[1])}">'
                        f"<figcaption>{html.escape(args[1])}</figcaption></figure>")
        elif kind == "pre":
            body.append(f"<details><summary>config.toml</summary><pre>{html.escape(args[0])}</pre></details>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "th{background:#f3f3f3}img{max-width:100%;image-rendering:pixelated}figure{margin:1.5em 0}"
             "figcaption{color:#555;font-size:90%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>genaug report</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


def build_report(run_dir: Path) -> dict:
    """Read every stage output of the run's plan and write the report files. -> summary dict."""
    run = RunData(Path(run_dir))
    data, rows = collect(run)
    summary = summarize(data, run)
    probe_data, probe_rows = probes.collect(run.root, run.steps)
    for modality, tasks in probes.summarize(probe_data, MIN_SEEDS, family).items():
        summary["modalities"][modality]["probe"] = tasks
    rows += probe_rows
    figures_dir = run.root / "figures"
    figures_dir.mkdir(exist_ok=True)
    figures = {
        "Effects": figure_effects(summary, figures_dir),
        "Ratio sweep": figure_sweep(summary, figures_dir),
        "Synthetic images": figure_samples(run, figures_dir),
        "Reconstructions": figure_reconstructions(run, data, figures_dir),
        "Training": figure_losses(run, figures_dir),
    }
    blocks = sections(summary, figures, run, timeline_blocks(run, figures_dir),
                      health_blocks(summary, run, figures_dir),
                      representation_blocks(summary, probe_data, run, figures_dir))
    write_results_csv(run.root / "results.csv", rows)
    write_json_atomic(run.root / "summary.json", summary)
    faults.point("report")
    write_text_atomic(run.root / "report.md", render_md(blocks, run.root))
    write_text_atomic(run.root / "report.html", render_html(blocks))
    return summary
