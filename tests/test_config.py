from pathlib import Path

import pytest

from genaug.config import Config, apply_override, builtin_config_text, load_config, stage_key, to_toml
from genaug.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, "a user error is one line"
    return text


def test_misspelt_key_names_full_path_and_closest_key(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, "[mae]\nstpes = 10\n"))
    text = message(e)
    assert "mae.stpes" in text and "did you mean 'mae.steps'" in text and "study.toml" in text


def test_unknown_nested_key_without_close_match(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, "[data.scenes]\nbanana = 1\n"))
    assert "unknown key 'data.scenes.banana'" in message(e)


def test_unknown_section(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, "[dpm]\nsteps = 1\n"))
    assert "'dpm'" in message(e) and "ddpm" in message(e)


def test_wrong_type_names_key_and_value(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, "[mae]\nsteps = 'many'\n"))
    text = message(e)
    assert "mae.steps" in text and "'many'" in text


def test_out_of_range_value(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, "[mae]\nmask_ratio = 1.5\n"))
    assert "mae.mask_ratio" in message(e)


def test_sizes_larger_than_source_name_every_key(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, "[data]\nn_train = 900\nn_test = 200\n[data.scenes]\nn_frames = 1000\n"))
    text = message(e)
    assert "data.n_train" in text and "data.n_test" in text and "data.scenes.n_frames = 1000" in text


def test_not_toml(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, "[mae\n"))
    assert "not valid TOML" in message(e)


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(tmp_path / "nope.toml")
    assert "nope.toml" in message(e)


def test_set_overrides_any_key_with_toml_values():
    cfg = load_config(None, ["mae.steps=7", "study.seeds=[4, 5]", "data.resize=squash", "ddpm.attention_levels=[]"])
    assert cfg.mae.steps == 7 and cfg.study.seeds == [4, 5]
    assert cfg.data.resize == "squash" and cfg.ddpm.attention_levels == []


@pytest.mark.parametrize("bad", ["mae.steps", "=3", "mae..steps=3"])
def test_set_bad_expression(bad):
    with pytest.raises(UserError) as e:
        load_config(None, [bad])
    assert "--set" in message(e)


def test_set_into_a_value_is_rejected():
    raw = {"seed": 1}
    with pytest.raises(UserError) as e:
        apply_override(raw, "seed.x=2")
    assert "'seed' is a value" in message(e)


def test_set_unknown_key_is_rejected_with_path():
    with pytest.raises(UserError) as e:
        load_config(None, ["mae.lrr=0.1"])
    assert "mae.lrr" in message(e) and "mae.lr" in message(e)


def test_resolved_config_round_trips_with_every_default(tmp_path):
    cfg = load_config(None, ["mae.steps=9"])
    text = to_toml(cfg)
    assert "weight_decay" in text and "night_fraction" in text  # defaults written out
    again = load_config(write(tmp_path, text))
    assert again == cfg


def test_quickstart_file_is_the_builtin_config():
    assert (REPO / "configs" / "quickstart.toml").read_text() == builtin_config_text()


def test_stage_key_depends_on_values_not_dict_order():
    a, b = Config(), Config()
    assert stage_key("mae", a.mae) == stage_key("mae", b.mae)
    b.mae.lr = 0.5
    assert stage_key("mae", a.mae) != stage_key("mae", b.mae)
    assert stage_key({"x": 1, "y": 2}) == stage_key({"y": 2, "x": 1})


@pytest.mark.parametrize("overrides, needle", [
    (['study.generators.thermal=["cyclegan", "cyclegan"]'], "study.generators.thermal"),
    (['study.generators.thermal=["stylegan"]'], "study.generators.thermal"),
    (['study.generators.thermal=["ddpm>cyclegan"]', "ddpm.block_out_channels=[16, 32, 64, 128, 256, 512, 512]"],
     "halved 6 times"),  # a chain checks the DDPM it needs, even in a thermal-only choice
    (['study.generators.thermal=["vit_translator"]', "vit_translator.patch_size=6"], "power of two"),
    (['study.generators.thermal=["cyclegan"]', 'cyclegan.generator="unet"', "cyclegan.num_downs=8"],
     "cyclegan.num_downs = 8"),
    (["ddpm.attention_levels=[3]"], "ddpm.attention_levels"),
])
def test_generator_choices_are_checked_before_anything_runs(overrides, needle):
    with pytest.raises(UserError) as e:
        load_config(None, overrides)
    assert needle in message(e)


