"""Expected answers for image fitting and resampling, computed without genaug's own code.

`bicubic_resize` is a plain numpy statement of the policy `data.images.RESAMPLE_POLICY` names
("bicubic, antialiased"): separable Keys cubic convolution with a = -0.5, its support stretched by the
scale factor when shrinking (the antialiasing), taps clipped at the border and the weights of each
output pixel renormalised, computed in float64 on [0, 1] pixels, clipped and rounded once at the end.

`banded` draws a 2:1 frame of three vertical bands (left quarter, centre half, right quarter), whose
fitted square is known by hand for each `data.resize` policy: see `assert_fitted`.
"""

from __future__ import annotations

import numpy as np


def keys_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = (a + 2) * x**3 - (a + 3) * x**2 + 1
    far = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def bicubic_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix: row i holds the normalised weights of input pixels for output pixel i."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)  # shrinking: the kernel widens with the scale (antialiasing)
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = scale * (i + 0.5)  # in input pixel units, pixel j spanning [j, j + 1)
        low, high = max(int(centre - 2 * stretch + 0.5), 0), min(int(centre + 2 * stretch + 0.5), n_in)
        taps = np.arange(low, high)
        w = keys_cubic((taps + 0.5 - centre) / stretch)
        weights[i, low:high] = w / w.sum()
    return weights


def bicubic_resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (..., S, S) -> uint8 (..., size, size)."""
    rows = bicubic_weights(images.shape[-2], size)
    cols = bicubic_weights(images.shape[-1], size)
    unit = rows @ (images.astype(np.float64) / 255) @ cols.T
    return np.round(np.clip(unit, 0, 1) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------- fitting a 2:1 frame

W, H, SIDE = 64, 32, 16  # a 2:1 frame fitted to 16 x 16: every policy scales by 2 or 4
LEFT, CENTRE, RIGHT = slice(0, 16), slice(16, 48), slice(48, 64)  # the centre band is the centre square


def banded(colours: tuple) -> np.ndarray:
    """(H, W[, 3]) uint8: left quarter colours[0], centre half colours[1], right quarter colours[2]."""
    channels = np.atleast_1d(colours[0]).size
    frame = np.zeros((H, W, channels), np.uint8)
    for band, colour in zip((LEFT, CENTRE, RIGHT), colours):
        frame[:, band] = colour
    return frame[..., 0] if channels == 1 else frame


def assert_fitted(frame: np.ndarray, policy: str, colours: tuple) -> None:
    """`frame` (SIDE, SIDE[, C]) is `banded(colours)` fitted by `policy`, checked where the answer is
    known by hand: at pixels whose bicubic support (2 output pixels either side) lies in one band.

    crop   the centre 32 x 32 square: the centre band, everywhere.
    pad    the frame on a 64 x 64 black square, 16 black rows above and below, scale 4: output rows
           0-1 and 14-15 black; rows 7-8 show every band (columns 0-1 left, 7-8 centre, 14-15 right).
    squash 64 x 32 stretched to 16 x 16 (x by 4, y by 2): no black rows; every row shows every band.
    """
    frame = frame.reshape(SIDE, SIDE, -1).astype(int)
    left, centre, right = (np.atleast_1d(c) for c in colours)
    if policy == "crop":
        assert (frame == centre).all(), frame[..., 0]
        return
    bands_at = [7, 8] if policy == "pad" else list(range(SIDE))
    for row in bands_at:
        for cols, colour in (((0, 1), left), ((7, 8), centre), ((14, 15), right)):
            assert all((frame[row, c] == colour).all() for c in cols), (policy, row, frame[row, :, 0])
    if policy == "pad":
        assert (frame[[0, 1, 14, 15]] == 0).all(), frame[..., 0]
    else:
        assert (frame.max(axis=(1, 2)) > 0).all()  # no black bar anywhere
