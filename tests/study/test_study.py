"""The spine end to end at micro size: files, summary keys, learning, caching, bad input."""

import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from genaug.cli import app
from genaug.config import load_config
from genaug.study.plan import make_plan

# Micro study: every stage runs for real, just small. Chosen so each MAE clearly beats the mean
# predictor while the whole run stays well under a minute on 2 cores.
MICRO = [
    "data.n_pool=48", "data.n_train=48", "data.n_test=16", "data.scenes.n_frames=120",
    "ddpm.block_out_channels=[16, 32]", "ddpm.steps=6", "ddpm.sample_steps=3",
    "cyclegan.ngf=8", "cyclegan.ndf=8", "cyclegan.n_blocks=1", "cyclegan.d_layers=1", "cyclegan.steps=6",
    "mae.preset=micro", "mae.steps=60", "mae.lr=0.003", "mae.warmup_steps=5",
    "study.seeds=[0, 1]", "study.n_synthetic=16", "runtime.log_every=5",
]
runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def overrides(extra=()):
    return [item for pair in (("--set", s) for s in [*MICRO, *extra]) for item in pair]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "run"
    result = run("run", "--out", str(out), *overrides())
    assert result.exit_code == 0, result.output
    return out


def completed_steps(run_dir):
    """folder -> manifest mtime, for every complete stage output."""
    return {p.parent.relative_to(run_dir).as_posix(): p.stat().st_mtime_ns for p in run_dir.glob("*/*/manifest.json")}


