"""Offline data for in-sensor front-ends (``edgekit.insensor``): what a pixel array sees.

- ``photo_patches``: RGB patches of the two real photos bundled with scikit-learn (china.jpg,
  flower.jpg, 427x640), the class being which photo and which half (top/bottom) a patch comes
  from: colour and texture, as a camera front-end sees them.
- ``digit_events``: an event-camera variant (N-MNIST-like) of the bundled digits: each digit,
  upsampled, moves by sub-pixel shifts; a pixel emits an ON (OFF) event each time its log
  intensity rises (falls) by ``contrast`` since its last event, as a DVS pixel does. The frame is
  the ON and OFF event counts (two channels), scaled to [0, 1].

Both return ``edgekit.data.Dataset`` (float32 NCHW, int64 labels) and need nothing downloaded.
"""

from __future__ import annotations

import numpy as np

from edgekit.data import Dataset, digits, resize_bilinear
from edgekit.errors import EdgekitError


def photo_patches(size: int = 16, per_class: int = 300, test_fraction: float = 0.2,
                  seed: int = 0) -> Dataset:
    """``4 * per_class`` RGB ``size`` x ``size`` patches, each cut at a random place and
    downscaled 2x from a ``2 * size`` square; labels 0-3: (photo, half)."""
    try:
        from sklearn.datasets import load_sample_images
        images = load_sample_images().images
    except ImportError:
        raise EdgekitError("photo_patches needs scikit-learn and Pillow: pip install "
                           "'edgekit[data]' pillow") from None
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    crop = 2 * size
    for photo, image in enumerate(images):
        img = np.asarray(image, np.float32).transpose(2, 0, 1) / 255.0
        h, w = img.shape[1:]
        for half in range(2):
            top = rng.integers(half * h // 2, (half + 1) * h // 2 - crop, per_class)
            left = rng.integers(0, w - crop, per_class)
            patches = np.stack([img[:, t:t + crop, s:s + crop] for t, s in zip(top, left,
                                                                               strict=True)])
            xs.append(resize_bilinear(patches, size))
            ys.append(np.full(per_class, 2 * photo + half, np.int64))
    return _split(np.concatenate(xs), np.concatenate(ys), test_fraction, seed)


def digit_events(size: int = 16, shifts: int = 6, contrast: float = 0.15,
                 test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """The digits as event frames (2 channels: ON, OFF counts over ``shifts`` sub-pixel moves
    of half a pixel each along a random direction per digit), scaled to [0, 1]."""
    ds = digits(size, test_fraction, seed)
    x = np.concatenate([ds.x_train, ds.x_test])[:, 0]
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, len(x))
    log = np.log(x + 0.05)
    reference = log.copy()
    counts = np.zeros((len(x), 2, size, size), np.float32)
    for step in range(1, shifts + 1):
        dy, dx = 0.5 * step * np.sin(angle), 0.5 * step * np.cos(angle)
        moved = np.log(_shift(x, dy, dx) + 0.05)
        on, off = moved - reference >= contrast, reference - moved >= contrast
        counts[:, 0] += on
        counts[:, 1] += off
        reference = np.where(on | off, moved, reference)
    counts /= max(float(counts.max()), 1.0)
    n = len(ds.x_train)
    return Dataset(counts[:n], ds.y_train, counts[n:], ds.y_test)


def _shift(img: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Images (N, H, W) each moved by its (dy, dx) pixels, bilinear, zeros coming in at the
    border."""
    n, h, w = img.shape
    ys, xs = np.arange(h)[None] - dy[:, None], np.arange(w)[None] - dx[:, None]
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[:, :, None], (xs - x0)[:, None, :]
    rows = np.arange(n)[:, None, None]

    def at(r, c):
        valid = ((r >= 0) & (r < h))[:, :, None] & ((c >= 0) & (c < w))[:, None, :]
        return np.where(valid, img[rows, np.clip(r, 0, h - 1)[:, :, None],
                                   np.clip(c, 0, w - 1)[:, None, :]], 0.0)

    return ((1 - fy) * (1 - fx) * at(y0, x0) + (1 - fy) * fx * at(y0, x0 + 1)
            + fy * (1 - fx) * at(y0 + 1, x0) + fy * fx * at(y0 + 1, x0 + 1)).astype(np.float32)


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> Dataset:
    order = np.random.default_rng(seed + 1).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return Dataset(x[train], y[train], x[test], y[test])
