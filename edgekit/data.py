"""Offline datasets: what installed packages ship, so nothing is downloaded at run time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write


@dataclass
class Dataset:
    """Images as float32 NCHW in [0, 1], labels as int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def save(self, path: str | Path, split: str = "test") -> Path:
        """Write one split as the CLI's data file convention: ``.npz`` with ``x`` and ``y``
        (to exactly ``path``, atomically)."""
        x, y = (self.x_test, self.y_test) if split == "test" else (self.x_train, self.y_train)
        with atomic_write(path) as f:
            np.savez(f, x=x, y=y)
        return Path(path)


def digits(size: int = 8, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 real 8x8 handwritten digits with a fixed train/test split.

    ``size`` 16 or 28 upsamples bilinearly (torch's ``align_corners=False`` convention), for
    models that expect MNIST-like inputs.
    """
    if size not in (8, 16, 28):
        raise EdgekitError(f"digits size must be 8, 16 or 28, got {size}")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise EdgekitError(
            "edgekit.data.digits needs scikit-learn: pip install 'edgekit[data]'"
        ) from None
    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    y = bunch.target.astype(np.int64)
    if size != 8:
        x = resize_bilinear(x, size)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return Dataset(x[train], y[train], x[test], y[test])


def resize_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """Resize NCHW images to size x size with half-pixel centres (no anti-aliasing)."""
    h, w = x.shape[-2:]

    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    (r0, r1, fr), (c0, c1, fc) = axis(h), axis(w)
    rows = x[..., r0, :] * (1 - fr)[:, None] + x[..., r1, :] * fr[:, None]
    return (rows[..., c0] * (1 - fc) + rows[..., c1] * fc).astype(np.float32)


from edgekit.speech import corpus as speech  # noqa: E402,F401  (the synthesized speech corpus)