def test_run_writes_the_contracted_files(study):
    for name in ("config.toml", "results.csv", "summary.json", "report.md", "report.html"):
        assert (study / name).is_file(), name
    html = (study / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5  # samples x2, reconstructions x2, loss curves
    assert "src=\"figures" not in html  # self-contained
    # the MAE is loadable by HF, the DDPM by diffusers
    from diffusers import DDPMPipeline
    from transformers import ViTMAEForPreTraining

    mae_dir = next((study / "mae").glob("thermal-real-seed0-*"))
    assert ViTMAEForPreTraining.from_pretrained(mae_dir / "model").config.num_channels == 1
    DDPMPipeline.from_pretrained(next((study / "ddpm").iterdir()) / "pipeline")


def test_summary_keys_finite_values_and_learning(study):
    summary = json.loads((study / "summary.json").read_text())
    assert set(summary["modalities"]) == {"rgb", "thermal"}
    for modality, block in summary["modalities"].items():
        baseline = block["baseline_mean_predictor_mse"]
        assert math.isfinite(baseline) and baseline > 0
        generator = {"rgb": "ddpm", "thermal": "cyclegan"}[modality]
        assert set(block["conditions"]) == {"real", f"real+gen:{generator}"}
        for condition, c in block["conditions"].items():
            assert c["n_seeds"] == 2
            assert math.isfinite(c["test_mse_mean"]) and c["test_mse_mean"] > 0
            assert math.isfinite(c["test_mse_std"]) and c["test_mse_std"] > 0  # seeds really differ
            # every MAE learned something: better than predicting the training mean everywhere
            assert c["test_mse_mean"] < baseline, (modality, condition, c["test_mse_mean"], baseline)
        gen = block["conditions"][f"real+gen:{generator}"]
        low, high = gen["ci95"]
        assert low <= gen["rel_change_vs_real"] <= high
        assert 0 <= gen["p_value"] <= 1 and 0 <= gen["wilcoxon_p_images"] <= 1
        assert "rel_change_vs_real" not in block["conditions"]["real"]


def test_paper_statistic_and_effects_are_reported_apart_from_the_verdict(study):
    summary = json.loads((study / "summary.json").read_text())
    for modality, generator in (("rgb", "ddpm"), ("thermal", "cyclegan")):
        gen = summary["modalities"][modality]["conditions"][f"real+gen:{generator}"]
        # two seeds give an interval and a p, but too unstable a one to decide on
        assert gen["verdict"] == "no verdict" and gen["no_verdict_reason"].startswith("fewer than 3 seeds")
        assert gen["p_holm"] >= gen["p_value"]  # Holm never lowers a p-value
        paper = summary["paper_statistic"][modality]["real"]
        assert paper["n_runs"] == 2 and paper["epochs_dropped"] == 1 and paper["mean"] > 0
    epochs = json.loads(next((study / "mae").glob("rgb-real-seed0-*/epoch_loss.json")).read_text())
    assert epochs["steps_per_epoch"] == 2 and len(epochs["epoch_mean_loss"]) == 30  # 60 steps, 48 images / 32
    report = (study / "report.md").read_text()
    assert "The seed paper's statistic" in report and "effects.png" in report


def test_every_synthetic_set_is_scored(study):
    summary = json.loads((study / "summary.json").read_text())
    paired = summary["synthetic"]["thermal"]["cyclegan"]["quality"]["paired"]
    for scores in (paired["translated"], paired["grayscale_baseline"]):
        assert 0 < scores["l1"] < 1 and scores["psnr"] > 0 and -1 <= scores["ssim"] <= 1
    for modality, generator in (("rgb", "ddpm"), ("thermal", "cyclegan")):
        quality = summary["synthetic"][modality][generator]["quality"]
        for scores in (quality["fidelity"], quality["fidelity_real_train"]):
            assert scores["fd"] >= 0 and math.isfinite(scores["kid_mean"]) and scores["n_real"] == 16
            assert scores["feature_space"].startswith("random-conv")
        # 6 DDPM steps are far from real images; real training frames are the floor
        assert quality["fidelity"]["fd"] > quality["fidelity_real_train"]["fd"]
    assert summary["synthetic"]["rgb"]["ddpm"]["weights"] == "ema"
    report = (study / "report.md").read_text()
    assert "Synthetic image quality" in report and "grayscale of the RGB input" in report


def test_each_generator_gives_its_own_condition(tmp_path):
    out = tmp_path / "run"
    generators = '["pix2pix", "vit_translator", "ddpm>pix2pix"]'
    result = run("run", "--out", str(out), *overrides([
        f"study.generators.thermal={generators}", 'study.modalities=["thermal"]', "study.seeds=[0]",
        "pix2pix.ngf=8", "pix2pix.ndf=8", "pix2pix.num_downs=3", "pix2pix.d_layers=2", "pix2pix.steps=6",
        "vit_translator.hidden_size=16", "vit_translator.layers=1", "vit_translator.heads=2",
        "vit_translator.decoder_channels=8", "vit_translator.steps=6"]))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    names = ["pix2pix", "vit_translator", "ddpm>pix2pix"]
    assert set(summary["modalities"]["thermal"]["conditions"]) == {"real", *(f"real+gen:{n}" for n in names)}
    assert set(summary["synthetic"]["thermal"]) == set(names)
    chain = json.loads(next((out / "chain").glob("thermal-ddpm-to-pix2pix-*/manifest.json")).read_text())
    ddpm = next((out / "ddpm").glob("rgb-ddpm-*"))
    assert chain["translated_from"] == ddpm.name and len(chain["images"]) == 16
    # the chain's images are the DDPM's samples through the pix2pix generator, not its pool translations
    from genaug.generators.networks import translate
    from genaug.generators.translators import load_translator
    from genaug.study.outputs import load_synthetic

    net, _ = load_translator(next((out / "pix2pix").glob("thermal-pix2pix-*")))
    chained = load_synthetic(next((out / "chain").glob("thermal-ddpm-to-pix2pix-*")))
    assert torch.equal(chained, translate(net, load_synthetic(ddpm)))
    assert summary["synthetic"]["thermal"]["vit_translator"]["init"] == "scratch"  # offline: no pretrained ViT


def test_report_says_where_the_time_went_and_with_how_many_threads(study):
    """Every step's manifest holds its span on the wall clock and its threads; the report's timeline
    table adds them up per stage (one lane: the in-process runner builds one step at a time)."""
    import os

    from genaug.analysis.timeline import covered

    plan = json.loads((study / "plan.json").read_text())["steps"]
    manifests = [json.loads((study / s["folder"] / "manifest.json").read_text()) for s in plan]
    for m in manifests:
        assert m["finished"] - m["started"] == pytest.approx(m["seconds"], abs=0.02)
        assert m["threads"] == os.cpu_count()  # runtime.threads = 0: every core
    spans = sorted((m["started"], m["finished"]) for m in manifests)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # one after another
    provenance = json.loads((study / "provenance.json").read_text())
    assert provenance["threads_per_step"] == {s["folder"]: os.cpu_count() for s in plan}
    report = (study / "report.md").read_text()
    section = report.split("## Where the time went")[1].split("\n## ")[0]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in section.splitlines() if line.startswith("| ")}
    assert set(rows) == {"stage", *(m["stage"] for m in manifests), "all"}
    assert rows["mae"][1] == "8" and rows["eval"][1] == "10"  # 2 modalities x 2 conditions x 2 seeds, + 2 floors
    assert float(rows["all"][2].removesuffix(" s")) == pytest.approx(covered(spans), abs=0.06)
    assert "figures/timeline.png" in report and (study / "figures" / "timeline.png").is_file()
    assert f"CPU threads: {os.cpu_count()} threads for {len(plan)} steps" in report


