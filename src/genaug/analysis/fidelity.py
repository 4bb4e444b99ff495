"""How close a synthetic image set is to held-out real images, as a set: FD and KID in a fixed feature space.

The usual space, Inception-v3, needs torchvision (through torch-fidelity), which this project does not
install. So the numbers are computed with torchmetrics' own FD/KID math in one of two spaces:

- ``"random-conv"`` (default): a small conv net whose weights are drawn from a fixed seed, so every
  machine and every run gets exactly the same space (for a given torch version). Random conv features
  are a known, weaker but honest stand-in for a trained backbone: they separate texture, contrast and
  layout statistics, which is what a broken generator gets wrong. Its numbers are comparable only with
  other ``random-conv-v1`` numbers, never with published Inception FIDs.
- a transformers vision backbone (hub id or local folder, loaded offline), e.g. ``facebook/dinov2-small``.

Both spaces take uint8 images as they are stored, so a 1-channel (thermal) set and a 3-channel (RGB)
set go through one code path: grey is repeated to 3 channels.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from genaug.errors import UserError

if TYPE_CHECKING:  # torch is imported lazily; `genaug --help` must not pay for it
    import torch

RANDOM_CONV = "random-conv"
RANDOM_CONV_SEED = 20240611  # changing it (or the init below) changes the space: bump the version name
RANDOM_CONV_SIZE = 64  # input side after resizing; small enough for CPU, large enough for 4 stages
RANDOM_CONV_WIDTHS = (64, 128, 256, 512)
RANDOM_CONV_NAME = "random-conv-v1 (genaug's seeded random conv features, 64x64)"
BATCH = 64  # images per forward pass: keeps memory small for any set size


def _make_random_conv(device):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class RandomConvFeatures(nn.Module):
        """uint8 (B, 1|3, H, W) -> float32 (B, 960): global average pools of 4 random ReLU conv stages.

        Weights are Kaiming-normal (fan-in, ReLU gain) drawn on the CPU from a private generator, biases
        zero: the activations keep roughly unit scale through the stages, so no stage dominates the
        concatenated vector, and the draw never touches (or depends on) torch's global RNG.
        """

        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(RANDOM_CONV_SEED)
            self.convs = nn.ModuleList()
            c_in = 3
            for c_out in RANDOM_CONV_WIDTHS:
                # skip_init: nn.Conv2d's own init would draw from (and advance) the global RNG
                conv = torch.nn.utils.skip_init(nn.Conv2d, c_in, c_out, 3, stride=2, padding=1)
                with torch.no_grad():
                    std = (2.0 / (c_in * 9)) ** 0.5
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * std)
                    conv.bias.zero_()
                self.convs.append(conv)
                c_in = c_out
            self.num_features = sum(RANDOM_CONV_WIDTHS)  # torchmetrics reads this instead of a dummy forward
            self.requires_grad_(False)
            self.eval()

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = images.to(self.convs[0].weight.device, torch.float32) / 127.5 - 1  # [0, 255] -> [-1, 1]
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            # antialias matters when shrinking (e.g. 128 -> 64): without it the space would see aliasing
            x = F.interpolate(x, size=(RANDOM_CONV_SIZE, RANDOM_CONV_SIZE), mode="bilinear",
                              align_corners=False, antialias=True)
            pools = []
            for conv in self.convs:
                x = F.relu(conv(x))
                pools.append(x.mean(dim=(2, 3)))
            return torch.cat(pools, dim=1)

    return RandomConvFeatures().to(device)


def _make_hf_backbone(space: str, device):
    import torch
    import torch.nn.functional as F
    from torch import nn
    from transformers import AutoImageProcessor, AutoModel

    from safetensors import SafetensorError

    try:
        model = AutoModel.from_pretrained(space, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, SafetensorError) as e:
        raise UserError(
            f"quality.feature_space = {space!r} is neither 'random-conv' nor a transformers image model "
            f"found locally ({type(e).__name__}); download it first (huggingface-cli download {space}) "
            f"or use 'random-conv'"
        ) from None
    try:
        processor = AutoImageProcessor.from_pretrained(space, local_files_only=True)
    except (OSError, ValueError):
        processor = None
    # The model's own preprocessing, reduced to a square resize + normalise so it runs batched on tensors
    # (the processor's resize-shorter-side-then-centre-crop would need PIL per image).
    side, mean, std = 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    if isinstance(getattr(model.config, "image_size", None), int):
        side = model.config.image_size  # ViT-like models accept only their trained size
    if processor is not None:
        size = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
        size = size or getattr(processor, "size", None) or {}
        side = int(size.get("height") or size.get("shortest_edge") or side)
        mean = tuple(getattr(processor, "image_mean", None) or mean)
        std = tuple(getattr(processor, "image_std", None) or std)

    class HFBackbone(nn.Module):
        """uint8 (B, 1|3, H, W) -> float32 (B, hidden): pooler_output, else mean of last_hidden_state."""

        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
            self.requires_grad_(False)
            self.eval()
            self.num_features = int(self(torch.zeros(1, 3, side, side, dtype=torch.uint8)).shape[-1])

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = images.to(self.mean.device, torch.float32) / 255
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
            out = self.model(pixel_values=(x - self.mean) / self.std)
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                pooled = out.last_hidden_state.mean(dim=1)
            return pooled.flatten(1).float()  # CNN backbones pool to (B, C, 1, 1)

    with torch.no_grad():
        return HFBackbone().to(device)


def feature_extractor(space: str = RANDOM_CONV, device="cpu") -> tuple[torch.nn.Module, str]:
    """A frozen feature space: (module uint8 (B, 1|3, H, W) -> float32 (B, num_features), description).

    ``space`` is ``"random-conv"`` or a transformers image model (hub id or folder, never downloaded).
    The description names the space, to be stored beside every number computed in it.
    """
    if space == RANDOM_CONV:
        return _make_random_conv(device), RANDOM_CONV_NAME
    net = _make_hf_backbone(space, device)
    return net, f"{space} (transformers backbone, pooled output, {net.num_features} features)"


def _features(net, images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (N, num_features) on the net's device, BATCH images at a time."""
    import torch

    with torch.no_grad():  # not inference_mode: its tensors may not enter the metrics' in-place sums
        return torch.cat([net(images[i:i + BATCH]) for i in range(0, len(images), BATCH)])


