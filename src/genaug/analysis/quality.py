"""How good a synthetic set is. Translators are scored on held-out aligned pairs (the test frames,
which no generator trained on): their thermal output against the real thermal frame, beside the
identity-like baseline of the RGB input turned to grey, which any useful translator must beat.
"""

from __future__ import annotations

import torch

from genaug.data.images import to_unit

GREY = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma


def grayscale(rgb: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> uint8 (N, channels, S, S) luma."""
    luma = (rgb.float() * torch.tensor(GREY).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return luma.round().clamp(0, 255).to(torch.uint8).expand(-1, channels, -1, -1)


def paired_quality(fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    """uint8 (N, C, S, S) pairs -> mean L1, PSNR (dB, peak 1) and SSIM (7x7 Gaussian window) in [0, 1] pixels."""
    from kornia.metrics import ssim

    fake_unit, real_unit = to_unit(fake), to_unit(real)
    mse = ((fake_unit - real_unit) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return {
        "l1": float((fake_unit - real_unit).abs().mean()),
        "psnr": float((-10 * torch.log10(mse)).mean()),
        "ssim": float(ssim(fake_unit, real_unit, window_size=7).mean()),
    }


def translator_quality(net: torch.nn.Module, test_rgb: torch.Tensor, test_thermal: torch.Tensor) -> dict:
    from genaug.generators.networks import translate

    return {
        "on": f"{len(test_rgb)} held-out test pairs",
        "translated": paired_quality(translate(net, test_rgb), test_thermal),
        "grayscale_baseline": paired_quality(grayscale(test_rgb, test_thermal.shape[1]), test_thermal),
    }