def test_results_csv_is_long_format(study):
    import csv

    rows = list(csv.DictReader((study / "results.csv").open()))
    assert set(rows[0]) == {"modality", "condition", "seed", "split", "metric", "value"}
    test_mse = [r for r in rows if r["metric"] == "masked_mse" and r["split"] == "test"]
    assert len(test_mse) == 2 * 2 * 2  # modality x condition x seed
    summary = json.loads((study / "summary.json").read_text())
    real_rgb = [float(r["value"]) for r in test_mse if r["modality"] == "rgb" and r["condition"] == "real"]
    assert abs(sum(real_rgb) / 2 - summary["modalities"]["rgb"]["conditions"]["real"]["test_mse_mean"]) < 1e-6


def test_all_evals_share_test_images_and_masks(study):
    ids = {tuple(line.split(",")[0] for line in p.read_text().splitlines()[1:])
           for p in (study / "eval").glob("*/per_image.csv")}
    assert len(ids) == 1 and len(next(iter(ids))) == 16
    from safetensors.torch import load_file

    masked = [load_file(p)["masked"] for p in (study / "eval").glob("rgb-real*/examples.safetensors")]
    assert len(masked) == 4 and all((m == masked[0]).all() for m in masked)


def test_split_is_disjoint_and_synthetic_thermal_comes_from_the_pool(study):
    split = json.loads(next((study / "split").glob("*/split.json")).read_text())["ids"]
    pool, train, test = map(set, (split["pool"], split["train"], split["test"]))
    assert not (pool & train or pool & test or train & test)
    assert (len(pool), len(train), len(test)) == (48, 48, 16)
    manifest = json.loads(next((study / "cyclegan").glob("*/manifest.json")).read_text())
    assert set(manifest["translated_from"]) <= pool


def test_second_run_trains_nothing(study):
    before = completed_steps(study)
    result = run("run", "--out", str(study), *overrides())
    assert result.exit_code == 0, result.output
    assert "0 of 31 steps run" in result.output  # 21 + 8 MAE probes and 2 random-init floors
    assert completed_steps(study) == before


