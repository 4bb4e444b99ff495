import numpy as np
import pytest
import torch

from genaug.config import AugmentConfig
from genaug.data.images import BatchSampler, fit_square, resize_square

from .known_answers import SIDE, assert_fitted, banded, bicubic_resize


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


# ------------------------------------------------------------- known answers: fit_square, resize_square


def test_fit_square_offsets_at_native_size_are_exact():
    """No resampling (the fitted square is already `size`): crop keeps the centre columns, pad puts the
    frame in the middle of a black square, squash of a square frame changes nothing."""
    frame = np.arange(15, dtype=np.uint8).reshape(3, 5) * 10 + 5  # 3 rows, 5 columns, no zero
    assert np.array_equal(fit_square(frame, 3, "crop"), frame[:, 1:4])
    padded = fit_square(frame, 5, "pad")
    assert np.array_equal(padded[1:4], frame) and not padded[[0, 4]].any()
    tall = np.ascontiguousarray(frame.T)  # 5 rows, 3 columns: crop and pad act on the other axis
    assert np.array_equal(fit_square(tall, 3, "crop"), tall[1:4])
    padded = fit_square(tall, 5, "pad")
    assert np.array_equal(padded[:, 1:4], tall) and not padded[:, [0, 4]].any()
    square = frame[:, :3]
    assert np.array_equal(fit_square(square, 3, "squash"), square)


@pytest.mark.parametrize("policy", ["crop", "pad", "squash"])
def test_fit_square_of_a_banded_two_to_one_frame(policy):
    """A 2:1 frame of left / centre / right bands: crop keeps only the centre band, pad adds black bars
    above and below and keeps every band, squash keeps every band over the full height (known_answers)."""
    rgb = ((200, 10, 0), (0, 200, 30), (40, 0, 200))
    assert_fitted(fit_square(banded(rgb), SIDE, policy), policy, rgb)
    grey = (60, 120, 200)
    assert_fitted(fit_square(banded(grey), SIDE, policy), policy, grey)


def ramp_image(values, rows):
    """uint8 (1, 1, rows, len(values)): every row is `values`."""
    return torch.tensor(values, dtype=torch.uint8).view(1, 1, 1, -1).expand(1, 1, rows, -1).contiguous()


def test_resize_square_known_answers():
    """Hand-computed values of 'bicubic, antialiased' (Keys a = -0.5, kernel stretched when shrinking),
    at output pixels whose support lies inside the image."""
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(resize_square(x, 8), x)  # its own size: untouched
    constant = torch.full((2, 3, 16, 16), 77, dtype=torch.uint8)
    for size in (5, 8, 24):  # weights sum to one: a constant stays that constant, shrunk or enlarged
        assert torch.equal(resize_square(constant, size), torch.full((2, 3, size, size), 77, dtype=torch.uint8))
    # A linear ramp stays linear (cubic convolution reproduces straight lines). 16 -> 8: output pixel j
    # is centred on input 2j + 0.5, so v = 10 + 12x gives 16 + 24j; interior columns 2..5.
    down = resize_square(ramp_image([10 + 12 * x for x in range(16)], 16), 8)
    assert down.shape == (1, 1, 8, 8) and (down[0, 0, :, 2:6] == torch.tensor([64, 88, 112, 136])).all()
    # 8 -> 16: output j is centred on input j/2 - 0.25, so v = 16 + 32x gives 8 + 16j; interior 5..10.
    up = resize_square(ramp_image([16 + 32 * x for x in range(8)], 8), 16)
    assert (up[0, 0, :, 5:11] == torch.tensor([88, 104, 120, 136, 152, 168])).all()
    # A step 40 | 220 enlarged 8 -> 16: bicubic's overshoot on both sides of the edge. Output 7 is centred
    # on 3.25: taps 2, 3 (40) and 4, 5 (220) at distances 1.25, 0.25, 0.75, 1.75 with weights
    # -0.0703125, 0.8671875, 0.2265625, -0.0234375: 40 + 180 * 0.203125 = 76.6 -> 77; likewise
    # 6 -> 40 - 180 * 0.0703125 = 27.3 -> 27, 8 -> 183.4 -> 183, 9 -> 232.7 -> 233 (bilinear: 40, 85, 175, 220).
    step = resize_square(ramp_image([40] * 4 + [220] * 4, 8), 16)
    assert (step[0, 0, :, 6:10] == torch.tensor([27, 77, 183, 233])).all()
    # Antialiasing: 255, 0, 0, 0 repeated, shrunk 4x. The stretched kernel gives each phase of the period
    # a quarter of the weight: the period's mean, 63.75 -> 64 (unfiltered bicubic would give 0).
    comb = resize_square(ramp_image([255, 0, 0, 0] * 8, 32), 8)
    assert (comb[0, 0, :, 2:6] == 64).all()


@pytest.mark.parametrize("n, size", [(16, 8), (32, 8), (12, 5), (10, 7), (8, 12), (8, 16)])
def test_resize_square_equals_an_independent_bicubic(n, size):
    """Random images, shrunk and enlarged by whole and fractional factors, against known_answers'
    numpy bicubic (float64; at most a rounding tie apart)."""
    images = torch.randint(0, 256, (2, 3, n, n), dtype=torch.uint8, generator=torch.Generator().manual_seed(n + size))
    got = resize_square(images, size)
    assert got.shape == (2, 3, size, size) and got.dtype == torch.uint8
    difference = np.abs(got.numpy().astype(int) - bicubic_resize(images.numpy(), size).astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01
