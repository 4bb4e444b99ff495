"""Translator quality against hand-computed answers: L1, PSNR and SSIM on [0, 1] pixels, BT.601 grey,
and translator_quality's grey-of-RGB baseline (the score any useful translator must beat)."""

import math

import pytest
import torch

from genaug.analysis.quality import grayscale, paired_quality, translator_quality

C1 = 0.01**2  # SSIM constants for a data range of 1: (0.01 L)^2 and (0.03 L)^2
# SSIM's local variance E[x^2] - E[x]^2 is formed in float32: about 1e-7 of cancellation error against
# C2 = 9e-4 in the contrast term, so flat-image answers agree to about 1e-4, not to float64 precision.
SSIM_ABS = 1e-3


def flat(values, channels=1, size=8):
    """uint8 (N, channels, size, size): image i is the constant values[i]."""
    return torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, channels, size, size).contiguous()


def flat_ssim(a: float, b: float) -> float:
    """SSIM of two flat images with values a and b in [0, 1]: no variance, so only the luminance term
    (2ab + C1) / (a^2 + b^2 + C1) remains (the contrast-structure term is C2 / C2)."""
    return (2 * a * b + C1) / (a * a + b * b + C1)


def test_grayscale_is_bt601_luma_rounded():
    """0.299 R + 0.587 G + 0.114 B, rounded to the nearest integer (not truncated), copied to each channel."""
    pixels = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (100, 150, 200), (0, 0, 0)]
    # by hand: 76.245, 149.685, 29.07, 255, 29.9 + 88.05 + 22.8 = 140.75, 0
    expected = [76, 150, 29, 255, 141, 0]
    rgb = torch.tensor(pixels, dtype=torch.uint8).view(-1, 3, 1, 1).expand(-1, -1, 2, 2)
    one = grayscale(rgb, 1)
    assert one.dtype == torch.uint8 and one.shape == (6, 1, 2, 2)
    assert one[:, 0, 0, 0].tolist() == expected
    three = grayscale(rgb, 3)
    assert three.shape == (6, 3, 2, 2) and all(three[:, c].equal(one[:, 0]) for c in range(3))


def test_identical_images_score_perfectly():
    """L1 0, PSNR at the 1e-12 MSE clamp (120 dB), SSIM 1."""
    images = torch.randint(0, 256, (3, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    scores = paired_quality(images, images)
    assert scores["l1"] == 0.0
    assert scores["psnr"] == pytest.approx(120.0, rel=1e-5)
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-6)


def test_constant_offsets_known_answers():
    """Two pairs of flat images, offsets 10 and 20 grey levels (real 100 and 50). In [0, 1] pixels:
    L1 = mean(10, 20) / 255; PSNR is per image then averaged: mean(20 log10(255 / 10), 20 log10(255 / 20));
    SSIM the flat-image formula, averaged."""
    real = flat([100, 50], channels=1)
    fake = flat([110, 70], channels=1)
    scores = paired_quality(fake, real)
    assert scores["l1"] == pytest.approx(15 / 255, rel=1e-6)
    assert scores["psnr"] == pytest.approx((20 * math.log10(25.5) + 20 * math.log10(12.75)) / 2, rel=1e-5)
    expected_ssim = (flat_ssim(110 / 255, 100 / 255) + flat_ssim(70 / 255, 50 / 255)) / 2
    assert scores["ssim"] == pytest.approx(expected_ssim, abs=SSIM_ABS)


def test_ssim_is_on_unit_pixels():
    """Black against grey 51 (0.2): C1 / (0.04 + C1), about 0.0025 (little cancellation error at
    these levels). On a 0-255 scale with the same constants it would be 1e-4 / 2601, about 4e-8."""
    scores = paired_quality(flat([0], channels=3), flat([51], channels=3))
    assert scores["ssim"] == pytest.approx(C1 / (0.2**2 + C1), rel=1e-3)
    assert scores["l1"] == pytest.approx(0.2) and scores["psnr"] == pytest.approx(20 * math.log10(5), rel=1e-6)


class RedChannel(torch.nn.Module):
    """A [-1, 1] "translator" that outputs the red channel of its RGB input."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # translate() reads the device from a parameter

    def forward(self, x):
        return x[:, :1]


def test_translator_quality_scores_the_translation_and_the_grey_baseline():
    """RGB frames flat (200, 100, 50) and (40, 80, 120); their thermal partners equal to the red channel.
    The translator that copies red is perfect; the grey baseline, luma 124.2 -> 124 and
    11.96 + 46.96 + 13.68 = 72.6 -> 73, is 76 and 33 grey levels off."""
    rgb = torch.tensor([[200, 100, 50], [40, 80, 120]], dtype=torch.uint8).view(2, 3, 1, 1).expand(-1, -1, 8, 8)
    thermal = flat([200, 40], channels=1)
    result = translator_quality(RedChannel(), rgb.contiguous(), thermal)
    assert result["on"] == "2 held-out test pairs"
    translated, baseline = result["translated"], result["grayscale_baseline"]
    assert translated["l1"] == 0.0 and translated["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert baseline["l1"] == pytest.approx((76 + 33) / 2 / 255, rel=1e-6)
    assert baseline["psnr"] == pytest.approx((20 * math.log10(255 / 76) + 20 * math.log10(255 / 33)) / 2, rel=1e-5)
    expected_ssim = (flat_ssim(124 / 255, 200 / 255) + flat_ssim(73 / 255, 40 / 255)) / 2
    assert baseline["ssim"] == pytest.approx(expected_ssim, abs=SSIM_ABS)