def test_changed_mae_key_reruns_only_its_dependants(study, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(study, copy)
    before = completed_steps(copy)
    result = run("run", "--out", str(copy), *overrides(["mae.lr=0.002"]))
    assert result.exit_code == 0, result.output
    after = completed_steps(copy)
    new = {k.split("/")[0] for k in set(after) - set(before)}
    assert new == {"mae", "eval", "probe"}
    # the mean-predictor evaluation and the random-init probe floors do not depend on the MAE either
    assert len(set(after) - set(before)) == 8 + 8 + 8
    for folder in before:
        assert after[folder] == before[folder]  # nothing earlier was touched or rebuilt


def rebuilt_by(*change):
    base = {s.folder for s in make_plan(load_config(None, MICRO))}
    changed = {s.folder for s in make_plan(load_config(None, [*MICRO, *change]))}
    return sorted(f.rsplit("-", 1)[0] for f in changed - base)  # folders without their keys


def test_plan_keys_follow_dependencies():
    assert rebuilt_by("ddpm.steps=7") == ["ddpm/rgb-ddpm", "eval/rgb-real+gen-ddpm-seed0", "eval/rgb-real+gen-ddpm-seed1",
                                          "mae/rgb-real+gen-ddpm-seed0", "mae/rgb-real+gen-ddpm-seed1",
                                          "probe/rgb-real+gen-ddpm-seed0", "probe/rgb-real+gen-ddpm-seed1"]
    gen = {"rgb": "ddpm", "thermal": "cyclegan"}
    assert rebuilt_by("eval.seed=5") == sorted(f"eval/{m}-{c}" for m in ("rgb", "thermal")
                                               for c in ("mean-predictor", "real-seed0", "real-seed1",
                                                         f"real+gen-{gen[m]}-seed0", f"real+gen-{gen[m]}-seed1"))
    assert rebuilt_by("eval.batch_size=3", "study.conditions=['real', 'real+gen']") == []


def test_of_runtime_only_precision_and_the_log_interval_retrain():
    """`runtime` says where and how fast, except what changes a training stage's files: the precision a
    stage trains in (the decision, so auto and its outcome share a key) and the logging interval its loss
    curve and final_loss are averaged over. Those retrain every training stage they touch and what
    depends on it; the rest of runtime retrains nothing."""
    from genaug.engine import cpu_computes_bf16

    assert rebuilt_by("runtime.checkpoint_every=3", "runtime.checkpoints_total_limit=5", "runtime.threads=1",
                      "runtime.compile='off'", "runtime.on_nonfinite='rollback'", "runtime.resident_data='off'",
                      "runtime.compile_mode='reduce-overhead'", "eval.paper_epochs_dropped=3") == []
    trained = rebuilt_by("runtime.log_every=7")
    assert {f.split("/")[0] for f in trained} == {"ddpm", "cyclegan", "mae", "eval", "probe"}
    assert "split/split" not in trained and not [f for f in trained if "mean-predictor" in f]
    ddpm_and_after = ["ddpm/rgb-ddpm", *(f"{stage}/rgb-real+gen-ddpm-seed{s}" for stage in ("eval", "mae", "probe")
                                     for s in (0, 1))]
    # the quickstart's auto trains the DDPM in bf16 on a CPU with bf16 arithmetic, everything else in fp32
    assert rebuilt_by("runtime.precision='fp32'") == (ddpm_and_after if cpu_computes_bf16() else [])
    # bf16 everywhere: every MAE changes precision, and the DDPM too unless it was bf16 already
    assert rebuilt_by("runtime.precision='bf16'") == (sorted(set(trained) - {"ddpm/rgb-ddpm"}) if cpu_computes_bf16()
                                                     else trained)


def test_pool_size_retrains_generators_not_real_maes():
    rebuilt = rebuilt_by("data.n_pool=40")
    assert "split/split" in rebuilt and "ddpm/rgb-ddpm" in rebuilt and "cyclegan/thermal-cyclegan" in rebuilt
    assert not [f for f in rebuilt if "real-seed" in f or "mean-predictor" in f]


def test_pool_size_leaves_train_and_test_sets_unchanged(tmp_path):
    from genaug.study.stages import run_split

    def split_ids(n_pool):
        out = tmp_path / f"pool{n_pool}"
        out.mkdir()
        cfg = load_config(None, [*MICRO, f"data.n_pool={n_pool}", "study.n_synthetic=8"])
        run_split(SimpleNamespace(cfg=cfg, out=out, manifest={}, advance=lambda n: None))
        return json.loads((out / "split.json").read_text())["ids"]

    small, large = split_ids(20), split_ids(48)
    assert small["train"] == large["train"] and small["test"] == large["test"]
    assert set(small["pool"]) < set(large["pool"])


@pytest.mark.parametrize("args, needle", [
    (["validate", "--set", "mae.stpes=3"], "mae.stpes"),
    (["validate", "--set", "mae.steps=abc"], "mae.steps"),
    (["validate", "--set", "data.n_train=900", "--set", "data.n_test=200"], "data.n_train + data.n_test"),
    (["run", "--set", "mae.steps"], "--set"),
])
def test_bad_input_is_one_line_exit_2(args, needle):
    result = run(*args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("error:")
    assert "Traceback" not in result.output


def test_output_path_that_is_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    result = run("run", "--out", str(target), *overrides())
    assert result.exit_code == 2 and str(target) in result.output and "file" in result.output
    assert target.read_text() == "keep me"


def test_control_conditions_add_their_own_images(tmp_path):
    out = tmp_path / "run"
    controls = '["real", "real-x2", "real+classic", "real+real", "real+noise", "real-aa"]'
    result = run("run", "--out", str(out), *overrides([f"study.conditions={controls}", 'study.modalities=["thermal"]',
                                                       "study.seeds=[0]"]))
    assert result.exit_code == 0, result.output
    assert not (out / "cyclegan").exists() and not (out / "ddpm").exists()  # no generator needed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["modalities"]["thermal"]["conditions"]) == {"real", "real-x2", "real+classic", "real+real",
                                                                   "real+noise", "real-aa"}
    manifests = {m["condition"]: m for m in (json.loads(p.read_text()) for p in (out / "mae").glob("*/manifest.json"))}
    assert {c: m["n_images"] for c, m in manifests.items()} == {"real": 48, "real-x2": 64, "real+classic": 64,
                                                                "real+real": 64, "real+noise": 64, "real-aa": 48}
    assert manifests["real-aa"]["seed"] != manifests["real"]["seed"]  # A/A: same data, other seeds
    from genaug.study.outputs import load_split
    from genaug.study.stages import extra_images

    split = load_split(next((out / "split").iterdir()))
    cfg = load_config(None, MICRO)

    def extra(condition):
        ctx = SimpleNamespace(cfg=cfg, inputs={}, params={"condition": condition})
        return extra_images(ctx, split, "thermal")

    real, pool = split["train"].thermal, split["pool"].thermal
    assert extra("real") is None
    assert torch.equal(extra("real-x2"), real[:16])  # the same images again
    assert torch.equal(extra("real+real"), pool[:16])  # held-back real frames, in no MAE or test set
    classic = extra("real+classic")
    assert classic.shape == (16, 1, 32, 32) and not torch.equal(classic, real[:16])
    assert torch.equal(classic, extra("real+classic"))  # seeded: the same set for every MAE seed
    noise = extra("real+noise").float() / 255
    unit = real.float() / 255
    assert abs(noise.mean() - unit.mean()) < 0.02 and abs(noise.std() - unit.std()) < 0.03
    assert extra("real-aa") is None


def test_epoch_budget_gives_conditions_with_more_images_more_steps():
    cfg = load_config(None, [*MICRO, "study.budget=epochs", "mae.epochs=4", "mae.batch_size=16",
                             'study.conditions=["real", "real+gen", "real-x2"]'])
    steps = {s.params["condition"]: s.work for s in make_plan(cfg) if s.stage == "mae"}
    assert steps == {"real": 12, "real+gen:ddpm": 16, "real+gen:cyclegan": 16, "real-x2": 16}  # 4 x 48 / 16, 4 x 64 / 16
    equal = {s.work for s in make_plan(load_config(None, MICRO)) if s.stage == "mae"}
    assert equal == {60}  # budget "steps": the same for every condition


def test_real_real_needs_enough_pool_frames():
    from genaug.errors import UserError

    with pytest.raises(UserError, match="real\\+real"):
        load_config(None, [*MICRO, 'study.conditions=["real", "real+real"]', "study.n_synthetic=60",
                           'study.modalities=["rgb"]'])


def test_ratio_sweep_adds_a_condition_per_ratio_with_that_many_images():
    cfg = load_config(None, [*MICRO, "study.n_synthetic=48", "study.ratios=[0.25, 1]",
                             'study.conditions=["real", "real+gen", "real-aa", "real+real"]'])
    extra = {(s.params["modality"], s.params["condition"]): s.params["n_extra"]
             for s in make_plan(cfg) if s.stage == "mae"}
    assert extra[("thermal", "real+gen:cyclegan")] == 48 and extra[("thermal", "real+gen:cyclegan@0.25")] == 12
    assert extra[("rgb", "real+real@1")] == 48 and extra[("rgb", "real")] == 0
    assert ("rgb", "real-aa@1") not in extra and ("rgb", "real@1") not in extra  # nothing to add: no sweep
    from genaug.errors import UserError

    with pytest.raises(UserError, match="study.ratios"):
        load_config(None, [*MICRO, "study.ratios=[2]"])  # 96 extra images, but 16 are made


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_pretrained_mae_init_runs_with_its_own_normalisation(tmp_path, norm_pix_loss):
    from transformers import ViTImageProcessor, ViTMAEConfig, ViTMAEForPreTraining

    weights = tmp_path / "tiny-mae"
    config = ViTMAEConfig(image_size=32, patch_size=8, num_channels=1, hidden_size=32, num_hidden_layers=1,
                          num_attention_heads=2, intermediate_size=64, decoder_hidden_size=32,
                          decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64)
    ViTMAEForPreTraining(config).save_pretrained(weights)
    ViTImageProcessor(image_mean=[0.3], image_std=[0.2]).save_pretrained(weights)
    out = tmp_path / "run"
    result = run("run", "--out", str(out), *overrides([
        f"mae.init={weights}", f"mae.norm_pix_loss={str(norm_pix_loss).lower()}", 'study.modalities=["thermal"]',
        'study.conditions=["real"]', "study.seeds=[0]", "mae.steps=10"]))
    assert result.exit_code == 0, result.output
    manifest = json.loads(next((out / "mae").glob("*/manifest.json")).read_text())
    assert manifest["init"] == str(weights) and manifest["norm_pix_loss"] is norm_pix_loss
    model_dir = next((out / "mae").glob("thermal-real-seed0-*")) / "model"
    assert list(ViTImageProcessor.from_pretrained(model_dir).image_mean) == pytest.approx([0.3])  # not refitted
    floor = json.loads(next((out / "eval").glob("thermal-mean-predictor-*/manifest.json")).read_text())["floor"]
    assert floor == ("true patch means (norm_pix_loss)" if norm_pix_loss else "training-set mean")


def test_missing_pretrained_mae_fails_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    result = run("run", "--out", str(out), *overrides(["mae.init=genaug-tests/no-such-mae"]))
    assert result.exit_code == 2 and "mae.init = 'genaug-tests/no-such-mae'" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine (CI installs one: apt-get install chromium)")
def test_report_html_renders_every_figure_in_a_real_browser(study, tmp_path):
    import subprocess

    from PIL import Image

    flags = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp_path / 'profile'}"]
    page = (study / "report.html").as_uri()
    dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    figures = (study / "report.md").read_text().count("](figures/")
    assert "genaug study report" in dom and dom.count("<img") == figures >= 6
    assert "figures/" not in dom.replace("](figures/", "")  # self-contained: nothing loaded from beside it
    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1100,12000", f"--screenshot={shot}", page], capture_output=True,
                   timeout=120)
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 1000  # the embedded images were decoded and drawn, not blank boxes


def test_negative_control_is_reported_as_harm(tmp_path):
    out = tmp_path / "run"
    result = run("run", "--out", str(out), *overrides([
        'study.conditions=["real", "real+noise"]', 'study.modalities=["thermal"]', "study.seeds=[0, 1, 2]",
        "study.n_synthetic=192"]))  # 4 noise images per real one
    assert result.exit_code == 0, result.output
    noise = json.loads((out / "summary.json").read_text())["modalities"]["thermal"]["conditions"]["real+noise"]
    assert noise["verdict"] == "harm", noise
    assert "real+noise: raises the held-out error (harm)" in (out / "report.md").read_text()


def test_step_budget_gives_every_condition_the_same_steps_in_the_logs(study):
    last = {}
    for log in (study / "mae").glob("*/log.jsonl"):
        last[log.parent.name.rsplit("-", 1)[0]] = json.loads(log.read_text().splitlines()[-1])["step"]
    assert len(last) == 8 and set(last.values()) == {60}