def fidelity(generated: torch.Tensor, real: torch.Tensor, space: str = RANDOM_CONV, device="cpu",
             kid_subset_size: int = 50, seed: int = 0) -> dict:
    """FD and KID of a generated set against real images, in the feature space ``space``.

    generated: uint8 (N, C, H, W); real: uint8 (M, C', H', W'); C, C' in {1, 3}; sizes may differ.
    Returns {"fd", "kid_mean", "kid_std", "feature_space", "n_generated", "n_real", "kid_subset_size"}.
    KID averages 100 random subsets of min(kid_subset_size, N, M) images from each set, drawn from a
    generator seeded with ``seed``, so the same inputs give the same numbers on every run.
    Both metrics are biased upward at small N (FD strongly so): compare numbers only at equal N and M.
    """
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    n, m = len(generated), len(real)
    if n < 2 or m < 2:
        raise ValueError(f"FD/KID need at least 2 images in each set, got {n} generated and {m} real")
    for name, images in (("generated", generated), ("real", real)):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"{name} must be uint8 (N, 1|3, H, W), got {images.dtype} {tuple(images.shape)}")
    net, description = feature_extractor(space, device)

    # Features are extracted once and handed to both metrics through a pass-through "extractor": letting
    # each metric run the network itself would double the cost for identical features.
    class Precomputed(torch.nn.Module):
        num_features = net.num_features

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return features

    subset = min(kid_subset_size, n, m)
    with warnings.catch_warnings():  # "KID keeps all features in memory": N x num_features floats, by design
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        kid = KernelInceptionDistance(feature=Precomputed(), subset_size=subset, reset_real_features=False)
    fd = FrechetInceptionDistance(feature=Precomputed(), reset_real_features=False).to(device)
    kid = kid.to(device)
    for images, is_real in ((generated, False), (real, True)):
        feats = _features(net, images)
        fd.update(feats, real=is_real)
        kid.update(feats, real=is_real)
    # Both computes run single-threaded on the CPU: FD's matrix square root is a (num_features)^2
    # non-symmetric eigensolve (MKL geev) and KID is 300 tiny kernel matrices; neither gains from threads,
    # and both collapse when cores are shared (measured on a busy 2-core machine: eigensolve 0.4 s on 1
    # thread vs 10-66 s on 2; KID 0.01 s vs 6 s).
    threads = torch.get_num_threads()
    try:
        if torch.device(device).type == "cpu":
            torch.set_num_threads(1)
        fd_value = float(fd.compute())
        # KID draws its subsets with torch's global CPU RNG: seed a private copy of it, restored
        # afterwards, so the caller's random stream is untouched and the subsets are the same every run.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            kid_mean, kid_std = kid.compute()
    finally:
        torch.set_num_threads(threads)
    return {
        "fd": fd_value,
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "feature_space": description,
        "n_generated": n,
        "n_real": m,
        "kid_subset_size": subset,
    }
