import numpy as np
import torch

from genaug.config import AugmentConfig
from genaug.data.images import BatchSampler, fit_square


def test_batches_are_seeded_unit_range_and_flipped_on_the_device():
    images = torch.arange(4 * 8 * 8, dtype=torch.uint8).view(4, 1, 8, 8)
    plain = BatchSampler(images, torch.device("cpu"), seed=0, augment=AugmentConfig(hflip=False))
    batch = plain(16)
    assert batch.shape == (16, 1, 8, 8) and batch.dtype == torch.float32 and 0 <= batch.min() and batch.max() <= 1
    again = BatchSampler(images, torch.device("cpu"), seed=0, augment=AugmentConfig(hflip=False))(16)
    assert torch.equal(batch, again)
    flipped = BatchSampler(images, torch.device("cpu"), seed=0, augment=AugmentConfig(hflip=True))(64)
    originals = {tuple(x.flatten().tolist()) for x in images.float() / 255}
    mirrored = [tuple(x.flatten().tolist()) not in originals for x in flipped]
    assert 10 < sum(mirrored) < 54  # about half are mirror images


def test_resized_crop_changes_content_but_not_shape():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    augment = AugmentConfig(hflip=False, crop_scale=[0.3, 0.5])
    batch = BatchSampler(images, torch.device("cpu"), seed=0, augment=augment)(8)
    assert batch.shape == (8, 3, 16, 16) and 0 <= batch.min() and batch.max() <= 1
    originals = {tuple(x.flatten().tolist()) for x in images.float() / 255}
    assert not any(tuple(x.flatten().tolist()) in originals for x in batch)


def test_crop_scale_must_be_a_range():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="crop_scale"):
        AugmentConfig(crop_scale=[0.9, 0.5])


def test_geometry_policies_keep_or_distort_the_aspect_ratio():
    frame = np.zeros((40, 80), np.uint8)
    frame[:, 20:60] = 255  # a bright centre square
    crop, pad, squash = (fit_square(frame, 20, policy) for policy in ("crop", "pad", "squash"))
    assert crop.min() == 255  # the centre square fills the crop
    assert pad[0].max() == 0 and pad[10, 10] == 255  # black bars above and below, content kept
    assert squash[10, 0] == 0 and squash[10, 10] == 255 and squash[0, 10] == 255  # full height, stretched
