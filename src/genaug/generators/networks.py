"""Image-to-image networks of CycleGAN / pix2pix (Zhu et al. 2017; Isola et al. 2017), written small.

`ResnetGenerator`: c7s1-ngf, n_downsampling stride-2 convs, n_blocks residual blocks, as many
transposed convs back up, c7s1-out, tanh: (B, in_c, S, S) in [-1, 1] -> (B, out_c, S, S) in [-1, 1].
`PatchDiscriminator`: the PatchGAN; with d_layers = 3 each output logit sees a 70x70 input patch:
(B, in_c, S, S) -> (B, 1, S', S') logits.
"""

from __future__ import annotations

import random

import torch
from torch import nn


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=True), _norm(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=True), _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, ngf: int = 64, n_blocks: int = 9,
                 n_downsampling: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7), _norm(ngf), nn.ReLU(True)]
        width = ngf
        for _ in range(n_downsampling):
            layers += [nn.Conv2d(width, width * 2, 3, stride=2, padding=1), _norm(width * 2), nn.ReLU(True)]
            width *= 2
        layers += [ResidualBlock(width) for _ in range(n_blocks)]
        for _ in range(n_downsampling):
            layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1),
                       _norm(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            new = ndf * min(2**i, 8)
            layers += [nn.Conv2d(width, new, 4, stride=stride, padding=1), _norm(new), nn.LeakyReLU(0.2, True)]
            width = new
        layers += [nn.Conv2d(width, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """N(0, 0.02) for convolutions, as in the CycleGAN paper's code."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return net


class ImagePool:
    """A history of generated images (Shrivastava et al. 2017): D sees a mix of new and older fakes."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif self.rng.random() < 0.5:
                slot = self.rng.randrange(self.size)
                out.append(self.images[slot])
                self.images[slot] = image
            else:
                out.append(image)
        return torch.stack(out)


class GANLoss(nn.Module):
    """`lsgan`: MSE to 1/0 (junyanz default); `bce`: the original cross-entropy on logits (the seed's)."""

    def __init__(self, mode: str):
        super().__init__()
        self.loss = nn.MSELoss() if mode == "lsgan" else nn.BCEWithLogitsLoss()

    def forward(self, prediction: torch.Tensor, is_real: bool) -> torch.Tensor:
        target = torch.ones_like(prediction) if is_real else torch.zeros_like(prediction)
        return self.loss(prediction.float(), target.float())
