"""Image-to-image networks of CycleGAN / pix2pix (Zhu et al. 2017; Isola et al. 2017), written small.

`ResnetGenerator`: c7s1-ngf, n_downsampling stride-2 convs, n_blocks residual blocks, as many
transposed convs back up, c7s1-out, tanh: (B, in_c, S, S) in [-1, 1] -> (B, out_c, S, S) in [-1, 1].
`PatchDiscriminator`: the PatchGAN; with d_layers = 3 each output logit sees a 70x70 input patch:
(B, in_c, S, S) -> (B, 1, S', S') logits.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from torch import nn

from genaug.data.images import from_unit, to_unit


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

    def __init__(self, size: int, seed: int, device: torch.device | str = "cpu"):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)
        self.device = device  # where a restored history goes: checkpoints load on the CPU

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

    def state_dict(self) -> dict:
        return {"images": list(self.images), "rng": list(_encode_random(self.rng.getstate()))}

    def load_state_dict(self, state: dict) -> None:
        self.images = [image.to(self.device) for image in state["images"]]
        self.rng.setstate(_decode_random(state["rng"]))


def _encode_random(state: tuple) -> tuple:
    """random.Random's state (version, 625 ints, gauss_next) as JSON-friendly values."""
    version, internal, gauss_next = state
    return version, list(internal), gauss_next


def _decode_random(state: list) -> tuple:
    version, internal, gauss_next = state
    return version, tuple(internal), gauss_next


class GANLoss(nn.Module):
    """`lsgan`: MSE to 1/0 (junyanz default); `bce`: the original cross-entropy on logits (the seed's)."""

    def __init__(self, mode: str):
        super().__init__()
        self.loss = nn.MSELoss() if mode == "lsgan" else nn.BCEWithLogitsLoss()

    def forward(self, prediction: torch.Tensor, is_real: bool) -> torch.Tensor:
        target = torch.ones_like(prediction) if is_real else torch.zeros_like(prediction)
        return self.loss(prediction.float(), target.float())


class UnetGenerator(nn.Module):
    """pix2pix's U-Net: `num_downs` stride-2 convs down to 1/2**num_downs, mirrored back up with a skip
    connection at every level (unet_256 = num_downs 8 at 256^2). (B, in_c, S, S) -> (B, out_c, S, S)."""

    def __init__(self, in_channels: int, out_channels: int, num_downs: int = 8, ngf: int = 64, dropout: bool = True,
                 norm: str = "batch"):
        super().__init__()
        # batch: pix2pix's; instance: junyanz's CycleGAN option (no affine, no running statistics)
        make_norm = nn.BatchNorm2d if norm == "batch" else _norm
        widths = [min(ngf * 2**i, ngf * 8) for i in range(num_downs)]
        self.down = nn.ModuleList()
        for i, width in enumerate(widths):
            if i == 0:
                self.down.append(nn.Conv2d(in_channels, width, 4, stride=2, padding=1))
            else:
                norm = make_norm(width) if i < num_downs - 1 else nn.Identity()  # innermost: no norm
                self.down.append(nn.Sequential(nn.LeakyReLU(0.2, True),
                                               nn.Conv2d(widths[i - 1], width, 4, stride=2, padding=1), norm))
        self.up = nn.ModuleList()
        for j in range(num_downs - 1, 0, -1):
            incoming = widths[j] if j == num_downs - 1 else 2 * widths[j]
            layers = [nn.ReLU(True), nn.ConvTranspose2d(incoming, widths[j - 1], 4, stride=2, padding=1),
                      make_norm(widths[j - 1])]
            if dropout and j >= num_downs - 3:  # the noise of pix2pix: dropout in the innermost blocks
                layers.append(nn.Dropout(0.5))
            self.up.append(nn.Sequential(*layers))
        self.up.append(nn.Sequential(nn.ReLU(True), nn.ConvTranspose2d(2 * widths[0], out_channels, 4, stride=2,
                                                                       padding=1), nn.Tanh()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        x = skips.pop()
        for layer in self.up:
            x = layer(x)
            if skips:
                x = torch.cat([x, skips.pop()], dim=1)
        return x


# ------------------------------------------------------------------------------------------ saving, use


def save_networks(folder: Path, nets: dict[str, nn.Module], config: dict) -> None:
    """All networks in one `weights.safetensors` (keys `<name>.<param>`) + `config.json`; nothing pickled."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {f"{name}.{k}": v.detach().cpu().contiguous() for name, net in nets.items() for k, v in net.state_dict().items()}
    save_file(state, folder / "weights.safetensors")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def load_network(folder: Path, name: str, net: nn.Module) -> nn.Module:
    """Fill a freshly built `net` with the weights saved under `name`; -> net in eval mode."""
    from safetensors.torch import load_file

    state = load_file(folder / "weights.safetensors")
    net.load_state_dict({k.removeprefix(f"{name}."): v for k, v in state.items() if k.startswith(f"{name}.")})
    return net.eval()


@torch.no_grad()
def translate(net: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """uint8 (N, C_in, S, S) -> uint8 (N, C_out, S, S) through a [-1, 1] image-to-image network."""
    device = next(net.parameters()).device
    out = [from_unit((net(to_unit(chunk).to(device) * 2 - 1) + 1) / 2) for chunk in images.split(batch_size)]
    return torch.cat(out)