def test_resolved_preset_config_round_trips(tmp_path):
    cfg = load_config(None, ['ddpm.preset="paper"', "data.image_size=128", "ddpm.lr=2e-4"])
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg


OFFLINE = ["data.source=scenes", "data.scenes.n_frames=5000", "mae.init=scratch", "mae.preset=micro",
           "mae.patch_size=16"]  # what a machine without KAIST and vit-mae-base changes


def test_paper_preset_is_the_seeds_protocol_plus_held_out_evaluation():
    from genaug.study.plan import make_plan

    cfg = load_config(REPO / "configs" / "paper.toml")
    assert (cfg.data.image_size, cfg.data.resize, cfg.data.n_train, cfg.study.n_synthetic) == (224, "squash", 200, 200)
    assert cfg.mae.init == "facebook/vit-mae-base" and (cfg.mae.lr, cfg.mae.schedule, cfg.mae.batch_size) == (
        1e-4, "constant", 16)
    assert cfg.study.budget == "epochs" and cfg.mae.epochs == 50 and len(cfg.study.seeds) == 5
    assert cfg.ddpm.preset == "paper" and cfg.ddpm.ema is False and cfg.ddpm.sample_steps == 1000
    assert cfg.cyclegan.generator == "unet" and cfg.cyclegan.gan_loss == "bce" and cfg.cyclegan.pool_size == 0
    assert {"real-x2", "real+real", "real+noise", "real-aa"} <= set(cfg.study.conditions) and cfg.data.n_test == 200
    steps = {s.params["condition"]: s.work for s in make_plan(load_config(REPO / "configs" / "paper.toml", OFFLINE))
             if s.stage == "mae" and s.params["modality"] == "rgb"}
    assert steps["real"] == 625 and steps["real+gen:ddpm"] == 1250  # 50 epochs of 200 / 400 images at batch 16


def test_kaist_preset_uses_the_official_splits_and_every_thermal_generator():
    from genaug.study.plan import make_plan

    cfg = load_config(REPO / "configs" / "kaist.toml")
    assert (cfg.data.kaist.train_split, cfg.data.kaist.test_split) == ("train-all-02", "test-all-20")
    assert cfg.study.generators.thermal == ["cyclegan", "pix2pix", "ddpm>cyclegan"] and cfg.study.ratios == [0.5, 1, 2]
    plan = make_plan(load_config(REPO / "configs" / "kaist.toml", [*OFFLINE, "data.n_test=500"]))
    assert {s.stage for s in plan} >= {"ddpm", "cyclegan", "pix2pix", "chain"}


@pytest.mark.parametrize("preset", ["paper", "kaist"])
def test_presets_without_the_pretrained_mae_fail_before_anything_runs(preset):
    from genaug import mae
    from genaug.study.plan import make_plan

    try:
        mae.locate("facebook/vit-mae-base")
        pytest.skip("facebook/vit-mae-base is on this machine")
    except UserError:
        pass

    with pytest.raises(UserError) as e:
        make_plan(load_config(REPO / "configs" / f"{preset}.toml"))
    assert "mae.init = 'facebook/vit-mae-base'" in message(e)


def test_controls_preset_runs_the_known_answer_conditions():
    from genaug.study.plan import make_plan

    cfg = load_config(REPO / "configs" / "controls.toml")
    assert cfg.study.conditions == ["real", "real+real", "real+noise", "real-aa"] and len(cfg.study.seeds) == 5
    stages = {s.stage for s in make_plan(cfg)}
    assert stages == {"split", "mae", "eval", "probe"}  # no generator: the extra images are real frames or noise
