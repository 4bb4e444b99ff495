"""Image sets as uint8 tensors: the one in-memory and on-disk form every stage exchanges.

A set is `(N, C, S, S)` uint8 (C = 3 for RGB, 1 for thermal) plus one id per image. Pixel values are
converted exactly once, in `to_unit` (uint8 -> float in [0, 1]); models apply their own normalisation
on top of that, and `from_unit` is the only way back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def fit_square(image: np.ndarray, size: int, resize: str) -> np.ndarray:
    """(H, W[, C]) uint8 -> (size, size[, C]) uint8; `crop` keeps the aspect ratio, `squash` does not."""
    pil = Image.fromarray(image)
    if resize == "crop":
        w, h = pil.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        pil = pil.crop((left, top, left + side, top + side))
    return np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 numpy -> (N, C, H, W) uint8 tensor."""
    if images.ndim == 3:
        images = images[..., None]
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1]."""
    return images.float().div_(255.0)


def from_unit(images: torch.Tensor) -> torch.Tensor:
    """float in [0, 1] (values outside are clipped) -> uint8, rounding to nearest."""
    return images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()


def write_png_folder(folder: Path, images: torch.Tensor, ids: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for image, name in zip(images, ids):
        array = image.permute(1, 2, 0).numpy()
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(folder / f"{name}.png")


def read_png_folder(folder: Path, ids: list[str]) -> torch.Tensor:
    arrays = [np.asarray(Image.open(folder / f"{name}.png")) for name in ids]
    return to_tensor(np.stack(arrays))


def grid(images: torch.Tensor, columns: int, pad: int = 2) -> np.ndarray:
    """(N, C, S, S) uint8 -> one (rows*S', columns*S', 3) uint8 picture, thermal shown as grey."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    canvas = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, image in enumerate(images):
        array = image.permute(1, 2, 0).numpy()
        if c == 1:
            array = np.repeat(array, 3, axis=2)
        r, col = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y : y + h, x : x + w] = array
    return canvas


class BatchSampler:
    """Random batches from a uint8 set held on the training device, with random horizontal flips.

    Sampling with replacement from a seeded generator: a run sees exactly `steps x batch_size` images
    whatever the set size, so equal-step budgets compare like with like, and the order is reproducible.
    """

    def __init__(self, images: torch.Tensor, device: torch.device, seed: int, flip: bool = True):
        self.images = images.to(device)
        self.flip = flip
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def __call__(self, batch_size: int) -> torch.Tensor:
        """-> (B, C, S, S) float in [0, 1] on the device."""
        index = torch.randint(len(self.images), (batch_size,), generator=self.generator)
        batch = to_unit(self.images[index.to(self.images.device)])
        if self.flip:
            flip = (torch.rand(batch_size, generator=self.generator) < 0.5).to(batch.device)
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        return batch
