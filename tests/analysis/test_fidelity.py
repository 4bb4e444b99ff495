import pytest
import torch

from genaug.analysis.fidelity import RANDOM_CONV_NAME, feature_extractor, fidelity
from genaug.data.scenes import render_frames
from genaug.errors import UserError


@pytest.fixture(scope="module")
def scenes():
    """uint8 (64, 3, 48, 64): one distribution (built-in street scenes), split later into disjoint halves."""
    rgb, _, _ = render_frames(seed=3, indices=range(64), width=64, height=48)
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous()


def noise(n, c=3, h=48, w=64, seed=0):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_random_conv_space_is_the_same_in_every_fresh_extractor(scenes):
    net_a, name = feature_extractor()
    net_b, _ = feature_extractor()
    assert name == RANDOM_CONV_NAME
    assert net_a.num_features == 64 + 128 + 256 + 512
    with torch.no_grad():
        fa, fb = net_a(scenes[:8]), net_b(scenes[:8])
    assert fa.shape == (8, 960) and fa.dtype == torch.float32
    assert torch.equal(fa, fb)
    # The space is pinned by the seed and init scheme: a changed draw would silently change every score.
    first = net_a.convs[0].weight
    assert first.shape == (64, 3, 3, 3)
    assert first.std().item() == pytest.approx((2 / 27) ** 0.5, rel=0.1)
    sums = [float(conv.weight.double().sum()) for conv in net_a.convs]
    assert sums == pytest.approx([-8.772384, -19.219247, 39.477259, 10.873722], rel=1e-5)
    assert not any(p.requires_grad for p in net_a.parameters()) and not net_a.training


@pytest.fixture(scope="module")
def noise_vs_scenes(scenes):
    return fidelity(noise(32), scenes[32:], kid_subset_size=16)


def test_fd_kid_rank_same_distribution_below_noise_and_grey(scenes, noise_vs_scenes):
    half_a, half_b = scenes[:32], scenes[32:]
    same = fidelity(half_a, half_b, kid_subset_size=16)
    grey = torch.full((32, 3, 48, 64), 128, dtype=torch.uint8)
    vs_grey = fidelity(grey, half_b, kid_subset_size=16)
    self_fd = fidelity(half_b, half_b, kid_subset_size=16)["fd"]
    assert abs(self_fd) < 1e-3 * noise_vs_scenes["fd"]
    for other in (noise_vs_scenes, vs_grey):
        assert 5 * same["fd"] < other["fd"]
        assert same["kid_mean"] < other["kid_mean"] / 5
    assert same["n_generated"] == 32 and same["n_real"] == 32 and same["kid_subset_size"] == 16
    assert same["feature_space"] == RANDOM_CONV_NAME


def test_sets_of_different_sizes_and_shapes_are_compared(scenes, noise_vs_scenes):
    small = torch.nn.functional.interpolate(scenes[:20].float(), size=(24, 32), mode="bilinear",
                                            antialias=True).round().to(torch.uint8)
    out = fidelity(small, scenes[32:], kid_subset_size=16)
    assert out["n_generated"] == 20 and out["n_real"] == 32
    # A half-size copy of the distribution stays far closer to it than noise does.
    assert 5 * out["fd"] < noise_vs_scenes["fd"]


def test_grey_images_score_as_their_three_channel_repeat(noise_vs_scenes):
    grey = noise(12, c=1, seed=2)
    grey[:, :, :24] //= 2  # a little structure so the images are not all alike
    net, _ = feature_extractor()
    with torch.no_grad():
        assert torch.allclose(net(grey), net(grey.repeat(1, 3, 1, 1)), rtol=0, atol=1e-6)
    # Thermal (1-channel) and RGB (3-channel) sets land in one space: grey against its own repeat is ~0.
    out = fidelity(grey, grey.repeat(1, 3, 1, 1), kid_subset_size=6)
    assert abs(out["fd"]) < 1e-3 * noise_vs_scenes["fd"]


def test_kid_subset_clamps_to_the_smaller_set(scenes):
    # torchmetrics raises when subset_size exceeds a set; fidelity must use what there is.
    out = fidelity(scenes[:5], scenes[32:52], kid_subset_size=50)
    assert out["kid_subset_size"] == 5
    assert all(torch.isfinite(torch.tensor(out[k])) for k in ("fd", "kid_mean", "kid_std"))
    with pytest.raises(ValueError, match="at least 2"):
        fidelity(scenes[:1], scenes[32:52])


def test_kid_subsets_are_seeded_and_leave_the_global_rng_alone(scenes):
    a, b = scenes[:24], scenes[32:56]
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    first = fidelity(a, b, kid_subset_size=8, seed=0)  # builds the seeded space and draws KID subsets
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(123)  # the caller's global RNG state must not matter
    again = fidelity(a, b, kid_subset_size=8, seed=0)
    other = fidelity(a, b, kid_subset_size=8, seed=1)
    assert first == again
    assert first["kid_std"] > 0  # subsets really differ, so the seed is what makes them repeat
    assert other["kid_mean"] != first["kid_mean"] and other["fd"] == first["fd"]


def test_unknown_space_names_the_config_key(tmp_path):
    with pytest.raises(UserError) as err:
        feature_extractor(str(tmp_path / "no-such-model"))
    message = str(err.value)
    assert "quality.feature_space = " in message and "no-such-model" in message
    assert "random-conv" in message and "\n" not in message
    with pytest.raises(UserError, match="quality.feature_space = 'random_conv'"):
        fidelity(noise(4), noise(4), space="random_conv")


def test_transformers_backbone_space_uses_the_models_own_preprocessing(tmp_path):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64)
    model = ViTModel(config).eval()
    model.save_pretrained(tmp_path)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=mean, image_std=std).save_pretrained(tmp_path)

    net, name = feature_extractor(str(tmp_path))
    assert net.num_features == 32 and str(tmp_path) in name
    images = noise(4, h=32, w=32)
    with torch.no_grad():
        expected = model(pixel_values=(images / 255 - torch.tensor(mean).view(1, 3, 1, 1))
                         / torch.tensor(std).view(1, 3, 1, 1)).pooler_output
        assert torch.allclose(net(images), expected, atol=1e-5)

    a, b = noise(8, h=40, w=40, seed=1), noise(8, h=40, w=40, seed=2)
    grey = torch.full_like(a, 100)
    out = fidelity(a, b, space=str(tmp_path), kid_subset_size=4)
    assert out["feature_space"] == name
    assert abs(fidelity(b, b, space=str(tmp_path))["fd"]) < 1e-3 * fidelity(grey, b, space=str(tmp_path))["fd"]
