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

from genaug.config import AugmentConfig
from genaug.errors import UserError


def fit_square(image: np.ndarray, size: int, resize: str) -> np.ndarray:
    """(H, W[, C]) uint8 -> (size, size[, C]) uint8.

    crop: centre square, aspect kept; pad: whole frame on a black square, aspect kept; squash: the
    whole frame stretched to a square (the seed's choice).
    """
    pil = Image.fromarray(image)
    w, h = pil.size
    if resize == "crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        pil = pil.crop((left, top, left + side, top + side))
    elif resize == "pad":
        side = max(w, h)
        canvas = Image.new(pil.mode, (side, side))  # black: zero in every mode
        canvas.paste(pil, ((side - w) // 2, (side - h) // 2))
        pil = canvas
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


RESAMPLE_POLICY = "bicubic, antialiased"


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, S, S) -> uint8 (N, C, size, size), resampled by RESAMPLE_POLICY (a no-op at size S)."""
    if images.shape[-1] == size:
        return images
    resized = torch.nn.functional.interpolate(to_unit(images), size=(size, size), mode="bicubic",
                                              antialias=True, align_corners=False)
    return from_unit(resized.clamp(0, 1))


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
    """Random batches from a uint8 set, augmented on the training device as a batch.

    Sampling with replacement from a seeded generator: a run sees exactly `steps x batch_size` images
    whatever the set size, so equal-step budgets compare like with like, and the order is reproducible
    (the same on every device). Flips draw from the same generator; the resized crop (kornia) from
    torch's seeded global RNG. `resident`: the set is copied to the device once and batches are
    gathered there; otherwise it stays in host memory (pinned on CUDA) and each batch is gathered there
    and copied over. Either way the batches are identical, and the copies are asynchronous: the host
    never waits for the device.

    Under `world` data-parallel processes, `batch_size` is the global batch: every process draws the
    whole batch's indices and flips from the same seeded generator (so they stay in step) and keeps its
    own contiguous slice, `rank * b` to `(rank + 1) * b` with b = batch_size / world (a UserError naming
    `batch_key` when it does not divide). One process keeps all of it: the batches of a single process
    are exactly those of any number of processes, concatenated.
    """

    def __init__(self, images: torch.Tensor, device: torch.device, seed: int, augment: AugmentConfig,
                 resident: bool = True, rank: int = 0, world: int = 1, batch_key: str = "batch_size"):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not one of {world} processes")
        self.rank, self.world, self.batch_key = rank, world, batch_key
        self.global_batch: int | None = None  # the last batch_size asked for (for the stage's manifest)
        device = torch.device(device)
        self.pin = device.type == "cuda"
        self.device = device
        self.resident = resident
        self.images = images.to(device) if resident else (images.pin_memory() if self.pin else images)
        self.augment = augment
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.crop = None
        if augment.crop_scale != [1.0, 1.0]:
            import kornia.augmentation as K

            side = images.shape[-1]
            self.crop = K.RandomResizedCrop((side, side), scale=tuple(augment.crop_scale), ratio=(3 / 4, 4 / 3))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}  # kornia's crops draw from torch's global RNG

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        return (host.pin_memory() if self.pin else host).to(self.device, non_blocking=self.pin)

    def __call__(self, batch_size: int) -> torch.Tensor:
        """Global `batch_size` -> this process's (batch_size / world, C, S, S) float in [0, 1] on the device."""
        if batch_size % self.world:
            raise UserError(f"{self.batch_key} = {batch_size} is the global batch and cannot be split equally "
                            f"across {self.world} processes; set it to a multiple of {self.world}")
        self.global_batch = batch_size
        index = torch.randint(len(self.images), (batch_size,), generator=self.generator)
        flip = torch.rand(batch_size, generator=self.generator) < 0.5 if self.augment.hflip else None
        if self.world > 1:  # the whole batch was drawn, so every process's generator stays in step
            mine = slice(self.rank * (batch_size // self.world), (self.rank + 1) * (batch_size // self.world))
            index = index[mine]
            flip = flip[mine] if flip is not None else None
        if self.resident:
            batch = self.images[self._to_device(index)]
        else:
            batch = self._to_device(self.images[index])
        batch = to_unit(batch)
        if flip is not None:
            batch = torch.where(self._to_device(flip)[:, None, None, None], batch.flip(-1), batch)
        if self.crop is not None:
            batch = self.crop(batch).clamp(0, 1)
        return batch


def classic_augment(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """`n` classically augmented copies of uint8 (N, C, S, S) `images` (image i % N for copy i): flip,
    random resized crop (area 0.5-1), colour jitter (RGB) or brightness/contrast jitter (1 channel).
    The real+classic control: as many extra images as real+gen adds, made without a generator."""
    import kornia.augmentation as K

    side, channels = images.shape[-1], images.shape[1]
    jitter = (K.ColorJitter(0.2, 0.2, 0.2, 0.05, p=0.8) if channels == 3
              else K.ColorJitter(brightness=0.2, contrast=0.2, p=0.8))  # intensity only: thermal has no hue
    pipeline = torch.nn.Sequential(K.RandomHorizontalFlip(), K.RandomResizedCrop((side, side), scale=(0.5, 1.0)),
                                   jitter)
    source = to_unit(images[torch.arange(n) % len(images)])
    with torch.random.fork_rng(devices=[]):  # kornia draws from the global RNG: keep the caller's untouched
        torch.manual_seed(seed)
        return from_unit(pipeline(source).clamp(0, 1))


# ------------------------------------------------------------------------------------- reading files

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def _open(path: Path) -> Image.Image:
    """Decode fully (a truncated file fails here, not later), or raise a UserError naming the file."""
    try:
        image = Image.open(path)
        image.load()
        return image
    except FileNotFoundError:
        raise UserError(f"{path}: image file is missing; restore it or remove the frame") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL's ways of saying "corrupt or truncated"
        raise UserError(f"{path}: unreadable image ({e}); replace or delete the file") from None


def read_rgb(path: Path) -> np.ndarray:
    """-> (H, W, 3) uint8."""
    return np.asarray(_open(path).convert("RGB"))


def read_thermal(path: Path, policy_16bit: str = "full") -> tuple[np.ndarray, str]:
    """-> ((H, W) uint8, how it was scaled). LWIR JPEGs stored as 3 equal channels become one.

    16-bit images: `full` divides by 65535 (absolute, comparable across images); `minmax` stretches
    each image to its own range (loses absolute temperature, keeps contrast).
    """
    image = _open(path)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        if policy_16bit == "minmax":
            low, high = values.min(), values.max()
            unit = (values - low) / (high - low) if high > low else np.zeros_like(values)
        else:
            unit = values / 65535.0
        return np.round(np.clip(unit, 0, 1) * 255).astype(np.uint8), f"16-bit, {policy_16bit}"
    return np.asarray(image.convert("L")), "8-bit"
